/**
 * Rollouts over HTTP (issue 11): a pool's current rollout and its history, pause and resume. A
 * rollout starts by itself when a pool's template changes (`PATCH /api/pools/:id`), and a rollback
 * is `POST /api/pools/:id/rollback` (the registry's: a rollout of the previous template follows).
 * Authentication comes first (onRequest), before the body or the path is looked at; the actions
 * count against the client's shared rate limit like every mutating route.
 */
import { z } from "zod";
import type { PoolOperations } from "../pool/operations.ts";
import type { RolloutService } from "../pool/rollouts.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import type { PoolServer } from "./server.ts";
import { RolloutActionView, RolloutStateView, rolloutView } from "./rollout-views.ts";
import { ErrorView } from "./views.ts";

export interface RolloutRouteDeps {
  ops: PoolOperations;
  rollouts: RolloutService;
  auth: (req: never, reply: never) => Promise<void>;
  limited: ReadonlyArray<(req: never, reply: never) => Promise<void>>;
}

const PoolIdParams = z.object({ id: z.string().regex(POOL_ID_RE, "a pool id") });

export function registerRolloutRoutes(app: PoolServer, deps: RolloutRouteDeps): void {
  const { ops, rollouts } = deps;
  const auth = deps.auth as never;
  const limited = deps.limited as never;
  const security = [{ bearer: [] }];
  const errs = { 400: ErrorView, 401: ErrorView, 404: ErrorView, 409: ErrorView, 429: ErrorView, 500: ErrorView };

  app.get(
    "/api/pools/:id/rollout",
    {
      onRequest: auth,
      schema: {
        description: "The pool's current rollout (progress: updated / total, failures; outcome) and its recent history.",
        security,
        params: PoolIdParams,
        response: { 200: RolloutStateView, ...errs },
      },
    },
    async (req) => {
      await ops.registry.get(req.params.id);
      const s = await rollouts.state(req.params.id);
      return { pool: s.pool, current: s.current ? rolloutView(s.current) : null, history: s.history.map(rolloutView) };
    },
  );

  app.post(
    "/api/pools/:id/rollout/pause",
    {
      onRequest: limited,
      schema: {
        description: "Pause the pool's running rollout: it creates and retires nothing until resumed (409 when none runs).",
        security,
        params: PoolIdParams,
        response: { 200: RolloutActionView, ...errs },
      },
    },
    async (req) => {
      await ops.registry.get(req.params.id);
      return { rollout: rolloutView(await rollouts.pause(req.params.id)) };
    },
  );

  app.post(
    "/api/pools/:id/rollout/resume",
    {
      onRequest: limited,
      schema: {
        description:
          "Resume the pool's paused rollout, or retry a halted one (a new rollout of the same change, failures counted afresh); 409 when there is nothing to resume.",
        security,
        params: PoolIdParams,
        response: { 200: RolloutActionView, ...errs },
      },
    },
    async (req) => {
      await ops.registry.get(req.params.id);
      return { rollout: rolloutView(await rollouts.resume(req.params.id)) };
    },
  );
}
