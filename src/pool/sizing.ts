/**
 * Pool sizing (issue 13): how many idle instances a pool keeps. Pure: the reconciler, the bench
 * and the dashboard feed it numbers and get a target with the numbers it was made from.
 *
 * - `fixed`: the pool's min idle, always (what every pool did before).
 * - `demand`: target idle = clamp(floor, ceil(arrivals/min × refill p95 (min) × safety factor),
 *   ceiling). The product is the number of claims expected while one instance is being made
 *   (Little's law): with that many idle, a claim arriving during a refill still finds one warm.
 *   The arrival rate is measured over a sliding window. A higher target applies at once; a lower
 *   one only after the higher one has not been justified for `cooldownMinutes`. A schedule of
 *   floors (weekdays 08:00–10:00 in a stated time zone) raises the floor for known peaks.
 *
 * Max total and the deployment's global cap always win over any floor.
 */
import { z } from "zod";

export const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface ScheduleFloor {
  /** Days the window starts on, in the policy's time zone. */
  days: Weekday[];
  /** "HH:MM", inclusive. */
  from: string;
  /** "HH:MM", exclusive; later than `from` ("24:00" for the end of the day). */
  to: string;
  floor: number;
}

export interface DemandPolicy {
  mode: "demand";
  /** Never fewer idle than this (outside schedule windows). */
  floor: number;
  /** Never more idle than this; null: the pool's max total. */
  ceiling: number | null;
  safetyFactor: number;
  /** Arrival rate window. */
  windowMinutes: number;
  /** How long a higher target is kept after demand fell. */
  cooldownMinutes: number;
  /** IANA time zone the schedule is read in ("UTC", "Europe/Berlin"). */
  timeZone: string;
  schedule: ScheduleFloor[];
}

export type SizingPolicy = { mode: "fixed" } | DemandPolicy;

export const FIXED_POLICY: SizingPolicy = { mode: "fixed" };

const HHMM = /^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$/;

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const ScheduleFloorInput = z
  .object({
    days: z.array(z.enum(WEEKDAYS)).min(1).max(7),
    from: z.string().regex(HHMM, "a time HH:MM"),
    to: z.string().regex(HHMM, "a time HH:MM (24:00 for midnight)"),
    floor: z.number().int().min(0).max(1_000),
  })
  .strict()
  .refine((s) => minutesOf(s.from) < minutesOf(s.to), "`to` must be later than `from` on the same day");

/** A sizing policy as an operator writes it (API, CLI, POOLS_FILE); defaults filled in. */
export const SizingPolicyInput = z.discriminatedUnion("mode", [
  z.object({ mode: z.literal("fixed") }).strict(),
  z
    .object({
      mode: z.literal("demand"),
      floor: z.number().int().min(0).max(1_000).default(1),
      ceiling: z.number().int().min(0).max(10_000).nullable().default(null),
      safetyFactor: z.number().min(0.1).max(10).default(1),
      windowMinutes: z.number().int().min(1).max(1_440).default(15),
      cooldownMinutes: z.number().int().min(0).max(1_440).default(20),
      timeZone: z.string().min(1).max(64).refine(validTimeZone, "an IANA time zone such as UTC or Europe/Berlin").default("UTC"),
      schedule: z.array(ScheduleFloorInput).max(50).default([]),
    })
    .strict()
    .refine((p) => p.ceiling === null || p.floor <= p.ceiling, "floor must not be larger than ceiling"),
]);
export type SizingPolicyInput = z.input<typeof SizingPolicyInput>;

/** Parses a stored or given policy; anything unreadable is `fixed` (a pool never stops working). */
export function readSizingPolicy(v: unknown): SizingPolicy {
  if (v === null || v === undefined) return FIXED_POLICY;
  const r = SizingPolicyInput.safeParse(v);
  return r.success ? (r.data as SizingPolicy) : FIXED_POLICY;
}

/** What the planner remembers between passes (kept in memory by the lease holder). */
export interface SizingState {
  target: number;
  /** When the held target was last justified by demand (ms since epoch). */
  justifiedAt: number;
}

export interface SizingInput {
  policy: SizingPolicy;
  /** The pool's min idle: the target of `fixed`. */
  minIdle: number;
  maxTotal: number;
  /** The deployment's cap over every pool, if any. */
  globalMaxTotal?: number;
  /** Claims per minute over the window; null: no measurement yet. */
  arrivalsPerMinute: number | null;
  /** p95 of recent create → idle times; null: no boot seen yet. */
  refillP95Ms: number | null;
  /** Refill time assumed until one is measured. */
  defaultRefillMs: number;
  now: Date;
  previous: SizingState | null;
}

export type SizingReason = "fixed" | "demand" | "no_data" | "floor" | "schedule_floor" | "cooldown" | "capped";

export interface SizingDecision {
  target: number;
  /** ceil(rate × refill × safety) before floors, ceiling, cooldown and caps (null: fixed or no data). */
  demand: number | null;
  floor: number;
  ceiling: number;
  arrivalsPerMinute: number | null;
  refillP95Ms: number;
  safetyFactor: number;
  reason: SizingReason;
  state: SizingState;
  /** "target 7 idle: 2.1 claims/min × 3.2 min refill p95 × 1.0" */
  summary: string;
}

