-- Pools as templates (issue 11): a pool records what its instances are made from (provider, image
-- or command, environment) and how it behaves (runtime label, claim defaults, allowed invite hosts,
-- rollout surge). An instance records the template hash it was made from.
ALTER TABLE pools ADD COLUMN runtime text;
UPDATE pools SET runtime = id WHERE runtime IS NULL;
ALTER TABLE pools ALTER COLUMN runtime SET NOT NULL;
ALTER TABLE pools ADD COLUMN provider text;
ALTER TABLE pools ADD COLUMN image text;
ALTER TABLE pools ADD COLUMN command jsonb;
ALTER TABLE pools ADD COLUMN env jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE pools ADD COLUMN claim_agent_name text;
ALTER TABLE pools ADD COLUMN claim_instructions text;
ALTER TABLE pools ADD COLUMN join_url_hosts jsonb;
ALTER TABLE pools ADD COLUMN max_surge integer NOT NULL DEFAULT 2 CHECK (max_surge >= 1);
-- Hash of (provider, image, command, env); '' for pools made before templates.
ALTER TABLE pools ADD COLUMN template_hash text NOT NULL DEFAULT '';
-- The template before the last change (a rollback goes back to it).
ALTER TABLE pools ADD COLUMN previous_template jsonb;
-- Hash of the configuration entry last applied at start-up: a pool changed through the API keeps
-- its settings across restarts until the configuration itself changes.
ALTER TABLE pools ADD COLUMN seed_hash text;
-- Deleted pools (only when empty) keep their row for their instances' event history.
ALTER TABLE pools ADD COLUMN retired_at timestamptz;
CREATE INDEX pools_runtime_idx ON pools (runtime) WHERE retired_at IS NULL;

ALTER TABLE instances ADD COLUMN template_hash text;
-- What the runtime says it is on /pool/health (`runtime`), next to its version.
ALTER TABLE instances ADD COLUMN runtime_type text;
-- Instances bulk operations (drain, rollouts, release-all) never touch.
ALTER TABLE instances ADD COLUMN protected boolean NOT NULL DEFAULT false;
-- Pools made before templates: their instances are of their (empty) template.
UPDATE instances SET template_hash = '' WHERE template_hash IS NULL;

-- A claim may pick from several pools (every pool of a runtime label): an idempotency key is now
-- unique among live instances of the whole deployment, not per pool.
DROP INDEX instances_claim_key_idx;
CREATE UNIQUE INDEX instances_claim_key_idx ON instances (claim_key)
  WHERE claim_key IS NOT NULL AND deleted_at IS NULL AND status IN ('claiming', 'claimed', 'pending_acceptance');
