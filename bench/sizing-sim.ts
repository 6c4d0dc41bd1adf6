/**
 * The pool sizing simulation (issue 13), in simulated time: a trace of claim arrivals replayed
 * against a simulated provider whose instances take a random refill time (create → idle), with the
 * REAL planner (src/pool/sizing.ts) choosing the idle target at every reconcile pass. No sleeping,
 * no I/O; a seeded PRNG makes every run print the same figures.
 *
 * What it models of the real pool: a pass every 10 s creates up to the target (idle + starting),
 * from claim counts that reach the history once a minute (the current minute is not seen yet);
 * every claim triggers an immediate replenish (the claim hint); a claim takes an idle instance at
 * once (warm hit) or waits first-come first-served up to `maxWaitMs` for the next instance to come
 * up (a miss: served after waiting, or not at all); a `demand` pool retires idle instances above its
 * target (scale-down after the cooldown), like the reconciler. Claimed instances leave the pool
 * (max total is set high enough not to bind, so the policies are compared on sizing alone).
 */
import { arrivalsPerMinute, percentile, planSizing, type SizingPolicy, type SizingState } from "../src/pool/sizing.ts";

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MIN = 60_000;
const HOUR = 60 * MIN;

/** Arrival times (ms from the trace's start, sorted) of a non-homogeneous Poisson process (thinning). */
export function poissonArrivals(ratePerMin: (tMs: number) => number, maxRatePerMin: number, durationMs: number, rnd: () => number): number[] {
  const out: number[] = [];
  let t = 0;
  for (;;) {
    t += (-Math.log(1 - rnd()) / maxRatePerMin) * MIN;
    if (t >= durationMs) return out;
    if (rnd() * maxRatePerMin <= ratePerMin(t)) out.push(t);
  }
}

export interface Trace {
  name: string;
  /** Monday 00:00 UTC plus this is the trace's start (schedule floors are read from it). */
  startMs: number;
  durationMs: number;
  arrivals: number[];
}

const MONDAY = Date.parse("2026-11-30T00:00:00Z");

export function traces(seed: number): Trace[] {
  const rnd = mulberry32(seed);
  const day = 24 * HOUR;
  const hourOf = (t: number) => t / HOUR;
  // A working day: quiet night, a ramp from 07:00 to a 08:00–10:00 peak, a steady day, a quiet evening.
  const ramp = (t: number) => {
    const h = hourOf(t);
    if (h < 7) return 0.03;
    if (h < 8) return 0.03 + (h - 7) * 3.97;
    if (h < 10) return 4;
    if (h < 12) return 4 - (h - 10) * 1.5;
    if (h < 18) return 1;
    if (h < 19) return 1 - (h - 18) * 0.97;
    return 0.03;
  };
  const bursts = (() => {
    const base = poissonArrivals(() => 0.2, 0.2, 12 * HOUR, rnd);
    const extra: number[] = [];
    for (let b = 1; b <= 5; b++) for (let i = 0; i < 20; i++) extra.push(b * 2 * HOUR + rnd() * 1_000);
    return [...base, ...extra].sort((a, b) => a - b);
  })();
  return [
    { name: "steady Poisson 1/min, 12 h", startMs: MONDAY + 8 * HOUR, durationMs: 12 * HOUR, arrivals: poissonArrivals(() => 1, 1, 12 * HOUR, rnd) },
    { name: "morning ramp, a working day (24 h)", startMs: MONDAY, durationMs: day, arrivals: poissonArrivals(ramp, 4, day, rnd) },
    { name: "bursts of 20 claims in a second every 2 h over 0.2/min, 12 h", startMs: MONDAY + 8 * HOUR, durationMs: 12 * HOUR, arrivals: bursts },
    {
      name: "quiet night 0.03/min, 20:00–08:00",
      startMs: MONDAY + 20 * HOUR,
      durationMs: 12 * HOUR,
      arrivals: poissonArrivals(() => 0.03, 0.03, 12 * HOUR, rnd),
    },
  ];
}

export interface Refill {
  name: string;
  sample: (rnd: () => number) => number;
}

export const REFILLS: Refill[] = [
  { name: "local (2–8 s)", sample: (rnd) => 2_000 + rnd() * 6_000 },
  { name: "Railway-like (2–6 min)", sample: (rnd) => 2 * MIN + rnd() * 4 * MIN },
];

export interface SimOptions {
  policy: SizingPolicy;
  minIdle: number;
  maxTotal?: number;
  tickMs?: number;
  maxWaitMs?: number;
  defaultRefillMs: number;
  seed: number;
}

export interface SimResult {
  claims: number;
  warm: number;
  waited: number;
  empty: number;
  warmHitRate: number;
  p99WaitMs: number;
  idleInstanceHours: number;
  maxTarget: number;
}

