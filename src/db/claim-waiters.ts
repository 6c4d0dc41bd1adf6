/**
 * The SQL of the queue of waiting claims (issue 13; migration 0013). KyselyStore delegates here.
 *
 * The order is kept by the pick itself, in one statement on every replica: an idle instance of a
 * pool is taken only when no live waiter of that pool holds an earlier ticket (a claim without a
 * ticket: no live waiter at all). A waiter's turn (`serve`) is also fenced on its own row being
 * live and removes that row in the same statement, so a waiter whose place lapsed takes nothing,
 * and a waiter is never served twice. Liveness is `expires_at > now()`: the database's clock only.
 */
import { sql, type Kysely, type RawBuilder } from "kysely";
import type { QueueJoin, QueueJoinResult, QueuePlace } from "./store.ts";
import type { Database } from "./tables.ts";

const ms = (n: number) => sql`(${n}::double precision * interval '1 millisecond')`;

/** Tickets are bigint in the database and pass through as text (exact); a JS number holds 2^53. */
const ticketSql = (t: number) => sql`${String(t)}::bigint`;

export async function joinClaimQueue(db: Kysely<Database>, req: QueueJoin): Promise<QueueJoinResult> {
  const pools = [...new Set(req.poolIds)].sort();
  return db.transaction().execute(async (trx) => {
    // One lock per pool, taken in a fixed order (no deadlock between claims of overlapping pool
    // sets): the bound is counted and the ticket taken under it, so a pool's tickets follow the
    // order its waiters joined in, and concurrent joins cannot pass the bound.
    for (const p of pools) await sql`SELECT pg_advisory_xact_lock(hashtext(${`claim-waiters:${p}`}::text))`.execute(trx);
    await sql`DELETE FROM claim_waiters WHERE pool_id = ANY(${pools}::text[]) AND expires_at <= now()`.execute(trx);
    const { rows } = await sql<{ pool_id: string; n: number }>`
      SELECT pool_id, count(*)::int AS n FROM claim_waiters
       WHERE pool_id = ANY(${pools}::text[])
       GROUP BY pool_id`.execute(trx);
    const full = rows.find((r) => r.n >= req.maxLength);
    if (full) return { kind: "full", poolId: full.pool_id, waiting: full.n };
    const { rows: joined } = await sql<{ ticket: string }>`
      WITH t AS (SELECT nextval('claim_waiter_tickets') AS ticket)
      INSERT INTO claim_waiters (pool_id, ticket, owner, expires_at)
      SELECT p, t.ticket, ${req.owner}::text, now() + ${ms(req.ttlMs)}
        FROM unnest(${pools}::text[]) AS p, t
      RETURNING ticket`.execute(trx);
    return { kind: "joined", ticket: Number(joined[0]!.ticket) };
  });
}

export async function renewClaimWaiters(db: Kysely<Database>, tickets: readonly number[], ttlMs: number): Promise<number[]> {
  if (tickets.length === 0) return [];
  // Only a live row is renewed: once a place has lapsed, later waiters may already have passed it.
  const { rows } = await sql<{ ticket: string }>`
    UPDATE claim_waiters SET expires_at = now() + ${ms(ttlMs)}
     WHERE ticket = ANY(${tickets.map(String)}::bigint[]) AND expires_at > now()
    RETURNING ticket`.execute(db);
  return [...new Set(rows.map((r) => Number(r.ticket)))];
}

export async function leaveClaimQueue(db: Kysely<Database>, ticket: number): Promise<boolean> {
  const { rows } = await sql<{ ticket: string }>`DELETE FROM claim_waiters WHERE ticket = ${ticketSql(ticket)} RETURNING ticket`.execute(db);
  return rows.length > 0;
}

export async function claimQueueLengths(db: Kysely<Database>): Promise<Array<{ poolId: string; waiting: number }>> {
  const { rows } = await sql<{ pool_id: string; n: number }>`
    SELECT pool_id, count(*)::int AS n FROM claim_waiters WHERE expires_at > now() GROUP BY pool_id ORDER BY pool_id`.execute(db);
  return rows.map((r) => ({ poolId: r.pool_id, waiting: r.n }));
}

/**
 * The pick's condition on a candidate row of `instances` (unaliased): the queue lets this claim
 * take from the row's pool (see the file's comment).
 */
export function queueAllowsPick(place: QueuePlace | undefined): RawBuilder<unknown> {
  const earlier = place === undefined ? sql`` : sql`AND w.ticket < ${ticketSql(place.ticket)}`;
  const own = place?.serve
    ? sql`AND EXISTS (SELECT 1 FROM claim_waiters o WHERE o.pool_id = instances.pool_id AND o.ticket = ${ticketSql(place.ticket)} AND o.expires_at > now())`
    : sql``;
  return sql`AND NOT EXISTS (SELECT 1 FROM claim_waiters w WHERE w.pool_id = instances.pool_id AND w.expires_at > now() ${earlier}) ${own}`;
}

/** A CTE after `upd` (the pick's update): a served waiter leaves every queue with its pick. */
export function queueServedCte(place: QueuePlace | undefined): RawBuilder<unknown> {
  if (!place?.serve) return sql``;
  return sql`, served AS (DELETE FROM claim_waiters WHERE ticket = ${ticketSql(place.ticket)} AND EXISTS (SELECT 1 FROM upd))`;
}
