/**
 * The HTTP surface. Fastify with zod schemas: the same schemas validate requests and generate
 * `/openapi.json`. Errors leave as `{error, code}` from the registry in `errors.ts`; a driver
 * error or a stack never reaches a client.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RawServerDefault } from "fastify";
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import swagger from "@fastify/swagger";
import rateLimit from "@fastify/rate-limit";
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from "fastify-type-provider-zod";
import { z } from "zod";
import { ERROR_CODES, PoolError, isPoolError } from "../errors.ts";
import { registerApi, type ClaimPolicy } from "./api.ts";
import { dashboardPlugin } from "../dashboard/plugin.ts";
import type { Logger } from "../logger.ts";
import { PoolEventStream } from "./events.ts";
import type { Store } from "../db/store.ts";
import type { Reconciler } from "../pool/reconciler.ts";
import type { PoolOperations } from "../pool/operations.ts";
import type { PoolMetrics } from "../metrics.ts";
import { bearerFrom, requireApiKey, sameSecret } from "./auth.ts";
import { CountsView, ErrorView, InstanceView, countsView, instanceView } from "./views.ts";

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
  /** Largest accepted request body, in bytes. */
  bodyLimit?: number;
  /** Dashboard login password (default: the API key) and POOL_ENVIRONMENT shown on its badge. */
  adminPassword?: string | undefined;
  environment?: string | undefined;
  /** Defaults of a claim's agent name and instructions, and the invite-link hosts it may join. */
  claimPolicy?: ClaimPolicy | undefined;
}

export type PoolServer = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

export async function buildServer(deps: ServerDeps): Promise<PoolServer> {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: deps.bodyLimit ?? 64 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    // Behind a proxy every client shares its address; rate limits need the forwarded one.
    ...(deps.trustProxy ? { trustProxy: deps.trustProxy as unknown as true } : {}),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  await app.register(swagger, {
    openapi: {
      info: { title: "agent-pool", version: deps.version.version, description: "Warm pool of AI agent instances." },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    },
    transform: jsonSchemaTransform,
  });

  app.setErrorHandler((err, req, reply) => {
    if (isPoolError(err)) {
      return reply.status(err.status).send({ error: err.message, code: err.code, ...(err.details ?? {}) });
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const first = err.validation[0];
      const where = first?.instancePath ? ` at ${first.instancePath.replace(/^\//, "").replaceAll("/", ".")}` : "";
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
    { schema: { description: "Instances per status (public).", response: { 200: CountsView } } },
    async () => countsView(await deps.store.countByStatus(deps.poolId)),
  );

  app.get(
    "/api/pool/status",
    {
      preHandler: auth,
      schema: {
        description: "Counts, the pool's min idle and max total, and every live instance. Never includes a gateway token.",
        security: [{ bearer: [] }],
        response: {
          200: z.object({ pool: z.string(), minIdle: z.number(), maxTotal: z.number(), counts: CountsView, instances: z.array(InstanceView) }),
          ...errors,
        },
      },
    },
    async () => {
      const [summary, rows] = await Promise.all([deps.ops.summary(), deps.store.listInstances(deps.poolId)]);
      return { pool: summary.pool, minIdle: summary.minIdle, maxTotal: summary.maxTotal, counts: countsView(summary.counts), instances: rows.map(instanceView) };
    },
  );

  // Behind the key like the rest of the API: only /healthz, /version and the counts are public.
  app.get("/openapi.json", { schema: { hide: true }, preHandler: auth }, async () => app.swagger());

  await app.register(rateLimit, {
    global: false,
    // Per client = address + key: callers with the key and anonymous ones from one address get
    // separate buckets (a hash, so the key itself is never a map key or in a log).
    keyGenerator: (req) => {
      const token = bearerFrom(req.headers.authorization);
      return `${req.ip}|${token !== null && sameSecret(token, deps.apiKey) ? keyTag : "anon"}`;
    },
    errorResponseBuilder: (_req, ctx) => new PoolError("RATE_LIMITED", `Too many requests; retry in ${Math.ceil(ctx.ttl / 1000)} s.`),
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
  registerApi(app, { ops: deps.ops, metrics: deps.metrics, events, auth: auth as never, mutationRateLimit: deps.mutationRateLimit ?? 120, claimPolicy: deps.claimPolicy });
  await app.register(dashboardPlugin, { ops: deps.ops, store: deps.store, poolId: deps.poolId, apiKey: deps.apiKey, adminPassword: deps.adminPassword, environment: deps.environment, joinUrlHosts: deps.claimPolicy?.joinUrlHosts });

  return app;
}

