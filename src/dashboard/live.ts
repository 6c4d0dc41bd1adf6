/**
 * Live updates for dashboard pages: a server-sent event stream that says "the pool changed".
 *
 * One poller per process reads our own state only: new `instance_events` rows and the counts, from
 * the store, about once a second, and only while a page is connected. It never asks the provider
 * (the earlier dashboard's polling amplified cloud API calls, seed §5.4/§8), and because it reads
 * the shared store, a change made by any replica reaches every page. The page then re-fetches its
 * fragments; the stream carries only counts, never an instance's details.
 */
import type { ServerResponse } from "node:http";
import type { Store } from "../db/store.ts";
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
  summary: () => Promise<PoolSummary>;
  logger: Logger;
  pollMs?: number;
  pingMs?: number;
  /**
   * More of our own state to watch (rollouts of any pool, issue 11): a string that changes when it
   * does. A change is pushed like new events.
   */
  watch?: () => Promise<string>;
}

export class ChangeFeed {
  readonly #o: ChangeFeedOptions;
  readonly #clients = new Set<Client>();
  #timer: NodeJS.Timeout | null = null;
  #ping: NodeJS.Timeout | null = null;
  #lastEventId = -1;
  #lastCounts = "";
  #lastWatch: string | null = null;
  #polling = false;
  #seq = 0;

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
      // The baseline is taken now, so a change right after this connect is not missed.
      if (this.#lastEventId < 0) this.#lastEventId = await this.#o.store.lastPoolEventId(this.#o.poolId);
      const counts = await this.#counts();
      if (this.#lastCounts === "") this.#lastCounts = counts;
      if (this.#lastWatch === null && this.#o.watch) this.#lastWatch = await this.#o.watch();
      // The page may have rendered a moment ago; the first message makes it catch up.
      this.#send([client], counts);
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "dashboard change feed start failed");
    }
    this.#start();
  }

  close(): void {
    for (const c of this.#clients) {
      clearTimeout(c.expiry);
      c.res.end();
    }
    this.#clients.clear();
    this.#stop();
  }

  #drop(c: Client): void {
    clearTimeout(c.expiry);
    this.#clients.delete(c);
    if (this.#clients.size === 0) this.#stop();
  }

  #start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.poll(), this.#o.pollMs ?? 1000);
    this.#ping = setInterval(() => {
      for (const c of this.#clients) c.res.write(": ping\n\n");
    }, this.#o.pingMs ?? 15_000);
  }

  #stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#ping) clearInterval(this.#ping);
    this.#timer = this.#ping = null;
    this.#lastEventId = -1;
    this.#lastCounts = "";
    this.#lastWatch = null;
  }

  async #counts(): Promise<string> {
    const s = await this.#o.summary();
    return JSON.stringify({ counts: s.counts, minIdle: s.minIdle, maxTotal: s.maxTotal });
  }

  /** One look at the store; pushes `changed` when there are new events or the counts moved. */
  async poll(): Promise<void> {
    if (this.#polling || this.#clients.size === 0) return;
    this.#polling = true;
    try {
      const { store, poolId } = this.#o;
      let moved = false;
      const events = await store.listPoolEventsSince(poolId, Math.max(0, this.#lastEventId), 500);
      if (events.length > 0) {
        this.#lastEventId = events.at(-1)!.id;
        moved = true;
      }
      const counts = await this.#counts();
      if (counts !== this.#lastCounts) moved = true;
      this.#lastCounts = counts;
      if (this.#o.watch) {
        const w = await this.#o.watch();
        if (w !== this.#lastWatch) moved = true;
        this.#lastWatch = w;
      }
      if (moved) this.#send([...this.#clients], counts);
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "dashboard change feed poll failed");
    } finally {
      this.#polling = false;
    }
  }

  #send(clients: Client[], counts: string): void {
    const data = `id: ${++this.#seq}\nevent: changed\ndata: ${counts}\n\n`;
    for (const c of clients) c.res.write(data);
  }
}
