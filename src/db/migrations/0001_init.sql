-- Initial schema. Postgres is the source of truth; every status change is a conditional UPDATE
-- (see src/instance/status.ts) and is appended to instance_events.

CREATE TABLE pools (
  id          text PRIMARY KEY,
  min_idle    integer NOT NULL CHECK (min_idle >= 0),
  max_total   integer NOT NULL CHECK (max_total >= 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
  id                 text PRIMARY KEY,
  pool_id            text NOT NULL REFERENCES pools (id),
  provider           text NOT NULL,
  provider_ref       text,
  name               text NOT NULL,
  url                text,
  status             text NOT NULL CHECK (status IN (
                       'starting', 'idle', 'claiming', 'claimed',
                       'pending_acceptance', 'crashed', 'dead', 'sleeping')),
  deploy_status      text,
  runtime_version    text,
  image              text,
  gateway_token      text NOT NULL,
  health_checked_at  timestamptz,
  health_ok_at       timestamptz,
  health_failures    integer NOT NULL DEFAULT 0,
  health_error       text,
  agent_name         text,
  instructions       text,
  conversation_id    text,
  invite_url         text,
  join_url           text,
  profile_image      text,
  claim_metadata     jsonb,
  claim_key          text,
  claim_owner        text,
  claim_started_at   timestamptz,
  claimed_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  status_changed_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at         timestamptz
);

-- The claim takes the newest idle instance of a pool.
CREATE INDEX instances_claim_idx ON instances (pool_id, created_at DESC)
  WHERE status = 'idle' AND deleted_at IS NULL;
-- Reconciler tick and per-status counts.
CREATE INDEX instances_pool_status_idx ON instances (pool_id, status) WHERE deleted_at IS NULL;
-- Claim idempotency: one instance per (pool, key).
CREATE UNIQUE INDEX instances_claim_key_idx ON instances (pool_id, claim_key) WHERE claim_key IS NOT NULL;
CREATE INDEX instances_join_url_idx ON instances (join_url) WHERE join_url IS NOT NULL;
CREATE UNIQUE INDEX instances_provider_ref_idx ON instances (provider_ref) WHERE provider_ref IS NOT NULL;

-- Append-only log of status changes.
CREATE TABLE instance_events (
  id           bigserial PRIMARY KEY,
  instance_id  text NOT NULL REFERENCES instances (id),
  from_status  text,
  to_status    text NOT NULL,
  actor        text NOT NULL,
  reason       text NOT NULL,
  at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_events_instance_idx ON instance_events (instance_id, id DESC);

-- Named leases (e.g. `reconciler:<pool>`), timed by the database clock.
CREATE TABLE leases (
  name        text PRIMARY KEY,
  holder      text NOT NULL,
  expires_at  timestamptz NOT NULL
);
