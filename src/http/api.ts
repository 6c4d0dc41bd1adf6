/**
 * The pool API beyond the public basics: claim, agents, instances, operator actions, events and
 * metrics. Handlers are thin over `PoolOperations`; the zod schemas validate requests and generate
 * the OpenAPI document. Every protected route authenticates in `onRequest`, before its body is read
 * or validated (an unauthenticated request is a 401 whatever it carries); mutating routes then
 * count against the client's shared rate limit.
 */
import { z } from "zod";
import { PoolError } from "../errors.ts";
import type { PoolOperations } from "../pool/operations.ts";
import type { PoolMetrics } from "../metrics.ts";
import { INSTANCE_STATUSES } from "../instance/status.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import type { PoolServer } from "./server.ts";
import { CountsView, ErrorView, EventView, InstanceView, countsView, eventView, instanceView } from "./views.ts";
import type { PoolEventStream } from "./events.ts";

const httpUrl = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => {
      try {
        const u = new URL(s);
        return u.protocol === "http:" || u.protocol === "https:";
      } catch {
        return false;
      }
    }, "must be an http(s) URL");

/**
 * A claim's body, as today's clients send it (issue 9). Every field is optional: the earlier
 * system's landing page posts only `{joinUrl}` (agentName and instructions then come from
 * CLAIM_DEFAULT_AGENT_NAME / CLAIM_DEFAULT_INSTRUCTIONS), and its web proxy adds `source` to every
 * body. Unknown fields are accepted and dropped (not `.strict()`): a client one field ahead of the
 * server, or a proxy that adds one, must still claim. A known field with a bad value is still a
 * 400 VALIDATION_FAILED.
 */
export const ClaimBody = z.object({
  agentName: z.string().trim().min(1).max(200).optional().describe('default: the pool\'s claim default, else CLAIM_DEFAULT_AGENT_NAME ("Assistant")'),
  instructions: z.string().max(50_000).optional().describe("default: the pool's claim default, else CLAIM_DEFAULT_INSTRUCTIONS"),
  joinUrl: httpUrl(2_000)
    .optional()
    .describe("invite URL of a conversation to join; its host must be one the pool allows (its joinUrlHosts, else JOIN_URL_HOSTS)"),
  profileImage: httpUrl(2_000).optional(),
  metadata: z
    .record(z.string().max(200), z.unknown())
    .refine((m) => JSON.stringify(m).length <= 8_192, "must serialize to at most 8 KiB")
    .optional(),
  pool: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,31}$/)
    .optional()
    .describe("take from this pool (by id)"),
  runtime: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9._-]+$/)
    .optional()
    .describe('take from a pool with this runtime label ("openclaw", "hermes", …), as the earlier system\'s clients send it; ignored when `pool` is given'),
  fresh: z.boolean().optional().describe("only an instance of its pool's current template (not one left over from before a rollout)"),
  waitMs: z
    .number()
    .int()
    .min(0)
    .max(60_000)
    .optional()
    .describe(
      "wait up to this long for an idle instance, in the pool's queue: first come, first served across replicas; 503 QUEUE_FULL when the queue is full; closing the connection gives the place up",
    ),
  source: z
    .string()
    .trim()
    .min(1)
    .max(64)
    .regex(/^[^\p{Cc}]*$/u, "no control characters")
    .optional()
    .describe('where the claim comes from (e.g. "landing"): recorded with the claim and shown with the agent'),
});
export type ClaimBody = z.input<typeof ClaimBody>;

export const ClaimResult = z.object({
  inviteUrl: z.string().nullable(),
  conversationId: z.string().nullable(),
  instanceId: z.string(),
  joined: z.boolean(),
  status: z.enum(["claimed", "pending_acceptance"]),
  agentName: z.string(),
  pool: z.string().describe("the pool the instance came from"),
  runtime: z.string().describe("that pool's runtime label"),
});

