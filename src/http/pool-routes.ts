/**
 * Pools as templates, over HTTP: list, create, change, delete (when empty), roll back a template,
 * and protect an instance. Secret-looking values of a pool's environment are never shown (they
 * come back as `••••••`, and sending that back keeps the stored value).
 */
import { z } from "zod";
import type { PoolRecord } from "../db/store.ts";
import type { PoolOperations } from "../pool/operations.ts";
import { poolView } from "../pool/registry.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import type { PoolServer } from "./server.ts";
import type { RolloutService } from "../pool/rollouts.ts";
import { RolloutView, rolloutView } from "./rollout-views.ts";
import { CountsView, ErrorView, InstanceView, countsView, instanceView } from "./views.ts";

/** A pool's sizing policy (issue 13; src/pool/sizing.ts). */
export const SizingView = z.union([
  z.object({ mode: z.literal("fixed") }),
  z.object({
    mode: z.literal("demand"),
    floor: z.number(),
    ceiling: z.number().nullable(),
    safetyFactor: z.number(),
    windowMinutes: z.number(),
    cooldownMinutes: z.number(),
    timeZone: z.string(),
    schedule: z.array(z.object({ days: z.array(z.string()), from: z.string(), to: z.string(), floor: z.number() })),
  }),
]);

export const PoolView = z.object({
  id: z.string(),
  runtime: z.string(),
  provider: z.string().nullable(),
  image: z.string().nullable(),
  command: z.array(z.string()).nullable(),
  env: z.record(z.string(), z.string()).describe("values of secret-looking names (…KEY, …TOKEN, …SECRET, …PASSWORD) are shown as ••••••"),
  minIdle: z.number(),
  maxTotal: z.number(),
  claimAgentName: z.string().nullable(),
  claimInstructions: z.string().nullable(),
  joinUrlHosts: z.array(z.string()).nullable(),
  maxSurge: z.number(),
  sizing: SizingView.describe('how many idle instances the pool keeps: fixed (min idle) or demand (README, "Pool sizing")'),
  templateHash: z.string(),
  canRollBack: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const PoolWithCounts = z.object({
  pool: PoolView,
  counts: CountsView,
  rollout: RolloutView.nullable().describe("the pool's newest rollout (issue 11), null when it never had one"),
});
const PoolIdParams = z.object({ id: z.string().regex(POOL_ID_RE, "a pool id") });
const InstanceIdParams = z.object({ id: z.string().min(1).max(100) });

/**
 * The body of a create or a change: validated again, with the same rules and messages, by the
 * registry (src/pool/template.ts), which is what the configuration file goes through too.
 */
const PoolBody = z
  .record(z.string(), z.unknown())
  .describe(
    "pool settings: id (create only), runtime, provider, image, command, env, minIdle, maxTotal, claimAgentName, claimInstructions, joinUrlHosts, maxSurge, sizing ({mode: fixed} or {mode: demand, floor, ceiling, safetyFactor, windowMinutes, cooldownMinutes, timeZone, schedule})",
  );

export interface PoolRouteDeps {
  ops: PoolOperations;
  auth: (req: never, reply: never) => Promise<void>;
  limited: ReadonlyArray<(req: never, reply: never) => Promise<void>>;
  /** Rollouts of changed templates (issue 11): each pool's newest is shown with it. */
  rollouts?: RolloutService | null | undefined;
}

export function registerPoolRoutes(app: PoolServer, deps: PoolRouteDeps): void {
  const { ops } = deps;
  const auth = deps.auth as never;
  const limited = deps.limited as never;
  const security = [{ bearer: [] }];
  const errs = { 400: ErrorView, 401: ErrorView, 404: ErrorView, 409: ErrorView, 429: ErrorView, 500: ErrorView };
  const rolloutOf = async (id: string) => {
    const current = deps.rollouts ? await deps.rollouts.current(id) : null;
    return current ? rolloutView(current) : null;
  };
  const withCounts = async (p: PoolRecord) => ({ pool: poolView(p), counts: countsView((await ops.summary(p.id)).counts), rollout: await rolloutOf(p.id) });

  app.get(
    "/api/pools",
    {
      onRequest: auth,
      schema: { description: "Every pool with its settings and counts.", security, response: { 200: z.object({ pools: z.array(PoolWithCounts) }), ...errs } },
    },
    async () => ({ pools: await Promise.all((await ops.pools()).map(withCounts)) }),
  );

  app.get(
    "/api/pools/:id",
    {
      onRequest: auth,
      schema: { description: "One pool with its settings and counts.", security, params: PoolIdParams, response: { 200: PoolWithCounts, ...errs } },
    },
    async (req) => withCounts(await ops.registry.get(req.params.id)),
  );

  app.post(
    "/api/pools",
    {
      onRequest: limited,
      schema: { description: "Create a pool. Its instances are made by the next pass.", security, body: PoolBody, response: { 201: PoolWithCounts, ...errs } },
    },
    async (req, reply) => {
      const pool = await ops.registry.create(req.body);
      reply.status(201);
      return withCounts(pool);
    },
  );

  app.patch(
    "/api/pools/:id",
    {
      onRequest: limited,
      schema: {
        description:
          "Change some of a pool's settings. A change of what instances are made from (provider, image, command, env) starts a rollout; the earlier template is kept for a rollback.",
        security,
        params: PoolIdParams,
        body: PoolBody,
        response: { 200: PoolWithCounts.extend({ templateChanged: z.boolean() }), ...errs },
      },
    },
    async (req) => {
      const { pool, templateChanged } = await ops.registry.update(req.params.id, req.body);
      return { ...(await withCounts(pool)), templateChanged };
    },
  );

  app.post(
    "/api/pools/:id/rollback",
    {
      onRequest: limited,
      schema: {
        description: "Go back to the template before the last change (a rollout of it follows).",
        security,
        params: PoolIdParams,
        response: { 200: PoolWithCounts, ...errs },
      },
    },
    async (req) => withCounts(await ops.registry.rollBack(req.params.id)),
  );

  app.delete(
    "/api/pools/:id",
    {
      onRequest: limited,
      schema: {
        description: "Delete a pool that holds no instance (409 POOL_NOT_EMPTY otherwise).",
        security,
        params: PoolIdParams,
        response: { 200: z.object({ ok: z.boolean(), id: z.string() }), ...errs },
      },
    },
    async (req) => {
      await ops.registry.delete(req.params.id);
      return { ok: true, id: req.params.id };
    },
  );

  app.post(
    "/api/pool/instances/:id/protect",
    {
      onRequest: limited,
      schema: {
        description: "Protect an instance (`{protected: true}`) or not: bulk operations (drain, rollouts) and claims leave a protected instance alone.",
        security,
        params: InstanceIdParams,
        body: z.object({ protected: z.boolean() }).strict(),
        response: { 200: z.object({ instance: InstanceView }), ...errs },
      },
    },
    async (req) => ({ instance: instanceView(await ops.protect(req.params.id, req.body.protected)) }),
  );
}
