/**
 * Waiting claims, served first come, first served across replicas (issue 13).
 *
 * A claim with `waitMs` that finds no idle instance joins its pools' queue (`store.joinClaimQueue`:
 * a ticket, bounded per pool) and waits for its turn. The order is the database's, not this
 * process's: every pick on every replica is conditional, in its own statement, on no earlier live
 * waiter of the instance's pool (migration 0013, db/claim-waiters.ts). This class only decides
 * WHEN this process's waiters look:
 *
 * - on a change hint of one of their pools (the NOTIFY the database sends when any replica writes
 *   a status change, e.g. an instance turning idle, or when a waiter leaves): the earliest local
 *   waiter of that pool tries its turn; a later local one cannot pass it anyway. A served waiter
 *   wakes the next local one at once (there may be a second idle instance);
 * - every `recheckMs` (default 5 s) without a hint, because a hint can be lost;
 * - never by polling: no waiter reads the database every 200 ms.
 *
 * One heartbeat statement per process renews the rows of all its waiters (database clock): a
 * process that dies stops renewing and its waiters' places lapse after `ttlMs`, so nobody waits
 * behind them for longer than that. A waiter whose place lapsed anyway (this process stalled past
 * its TTL) gives up rather than take a turn it no longer has. A waiter that times out, whose client
 * went away (`signal`), or whose process shuts down leaves the queue (fenced on its ticket).
 */