const ClaimHeaders = z.object({
  "idempotency-key": z
    .string()
    .min(1)
    .max(200)
    .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces")
    .optional(),
});

const Count = (max: number, def: number | undefined) =>
  z.object({ count: def === undefined ? z.number().int().min(1).max(max).optional() : z.number().int().min(1).max(max).default(def) }).strict();

const IdParams = z.object({ id: z.string().min(1).max(100) });

const ForeignView = z.object({ ref: z.string(), name: z.string(), owner: z.string().nullable() });

export const Summary = z.object({
  pool: z.string(),
  runtime: z.string().describe("the pool's runtime label: clients select pools by it"),
  minIdle: z.number(),
  maxTotal: z.number(),
  templateHash: z.string().describe("hash of what the pool's instances are made from"),
  counts: CountsView,
  foreign: z
    .array(ForeignView)
    .describe("resources named like this pool's that belong to another deployment (owner) or to none (null): never deleted or adopted"),
});

/** What one reconcile pass did (`TickResult` of the reconciler). */
export const TickResultView = z.object({
  at: z.string(),
  durationMs: z.number(),
  leader: z.boolean().describe("false when another replica holds the reconciler lease: this pass did nothing"),
  term: z.number().nullable().describe("the lease term the pass acted under; every write it made was conditional on it"),
  listing: z.enum(["complete", "partial", "failed", "skipped"]),
  providerCalls: z.object({ list: z.number(), create: z.number(), delete: z.number() }),
  healthChecks: z.number(),
  healthFailures: z.number(),
  transitions: z.array(z.object({ id: z.string(), from: z.string(), to: z.string(), reason: z.string() })),
  created: z.array(z.string()),
  deleted: z.array(z.object({ ref: z.string(), instanceId: z.string().nullable(), reason: z.string() })),
  renamed: z.array(z.string()).describe("claimed instances whose service was renamed to show the agent's name this pass"),
  foreign: z
    .array(ForeignView)
    .describe("resources named like this pool's that belong to another deployment (owner) or to none (null, made before owner ids): never deleted or adopted"),
  notes: z.array(z.string()),
  counts: CountsView,
  cleaned: z
    .object({ events: z.number(), claimRecords: z.number(), instances: z.number(), rateLimits: z.number(), more: z.boolean() })
    .optional()
    .describe("what retention pruned, when the cleaner ran in this pass"),
  errors: z.array(z.string()),
});

/** POST /api/pool/replenish: `created`/`errors` with a count, the reconcile pass's `result` without. */
export const ReplenishResult = z.object({
  ok: z.boolean(),
  created: z.array(z.string()).optional(),
  errors: z.array(z.string()).optional(),
  result: TickResultView.optional(),
  counts: CountsView,
});

export const DrainResult = z.object({ ok: z.boolean(), drained: z.array(z.string()), errors: z.array(z.string()), counts: CountsView });

/** DELETE /api/pool/instances/:id and /api/pool/crashed/:id. */
export const Killed = z.object({ ok: z.boolean(), id: z.string(), status: z.string() });

/** A plain-text or event-stream 200 for the OpenAPI document (these routes do not send JSON). */
const textResponse = (contentType: string, description: string) => ({ description, content: { [contentType]: { schema: z.string() } } });

export const AgentView = z.object({
  id: z.string(),
  pool: z.string(),
  /** The instance's name (the provider resource); `agentName` is the claimed agent's. */
  name: z.string(),
  status: z.enum(INSTANCE_STATUSES),
  agentName: z.string().nullable(),
  instructions: z.string().nullable(),
  inviteUrl: z.string().nullable(),
  conversationId: z.string().nullable(),
  joinUrl: z.string().nullable(),
  /** The claim body's `source` (e.g. "landing"), null when it said nothing. */
  claimSource: z.string().nullable(),
  claimedAt: z.string().nullable(),
});

