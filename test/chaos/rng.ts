/**
 * The fault run's only source of randomness: a seeded PRNG (mulberry32), so the schedule of a run
 * (which claims carry idempotency keys, when faults fire, whether the lease holder is killed) is replayed
 * exactly from its seed. Timing on a loaded machine still varies; the schedule does not.
 */
import { prng } from "../support/faulty-fleet.ts";

export class Rng {
  readonly #next: () => number;

  constructor(readonly seed: number) {
    this.#next = prng(seed);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.#next();
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("rng.pick: no items");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** A derived generator: one stream per concern, so adding a draw to one does not shift the others. */
  fork(label: string): Rng {
    let h = this.seed >>> 0;
    for (const c of label) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
    return new Rng(h);
  }
}

/** A fresh seed for a run that was not given one (printed, so the run can be replayed). */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}
