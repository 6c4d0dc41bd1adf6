-- Pool sizing and its measurements (issue 13).
--
-- A pool's sizing policy: NULL or {"mode":"fixed"} keeps min idle; {"mode":"demand", …} lets the
-- planner (src/pool/sizing.ts) choose the idle target from the measured demand.
ALTER TABLE pools ADD COLUMN sizing jsonb;

-- Per-minute buckets per pool. Every replica ADDS its own counts to a bucket (claims are served by
-- any replica); the lease holder also sets the snapshot columns (instances by status, the target it
-- chose) and adds the idle instance-seconds and refills it saw. A bucket's minute is the database's
-- (`date_trunc('minute', now() - age)`), so replicas with skewed clocks still fill the same bucket.
-- Pruned by the cleaner.
CREATE TABLE pool_history (
  pool_id text NOT NULL,
  minute timestamptz NOT NULL,
  -- Claims by how they were served: from an idle instance at once, after waiting, not at all.
  claims_warm integer NOT NULL DEFAULT 0,
  claims_waited integer NOT NULL DEFAULT 0,
  claims_empty integer NOT NULL DEFAULT 0,
  claims_failed integer NOT NULL DEFAULT 0,
  -- Latency of served claims, counts per bucket of HISTORY_LATENCY_BOUNDS_MS (src/pool/history.ts).
  latency_hist integer[] NOT NULL DEFAULT '{}',
  -- Time waiting claims waited for an instance.
  wait_ms_sum bigint NOT NULL DEFAULT 0,
  wait_ms_max integer NOT NULL DEFAULT 0,
  -- Instances that went from created to idle, and how long that took.
  refills integer NOT NULL DEFAULT 0,
  refill_ms_sum bigint NOT NULL DEFAULT 0,
  refill_ms_max integer NOT NULL DEFAULT 0,
  idle_seconds double precision NOT NULL DEFAULT 0,
  -- Snapshot by the lease holder (its last pass in the minute); NULL when it wrote none.
  idle integer,
  starting integer,
  claimed integer,
  other integer,
  target integer,
  target_summary text,
  PRIMARY KEY (pool_id, minute)
);
CREATE INDEX pool_history_minute_idx ON pool_history (minute);