import type { ClaimPickResult, QueuePlace, Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";

export interface ClaimWaitQueueOptions {
  store: Store;
  logger: Logger;
  /** This process, recorded on its waiters' rows (for people). */
  owner: string;
  /** Most live waiters one pool's queue holds; a claim beyond it is refused (QUEUE_FULL). Default 100. */
  maxLength?: number;
  /** How long a waiter's row stays live without a heartbeat (database clock). Default 15 s. */
  ttlMs?: number;
  /** How often this process renews its waiters' rows. Default a third of `ttlMs`. */
  heartbeatMs?: number;
  /** How often waiters look again without a hint (a hint can be lost). Default 5 s. */
  recheckMs?: number;
  /** A claim was refused because a pool's queue is full (metrics). */
  onRejected?: (poolId: string) => void;
}

export interface WaitRequest {
  /** The pools the claim may take from (it waits in each, with one ticket). */
  poolIds: readonly string[];
  /** Give up after this long. */
  timeoutMs: number;
  /** Aborted when the client went away: the waiter gives its place up. */
  signal?: AbortSignal | undefined;
  /** One pick at the waiter's place (the claim's own `store.claimIdle`). */
  pick: (place: QueuePlace) => Promise<ClaimPickResult>;
}

export type WaitResult =
  /** The waiter's turn came and its pick found something (an instance, or a conflict to report). */
  | { kind: "turn"; pick: Exclude<ClaimPickResult, { kind: "empty" }>; ticket: number }
  /** The queue of `poolId` holds `maxLength` waiters: nothing was written. */
  | { kind: "full"; poolId: string; waiting: number }
  /** No turn came: the wait timed out, the client went away, the place lapsed, or the process is closing. */
  | { kind: "gave_up"; why: GiveUpReason };

export type GiveUpReason = "timeout" | "aborted" | "lapsed" | "closed";

/** What made a waiter look: its join, a change hint, the re-check, the waiter before it served, a wake-up during its last pick. */
type LookCause = "joined" | "hint" | "recheck" | "next" | "again";

interface Waiter {
  readonly ticket: number;
  readonly poolIds: readonly string[];
  readonly pick: (place: QueuePlace) => Promise<ClaimPickResult>;
  /** A pick is in flight (at most one per waiter). */
  busy: boolean;
  /** A wake-up came during the pick in flight: look once more after it. */
  again: boolean;
  /** Set when the wait must end but a pick is in flight: it ends after that pick. */
  stop: GiveUpReason | null;
  settled: boolean;
  settle: (r: WaitResult | { error: unknown }) => void;
}

export class ClaimWaitQueue {
  readonly #o: ClaimWaitQueueOptions;
  readonly #waiters = new Map<number, Waiter>();
  #listening: Promise<void> | null = null;
  #unsubscribe: (() => Promise<void>) | null = null;
  #heartbeat: NodeJS.Timeout | null = null;
  #recheck: NodeJS.Timeout | null = null;
  #closed = false;
  /**
   * Picks made, by what caused them (tests assert that waiting is not polling). A wake-up during a
   * pick in flight makes one more pick after it (`again`), or none when that pick was the turn.
   */
  readonly looks: Record<LookCause, number> = { joined: 0, hint: 0, recheck: 0, next: 0, again: 0 };
  /** Heartbeat statements that renewed this process's waiters (tests). */
  renewals = 0;

  constructor(opts: ClaimWaitQueueOptions) {
    this.#o = opts;
  }

  get maxLength(): number {
    return this.#o.maxLength ?? 100;
  }

  get #ttlMs(): number {
    return this.#o.ttlMs ?? 15_000;
  }

  /** Waiters of this process (tests). */
  get size(): number {
    return this.#waiters.size;
  }

  /** Joins the pools' queue and waits for this claim's turn (see the file's comment). */
  async wait(req: WaitRequest): Promise<WaitResult> {
    if (this.#closed) return { kind: "gave_up", why: "closed" };
    if (req.signal?.aborted) return { kind: "gave_up", why: "aborted" };
    // Listening before joining: a hint sent after the join must reach this waiter.
    await this.#listen();
    const joined = await this.#o.store.joinClaimQueue({ poolIds: req.poolIds, owner: this.#o.owner, ttlMs: this.#ttlMs, maxLength: this.maxLength });
    if (joined.kind === "full") {
      this.#o.onRejected?.(joined.poolId);
      return joined;
    }
    return new Promise<WaitResult>((resolve, reject) => {
      const onAbort = () => this.#end(w, "aborted");
      const timer = setTimeout(() => this.#end(w, "timeout"), Math.max(0, req.timeoutMs));
      const w: Waiter = {
        ticket: joined.ticket,
        poolIds: req.poolIds,
        pick: req.pick,
        busy: false,
        again: false,
        stop: null,
        settled: false,
        settle: (r) => {
          if (w.settled) return;
          w.settled = true;
          clearTimeout(timer);
          req.signal?.removeEventListener("abort", onAbort);
          this.#waiters.delete(w.ticket);
          if (this.#waiters.size === 0) this.#stopTimers();
          if ("error" in r) reject(r.error);
          else resolve(r);
        },
      };
      this.#waiters.set(w.ticket, w);
      req.signal?.addEventListener("abort", onAbort, { once: true });
      this.#startTimers();
      if (this.#closed) return this.#end(w, "closed");
      if (req.signal?.aborted) return this.#end(w, "aborted");
      // An instance may have turned idle between the claim's first look and the join.
      void this.#look(w, "joined");
    });
  }

  /** Every local waiter gives up and leaves the queue (shutdown); no new one joins. */
  async close(): Promise<void> {
    this.#closed = true;
    const ending = [...this.#waiters.values()].map(
      (w) =>
        new Promise<void>((r) => {
          const settle = w.settle;
          w.settle = (x) => {
            settle(x);
            r();
          };
          this.#end(w, "closed");
        }),
    );
    await Promise.all(ending);
    this.#stopTimers();
    const off = this.#unsubscribe;
    this.#unsubscribe = null;
    await off?.().catch(() => undefined);
  }

  #listen(): Promise<void> {
    this.#listening ??= this.#o.store
      .subscribeHints((h) => {
        if (h.kind !== "changed") return;
        const w = this.#headOf(h.pool);
        if (w) void this.#look(w, "hint");
      })
      .then((off) => {
        this.#unsubscribe = off;
      })
      .catch((err) => {
        this.#o.logger.warn({ err: (err as Error).message }, "waiting claims: could not listen for change hints; looking at the re-check interval only");
      });
    return this.#listening;
  }

  /** This process's earliest waiter of the pool (a later one could not pass it). */
  #headOf(poolId: string): Waiter | undefined {
    let head: Waiter | undefined;
    for (const w of this.#waiters.values()) if (!w.settled && w.poolIds.includes(poolId) && (!head || w.ticket < head.ticket)) head = w;
    return head;
  }

  /** One pick at the waiter's place; coalesced with a pick in flight. */
  async #look(w: Waiter, cause: LookCause): Promise<void> {
    if (w.settled) return;
    if (w.busy) {
      w.again = true;
      return;
    }
    w.busy = true;
    this.looks[cause]++;
    let r: ClaimPickResult;
    try {
      r = await w.pick({ ticket: w.ticket, serve: true });
    } catch (err) {
      w.busy = false;
      await this.#leave(w);
      return w.settle({ error: err });
    }
    w.busy = false;
    if (r.kind === "picked") {
      // The pick removed the waiter from the queue in the same statement.
      w.settle({ kind: "turn", pick: r, ticket: w.ticket });
      for (const p of w.poolIds) {
        const next = this.#headOf(p);
        if (next) void this.#look(next, "next");
      }
      return;
    }
    if (r.kind !== "empty") {
      // A conflict the claim reports (joined already, key taken): it waits no more.
      await this.#leave(w);
      return w.settle({ kind: "turn", pick: r, ticket: w.ticket });
    }
    if (w.stop) return this.#end(w, w.stop);
    if (w.again) {
      w.again = false;
      return this.#look(w, "again");
    }
  }

  /** Ends a wait without a turn: after the pick in flight, if any; leaves the queue first. */
  #end(w: Waiter, why: GiveUpReason): void {
    if (w.settled) return;
    if (w.busy) {
      w.stop ??= why;
      return;
    }
    w.busy = true; // no pick starts while leaving
    void this.#leave(w).then(() => w.settle({ kind: "gave_up", why }));
  }

  /** Removes the waiter's rows, conditional on its ticket (a row already gone is fine). */
  async #leave(w: Waiter): Promise<void> {
    await this.#o.store.leaveClaimQueue(w.ticket).catch((err) => {
      // Its row lapses after the TTL by itself; until then it holds later waiters back.
      this.#o.logger.warn({ err: (err as Error).message, ticket: w.ticket }, "waiting claims: could not leave the queue; the place lapses after its TTL");
    });
  }

  #startTimers(): void {
    if (!this.#recheck) {
      this.#recheck = setInterval(() => {
        const pools = new Set<string>();
        for (const w of this.#waiters.values()) for (const p of w.poolIds) pools.add(p);
        const heads = new Set<Waiter>();
        for (const p of pools) {
          const w = this.#headOf(p);
          if (w) heads.add(w);
        }
        for (const w of heads) void this.#look(w, "recheck");
      }, this.#o.recheckMs ?? 5_000);
      this.#recheck.unref();
    }
    if (!this.#heartbeat) {
      this.#heartbeat = setInterval(() => void this.#renew(), this.#o.heartbeatMs ?? Math.max(50, Math.floor(this.#ttlMs / 3)));
      this.#heartbeat.unref();
    }
  }

  #stopTimers(): void {
    if (this.#recheck) clearInterval(this.#recheck);
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#recheck = this.#heartbeat = null;
  }

  /** One statement renews every local waiter; one whose place lapsed gives up. */
  async #renew(): Promise<void> {
    const tickets = [...this.#waiters.keys()];
    if (tickets.length === 0) return;
    let renewed: Set<number>;
    try {
      renewed = new Set(await this.#o.store.renewClaimWaiters(tickets, this.#ttlMs));
      this.renewals++;
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "waiting claims: heartbeat failed; retrying at the next one");
      return;
    }
    for (const t of tickets) {
      const w = this.#waiters.get(t);
      // A waiter served meanwhile has no row any more, and has settled (or settles with its pick).
      if (w && !renewed.has(t)) {
        this.#o.logger.warn({ ticket: t }, "waiting claims: a waiter's place lapsed (this process stalled past its TTL); it gives up");
        this.#end(w, "lapsed");
      }
    }
  }
}
