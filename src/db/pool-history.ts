/**
 * The SQL of pools' per-minute history (issue 13; migration 0012). KyselyStore delegates here.
 *
 * Every replica ADDS its counts to a bucket in one upsert per pool (counters and histograms add up
 * element by element), so replicas side by side never overwrite each other; the snapshot columns
 * are replaced only when a write carries them (the lease holder's). Minutes are the database's.
 */
import { sql, type Kysely } from "kysely";
import type { HistoryRow, HistoryWrite } from "../pool/history.ts";
import { canTransition } from "../instance/status.ts";
import { leaseHeld } from "./fence.ts";
import type { Lease } from "./store.ts";
import type { Database } from "./tables.ts";

const ms = (n: number) => sql`(${n}::double precision * interval '1 millisecond')`;
const intArray = (xs: readonly number[]) => `{${xs.map((x) => Math.max(0, Math.round(x))).join(",")}}`;
/** Element-wise sum of two int arrays of any lengths (a missing element counts 0). */
const addArrays = (a: string, b: string) =>
  sql.raw(`ARRAY(SELECT COALESCE(x, 0) + COALESCE(y, 0) FROM unnest(${a}, ${b}) WITH ORDINALITY AS t(x, y, n) ORDER BY n)`);

export async function addPoolHistory(db: Kysely<Database>, rows: readonly HistoryWrite[]): Promise<void> {
  if (rows.length === 0) return;
  const values = rows.map((r) => {
    const s = r.snapshot;
    return sql`(${r.poolId}, date_trunc('minute', now() - ${ms(Math.max(0, r.ageMs))}),
      ${r.claimsWarm}::int, ${r.claimsWaited}::int, ${r.claimsEmpty}::int, ${r.claimsFailed}::int, ${intArray(r.latencyHist)}::int[],
      ${Math.round(r.waitMsSum)}::bigint, ${Math.round(r.waitMsMax)}::int, ${r.refills}::int, ${Math.round(r.refillMsSum)}::bigint,
      ${Math.round(r.refillMsMax)}::int, ${r.idleSeconds}::float8,
      ${s?.idle ?? null}::int, ${s?.starting ?? null}::int, ${s?.claimed ?? null}::int, ${s?.other ?? null}::int,
      ${s?.target ?? null}::int, ${s?.targetSummary ?? null}::text)`;
  });
  // Two rows of one statement may not hit the same key: a writer sends one row per pool and minute.
  await sql`
    INSERT INTO pool_history AS h (pool_id, minute, claims_warm, claims_waited, claims_empty, claims_failed, latency_hist,
                                   wait_ms_sum, wait_ms_max, refills, refill_ms_sum, refill_ms_max, idle_seconds,
                                   idle, starting, claimed, other, target, target_summary)
    VALUES ${sql.join(values)}
    ON CONFLICT (pool_id, minute) DO UPDATE SET
      claims_warm = h.claims_warm + EXCLUDED.claims_warm,
      claims_waited = h.claims_waited + EXCLUDED.claims_waited,
      claims_empty = h.claims_empty + EXCLUDED.claims_empty,
      claims_failed = h.claims_failed + EXCLUDED.claims_failed,
      latency_hist = ${addArrays("h.latency_hist", "EXCLUDED.latency_hist")},
      wait_ms_sum = h.wait_ms_sum + EXCLUDED.wait_ms_sum,
      wait_ms_max = GREATEST(h.wait_ms_max, EXCLUDED.wait_ms_max),
      refills = h.refills + EXCLUDED.refills,
      refill_ms_sum = h.refill_ms_sum + EXCLUDED.refill_ms_sum,
      refill_ms_max = GREATEST(h.refill_ms_max, EXCLUDED.refill_ms_max),
      idle_seconds = h.idle_seconds + EXCLUDED.idle_seconds,
      idle = COALESCE(EXCLUDED.idle, h.idle),
      starting = COALESCE(EXCLUDED.starting, h.starting),
      claimed = COALESCE(EXCLUDED.claimed, h.claimed),
      other = COALESCE(EXCLUDED.other, h.other),
      target = COALESCE(EXCLUDED.target, h.target),
      target_summary = COALESCE(EXCLUDED.target_summary, h.target_summary)`.execute(db);
}

/** A pool's minutes from `sinceMs` ago (database clock) to now, oldest first. */
export async function poolHistory(db: Kysely<Database>, poolId: string, sinceMs: number): Promise<{ rows: HistoryRow[]; now: Date }> {
  const [{ rows }, now] = await Promise.all([
    sql<Record<string, unknown>>`
      SELECT * FROM pool_history WHERE pool_id = ${poolId} AND minute >= date_trunc('minute', now() - ${ms(sinceMs)}) ORDER BY minute`.execute(db),
    databaseNow(db),
  ]);
  return { rows: rows.map(toRow), now };
}

