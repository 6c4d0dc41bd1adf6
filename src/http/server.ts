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
import { dashboardPlugin } from "../dashboard/plugin.ts";
import type { Logger } from "../logger.ts";
import { PoolEventStream } from "./events.ts";
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
  /** Per-instance resources, for the dashboard's spend and top-ups (issue 12). */
  resources?: ResourceService | null | undefined;
  /** Operators' actions on agents (issue 11: release, upgrades, versions); their routes only when set. */
  agents?: AgentOperations | undefined;
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

  app.get("/healthz", { schema: { response: { 200: z.object({ ok: z.boolean() }) } } }, async () => ({ ok: true }));

  app.get(
    "/version",
    { schema: { response: { 200: z.object({ version: z.string(), commit: z.string().nullable() }) } } },
    async () => deps.version,
  );

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

  // Behind the key like the rest of the API: only /healthz, /version and the counts are public.
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
  const events = new PoolEventStream({
    store: deps.store,
    poolId: deps.poolId,
    summary: async () => {
      const s = await deps.ops.summary();
      return { ...s, counts: countsView(s.counts) };
    },
    logger: deps.logger as unknown as Logger,
  });
  // Open event streams would hold the server's close forever: end them before it waits on
  // connections; onClose again stops a poller that a request started meanwhile.
  app.addHook("preClose", async () => events.close());
  app.addHook("onClose", async () => events.close());
  registerApi(app, { ops: deps.ops, metrics: deps.metrics, events, auth: auth as never, limited: [auth, limit] as never });
  registerPoolRoutes(app, { ops: deps.ops, auth: auth as never, limited: [auth, limit] as never });
  if (deps.agents) registerAgentRoutes(app, { agents: deps.agents, auth: auth as never, limited: [auth, limit] as never });
  if (deps.instanceRoutes) registerInstanceRoutes(app, { ...deps.instanceRoutes, store: deps.store, logger: deps.logger as unknown as Logger });
  await app.register(dashboardPlugin, {
    ops: deps.ops,
    store: deps.store,
    poolId: deps.poolId,
    apiKey: deps.apiKey,
    adminPassword: deps.adminPassword,
    environment: deps.environment,
    resources: deps.resources ?? null,
    agents: deps.agents,
    ...(deps.loginAttemptsPerMinute ? { loginAttemptsPerMinute: deps.loginAttemptsPerMinute } : {}),
  });

  return app;
}

