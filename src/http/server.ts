/**
 * The HTTP surface. Fastify with zod schemas: the same schemas validate requests and generate
 * `/openapi.json`. Errors leave as `{error, code}` from the registry in `errors.ts`; a driver
 * error or a stack never reaches a client.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type RawServerDefault } from "fastify";
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import swagger from "@fastify/swagger";
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { z } from "zod";
import { ERROR_CODES, isPoolError } from "../errors.ts";
import { PoolQuery, registerApi, Summary } from "./api.ts";
import { registerPoolRoutes } from "./pool-routes.ts";
import { registerWebhookRoutes } from "./webhook-routes.ts";
import { registerRolloutRoutes } from "./rollout-routes.ts";
import type { RolloutService } from "../pool/rollouts.ts";
import { dashboardPlugin } from "../dashboard/plugin.ts";
import type { Logger } from "../logger.ts";
import { PoolChangeWatcher } from "./changes.ts";
import { PoolEventStream } from "./events.ts";
import { Readiness } from "./readiness.ts";
import type { Store } from "../db/store.ts";
import type { Reconciler } from "../pool/reconciler.ts";
import type { PoolOperations } from "../pool/operations.ts";
import type { PoolMetrics } from "../metrics.ts";
import { bearerFrom, requireApiKey, sameSecret } from "./auth.ts";
import { mutationLimit } from "./rate-limit.ts";
import { refuseUnstorableInput } from "./storable-text.ts";
import { CountsView, ErrorView, InstanceView, countsView, instanceView } from "./views.ts";
import { registerInstanceRoutes, type InstanceRoutesOptions } from "./instance-routes.ts";
import type { ResourceService } from "../resource/service.ts";
import type { AgentOperations } from "../pool/agent-operations.ts";
import { registerAgentRoutes } from "./agent-routes.ts";

export interface ServerDeps {
  store: Store;
  reconciler: Reconciler;
  ops: PoolOperations;
  metrics: PoolMetrics;
  poolId: string;
  apiKey: string;
  logger: FastifyBaseLogger;
  version: { version: string; commit: string | null };
  /** Requests per minute per client on mutating routes (default 120). */
  mutationRateLimit?: number;
  /** Proxy hops whose X-Forwarded-For is trusted (0: none). */
  trustProxy?: number;
  /** Failed dashboard sign-ins allowed per address per minute (default 5). */
  loginAttemptsPerMinute?: number;
  /** Largest accepted request body, in bytes. */
  bodyLimit?: number;
  /** Dashboard login password (default: the API key) and POOL_ENVIRONMENT shown on its badge. */
  adminPassword?: string | undefined;
  environment?: string | undefined;
  /** Defaults of a claim's agent name and instructions, and the invite-link hosts it may join. */
  /** The routes instances call about themselves (`/api/instance/…`, issue 12); none when unset. */
  instanceRoutes?: Omit<InstanceRoutesOptions, "store" | "logger"> | undefined;
  /** Railway's deployment webhook secret; the route exists only when set (issue 10). */
  webhookSecret?: string | undefined;
  /** Per-instance resources, for the dashboard's spend and top-ups (issue 12). */
  resources?: ResourceService | null | undefined;
  /** Live updates read the store this often without a change hint (default 20 s). */
  liveSafetyReadMs?: number;
  /**
   * `/readyz`: `serve()` feeds it every pass. Without one the route checks the database only
   * (an embedder that runs no reconcile loop).
   */
  readiness?: Readiness;
  /** Rollouts of changed templates (issue 11): their routes and dashboard page; none when unset. */
  rollouts?: RolloutService | null | undefined;
  /** Operators' actions on agents (issue 11: release, upgrades, versions); their routes only when set. */
  agents?: AgentOperations | undefined;
}

