-- Per-instance resources (issue 12): what an instance owns outside the compute provider, e.g. an
-- OpenRouter API key with its own spending limit. The earlier system leaked these (keys left behind
-- when a create failed halfway or a delete was skipped, found by hand months later, seed-system §8
-- #801/#837), so the rules are those of instances:
--  * intent first: the row is written BEFORE the outside call that makes the resource, so a crash
--    between the call and recording its answer leaves a row that names the resource;
--  * the vendor knows the resource by `name`, which carries this deployment's owner id, the pool,
--    the environment and the instance id: the resource reconciler matches a vendor listing back to
--    rows by it, and never touches a resource without our owner id;
--  * a resource's secret (the API key itself) is never stored: only the vendor's id for it (`ref`,
--    OpenRouter's key hash). The secret reaches the instance once, through its environment.
CREATE TABLE instance_resources (
  id           text PRIMARY KEY,
  instance_id  text NOT NULL,
  pool_id      text NOT NULL,
  kind         text NOT NULL,
  name         text NOT NULL,
  -- creating: intent recorded, outside call in flight (or its answer lost); ready: made, `ref` known;
  -- deleting: its instance is gone or its create failed, to be deleted at the vendor; deleted: gone.
  state        text NOT NULL CHECK (state IN ('creating', 'ready', 'deleting', 'deleted')),
  ref          text,
  -- Spending limit and usage in USD, as the vendor last reported them (dashboard, metrics).
  spend_limit  double precision,
  usage        double precision,
  usage_at     timestamptz,
  error        text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  deleted_at   timestamptz
);
-- One resource of a kind per instance at a time.
CREATE UNIQUE INDEX instance_resources_kind_idx ON instance_resources (instance_id, kind) WHERE state <> 'deleted';
-- The reconciler reads what is not deleted yet; retention prunes by deletion time.
CREATE INDEX instance_resources_open_idx ON instance_resources (pool_id) WHERE state <> 'deleted';
CREATE INDEX instance_resources_ref_idx ON instance_resources (kind, ref) WHERE ref IS NOT NULL;
CREATE INDEX instance_resources_deleted_idx ON instance_resources (deleted_at) WHERE deleted_at IS NOT NULL;