/** `?pool=<id>`: the pool a read acts on (default: POOL_ID). */
export const PoolQuery = z.object({ pool: z.string().regex(POOL_ID_RE, "a pool id").optional() });

export interface ApiDeps {
  ops: PoolOperations;
  metrics: PoolMetrics;
  events: PoolEventStream;
  /** onRequest hook: the API key. */
  auth: (req: never, reply: never) => Promise<void>;
  /** onRequest hooks of mutating routes: the API key, then the client's rate limit. */
  limited: ReadonlyArray<(req: never, reply: never) => Promise<void>>;
}

export function registerApi(app: PoolServer, deps: ApiDeps): void {
  const { ops } = deps;
  const auth = deps.auth as never;
  const security = [{ bearer: [] }];
  const errs = { 400: ErrorView, 401: ErrorView, 404: ErrorView, 409: ErrorView, 429: ErrorView, 500: ErrorView, 502: ErrorView, 503: ErrorView };
  const limited = deps.limited as never;

  app.post(
    "/api/pool/claim",
    {
      onRequest: limited,
      schema: {
        description: "Claim an idle instance and provision it: create a conversation, or join one by invite URL.",
        security,
        body: ClaimBody,
        headers: ClaimHeaders,
        response: { 200: ClaimResult, ...errs },
      },
    },
    async (req, reply) => {
      // The client going away (its connection closes before the answer is sent) aborts a waiting
      // claim: it gives its place in the queue up instead of being served an agent nobody takes.
      const gone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) gone.abort();
      };
      reply.raw.once("close", onClose);
      try {
        // Defaults and the invite-host allow-list are the pool's, applied by the claim itself.
        return await ops.claim({ ...req.body, idempotencyKey: req.headers["idempotency-key"], signal: gone.signal });
      } catch (err) {
        if (err instanceof PoolError && (err.code === "POOL_EMPTY" || err.code === "QUEUE_FULL")) {
          reply.header("retry-after", String(err.details?.retryAfter ?? 30));
        }
        throw err;
      } finally {
        reply.raw.off("close", onClose);
      }
    },
  );

  app.get(
    "/api/pool/agents",
    {
      onRequest: auth,
      schema: {
        description: "Crashed, pending and claimed agents, crashed first (of `?pool=`, default POOL_ID; `?pool=*` for every pool).",
        security,
        querystring: z.object({ pool: z.union([z.literal("*"), z.string().regex(POOL_ID_RE, "a pool id")]).optional() }),
        response: { 200: z.object({ agents: z.array(AgentView) }), ...errs },
      },
    },
    async (req) => ({
      agents: (await ops.agents(req.query.pool === "*" ? null : (req.query.pool ?? ops.poolId))).map((r) => ({
        pool: r.poolId,
        id: r.id,
        name: r.name,
        status: r.status,
        agentName: r.agentName,
        instructions: r.instructions,
        inviteUrl: r.inviteUrl,
        conversationId: r.conversationId,
        joinUrl: r.joinUrl,
        claimSource: r.claimSource,
        claimedAt: r.claimedAt?.toISOString() ?? null,
      })),
    }),
  );

  app.get(
    "/api/pool/instances/:id",
    {
      onRequest: auth,
      schema: {
        description: "One instance and its recent events.",
        security,
        params: IdParams,
        response: { 200: z.object({ instance: InstanceView, events: z.array(EventView) }), ...errs },
      },
    },
    async (req) => {
      const { instance, events } = await ops.instance(req.params.id);
      return { instance: instanceView(instance), events: events.map(eventView) };
    },
  );

  app.post(
    "/api/pool/replenish",
    {
      onRequest: limited,
      schema: {
        description:
          "With `count`: create up to that many instances now (bounded by max total) → `{ok, created, errors, counts}`. Without: run a reconcile pass → `{ok, result, counts}`.",
        security,
        body: Count(20, undefined).optional(),
        querystring: PoolQuery,
        response: {
          200: ReplenishResult,
          ...errs,
        },
      },
    },
    async (req) => {
      const count = req.body?.count;
      const pool = req.query.pool ?? ops.poolId;
      if (count === undefined) {
        const result = await ops.reconcile();
        return { ok: result.errors.length === 0, result, counts: (await ops.summary(pool)).counts };
      }
      const r = await ops.add(count, pool);
      return { ok: r.errors.length === 0, created: r.created, errors: r.errors, counts: (await ops.summary(pool)).counts };
    },
  );

  app.post(
    "/api/pool/drain",
    {
      onRequest: limited,
      schema: {
        description: "Delete up to `count` idle instances (default 1).",
        security,
        body: Count(20, 1).optional(),
        querystring: PoolQuery,
        response: { 200: DrainResult, ...errs },
      },
    },
    async (req) => {
      const pool = req.query.pool ?? ops.poolId;
      const r = await ops.drain(req.body?.count ?? 1, pool);
      return { ok: r.errors.length === 0, drained: r.drained, errors: r.errors, counts: (await ops.summary(pool)).counts };
    },
  );

  app.post(
    "/api/pool/reconcile",
    { onRequest: limited, schema: { description: "Run a reconcile pass now and return its result.", security, response: { 200: TickResultView, ...errs } } },
    async () => ops.reconcile(),
  );

  app.delete(
    "/api/pool/instances/:id",
    {
      onRequest: limited,
      schema: {
        description: "Kill an instance: provider delete, row kept as dead in the event log.",
        security,
        params: IdParams,
        response: { 200: Killed, ...errs },
      },
    },
    async (req) => ({ ok: true, ...(await ops.kill(req.params.id)) }),
  );

  app.delete(
    "/api/pool/crashed/:id",
    { onRequest: limited, schema: { description: "Dismiss a crashed agent.", security, params: IdParams, response: { 200: Killed, ...errs } } },
    async (req) => ({ ok: true, ...(await ops.dismiss(req.params.id)) }),
  );

  app.get(
    "/api/pool/summary",
    {
      onRequest: auth,
      schema: {
        description: "Counts with the pool's min idle and max total (`?pool=`, default POOL_ID).",
        security,
        querystring: PoolQuery,
        response: { 200: Summary, ...errs },
      },
    },
    async (req) => {
      const s = await ops.summary(req.query.pool);
      return { ...s, counts: countsView(s.counts) };
    },
  );

  app.get(
    "/api/pool/events",
    {
      onRequest: auth,
      // A HEAD twin would open a stream whose head Node never sends (no body is ever written).
      exposeHeadRoute: false,
      schema: {
        description:
          "Server-sent events of the pool. `event: status` with `id: <event id>` and data `{id, instanceId, from, to, actor, reason, at}` for each status change (from any replica); `event: counts` with the pool summary on connect and after changes; a `: ping` comment every 15 s. Send `Last-Event-ID` to replay what was missed.",
        security,
        headers: z.object({
          "last-event-id": z
            .string()
            .regex(/^\d{1,15}$/, "an event id")
            .optional(),
        }),
        response: {
          200: textResponse("text/event-stream", "An event stream (never ends on its own)."),
          400: ErrorView,
          401: ErrorView,
          500: ErrorView,
          503: ErrorView,
        },
      },
    },
    async (req, reply) => deps.events.serve(req.raw, reply, req.headers["last-event-id"]),
  );

  app.get(
    "/metrics",
    {
      onRequest: auth,
      schema: {
        description: "Prometheus metrics (text exposition format).",
        security,
        response: { 200: textResponse("text/plain", "Metrics in the Prometheus text format."), 401: ErrorView, 500: ErrorView },
      },
    },
    async (_req, reply) => {
      reply.header("content-type", deps.metrics.registry.contentType);
      return deps.metrics.registry.metrics();
    },
  );
}