export function planSizing(i: SizingInput): SizingDecision {
  const nowMs = i.now.getTime();
  const cap = Math.max(0, Math.min(i.maxTotal, i.globalMaxTotal ?? Number.POSITIVE_INFINITY));
  const refill = i.refillP95Ms ?? i.defaultRefillMs;
  if (i.policy.mode === "fixed") {
    const target = Math.min(i.minIdle, cap);
    return {
      target,
      demand: null,
      floor: i.minIdle,
      ceiling: cap,
      arrivalsPerMinute: i.arrivalsPerMinute,
      refillP95Ms: refill,
      safetyFactor: 1,
      reason: target < i.minIdle ? "capped" : "fixed",
      state: { target, justifiedAt: nowMs },
      summary: `target ${target} idle: fixed min idle ${i.minIdle}${target < i.minIdle ? ` (capped at ${cap})` : ""}`,
    };
  }
  const p = i.policy;
  const scheduled = scheduleFloor(p, i.now);
  const floor = Math.max(p.floor, scheduled ?? 0);
  const ceiling = Math.min(p.ceiling ?? cap, cap);
  const demand = i.arrivalsPerMinute === null ? null : Math.ceil(round6(i.arrivalsPerMinute * (refill / 60_000) * p.safetyFactor));
  const wanted = Math.max(floor, demand ?? 0);
  let reason: SizingReason = demand === null ? "no_data" : demand >= floor ? "demand" : scheduled !== null && scheduled > p.floor ? "schedule_floor" : "floor";
  const desired = Math.min(wanted, ceiling);
  if (desired < wanted) reason = "capped";
  let target = desired;
  let justifiedAt = nowMs;
  const prev = i.previous;
  if (prev && desired < prev.target && nowMs - prev.justifiedAt < p.cooldownMinutes * 60_000) {
    // Scale down only once the higher target has gone unjustified for the whole cooldown.
    target = Math.min(prev.target, ceiling);
    justifiedAt = prev.justifiedAt;
    if (target > desired) reason = "cooldown";
  }
  const rate = i.arrivalsPerMinute === null ? "no claims measured yet" : `${fmt(i.arrivalsPerMinute)} claims/min`;
  const notes: string[] = [];
  if (reason === "cooldown") notes.push(`held for the cooldown; now ${desired}`);
  if (reason === "schedule_floor" || (scheduled !== null && scheduled > p.floor)) notes.push(`schedule floor ${scheduled}`);
  else if (reason === "floor" || reason === "no_data") notes.push(`floor ${floor}`);
  if (reason === "capped") notes.push(`capped at ${ceiling}, wanted ${wanted}`);
  return {
    target,
    demand,
    floor,
    ceiling,
    arrivalsPerMinute: i.arrivalsPerMinute,
    refillP95Ms: refill,
    safetyFactor: p.safetyFactor,
    reason,
    state: { target, justifiedAt },
    summary: `target ${target} idle: ${rate} × ${refill >= 60_000 ? `${fmt(refill / 60_000)} min` : `${Math.round(refill / 1000)} s`} refill p95${i.refillP95Ms === null ? " (assumed)" : ""} × ${p.safetyFactor.toFixed(1)}${notes.length ? ` (${notes.join(", ")})` : ""}`,
  };
}

/** The highest schedule floor whose window contains `now` (in the policy's time zone), or null. */
export function scheduleFloor(p: Pick<DemandPolicy, "schedule" | "timeZone">, now: Date): number | null {
  if (p.schedule.length === 0) return null;
  const { day, minutes } = localTime(now, p.timeZone);
  let best: number | null = null;
  for (const s of p.schedule) {
    if (!s.days.includes(day)) continue;
    if (minutes >= minutesOf(s.from) && minutes < minutesOf(s.to)) best = Math.max(best ?? 0, s.floor);
  }
  return best;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function localTime(now: Date, timeZone: string): { day: Weekday; minutes: number } {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone, weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    formatters.set(timeZone, f);
  }
  const parts = Object.fromEntries(f.formatToParts(now).map((x) => [x.type, x.value]));
  const day = String(parts.weekday ?? "Sun")
    .slice(0, 3)
    .toLowerCase() as Weekday;
  return { day, minutes: Number(parts.hour) * 60 + Number(parts.minute) };
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(":").map(Number);
  return h! * 60 + m!;
}

/**
 * Claims per minute over the window from per-minute counts: the claims counted divided by the
 * minutes the window really covers (a pool measured for 3 minutes is not diluted over 15). Null
 * when nothing was measured in the window.
 */
export function arrivalsPerMinute(m: { arrivals: number; oldestMinuteMs: number | null }, nowMs: number, windowMinutes: number): number | null {
  if (m.oldestMinuteMs === null) return null;
  const covered = Math.min(windowMinutes, Math.max(1, (nowMs - m.oldestMinuteMs) / 60_000));
  return m.arrivals / covered;
}

/** The p-th percentile (0..1, nearest rank) of the finite, non-negative values; null if none. */
export function percentile(xs: readonly number[], p: number): number | null {
  const v = xs.filter((x) => Number.isFinite(x) && x >= 0).sort((a, b) => a - b);
  if (v.length === 0) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))]!;
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

function fmt(x: number): string {
  return x >= 10 ? x.toFixed(0) : x.toFixed(1);
}
