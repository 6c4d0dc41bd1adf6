-- Rollouts (issue 11): a change of a pool's template (image, command or environment) replaces the
-- pool's idle instances of an old template by surge. One row per rollout, kept as history: the
-- agent-sandbox warm pools this replaces have no record and no outcome of a template change (their
-- issues #426, #1327), so an operator could not tell whether a change had landed or stalled.
CREATE TABLE rollouts (
  id                 bigserial PRIMARY KEY,
  pool_id            text NOT NULL REFERENCES pools (id),
  -- The template hash most instances were made from before the change (null: unknown), and the
  -- pool's hash the rollout brings instances to.
  from_hash          text,
  to_hash            text NOT NULL,
  -- running → paused ↔ running; running → complete | halted; halted → running (an operator's
  -- resume); running | paused → superseded (another change of the template came first).
  status             text NOT NULL CHECK (status IN ('running', 'paused', 'complete', 'halted', 'superseded')),
  -- Why it started ("template changed", "rolled back").
  reason             text NOT NULL,
  halt_reason        text,
  -- The pool's warm size the rollout keeps: its idle, starting and sleeping (unprotected) instances
  -- when the change came, at least min idle; a rollout that supersedes another keeps that one's
  -- (so the surge of an abandoned rollout does not grow the pool).
  target             integer NOT NULL,
  -- What it was started with (max surge is the pool's at each pass; these are for people).
  max_surge          integer NOT NULL,
  halt_after         integer NOT NULL,
  -- Progress as the last pass saw it: old instances replaced (retired) and left, new instances
  -- made since the start and those that failed before becoming idle, the current streak of such
  -- failures, creates in flight, claimable instances (idle, not protected) and the fewest seen.
  retired            integer NOT NULL DEFAULT 0,
  remaining          integer NOT NULL DEFAULT 0,
  created            integer NOT NULL DEFAULT 0,
  failed             integer NOT NULL DEFAULT 0,
  failures_in_a_row  integer NOT NULL DEFAULT 0,
  in_flight          integer NOT NULL DEFAULT 0,
  claimable          integer,
  min_claimable      integer,
  -- Failures in a row are counted from here: the start, or the last resume of a halted rollout.
  counted_since      timestamptz NOT NULL DEFAULT now(),
  started_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  finished_at        timestamptz
);
-- At most one rollout of a pool acts at a time.
CREATE UNIQUE INDEX rollouts_active_idx ON rollouts (pool_id) WHERE status IN ('running', 'paused');
CREATE INDEX rollouts_pool_idx ON rollouts (pool_id, id DESC);

-- A rollout's start, progress and outcome reach live pages like a status change does (migration
-- 0005): the same hint, from the database, whichever replica wrote it. Identical payloads of one
-- transaction collapse into one notification.
CREATE FUNCTION agent_pool_rollout_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('agent_pool_hints', json_build_object('pool', NEW.pool_id, 'kind', 'changed')::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER rollouts_changed
  AFTER INSERT OR UPDATE ON rollouts
  FOR EACH ROW EXECUTE FUNCTION agent_pool_rollout_changed();
