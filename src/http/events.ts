/**
 * Server-sent events of status changes. One poller per process reads new `instance_events` rows
 * from the store and fans them out to every connected client, so every replica streams every
 * change (whichever replica made it) and nobody polls the provider. The poller runs only while
 * someone listens, and `close()` ends every stream so the server's close never waits on one.
 *
 * Wire format: `id: <event id>` / `event: status` / `data: {id, instanceId, from, to, actor,
 * reason, at}`; then `event: counts` / `data: <pool summary>` after a poll that found changes (and
 * once on connect); a `: ping` comment every 15 s. `Last-Event-ID` replays what was missed.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { InstanceEvent, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { eventView } from "./views.ts";

interface Client {
  res: ServerResponse;
  /** Events with an id at or below this are older than the connection (or were replayed). */
  floor: number;
  /** Ids replayed from Last-Event-ID, so the poller does not send them twice. */
  replayed: Set<number>;
}

export interface PoolEventStreamOptions {
  store: Store;
  poolId: string;
  /** The current counts, sent on connect and after changes. */
  summary: () => Promise<unknown>;
  logger: Logger;
  pollMs?: number;
  pingMs?: number;
  /**
   * How long an event id stays "recent". Ids come from a sequence, but on Postgres a transaction
   * can commit after one with a higher id: re-reading a short window catches such late rows.
   */
  lateCommitMs?: number;
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
  #timer: NodeJS.Timeout | null = null;
  #ping: NodeJS.Timeout | null = null;
  /** Every event with an id at or below this has been handled (modulo the late-commit window). */
  #floor = 0;
  /** Ids handled within the late-commit window, oldest first. */
  #recent: Array<{ id: number; at: number }> = [];
  readonly #recentIds = new Set<number>();
  #polling: Promise<void> | null = null;
  #closed = false;

  constructor(opts: PoolEventStreamOptions) {
    this.#o = opts;
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  get polling(): boolean {
    return this.#timer !== null;
  }

  /** Takes over the response and streams to it until the client goes away or `close()`. */
  async serve(req: IncomingMessage, reply: HijackableReply, lastEventId?: string): Promise<void> {
    if (this.#clients.size >= (this.#o.maxClients ?? 500)) throw new PoolError("NOT_READY", "Too many event streams are open; try again later.");
    // Read before taking over the response, so a store failure still answers as a normal error.
    const head = await this.#o.store.lastPoolEventId(this.#o.poolId);
    const summary = await this.#o.summary();
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
    if (this.#clients.size === 0) this.#resetCursor(head);
    this.#clients.add(client);
    res.on("close", () => this.#drop(client));
    res.on("error", () => this.#drop(client));
    this.#send(client, "retry: 2000\n\n");
    this.#send(client, frame("counts", summary));
    if (from !== null && from < head) await this.#replay(client, from, head);
    this.#start();
  }

  /** Ends every stream and stops the poller (server shutdown). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop();
    for (const c of this.#clients) c.res.end();
    this.#clients.clear();
    await this.#polling;
  }

  /** One poll now (tests; the timer calls the same). */
  poll(): Promise<void> {
    this.#polling ??= this.#pollOnce().finally(() => (this.#polling = null));
    return this.#polling;
  }

  #drop(client: Client): void {
    if (!this.#clients.delete(client)) return;
    if (!client.res.writableEnded) client.res.end();
    if (this.#clients.size === 0) this.#stop();
  }

  #start(): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setInterval(() => void this.poll(), this.#o.pollMs ?? 1000);
    this.#ping = setInterval(() => {
      for (const c of this.#clients) this.#send(c, ": ping\n\n");
    }, this.#o.pingMs ?? 15_000);
  }

  #stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#ping) clearInterval(this.#ping);
    this.#timer = null;
    this.#ping = null;
  }

  #resetCursor(head: number): void {
    this.#floor = head;
    this.#recent = [];
    this.#recentIds.clear();
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

  async #pollOnce(): Promise<void> {
    try {
      const now = Date.now();
      const lateMs = this.#o.lateCommitMs ?? 5_000;
      while (this.#recent.length > 0 && now - this.#recent[0]!.at > lateMs) {
        const old = this.#recent.shift()!;
        this.#recentIds.delete(old.id);
        if (old.id > this.#floor) this.#floor = old.id;
      }
      // Re-reads the recent window too (see lateCommitMs); pages so a burst cannot stall the cursor.
      const fresh: InstanceEvent[] = [];
      let after = this.#floor;
      for (let i = 0; i < 20; i++) {
        const page = await this.#o.store.listPoolEventsSince(this.#o.poolId, after, PAGE);
        for (const e of page) if (!this.#recentIds.has(e.id)) fresh.push(e);
        if (page.length < PAGE) break;
        after = page.at(-1)!.id;
      }
      if (fresh.length === 0 || this.#closed) return;
      for (const e of fresh) {
        this.#recent.push({ id: e.id, at: now });
        this.#recentIds.add(e.id);
      }
      for (const c of this.#clients) {
        for (const e of fresh) if (e.id > c.floor && !c.replayed.has(e.id)) this.#send(c, statusFrame(e));
        c.replayed.clear();
      }
      if (this.#clients.size > 0) {
        const counts = frame("counts", await this.#o.summary());
        for (const c of this.#clients) this.#send(c, counts);
      }
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "event stream poll failed");
    }
  }

  #send(c: Client, chunk: string): void {
    if (c.res.writableEnded || c.res.destroyed) return this.#drop(c);
    if (c.res.writableLength > MAX_BUFFERED) return this.#drop(c);
    c.res.write(chunk);
  }
}

function frame(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ""}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function statusFrame(e: InstanceEvent): string {
  return frame("status", { ...eventView(e), instanceId: e.instanceId }, e.id);
}
