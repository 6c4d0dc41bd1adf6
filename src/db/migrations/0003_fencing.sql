-- Safety across replicas and deployments (issue 8): fencing tokens for claims, passes and
-- idempotency records; the deployment's owner id; capacity that frees itself; shared rate limits;
-- events findable by pool through an index; retention.

-- The deployment's identity. Every provider resource this deployment makes carries `owner_id`
-- (Railway: in the service name; local: in the process environment), and the reconciler touches
-- only resources that carry it: two deployments pointed at one project used to delete each
-- other's services as orphans.
CREATE TABLE deployment (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  owner_id    text NOT NULL CHECK (owner_id ~ '^[a-z0-9]{5}$'),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Claim fencing: each claim attempt writes its own token (claim_attempt) and the database-clock
-- time after which the sweeper may judge it dead (claim_deadline). Every later write of the
-- attempt, and of the sweeper, is conditional on the token.
ALTER TABLE instances ADD COLUMN claim_attempt text;
ALTER TABLE instances ADD COLUMN claim_deadline timestamptz;
-- Where the claim came from (`source` of the earlier system's clients, e.g. "landing").
ALTER TABLE instances ADD COLUMN claim_source text;
-- The provider resource of a crashed agent is gone: the row stays for the operator but no longer
-- holds a slot against max total (a pool stopped refilling after external deletions).
ALTER TABLE instances ADD COLUMN resource_gone_at timestamptz;

-- Rows claiming when this migration runs were made by a version without tokens: give them one,
-- and a deadline from their start, so the sweeper resolves them under the new rules.
UPDATE instances
   SET claim_attempt = 'legacy-' || id,
       claim_deadline = COALESCE(claim_started_at, now()) + interval '2 minutes'
 WHERE status = 'claiming';

-- claim_key is now written by the claim's pick: at most ONE live instance per idempotency key,
-- enforced by the database whatever happens to the idempotency record.
DROP INDEX instances_claim_key_idx;
CREATE UNIQUE INDEX instances_claim_key_idx ON instances (pool_id, claim_key)
  WHERE claim_key IS NOT NULL AND deleted_at IS NULL AND status IN ('claiming', 'claimed', 'pending_acceptance');

-- The sweeper finds stale claims by deadline (database clock).
DROP INDEX instances_claiming_idx;
CREATE INDEX instances_claiming_idx ON instances (pool_id, claim_deadline) WHERE status = 'claiming';

-- Leases get a term (River's leader table: holder + term + expiry). A write fenced on a lease is
-- conditional on (name, holder, term) still holding it, by the database clock.
ALTER TABLE leases ADD COLUMN term bigint NOT NULL DEFAULT 1;

-- Idempotency records are fenced on the attempt that runs them and taken over only after its
-- deadline (database clock) plus a margin.
ALTER TABLE claims ADD COLUMN attempt text;
ALTER TABLE claims ADD COLUMN deadline timestamptz;
UPDATE claims SET attempt = owner, deadline = updated_at + interval '10 minutes' WHERE attempt IS NULL;
ALTER TABLE claims ALTER COLUMN attempt SET NOT NULL;
CREATE INDEX claims_created_idx ON claims (created_at);

-- Events carry their pool, so "the newest event of a pool" and "events since N" are index reads,
-- not a join over the whole table.
ALTER TABLE instance_events ADD COLUMN pool_id text;
UPDATE instance_events e SET pool_id = i.pool_id FROM instances i WHERE i.id = e.instance_id;
ALTER TABLE instance_events ALTER COLUMN pool_id SET NOT NULL;
CREATE INDEX instance_events_pool_idx ON instance_events (pool_id, id);
-- Retention prunes by age.
CREATE INDEX instance_events_at_idx ON instance_events (at);
CREATE INDEX instances_deleted_idx ON instances (deleted_at) WHERE deleted_at IS NOT NULL;

-- Fixed-window counters shared by every replica: mutation rate limits and login throttling.
CREATE TABLE rate_limits (
  key           text PRIMARY KEY,
  window_start  timestamptz NOT NULL,
  window_ms     integer NOT NULL,
  hits          integer NOT NULL
);
CREATE INDEX rate_limits_expiry_idx ON rate_limits (window_start);
