/**
 * The stale-claim sweeper. A `claiming` row whose attempt is past its deadline plus a margin,
 * judged by the database clock, belongs to a claim that died (a pool manager killed mid-claim, a
 * process paused). The runtime is asked what it is: bound → claimed, pending → pending_acceptance,
 * clean → idle, otherwise crashed (never handed out, so the next pass retires it). The earlier
 * system had no sweeper and such rows stayed in `claiming` forever (seed §8).
 *
 * Every write is conditional on the attempt the sweeper judged stale still being the one on the
 * row: a newer claim that picked the row meanwhile is never touched. Before this rule a sweep that
 * acted on a snapshot read at the start of its pass moved a newer claim's row back to idle and
 * cleared it (issue 8's reproduction; regression test in sweeper.test.ts).
 */
import type { Clock } from "../clock.ts";
import type { InstanceRecord, Lease, Store, TransitionFields } from "../db/store.ts";
import type { InstanceTarget, RuntimeStatus } from "../instance/client.ts";
import type { InstanceStatus } from "../instance/status.ts";
import { RELEASED_CLAIM_FIELDS } from "../claim/claim.ts";
import { mapLimit } from "./map-limit.ts";

export interface StatusReader {
  status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus>;
}

export interface SweeperOptions {
  /** The pool to sweep; null: every pool. */
  poolId: string | null;
  store: Store;
  statusReader: StatusReader;
  clock: Clock;
  /** A `claiming` row is swept once its claim deadline is this far past (database clock). */
  marginMs: number;
  statusTimeoutMs: number;
  concurrency: number;
  /** Rows examined per run at most. */
  limit?: number;
}

export interface SweepNote {
  id: string;
  from: InstanceStatus;
  to: InstanceStatus;
  reason: string;
}

export interface SweepResult {
  /** Stale rows found. */
  examined: number;
  /** Rows resolved (the fence held). */
  resolved: SweepNote[];
  /** Rows whose attempt or lease changed before the write: left alone. */
  fencedOut: string[];
}

/** Pure: what a stale claim becomes, from what its runtime answered (null: no answer). */
export function resolveStaleClaim(row: InstanceRecord, s: RuntimeStatus | null, now: Date): { to: InstanceStatus; reason: string; set: TransitionFields } {
  if (s?.conversationId) {
    // The attempt did bind the runtime: it keeps its token and key (the claim, if it is still
    // running, completes as what it is; a retry with its key is answered from this row).
    return {
      to: "claimed",
      reason: "stale claim: runtime is bound",
      set: { conversationId: s.conversationId, inviteUrl: s.inviteUrl ?? row.inviteUrl, claimedAt: now },
    };
  }
  if (s?.pending) return { to: "pending_acceptance", reason: "stale claim: runtime is waiting for acceptance", set: { claimedAt: now } };
  if (s?.clean) return { to: "idle", reason: "stale claim: runtime is clean", set: RELEASED_CLAIM_FIELDS };
  // Nobody got this agent: release the claim's fields, so the reconciler retires the instance
  // instead of keeping it (and its slot) for an operator.
  return { to: "crashed", reason: s ? "stale claim: runtime neither bound nor clean" : "stale claim: runtime unreachable", set: RELEASED_CLAIM_FIELDS };
}

export class Sweeper {
  readonly #o: SweeperOptions;

  constructor(opts: SweeperOptions) {
    this.#o = opts;
  }

  async runOnce(lease?: Lease): Promise<SweepResult> {
    const o = this.#o;
    const stale = await o.store.staleClaims(o.poolId, o.marginMs, o.limit ?? 100);
    const result: SweepResult = { examined: stale.length, resolved: [], fencedOut: [] };
    // In parallel, bounded: one unreachable runtime costs a timeout, and a sequential sweep of many
    // would stretch the pass past its lease.
    await mapLimit(stale, o.concurrency, async (row) => {
      let s: RuntimeStatus | null = null;
      if (row.url) s = await o.statusReader.status({ url: row.url, gatewayToken: row.gatewayToken }, o.statusTimeoutMs).catch(() => null);
      const { to, reason, set } = resolveStaleClaim(row, s, o.clock.now());
      const done = await o.store.transition({
        id: row.id,
        from: "claiming",
        to,
        actor: "sweeper",
        reason,
        set,
        fence: { claimAttempt: row.claimAttempt, ...(lease ? { lease } : {}) },
      });
      if (done) result.resolved.push({ id: row.id, from: "claiming", to, reason });
      else result.fencedOut.push(row.id);
    });
    return result;
  }
}
