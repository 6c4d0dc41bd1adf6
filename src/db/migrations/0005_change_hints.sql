-- Change hints from the database itself: every write that appends status changes to
-- instance_events, whoever makes it (a pass, a claim, an operator, any replica), NOTIFYs
-- agent_pool_hints with {"pool": <id>, "kind": "changed"}. Every process LISTENs on one connection
-- and reads the new events once for all its event-stream and dashboard clients, instead of each
-- polling the table every second. A hint is only a hint: readers still do a periodic safety read.
--
-- Statement-level with a transition table: a pass that writes 1,000 observations in one statement
-- fires the function once, with one notification per pool it touched. Postgres also drops a
-- notification identical to one already queued by the same transaction, so a claim's several
-- events in one transaction cost one notification.
CREATE FUNCTION agent_pool_events_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('agent_pool_hints', json_build_object('pool', p.pool_id, 'kind', 'changed')::text)
     FROM (SELECT DISTINCT pool_id FROM new_events) p;
  RETURN NULL;
END
$$;

CREATE TRIGGER instance_events_changed
  AFTER INSERT ON instance_events
  REFERENCING NEW TABLE AS new_events
  FOR EACH STATEMENT EXECUTE FUNCTION agent_pool_events_changed();

-- A dead row marked deleted (its provider resource gone) leaves the counts without a status
-- change: the same hint, so a dashboard's counts follow at once rather than at the safety read.
-- Row-level (transition tables cannot be combined with a column list); identical payloads of one
-- transaction collapse into one notification.
CREATE FUNCTION agent_pool_instance_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('agent_pool_hints', json_build_object('pool', NEW.pool_id, 'kind', 'changed')::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER instances_gone
  AFTER UPDATE OF deleted_at ON instances
  FOR EACH ROW
  WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
  EXECUTE FUNCTION agent_pool_instance_gone();
