/**
 * When each instance is health-checked next: a schedule per instance, not per pass (issue 10).
 *
 * Before, every pass checked every deployed instance, twice per check, so the health traffic grew
 * as instances × passes (at 1,000 instances and a booting one: ~8,000 requests a second). Now a
 * pass checks only the instances that are due, so the traffic is about N / cadence whatever the
 * tick:
 *
 * - booting instances are polled quickly, with backoff as their boot time grows;
 * - idle instances on a cadence (default 30 s), jittered so that checks spread evenly;
 * - claimed (and pending, crashed) instances less often: the claim path verifies an instance by
 *   provisioning it, and a claimed agent's user notices a dead agent before any check would;
 * - an instance whose last check failed, or whose deploy status changed, or that a hint named
 *   (a webhook, a local process exit), at once.
 *
 * The trade: an idle instance that dies is noticed within one idle cadence (or at once with a
 * webhook or a process exit), and a claim that picks it meanwhile costs one failed provision and a
 * retry on another instance (the claim path already does that).
 *
 * Pure: the reconciler keeps the map of next-check times; this module decides them.
 */
import type { InstanceStatus } from "../instance/status.ts";

export interface HealthCadence {
  /** First interval while booting; doubles with boot time up to `bootingMaxMs`. */
  bootingMinMs: number;
  bootingMaxMs: number;
  idleMs: number;
  claimedMs: number;
  /** Crashed and sleeping instances (kept for an operator, or asleep). */
  otherMs: number;
  /** Spread of the interval: ±this fraction, uniformly. */
  jitter: number;
}

/** Every deployed instance checked at every pass (tests that tick by hand and change runtimes between passes). */
export const EVERY_PASS: HealthCadence = { bootingMinMs: 0, bootingMaxMs: 0, idleMs: 0, claimedMs: 0, otherMs: 0, jitter: 0 };

export const DEFAULT_CADENCE: HealthCadence = {
  bootingMinMs: 1_000,
  bootingMaxMs: 15_000,
  idleMs: 30_000,
  claimedMs: 60_000,
  otherMs: 60_000,
  jitter: 0.2,
};

/** The interval before the next check of an instance in `status`, booting for `bootMs` so far. */
export function checkInterval(status: InstanceStatus, bootMs: number, c: HealthCadence, random: () => number): number {
  let base: number;
  switch (status) {
    case "starting":
      // Backoff as boot time grows: a tenth of the time booted so far, within [min, max].
      return Math.min(c.bootingMaxMs, Math.max(c.bootingMinMs, Math.floor(bootMs / 10)));
    case "idle":
      base = c.idleMs;
      break;
    case "claimed":
    case "pending_acceptance":
      base = c.claimedMs;
      break;
    default:
      base = c.otherMs;
  }
  return Math.round(base * (1 - c.jitter + 2 * c.jitter * random()));
}

/**
 * When an instance first seen by this replica (a restart, a new leader) is due: one its last
 * recorded check makes due soon is checked soon; the others are spread over one cadence, so a new
 * leader of 10,000 instances does not check them all in its first pass.
 */
export function firstCheckAt(status: InstanceStatus, lastCheckedAt: Date | null, now: number, c: HealthCadence, random: () => number): number {
  if (status === "starting") return now;
  const interval = checkInterval(status, 0, c, random);
  if (lastCheckedAt !== null) return Math.max(now, lastCheckedAt.getTime() + interval);
  return now + Math.floor(random() * interval);
}

export class HealthSchedule {
  readonly #next = new Map<string, number>();
  readonly #cadence: HealthCadence;
  readonly #random: () => number;

  constructor(cadence: HealthCadence = DEFAULT_CADENCE, random: () => number = Math.random) {
    this.#cadence = cadence;
    this.#random = random;
  }

  get cadence(): HealthCadence {
    return this.#cadence;
  }

  /** True when the instance should be checked now (first sight schedules it; see firstCheckAt). */
  due(id: string, status: InstanceStatus, lastCheckedAt: Date | null, now: number): boolean {
    let at = this.#next.get(id);
    if (at === undefined) {
      at = firstCheckAt(status, lastCheckedAt, now, this.#cadence, this.#random);
      this.#next.set(id, at);
    }
    return at <= now;
  }

  /** When the instance is due next (undefined: not scheduled yet). */
  nextAt(id: string): number | undefined {
    return this.#next.get(id);
  }

  /**
   * After a check: the next one is at the status's interval. After a failure, at once (the next
   * pass: a once-healthy instance needs several failures in a row before it is declared broken),
   * then backing off (1, 2, 4 s … up to the status's interval) so that a runtime that stays
   * unreachable does not cost a request every pass.
   */
  checked(id: string, status: InstanceStatus, bootMs: number, failures: number, now: number): void {
    const interval = checkInterval(status, bootMs, this.#cadence, this.#random);
    const delay = failures === 0 ? interval : failures === 1 ? 0 : Math.min(interval, 1_000 * 2 ** (failures - 2));
    this.#next.set(id, now + delay);
  }

  /** Check at the next pass (a failed check, a changed deploy status, a hint). */
  soon(id: string, now: number): void {
    this.#next.set(id, now);
  }

  /** Forgets instances that are gone. */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.#next.keys()) if (!ids.has(id)) this.#next.delete(id);
  }

  get size(): number {
    return this.#next.size;
  }
}
