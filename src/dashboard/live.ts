/**
 * Live updates for dashboard pages: a server-sent event stream that says "the pool changed".
 *
 * It reads our own state only, through the process's one reader of changes (`PoolChangeWatcher`,
 * shared with the API's event stream): the database NOTIFYs on every status change of any replica,
 * the watcher reads once, and every page connected to this process is told. It never asks the
 * provider (the earlier dashboard's polling amplified cloud API calls, seed §5.4/§8) and no page
 * polls the database. The page then re-fetches its fragments; the stream carries only counts,
 * never an instance's details.
 *
 * Bounded: the plugin admits at most `maxLiveClients` pages per process over all pools' feeds, and
 * a page that stops reading (more than
 * 256 KiB queued) is dropped; its EventSource reconnects and the first message catches it up.
 */
import type { ServerResponse } from "node:http";
import type { Store } from "../db/store.ts";
import type { PoolChange, PoolChangeWatcher } from "../http/changes.ts";
import type { Logger } from "../logger.ts";
import type { PoolSummary } from "../pool/operations.ts";

interface Client {
  res: ServerResponse;
  /** Ends the stream when the session expires, so a stale page stops getting data. */
  expiry: NodeJS.Timeout;
}

export interface ChangeFeedOptions {
  store: Store;
  poolId: string;
  /** The process's one reader of changes. */
  changes: PoolChangeWatcher;
  summary: () => Promise<PoolSummary>;
  logger: Logger;
  pingMs?: number;
  /** The watched state's marker now (the watcher's `watch`), read once per connect. */
  watch?: () => Promise<string>;
}

/** A page this far behind (bytes queued) is dropped rather than buffered without bound. */
const MAX_BUFFERED = 256 * 1024;

export class ChangeFeed {
  readonly #o: ChangeFeedOptions;
  readonly #clients = new Set<Client>();
  #ping: NodeJS.Timeout | null = null;
  #lastCounts = "";
  #lastWatch: string | null = null;
  #seq = 0;
  readonly #onChange = (c: PoolChange) => this.#changed(c);

  constructor(opts: ChangeFeedOptions) {
    this.#o = opts;
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  /** Streams to `res` until the client leaves, the session ends at `untilMs`, or close(). */
  async add(res: ServerResponse, untilMs: number): Promise<void> {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store, no-transform",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const client: Client = { res, expiry: setTimeout(() => res.end(), Math.max(0, Math.min(untilMs - Date.now(), 2 ** 31 - 1))) };
    this.#clients.add(client);
    res.on("close", () => this.#drop(client));
    res.write("retry: 2000\n\n");
    try {
      // The baseline is taken before the watcher starts, so a change right after this connect is not missed.
      const head = await this.#o.store.lastPoolEventId(this.#o.poolId);
      const counts = countsOf(await this.#o.summary());
      if (this.#lastCounts === "") this.#lastCounts = counts;
      if (this.#lastWatch === null && this.#o.watch) this.#lastWatch = await this.#o.watch();
      // The page may have rendered a moment ago; the first message makes it catch up.
      this.#send([client], counts);
      if (this.#clients.has(client)) this.#o.changes.add(this.#onChange, head);
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "dashboard change feed start failed");
      // Without a baseline the watcher still starts: a change reaches the page at the next read.
      if (this.#clients.has(client)) this.#o.changes.add(this.#onChange, 0);
    }
    this.#startPing();
  }

  close(): void {
    for (const c of this.#clients) {
      clearTimeout(c.expiry);
      c.res.end();
    }
    this.#clients.clear();
    this.#stopIdle();
  }

  #drop(c: Client): void {
    clearTimeout(c.expiry);
    if (!this.#clients.delete(c)) return;
    if (!c.res.writableEnded) c.res.end();
    if (this.#clients.size === 0) this.#stopIdle();
  }

  #startPing(): void {
    if (this.#ping || this.#clients.size === 0) return;
    this.#ping = setInterval(() => {
      for (const c of [...this.#clients]) this.#write(c, ": ping\n\n");
    }, this.#o.pingMs ?? 15_000);
  }

  #stopIdle(): void {
    if (this.#ping) clearInterval(this.#ping);
    this.#ping = null;
    this.#lastCounts = "";
    this.#lastWatch = null;
    this.#o.changes.remove(this.#onChange);
  }

  /**
   * Pushes `changed` when the read found new events, the counts moved, or the watched state
   * (rollouts) changed. A rollout's row NOTIFYs like a status change (migration 0008's trigger),
   * so its progress reaches pages at once too.
   */
  #changed(change: PoolChange): void {
    const counts = countsOf(change.summary);
    let moved = change.events.length > 0 || counts !== this.#lastCounts;
    this.#lastCounts = counts;
    if (change.watched !== null && change.watched !== this.#lastWatch) {
      moved = true;
      this.#lastWatch = change.watched;
    }
    if (moved) this.#send([...this.#clients], counts);
  }

  #send(clients: Client[], counts: string): void {
    const data = `id: ${++this.#seq}\nevent: changed\ndata: ${counts}\n\n`;
    for (const c of clients) this.#write(c, data);
  }

  #write(c: Client, chunk: string): void {
    if (c.res.writableEnded || c.res.destroyed || c.res.writableLength > MAX_BUFFERED) {
      this.#drop(c);
      return;
    }
    c.res.write(chunk);
  }
}

function countsOf(s: PoolSummary): string {
  return JSON.stringify({ counts: s.counts, minIdle: s.minIdle, maxTotal: s.maxTotal });
}
