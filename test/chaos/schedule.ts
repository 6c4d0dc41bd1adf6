/**
 * The seeded schedule of a fault run: which claims go where and when (and which carry an
 * idempotency key), and when the stand-in fails, a deployment crashes or a replica is killed.
 * Pure: the same seed and sizes give the same schedule.
 */
import type { FaultKind, FaultOptions } from "../railway/standin.ts";
import { Rng } from "./rng.ts";

export interface ScheduleOptions {
  claims: number;
  replicas: number;
  /** Claims start within this window from the start of the burst. */
  burstMs: number;
}

export interface PlannedClaim {
  index: number;
  atMs: number;
  /** Replica the first attempt goes to. */
  replica: number;
  /** Idempotency key, or null. */
  key: string | null;
  /** After a success, send the same key again (to another replica) and expect the same instance. */
  replay: boolean;
  /** `waitMs` of the claim body (0: fail at once on an empty pool). */
  waitMs: number;
  /**
   * After a success, the client lets its agent go this long after (DELETE /api/pool/instances/:id),
   * which keeps the pool churning through the burst; null: it keeps the agent.
   */
  releaseAfterMs: number | null;
}

export type ScheduledFault =
  | { atMs: number; kind: "fault"; label: string; fault: FaultKind; n: number; opts: FaultOptions }
  | { atMs: number; kind: "crash-idle" }
  | { atMs: number; kind: "crash-claimed" }
  /** SIGKILL the replica holding the reconciler lease (mid-pass, mid-create), or one of the others (`pick` among them). */
  | { atMs: number; kind: "kill"; target: "leader" | "follower"; pick: number };

export interface Schedule {
  seed: number;
  claims: PlannedClaim[];
  events: ScheduledFault[];
}

const FAULT_MENU = ["html5xx", "429burst", "ambiguous-create", "outage", "html5xx", "429burst"] as const;

export function makeSchedule(seed: number, o: ScheduleOptions): Schedule {
  const rng = new Rng(seed);
  const cr = rng.fork("claims");
  const claims: PlannedClaim[] = [];
  for (let index = 0; index < o.claims; index++) {
    // A fifth arrive as a herd in the first second; the rest spread over the burst.
    const herd = cr.chance(0.2);
    const atMs = herd ? cr.int(0, 1000) : cr.int(0, o.burstMs);
    const replica = cr.int(0, o.replicas - 1);
    const keyed = cr.chance(0.4);
    const replay = keyed && cr.chance(0.5);
    const waitMs = cr.chance(0.2) ? cr.int(500, 3000) : 0;
    const releaseAfterMs = cr.chance(0.8) ? cr.int(500, 4000) : null;
    claims.push({ index, atMs, replica, key: keyed ? `chaos-${seed}-${index}` : null, replay, waitMs, releaseAfterMs });
  }

  const fr = rng.fork("faults");
  const b = o.burstMs;
  const events: ScheduledFault[] = [];
  const faults = Math.max(4, Math.round(b / 2500));
  for (let i = 0; i < faults; i++) {
    const atMs = fr.int(Math.round(0.05 * b), Math.round(0.9 * b));
    // The first two are always a 5xx and a 429 burst: every run has both.
    const what = i < FAULT_MENU.length ? FAULT_MENU[i]! : fr.pick(FAULT_MENU);
    events.push(fault(fr, atMs, what));
  }
  events.push({ atMs: fr.int(Math.round(0.1 * b), Math.round(0.4 * b)), kind: "crash-idle" });
  events.push({ atMs: fr.int(Math.round(0.3 * b), Math.round(0.8 * b)), kind: "crash-claimed" });
  events.push({
    atMs: fr.int(Math.round(0.3 * b), Math.round(0.6 * b)),
    kind: "kill",
    target: fr.chance(0.5) ? "leader" : "follower",
    pick: fr.int(0, o.replicas - 2),
  });
  events.sort((x, y) => x.atMs - y.atMs);
  return { seed, claims, events };
}

function fault(fr: Rng, atMs: number, what: (typeof FAULT_MENU)[number]): ScheduledFault {
  switch (what) {
    case "html5xx": {
      const status = fr.pick([502, 503, 504]);
      const n = fr.int(1, 3);
      return { atMs, kind: "fault", label: `${n}× HTML ${status}`, fault: "html5xx", n, opts: { status } };
    }
    case "429burst": {
      const n = fr.int(1, 4);
      return { atMs, kind: "fault", label: `${n}× 429`, fault: "429burst", n, opts: { retryAfterSec: 1 } };
    }
    case "ambiguous-create":
      // The service is made, the answer is lost: the provider must find and remove it (or the
      // orphan sweep must), and the pool must still never hold more than max total.
      return {
        atMs,
        kind: "fault",
        label: "serviceCreate executed, answer lost (502)",
        fault: "html5xx",
        n: 1,
        opts: { status: 502, match: "serviceCreate(input", afterExecute: true },
      };
    case "outage": {
      const durationMs = fr.int(300, 1500);
      const mode = fr.pick(["reset", "503"] as const);
      return { atMs, kind: "fault", label: `outage ${durationMs} ms (${mode})`, fault: "outage", n: 1, opts: { durationMs, mode } };
    }
  }
}
