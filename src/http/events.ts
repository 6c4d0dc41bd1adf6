/**
 * Server-sent events of status changes. The streams of a process share one reader
 * (`PoolChangeWatcher`): a change written by any replica makes the database NOTIFY, the watcher
 * reads the new events once, and this fans them out to every connected client. Nobody polls the
 * provider, and no connection polls the database. `close()` ends every stream so the server's
 * close never waits on one.
 *
 * Backpressure: at most `maxClients` streams per process (then 503 NOT_READY); a client that lets
 * more than 1 MiB pile up unread is dropped rather than buffered without bound (its EventSource
 * reconnects with Last-Event-ID and replays what it missed).
 *
 * Wire format: `id: <event id>` / `event: status` / `data: {id, instanceId, from, to, actor,
 * reason, at}`; then `event: counts` / `data: <pool summary>` after a read that found changes (and
 * once on connect); a `: ping` comment every 15 s. `Last-Event-ID` replays what was missed.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { InstanceEvent, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { PoolSummary } from "../pool/operations.ts";
import type { PoolChange, PoolChangeWatcher } from "./changes.ts";
import { eventView } from "./views.ts";

interface Client {
  res: ServerResponse;
  /** Events with an id at or below this are older than the connection (or were replayed). */
  floor: number;
  /** Ids replayed from Last-Event-ID, so a live read does not send them twice. */
  replayed: Set<number>;
}

export interface PoolEventStreamOptions {
  store: Store;
  poolId: string;
  /** The process's one reader of changes (shared with the dashboard). */
  changes: PoolChangeWatcher;
  /** The current summary, read once per connection (sent on connect). */
  summary: () => Promise<PoolSummary>;
  /** The summary as the stream sends it (`event: counts`). */
  view: (s: PoolSummary) => unknown;
  logger: Logger;
  pingMs?: number;
  /** Most concurrent streams per process. */
  maxClients?: number;
}

/** The part of a Fastify reply the stream needs. */
export interface HijackableReply {
  hijack(): unknown;
  raw: ServerResponse;
}

const PAGE = 500;
/** A client this far behind (bytes buffered) is dropped rather than buffered without bound. */
const MAX_BUFFERED = 1 << 20;

export class PoolEventStream {
  readonly #o: PoolEventStreamOptions;
  readonly #clients = new Set<Client>();
  #ping: NodeJS.Timeout | null = null;
  #lastCounts = "";
  #closed = false;
  readonly #onChange = (c: PoolChange) => this.#fanOut(c);

  constructor(opts: PoolEventStreamOptions) {
    this.#o = opts;
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  /** Takes over the response and streams to it until the client goes away or `close()`. */
  async serve(req: IncomingMessage, reply: HijackableReply, lastEventId?: string): Promise<void> {
    if (this.#clients.size >= (this.#o.maxClients ?? 500)) throw new PoolError("NOT_READY", "Too many event streams are open; try again later.");
    // Read before taking over the response, so a store failure still answers as a normal error.
    const head = await this.#o.store.lastPoolEventId(this.#o.poolId);
    const summary = this.#o.view(await this.#o.summary());
    if (this.#closed) throw new PoolError("NOT_READY", "The server is shutting down.");
    if (req.destroyed) {
      // Gone while we read: nothing to stream, but the reply must still be taken over.
      reply.hijack();
      reply.raw.end();
      return;
    }

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const from = lastEventId !== undefined && /^\d+$/.test(lastEventId) ? Number(lastEventId) : null;
    const client: Client = { res, floor: head, replayed: new Set() };
    this.#clients.add(client);
    res.on("close", () => this.#drop(client));
    res.on("error", () => this.#drop(client));
    this.#send(client, "retry: 2000\n\n");
    this.#send(client, frame("counts", summary));
    if (from !== null && from < head) await this.#replay(client, from, head);
    if (!this.#clients.has(client)) return;
    this.#o.changes.add(this.#onChange, head);
    this.#startPing();
  }

  /** Ends every stream (server shutdown). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const c of this.#clients) c.res.end();
    this.#clients.clear();
    this.#stopIdle();
  }

  #drop(client: Client): void {
    if (!this.#clients.delete(client)) return;
    if (!client.res.writableEnded) client.res.end();
    if (this.#clients.size === 0) this.#stopIdle();
  }

  #startPing(): void {
    if (this.#ping || this.#closed) return;
    this.#ping = setInterval(() => {
      for (const c of this.#clients) this.#send(c, ": ping\n\n");
    }, this.#o.pingMs ?? 15_000);
  }

  /** Nobody listens: stop pinging and stop asking the watcher for changes. */
  #stopIdle(): void {
    if (this.#ping) clearInterval(this.#ping);
    this.#ping = null;
    this.#lastCounts = "";
    this.#o.changes.remove(this.#onChange);
  }

  async #replay(client: Client, from: number, head: number): Promise<void> {
    let after = from;
    while (after < head && this.#clients.has(client)) {
      const page = await this.#o.store.listPoolEventsSince(this.#o.poolId, after, PAGE);
      for (const e of page) {
        if (e.id > head) return;
        client.replayed.add(e.id);
        this.#send(client, statusFrame(e));
      }
      if (page.length < PAGE) return;
      after = page.at(-1)!.id;
    }
  }

  /** One read's result to every client: the events each has not seen, then the counts if they moved. */
  #fanOut(change: PoolChange): void {
    if (this.#closed) return;
    const counts = JSON.stringify(this.#o.view(change.summary));
    const moved = counts !== this.#lastCounts;
    this.#lastCounts = counts;
    if (change.events.length === 0 && !moved) return;
    const frames = change.events.map((e) => ({ id: e.id, text: statusFrame(e) }));
    const countsFrame = `event: counts\ndata: ${counts}\n\n`;
    for (const c of [...this.#clients]) {
      for (const f of frames) if (f.id > c.floor && !c.replayed.has(f.id)) this.#send(c, f.text);
      c.replayed.clear();
      this.#send(c, countsFrame);
    }
  }

  #send(c: Client, chunk: string): void {
    if (!this.#clients.has(c)) return;
    if (c.res.writableEnded || c.res.destroyed || c.res.writableLength > MAX_BUFFERED) {
      this.#drop(c);
      return;
    }
    c.res.write(chunk);
  }
}

function frame(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ""}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function statusFrame(e: InstanceEvent): string {
  return frame("status", { ...eventView(e), instanceId: e.instanceId }, e.id);
}