/** The process's reader of changes behind a server's live updates (tests and benchmarks count its reads). */
const CHANGE_WATCHERS = new WeakMap<object, PoolChangeWatcher>();
export function changeWatcherOf(app: PoolServer): PoolChangeWatcher | undefined {
  return CHANGE_WATCHERS.get(app);
}

export type PoolServer = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

/** Every route of a server, as registered (HEAD twins included): the fuzz test walks them all. */
const ROUTES = new WeakMap<object, Array<{ method: string; url: string }>>();
export function routeTable(app: PoolServer): ReadonlyArray<{ method: string; url: string }> {
  return ROUTES.get(app) ?? [];
}

/**
 * Trust `hops` proxies in front of the server: `req.ip` is then the address the outermost of them
 * saw. A function, not the number: Fastify 5 treats a numeric `trustProxy` as "trust nothing"
 * (its hop count cannot validate the immediate peer), so TRUST_PROXY=1 used to change nothing.
 * The trade-off is the same as any hop count: whoever reaches the server without going through
 * the proxy can name any address in X-Forwarded-For.
 */
export function trustHops(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

export async function buildServer(deps: ServerDeps): Promise<PoolServer> {
  const trustProxy = deps.trustProxy ?? 0;
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: deps.bodyLimit ?? 64 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    // A path that does not decode, or a parameter longer than the router takes: refused before
    // any route runs, in our `{error, code}` shape rather than Fastify's own.
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      const long = err.code === "FST_ERR_MAX_PARAM_LENGTH";
      return reply
        .status(long ? 414 : 400)
        .send({ error: long ? "A path segment is too long." : "The request path could not be decoded.", code: "VALIDATION_FAILED" });
    },
    // Behind a proxy every client shares its address; rate limits need the forwarded one.
    ...(trustProxy > 0 ? { trustProxy: trustHops(trustProxy) } : {}),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  const routes: Array<{ method: string; url: string }> = [];
  ROUTES.set(app, routes);
  app.addHook("onRoute", (r) => {
    for (const method of [r.method].flat()) routes.push({ method, url: r.url });
  });

  // Characters Postgres cannot store, nesting too deep: 400 at validation, for every route. A
  // preValidation hook, so it runs after each route's authentication (onRequest) and after the
  // body is parsed.
  app.addHook("preValidation", refuseUnstorableInput);

  if (trustProxy === 0) {
    // Requests forwarded by a proxy while TRUST_PROXY=0: every client has the proxy's address, so
    // they share one rate-limit bucket and five wrong passwords lock every operator out. Said
    // once per server (not per request: that would flood the log).
    let warned = false;
    app.addHook("onRequest", async (req) => {
      if (warned || req.headers["x-forwarded-for"] === undefined) return;
      warned = true;
      req.log.warn(
        "requests carry X-Forwarded-For but TRUST_PROXY=0: every client shares the proxy's address, one rate-limit bucket and one sign-in throttle; set TRUST_PROXY to the number of proxies in front of the server (1 behind Railway's edge)",
      );
    });
  }

  await app.register(swagger, {
    openapi: {
      info: { title: "agent-pool", version: deps.version.version, description: "Warm pool of AI agent instances." },
      components: {
        securitySchemes: {
          bearer: { type: "http", scheme: "bearer" },
          instance: { type: "http", scheme: "bearer", description: "An instance's own credentials: `<instance id>:<gateway token>`." },
        },
      },
    },
    transform: jsonSchemaTransform,
  });

  app.setErrorHandler((err, req, reply) => {
    if (isPoolError(err)) {
      return reply.status(err.status).send({ error: err.message, code: err.code, ...(err.details ?? {}) });
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const first = err.validation[0];
      const path = (first?.instancePath ?? "").replace(/^\//, "").replaceAll("/", ".");
      const where = path ? ` at ${path}` : "";
      return reply.status(400).send({ error: `Invalid request${where}: ${first?.message ?? "bad input"}`, code: "VALIDATION_FAILED" });
    }
    const e = err as { statusCode?: number; code?: string };
    if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      return reply.status(413).send({ error: ERROR_CODES.PAYLOAD_TOO_LARGE.message, code: "PAYLOAD_TOO_LARGE" });
    }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      // Fastify's own 4xx (malformed JSON, wrong content type): keep the status, use our shape.
      return reply.status(e.statusCode).send({ error: "The request could not be read (malformed body or headers).", code: "VALIDATION_FAILED" });
    }
    req.log.error({ err }, "unhandled error");
    return reply.status(500).send({ error: ERROR_CODES.INTERNAL.message, code: "INTERNAL" });
  });
  app.setNotFoundHandler((_req, reply) => reply.status(404).send({ error: ERROR_CODES.NOT_FOUND.message, code: "NOT_FOUND" }));

  const auth = requireApiKey(deps.apiKey);
  const keyTag = createHash("sha256").update(deps.apiKey).digest("hex").slice(0, 12);
  const errors = { 401: ErrorView, 500: ErrorView };

  // Liveness: the process is up and its event loop turns. Nothing else, so a database outage does
  // not get every replica restarted by an orchestrator at once.
  app.get("/healthz", { schema: { description: "Liveness: the process is up (public).", response: { 200: z.object({ ok: z.boolean() }) } } }, async () => ({
    ok: true,
  }));

  // Readiness: the database answers and this replica's reconcile loop completed a pass recently
  // (src/http/readiness.ts). For load balancers and Railway's deploy health check.
  const readiness = deps.readiness ?? databaseOnlyReadiness(deps.store);
  app.get(
    "/readyz",
    {
      schema: {
        description:
          "Readiness (public): 200 when the database answers and a reconcile pass of this replica completed within the lease TTL (3 ticks, at least 15 s), else 503 NOT_READY with the reason.",
        response: { 200: z.object({ ready: z.literal(true), lastPassAgeMs: z.number() }), 503: ErrorView.extend({ lastPassAgeMs: z.number().nullable() }) },
      },
    },
    async (_req, reply) => {
      const r = await readiness.check();
      if (r.ready) return r;
      reply.header("cache-control", "no-store");
      return reply.status(503).send({ error: r.reason, code: "NOT_READY" as const, lastPassAgeMs: r.lastPassAgeMs });
    },
  );

  app.get("/version", { schema: { response: { 200: z.object({ version: z.string(), commit: z.string().nullable() }) } } }, async () => deps.version);

  app.get(
    "/api/pool/counts",
    { schema: { description: "Instances per status (public; `?pool=`, default POOL_ID).", querystring: PoolQuery, response: { 200: CountsView } } },
    async (req) => countsView(await deps.store.countByStatus((req.query as { pool?: string }).pool ?? deps.poolId)),
  );

  app.get(
    "/api/pool/status",
    {
      // onRequest, not preHandler: authentication comes before body parsing and validation, so an
      // unauthenticated request is a 401 whatever it carries (issue 8).
      onRequest: auth,
      schema: {
        description: "Counts, the pool's min idle and max total, and every live instance (`?pool=`, default POOL_ID). Never includes a gateway token.",
        security: [{ bearer: [] }],
        querystring: PoolQuery,
        response: {
          200: Summary.extend({ instances: z.array(InstanceView) }),
          ...errors,
        },
      },
    },
    async (req) => {
      const pool = (req.query as { pool?: string }).pool ?? deps.poolId;
      const [summary, rows] = await Promise.all([deps.ops.summary(pool), deps.ops.instances(pool)]);
      return { ...summary, counts: countsView(summary.counts), instances: rows.map(instanceView) };
    },
  );

  // Behind the key like the rest of the API: only /healthz, /readyz, /version and the counts are public.
  app.get("/openapi.json", { schema: { hide: true }, onRequest: auth }, async () => app.swagger());

  // Mutating routes: authentication, then one hit on the client's shared counter (every replica
  // counts in the same row). Per client = address + key tag: a hash of the key, so the key
  // itself is never stored; anonymous callers never get this far (401 first).
  const limit = mutationLimit({
    store: deps.store,
    max: deps.mutationRateLimit ?? 120,
    windowMs: 60_000,
    clientOf: (req) => {
      const token = bearerFrom(req.headers.authorization);
      return `${req.ip}|${token !== null && sameSecret(token, deps.apiKey) ? keyTag : "anon"}`;
    },
    logger: deps.logger as unknown as Logger,
  });
  // One reader of a pool's changes per process, woken by the database's NOTIFY, for every event
  // stream and every dashboard page of that pool (src/http/changes.ts). Made when a page of the
  // pool first connects; pools are few, and a reader with nobody listening does nothing.
  const watchers = new Map<string, PoolChangeWatcher>();
  const changesOf = (pool: string): PoolChangeWatcher => {
    let w = watchers.get(pool);
    if (!w) {
      w = new PoolChangeWatcher({
        store: deps.store,
        poolId: pool,
        summary: () => deps.ops.summary(pool),
        ...(deps.rollouts ? { watch: () => deps.store.rollouts.lastChange() } : {}),
        logger: deps.logger as unknown as Logger,
        ...(deps.liveSafetyReadMs ? { safetyReadMs: deps.liveSafetyReadMs } : {}),
      });
      watchers.set(pool, w);
    }
    return w;
  };
  const changes = changesOf(deps.poolId);
  CHANGE_WATCHERS.set(app, changes);
  const events = new PoolEventStream({
    store: deps.store,
    poolId: deps.poolId,
    changes,
    summary: () => deps.ops.summary(),
    view: (s) => ({ ...s, counts: countsView(s.counts) }),
    logger: deps.logger as unknown as Logger,
  });
  // Open event streams would hold the server's close forever: end them before it waits on
  // connections; onClose again ends any that a request started meanwhile, and stops the reader.
  app.addHook("preClose", async () => events.close());
  app.addHook("onClose", async () => {
    await events.close();
    await Promise.all([...watchers.values()].map((w) => w.close()));
  });
  registerApi(app, { ops: deps.ops, metrics: deps.metrics, events, auth: auth as never, limited: [auth, limit] as never });
  registerPoolRoutes(app, { ops: deps.ops, auth: auth as never, limited: [auth, limit] as never, rollouts: deps.rollouts });
  if (deps.webhookSecret) registerWebhookRoutes(app, { store: deps.store, secret: deps.webhookSecret, limited: [limit] as never });
  if (deps.rollouts) registerRolloutRoutes(app, { ops: deps.ops, rollouts: deps.rollouts, auth: auth as never, limited: [auth, limit] as never });
  if (deps.agents) registerAgentRoutes(app, { agents: deps.agents, auth: auth as never, limited: [auth, limit] as never });
  if (deps.instanceRoutes) registerInstanceRoutes(app, { ...deps.instanceRoutes, store: deps.store, logger: deps.logger as unknown as Logger });
  await app.register(dashboardPlugin, {
    ops: deps.ops,
    changesOf,
    store: deps.store,
    poolId: deps.poolId,
    apiKey: deps.apiKey,
    adminPassword: deps.adminPassword,
    environment: deps.environment,
    resources: deps.resources ?? null,
    rollouts: deps.rollouts ?? null,
    agents: deps.agents,
    ...(deps.loginAttemptsPerMinute ? { loginAttemptsPerMinute: deps.loginAttemptsPerMinute } : {}),
  });

  return app;
}

/** Readiness without a reconcile loop to watch: the database check alone. */
function databaseOnlyReadiness(store: Store): Readiness {
  const r = new Readiness({ store, maxPassAgeMs: Number.POSITIVE_INFINITY });
  r.passEnded({ errors: [] });
  return r;
}