/**
 * Claims that wanted an instance (warm, waited, empty) in the pool's last `windowMs`, the oldest
 * minute counted, and the database's now: what the planner's arrival rate is made from.
 */
export async function claimArrivals(
  db: Kysely<Database>,
  poolId: string,
  windowMs: number,
): Promise<{ arrivals: number; oldestMinute: Date | null; now: Date }> {
  const { rows } = await sql<{ arrivals: number; oldest: Date | string | null; now: Date | string }>`
    SELECT COALESCE(sum(claims_warm + claims_waited + claims_empty), 0)::int AS arrivals, min(minute) AS oldest, now() AS now
      FROM pool_history WHERE pool_id = ${poolId} AND minute >= now() - ${ms(windowMs)}`.execute(db);
  const r = rows[0]!;
  return { arrivals: Number(r.arrivals), oldestMinute: r.oldest === null ? null : new Date(r.oldest), now: new Date(r.now) };
}

/**
 * Scale-down of a demand-sized pool (issue 13): its oldest idle, unprotected instance goes to
 * `dead` (the next pass deletes its resource) only while more than `keepIdle` are idle, counted in
 * the same statement; the row is locked, so a claim that took it first wins and this retires
 * nothing. Fenced on the lease. Returns the retired instance's id, or null.
 */
export async function retireSurplusIdle(db: Kysely<Database>, poolId: string, keepIdle: number, reason: string, fence?: Lease): Promise<string | null> {
  if (!canTransition("idle", "dead", "reconciler")) throw new Error("retireSurplusIdle: the transition table no longer allows it");
  const { rows } = await sql<{ id: string }>`
    WITH cur AS (
      SELECT i.id FROM instances i
       WHERE i.pool_id = ${poolId} AND i.status = 'idle' AND NOT i.protected AND i.deleted_at IS NULL
         AND (SELECT count(*) FROM instances c WHERE c.pool_id = ${poolId} AND c.status = 'idle' AND c.deleted_at IS NULL) > ${keepIdle}
         AND ${leaseHeld(fence)}
       ORDER BY i.status_changed_at, i.id
       LIMIT 1
       FOR UPDATE OF i SKIP LOCKED
    ), upd AS (
      UPDATE instances i SET status = 'dead', status_changed_at = now(), updated_at = now()
        FROM cur WHERE i.id = cur.id AND i.status = 'idle'
      RETURNING i.id, i.pool_id
    ), ev AS (
      INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
      SELECT id, pool_id, 'idle', 'dead', 'reconciler', ${reason}::text FROM upd
    )
    SELECT id FROM upd`.execute(db);
  return rows[0]?.id ?? null;
}

export async function prunePoolHistory(db: Kysely<Database>, olderThanMs: number, batch: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    WITH old AS (
      SELECT pool_id, minute FROM pool_history WHERE minute < now() - ${ms(olderThanMs)} ORDER BY minute LIMIT ${batch}
    ), gone AS (
      DELETE FROM pool_history h USING old WHERE h.pool_id = old.pool_id AND h.minute = old.minute RETURNING 1)
    SELECT count(*)::int AS n FROM gone`.execute(db);
  return Number(rows[0]!.n);
}

async function databaseNow(db: Kysely<Database>): Promise<Date> {
  const { rows } = await sql<{ now: Date | string }>`SELECT now() AS now`.execute(db);
  return new Date(rows[0]!.now);
}

function toRow(r: Record<string, unknown>): HistoryRow {
  const num = (v: unknown) => Number(v ?? 0);
  const numOrNull = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  const hist = Array.isArray(r.latency_hist) ? r.latency_hist.map(Number) : parsePgArray(r.latency_hist);
  return {
    poolId: String(r.pool_id),
    minute: r.minute instanceof Date ? r.minute : new Date(String(r.minute)),
    claimsWarm: num(r.claims_warm),
    claimsWaited: num(r.claims_waited),
    claimsEmpty: num(r.claims_empty),
    claimsFailed: num(r.claims_failed),
    latencyHist: hist,
    waitMsSum: num(r.wait_ms_sum),
    waitMsMax: num(r.wait_ms_max),
    refills: num(r.refills),
    refillMsSum: num(r.refill_ms_sum),
    refillMsMax: num(r.refill_ms_max),
    idleSeconds: num(r.idle_seconds),
    idle: numOrNull(r.idle),
    starting: numOrNull(r.starting),
    claimed: numOrNull(r.claimed),
    other: numOrNull(r.other),
    target: numOrNull(r.target),
    targetSummary: r.target_summary === null || r.target_summary === undefined ? null : String(r.target_summary),
  };
}

function parsePgArray(v: unknown): number[] {
  if (typeof v !== "string") return [];
  const inner = v.replace(/^\{|\}$/g, "");
  return inner === "" ? [] : inner.split(",").map(Number);
}
