/**
 * Operators' actions on agents over HTTP (issue 11): release, upgrade (one agent, or a pool's in
 * bulk, as jobs whose progress is read while they run) and a pool's versions. Thin over
 * AgentOperations; authentication in `onRequest` before any body is read, mutating routes counted
 * against the client's rate limit, like every other route.
 */
import { z } from "zod";
import type { AgentOperations } from "../pool/agent-operations.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import type { PoolServer } from "./server.ts";
import { ErrorView } from "./views.ts";
import { PoolUpgradeBody, ReleaseResultView, UpgradeJobAnswer, UpgradeJobsAnswer, VersionsView, upgradeJobView } from "./agent-views.ts";

export interface AgentRouteDeps {
  agents: AgentOperations;
  auth: (req: never, reply: never) => Promise<void>;
  limited: ReadonlyArray<(req: never, reply: never) => Promise<void>>;
}

const InstanceIdParams = z.object({ id: z.string().min(1).max(100) });
const PoolIdParams = z.object({ id: z.string().regex(POOL_ID_RE, "a pool id") });
const JobIdParams = z.object({ id: z.string().min(1).max(100) });

export function registerAgentRoutes(app: PoolServer, deps: AgentRouteDeps): void {
  const { agents } = deps;
  const auth = deps.auth as never;
  const limited = deps.limited as never;
  const security = [{ bearer: [] }];
  const errs = { 400: ErrorView, 401: ErrorView, 404: ErrorView, 409: ErrorView, 429: ErrorView, 500: ErrorView, 502: ErrorView };

  app.post(
    "/api/pool/instances/:id/release",
    {
      onRequest: limited,
      schema: {
        description:
          "Release a claimed, pending or crashed agent: factory-reset its runtime (POST /convos/reset, then GET /convos/status) and return it to idle when it then reports itself clean, otherwise retire it (dead) and delete it at the provider. Refused (409) for a protected instance (INSTANCE_PROTECTED), one being claimed, one another operation holds (OPERATION_IN_PROGRESS), or one that is not an agent.",
        security,
        params: InstanceIdParams,
        response: { 200: ReleaseResultView, ...errs },
      },
    },
    async (req) => ({ ok: true, ...(await agents.release(req.params.id)) }),
  );

  app.post(
    "/api/pool/instances/:id/upgrade",
    {
      onRequest: limited,
      schema: {
        description:
          "Upgrade one agent (claimed, pending or crashed) to its pool's current template, in place (Railway: redeploy with the new image and its variables; local: restart with the new command). Answers 202 with the job; read its progress at GET /api/upgrades/{job}. Refused (409) for an agent being claimed, an instance that is not an agent, or one already on the current template.",
        security,
        params: InstanceIdParams,
        response: { 202: UpgradeJobAnswer, ...errs },
      },
    },
    async (req, reply) => {
      const job = await agents.upgradeInstance(req.params.id);
      reply.status(202);
      return { job: upgradeJobView(job) };
    },
  );

  app.post(
    "/api/pools/:id/upgrade",
    {
      onRequest: limited,
      schema: {
        description:
          "Upgrade agents of a pool to its current template: the ones named (`{ids}`) or every agent on an older template (`{all: true}`), a few at a time. Protected agents, agents being claimed and instances that are not agents are skipped (listed with the reason). Answers 202 with the job; its progress (total, done, failed, per agent) is at GET /api/upgrades/{job}, and it survives a restart of the pool manager.",
        security,
        params: PoolIdParams,
        body: PoolUpgradeBody,
        response: { 202: UpgradeJobAnswer, ...errs },
      },
    },
    async (req, reply) => {
      const job = await agents.upgradePool(req.params.id, req.body);
      reply.status(202);
      return { job: upgradeJobView(job) };
    },
  );

  app.get(
    "/api/upgrades/:id",
    {
      onRequest: auth,
      schema: {
        description: "An upgrade job: its state, counts and each agent's outcome.",
        security,
        params: JobIdParams,
        response: { 200: UpgradeJobAnswer, ...errs },
      },
    },
    async (req) => ({ job: upgradeJobView(await agents.job(req.params.id)) }),
  );

  app.get(
    "/api/pools/:id/upgrades",
    {
      onRequest: auth,
      schema: {
        description: "The pool's latest upgrade jobs, newest first.",
        security,
        params: PoolIdParams,
        querystring: z.object({ limit: z.coerce.number().int().min(1).max(100).default(10) }),
        response: { 200: UpgradeJobsAnswer, ...errs },
      },
    },
    async (req) => ({ jobs: (await agents.jobs(req.params.id, req.query.limit)).map(upgradeJobView) }),
  );

  app.get(
    "/api/pools/:id/versions",
    {
      onRequest: auth,
      schema: {
        description:
          "The pool's live instances counted by template (the current one or an older one), runtime type and version (as /pool/health reports them) and status.",
        security,
        params: PoolIdParams,
        response: { 200: VersionsView, ...errs },
      },
    },
    async (req) => {
      const v = await agents.versions(req.params.id);
      return { pool: v.pool, templateHash: v.templateHash, versions: v.rows };
    },
  );
}
