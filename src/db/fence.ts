/**
 * The lease condition of a fenced write, as SQL to place in the write's own statement. Shared by
 * the store (kysely-store.ts) and its parts in their own files (rollouts.ts), so every fenced
 * write of a pass checks its term the same way.
 */
import { sql, type RawBuilder } from "kysely";
import type { Lease } from "./store.ts";

/**
 * `FOR SHARE` makes a concurrent takeover (an UPDATE of the lease row) wait for this statement's
 * transaction, and if the takeover committed first, Postgres re-checks the row's newest version
 * against (holder, term, expiry) and the condition fails: the write and the takeover are ordered,
 * never interleaved. No lease: no condition.
 */
export function leaseHeld(lease: Lease | undefined): RawBuilder<unknown> {
  if (!lease) return sql`TRUE`;
  return sql`EXISTS (
    SELECT 1 FROM leases l
     WHERE l.name = ${lease.name}::text AND l.holder = ${lease.holder}::text
       AND l.term = ${lease.term}::bigint AND l.expires_at > now()
     FOR SHARE)`;
}