export function simulate(trace: Trace, refill: Refill, o: SimOptions): SimResult {
  const rnd = mulberry32(o.seed);
  const tickMs = o.tickMs ?? 10_000;
  const maxWaitMs = o.maxWaitMs ?? 10 * MIN;
  const maxTotal = o.maxTotal ?? 200;
  let idle = 0;
  const ready: number[] = []; // times starting instances come up, sorted
  const queue: number[] = []; // arrival times of waiting claims, FIFO
  const waits: number[] = [];
  const boots: number[] = [];
  const perMinute = new Map<number, number>();
  let warm = 0;
  let waited = 0;
  let empty = 0;
  let idleMs = 0;
  let target = o.minIdle;
  let maxTarget = 0;
  let state: SizingState | null = null;
  let now = 0;
  let ai = 0;
  let nextTick = 0;

  const create = (n: number) => {
    for (let i = 0; i < n && idle + ready.length < maxTotal; i++) {
      const d = refill.sample(rnd);
      boots.push(d);
      if (boots.length > 50) boots.shift();
      const at = now + d;
      let j = ready.length;
      while (j > 0 && ready[j - 1]! > at) j--;
      ready.splice(j, 0, at);
    }
  };
  const replenish = () => create(Math.max(0, target - idle - ready.length));
  const expire = () => {
    while (queue.length > 0 && queue[0]! + maxWaitMs <= now) {
      queue.shift();
      empty++;
      waits.push(maxWaitMs);
    }
  };
  const pass = () => {
    const wall = trace.startMs + now;
    const windowMin = o.policy.mode === "demand" ? o.policy.windowMinutes : 15;
    let arrivals = 0;
    let oldest: number | null = null;
    const from = now - windowMin * MIN;
    // Replicas add their counts to the history once a minute (POOL_HISTORY_FLUSH_MS): the planner
    // sees the minutes written so far, not the one under way.
    const written = Math.floor(now / MIN) * MIN;
    for (const [m, n] of perMinute) {
      if (m >= from && m < written) {
        arrivals += n;
        oldest = oldest === null ? m : Math.min(oldest, m);
      }
    }
    // The history has a row for every minute since it began (the lease holder's snapshot).
    if (now >= MIN) oldest = Math.max(0, Math.ceil(from / MIN) * MIN);
    const d = planSizing({
      policy: o.policy,
      minIdle: o.minIdle,
      maxTotal,
      arrivalsPerMinute: oldest === null ? null : arrivalsPerMinute({ arrivals, oldestMinuteMs: trace.startMs + oldest }, wall, windowMin),
      refillP95Ms: percentile(boots, 0.95),
      defaultRefillMs: o.defaultRefillMs,
      now: new Date(wall),
      previous: state,
    });
    state = d.state;
    target = d.target;
    maxTarget = Math.max(maxTarget, target);
    if (o.policy.mode === "demand" && idle > target) idle = target; // scale-down: surplus idle retired
    replenish();
  };

  for (;;) {
    const nextArrival = ai < trace.arrivals.length ? trace.arrivals[ai]! : Number.POSITIVE_INFINITY;
    const nextReady = ready.length > 0 ? ready[0]! : Number.POSITIVE_INFINITY;
    const nextExpiry = queue.length > 0 ? queue[0]! + maxWaitMs : Number.POSITIVE_INFINITY;
    const t = Math.min(nextArrival, nextReady, nextTick, nextExpiry);
    if (t >= trace.durationMs) {
      idleMs += idle * (trace.durationMs - now);
      break;
    }
    idleMs += idle * (t - now);
    now = t;
    if (t === nextExpiry) expire();
    else if (t === nextReady) {
      ready.shift();
      if (queue.length > 0) {
        const at = queue.shift()!;
        waited++;
        waits.push(now - at);
      } else idle++;
    } else if (t === nextArrival) {
      ai++;
      const m = Math.floor(now / MIN) * MIN;
      perMinute.set(m, (perMinute.get(m) ?? 0) + 1);
      if (idle > 0 && queue.length === 0) {
        idle--;
        warm++;
        waits.push(0);
      } else queue.push(now);
      replenish();
    } else {
      nextTick += tickMs;
      pass();
    }
  }
  // Claims still waiting at the end count as misses with the time they waited.
  for (const at of queue) {
    empty++;
    waits.push(trace.durationMs - at);
  }
  const claims = warm + waited + empty;
  return {
    claims,
    warm,
    waited,
    empty,
    warmHitRate: claims === 0 ? 1 : warm / claims,
    p99WaitMs: percentile(waits, 0.99) ?? 0,
    idleInstanceHours: idleMs / HOUR,
    maxTarget,
  };
}
