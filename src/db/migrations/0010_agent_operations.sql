-- Operators act on claimed agents (issue 11): release (factory reset, back to idle) and upgrade (to
-- the pool's current template), one instance or a pool's worth at once.
--
-- An operation holds its instance for a while (a reset and a status call; a provider redeploy), and
-- must not interleave with another one on the same instance (a release resetting a runtime the
-- provider is redeploying). Like a claim attempt, it writes a token on the row, and every later write
-- of the operation (the row back to idle, the new template hash) is conditional on that token in the
-- same statement: an operation that lost its row changes nothing. The deadline (database clock) lets
-- a token whose holder died be taken over.
ALTER TABLE instances ADD COLUMN op_kind text CHECK (op_kind IN ('release', 'upgrade'));
ALTER TABLE instances ADD COLUMN op_token text;
ALTER TABLE instances ADD COLUMN op_deadline timestamptz;

-- Upgrades run as jobs, so that their progress is visible while they run (API, CLI, dashboard) and
-- survives a restart of the pool manager: a job's runner renews `heartbeat_at`; a running job whose
-- heartbeat is stale (database clock) is taken over by another runner (a new `runner_token`; every
-- write of the old one is fenced on its token) and its interrupted items run again.
CREATE TABLE upgrade_jobs (
  id            text PRIMARY KEY,
  -- No foreign key to pools: pools are never deleted (only retired), and one would make every
  -- TRUNCATE of pools (tests reset a database that way) name this table too.
  pool_id       text NOT NULL,
  -- The pool's template hash when the job was asked for (each item records what it deployed).
  template_hash text NOT NULL,
  -- instance: one agent; ids: a list of agents; all: every agent of the pool on an old template.
  scope         text NOT NULL CHECK (scope IN ('instance', 'ids', 'all')),
  state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
  runner        text NOT NULL,
  runner_token  text NOT NULL,
  heartbeat_at  timestamptz NOT NULL DEFAULT now(),
  -- How many times another runner took the job over (a restart or a dead replica).
  resumed       integer NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz
);
CREATE INDEX upgrade_jobs_pool_idx ON upgrade_jobs (pool_id, created_at DESC);
CREATE INDEX upgrade_jobs_running_idx ON upgrade_jobs (heartbeat_at) WHERE state = 'running';

CREATE TABLE upgrade_job_items (
  job_id      text NOT NULL REFERENCES upgrade_jobs (id) ON DELETE CASCADE,
  instance_id text NOT NULL,
  position    integer NOT NULL,
  -- pending → running → upgraded | failed; skipped when the instance is not to be touched (protected
  -- in a bulk job, mid-claim, not an agent, already current, gone).
  state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'upgraded', 'failed', 'skipped')),
  from_hash   text,
  to_hash     text,
  detail      text,
  started_at  timestamptz,
  finished_at timestamptz,
  PRIMARY KEY (job_id, instance_id)
);
