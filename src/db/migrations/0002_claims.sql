-- Claim idempotency: a client retrying with the same Idempotency-Key gets the first claim's
-- result (or CLAIM_IN_PROGRESS while it runs). Only successes are kept; a failed claim deletes its
-- row so a retry tries again.
CREATE TABLE claims (
  pool_id          text NOT NULL REFERENCES pools (id),
  idempotency_key  text NOT NULL,
  state            text NOT NULL CHECK (state IN ('running', 'succeeded')),
  owner            text NOT NULL,
  instance_id      text REFERENCES instances (id),
  result           jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pool_id, idempotency_key)
);

-- The sweeper looks for claims older than the provision timeout.
CREATE INDEX instances_claiming_idx ON instances (pool_id, claim_started_at) WHERE status = 'claiming';
