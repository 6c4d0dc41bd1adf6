-- Waiting claims served in order (issue 13): a claim with `waitMs` that finds no idle instance
-- takes a ticket and waits its turn. Every replica's pick respects the queue in the same statement
-- as the pick: an idle instance of a pool goes to the pool's earliest live waiter, and a claim
-- without a ticket (or with a later one) takes nothing while an earlier live waiter of that pool
-- exists. A claim that may take from several pools (a runtime label) holds one row per pool, all
-- with the same ticket.
--
-- Tickets come from one sequence and are taken under a per-pool advisory lock (with the count
-- against the queue bound), so a pool's tickets are in the order its waiters joined.
--
-- A waiter is live while `expires_at` (database clock) is in the future. Its process renews it by
-- a heartbeat; a process that died stops renewing, and its place lapses after the TTL without
-- anyone comparing a process clock with a row timestamp. Expired rows are deleted by the next join
-- of their pool.
CREATE SEQUENCE claim_waiter_tickets;

CREATE TABLE claim_waiters (
  pool_id     text NOT NULL,
  ticket      bigint NOT NULL,
  -- The pool-manager process waiting (for people reading the row).
  owner       text NOT NULL,
  expires_at  timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (pool_id, ticket)
);

CREATE INDEX claim_waiters_ticket_idx ON claim_waiters (ticket);

-- A waiter that leaves (served, gave up, its client went away, expired and deleted) may unblock
-- the next one while an instance is idle: the same change hint as a status change wakes them.
-- Identical payloads of one transaction collapse into one notification (a serve also writes its
-- instance event).
CREATE FUNCTION agent_pool_waiters_left() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('agent_pool_hints', json_build_object('pool', p.pool_id, 'kind', 'changed')::text)
     FROM (SELECT DISTINCT pool_id FROM gone) p;
  RETURN NULL;
END
$$;

CREATE TRIGGER claim_waiters_left
  AFTER DELETE ON claim_waiters
  REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION agent_pool_waiters_left();
