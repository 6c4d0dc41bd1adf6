/**
 * Instances that talk back (issue 12): routes under `/api/instance/…` that an instance calls about
 * ITSELF, authenticated by its own credentials, `Authorization: Bearer <instance id>:<gateway token>`
 * (the earlier system's instance bearer). The earlier system's instance routes trusted any caller
 * that named an instance (seed-system §8); here:
 *
 * - the token is compared in constant time (both sides hashed), and a wrong one costs the same as
 *   an unknown id; the instance acted on is always the one the credentials name: no route takes an
 *   instance id from the body or the path, so an instance can act only on itself;
 * - a row that is not live (dead, or deleted) is refused like a wrong token: a stolen token of a
 *   dead instance opens nothing;
 * - authentication runs in `onRequest`, before the body is read or validated; then one hit on the
 *   instance's shared rate-limit counter (every replica counts in the same row);
 * - every call is logged as an instance event with the actor `instance` (a status change, or an
 *   event that changes none), and status changes are conditional transitions from the table.
 */
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import { RELEASED_CLAIM_FIELDS } from "../claim/claim.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { factoryReset, type RuntimeResetter } from "../instance/client.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { ResourceService } from "../resource/service.ts";
import { sameSecret } from "./auth.ts";
import { mutationLimit } from "./rate-limit.ts";
import type { PoolServer } from "./server.ts";
import { ErrorView } from "./views.ts";

export interface InstanceRoutesOptions {
  store: Store;
  /** The instance protocol, for `self/reset` (called with the instance's own token). */
  runtime: RuntimeResetter;
  /** Per-instance resources; null: none configured (credits answer 404). */
  resources: ResourceService | null;
  /** Requests per minute per instance, on the store's shared counters. */
  rateLimitPerMin: number;
  /** Timeout of the reset, and of the status call after it. */
  resetTimeoutMs: number;
  /** A row changed status: look sooner (hint to the reconciler, wake the resource reconciler). */
  onChanged?: (instance: InstanceRecord) => void;
  logger: Logger;
}

/** `Bearer <instance id>:<gateway token>`, or null. Ids are ours: short and plain (never sent to SQL otherwise). */
export function instanceCredentials(header: string | undefined): { id: string; token: string } | null {
  if (!header) return null;
  const m = /^Bearer\s+([A-Za-z0-9_-]{1,100}):(\S{1,512})\s*$/i.exec(header);
  return m ? { id: m[1]!, token: m[2]! } : null;
}

const ConversationBody = z.object({
  conversationId: z.string().trim().min(1).max(500).describe("the conversation the runtime joined"),
});
// Optional: a POST without a body arrives as null.
const FailBody = z.object({ error: z.string().max(1_000).optional().describe("why the join was refused, as the runtime says") }).nullish();

const ResourceViewSchema = z.object({
  kind: z.string(),
  state: z.enum(["creating", "ready", "deleting", "deleted"]),
  limit: z.number().nullable(),
  usage: z.number().nullable(),
  remaining: z.number().nullable(),
  usageAt: z.string().nullable(),
});

const Moved = z.object({ ok: z.boolean(), changed: z.boolean(), instanceId: z.string(), status: z.string() });

const SelfView = z.object({
  instanceId: z.string(),
  pool: z.string(),
  name: z.string(),
  status: z.string(),
  provider: z.string(),
  template: z.string().nullable().describe("what the instance was created from (image or runtime command)"),
  version: z.string().nullable().describe("the runtime version its health check reports"),
  agentName: z.string().nullable(),
  conversationId: z.string().nullable(),
  claimedAt: z.string().nullable(),
  resources: z.array(ResourceViewSchema).describe("its per-instance resources: spend and limits, never a secret"),
});

const CreditsView = ResourceViewSchema.extend({ live: z.boolean().describe("false: the vendor did not answer; the last numbers recorded") });

const errs = { 400: ErrorView, 401: ErrorView, 404: ErrorView, 409: ErrorView, 429: ErrorView, 500: ErrorView, 502: ErrorView, 503: ErrorView };

/** A hash-sized string no token equals; compared against when the id is unknown, so both cost the same. */
const NO_TOKEN = "\u0000no-such-instance";

export function registerInstanceRoutes(app: PoolServer, o: InstanceRoutesOptions): void {
  const caller = new WeakMap<FastifyRequest, InstanceRecord>();
  const security = [{ instance: [] }];

  async function authenticate(req: FastifyRequest): Promise<void> {
    const creds = instanceCredentials(req.headers.authorization);
    if (!creds) throw new PoolError("UNAUTHORIZED", "Missing or invalid instance credentials (Authorization: Bearer <instance id>:<gateway token>).");
    let row: InstanceRecord | null;
    try {
      row = await o.store.getInstance(creds.id);
    } catch (err) {
      o.logger.warn({ err: (err as Error).message }, "instance routes: could not read the instance");
      throw new PoolError("NOT_READY", "The pool manager cannot check credentials right now; try again shortly.");
    }
    const tokenOk = sameSecret(creds.token, row?.gatewayToken ?? NO_TOKEN);
    // One answer for an unknown id, a wrong token and a row that is not live: nothing to tell apart.
    if (!row || !tokenOk || row.status === "dead" || row.deletedAt !== null) {
      throw new PoolError("UNAUTHORIZED", "Missing or invalid instance credentials (Authorization: Bearer <instance id>:<gateway token>).");
    }
    caller.set(req, row);
  }
  const limit = mutationLimit({
    store: o.store,
    max: o.rateLimitPerMin,
    windowMs: 60_000,
    clientOf: (req) => `instance|${caller.get(req)?.id ?? "?"}`,
    logger: o.logger,
  });
  const onRequest = [authenticate, limit] as never;
  const self = (req: FastifyRequest): InstanceRecord => caller.get(req)!;

  /** An event that changes no status, for calls that read or could not move the row. */
  async function note(inst: InstanceRecord, reason: string): Promise<void> {
    await o.store.recordInstanceEvent(inst.id, "instance", reason).catch((err: unknown) => {
      o.logger.warn({ instanceId: inst.id, err: (err as Error).message }, "could not log an instance event");
    });
  }

  /** After a row went dead at its own request: its resources go now, the pool replaces it. */
  async function retired(row: InstanceRecord): Promise<void> {
    if (o.resources) {
      const left = await o.resources.release(row.id).catch((err: unknown) => [(err as Error).message]);
      if (left.length)
        o.logger.warn({ instanceId: row.id, errors: left }, "resources of a retired instance not deleted yet; the resource reconciler collects them");
    }
    o.onChanged?.(row);
  }

  function refused(inst: InstanceRecord, what: string): PoolError {
    return new PoolError("INVALID_TRANSITION", `${what}: the instance is ${inst.status}.`, { status: inst.status });
  }

  app.post(
    "/api/instance/pending-acceptance/complete",
    {
      onRequest,
      schema: {
        description: "The instance reports that its join request was accepted: pending_acceptance → claimed at once (not at the next pass).",
        security,
        body: ConversationBody,
        response: { 200: Moved.extend({ conversationId: z.string() }), ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      const conversationId = req.body.conversationId;
      log(req, inst, "pending-acceptance/complete");
      if (inst.status === "pending_acceptance") {
        const row = await o.store.transition({
          id: inst.id,
          from: "pending_acceptance",
          to: "claimed",
          actor: "instance",
          reason: "join accepted (reported by the instance)",
          set: { conversationId },
        });
        if (row) {
          o.onChanged?.(row);
          return { ok: true, changed: true, instanceId: row.id, status: row.status, conversationId };
        }
      }
      // A retry of a completion that landed, or the reconciler saw it first: the same answer.
      const now = (await o.store.getInstance(inst.id)) ?? inst;
      if (now.status === "claimed" && now.conversationId === conversationId) {
        await note(now, "join accepted (reported again by the instance)");
        return { ok: true, changed: false, instanceId: now.id, status: now.status, conversationId };
      }
      await note(now, `reported an accepted join while ${now.status}: refused`);
      throw refused(now, "Not waiting for a join to be accepted");
    },
  );

  app.post(
    "/api/instance/pending-acceptance/fail",
    {
      onRequest,
      schema: {
        description:
          "The instance reports that its join request was refused: the agent serves nobody, the instance is retired (pending_acceptance → dead) and its resources deleted.",
        security,
        body: FailBody,
        response: { 200: Moved, ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      log(req, inst, "pending-acceptance/fail");
      const why = req.body?.error?.replace(/\s+/g, " ").trim().slice(0, 200);
      const row =
        inst.status === "pending_acceptance"
          ? await o.store.transition({
              id: inst.id,
              from: "pending_acceptance",
              to: "dead",
              actor: "instance",
              reason: `join refused (reported by the instance)${why ? `: ${why}` : ""}`,
            })
          : null;
      if (!row) {
        const now = (await o.store.getInstance(inst.id)) ?? inst;
        await note(now, `reported a refused join while ${now.status}: refused`);
        throw refused(now, "Not waiting for a join to be accepted");
      }
      await retired(row);
      return { ok: true, changed: true, instanceId: row.id, status: row.status };
    },
  );

  app.get(
    "/api/instance/self",
    {
      onRequest,
      schema: {
        description: "The instance's own record: its pool, template, version and resources (never a secret).",
        security,
        response: { 200: SelfView, ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      log(req, inst, "self");
      await note(inst, "asked for its own info");
      return {
        instanceId: inst.id,
        pool: inst.poolId,
        name: inst.name,
        status: inst.status,
        provider: inst.provider,
        template: inst.image,
        version: inst.runtimeVersion,
        agentName: inst.agentName,
        conversationId: inst.conversationId,
        claimedAt: inst.claimedAt?.toISOString() ?? null,
        resources: o.resources ? await o.resources.views(inst.id) : [],
      };
    },
  );

  app.post(
    "/api/instance/self/reset",
    {
      onRequest,
      schema: {
        description:
          "The agent asks for a factory reset: the pool resets its runtime through the instance protocol (POST /convos/reset, then GET /convos/status) and returns it to idle only if it then reports itself clean; otherwise it is retired (dead) and replaced. Its resources stay with it when it returns to idle.",
        security,
        response: { 200: Moved, ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      log(req, inst, "self/reset");
      const from: readonly InstanceStatus[] = ["claimed", "pending_acceptance", "crashed"];
      if (inst.status === "idle") {
        await note(inst, "asked for a reset while idle: nothing to do");
        return { ok: true, changed: false, instanceId: inst.id, status: inst.status };
      }
      if (!from.includes(inst.status)) {
        await note(inst, `asked for a reset while ${inst.status}: refused`);
        throw refused(inst, "Only a claimed, pending or crashed agent can be reset");
      }
      const { clean, why } = await factoryReset(o.runtime, inst, o.resetTimeoutMs);
      const row = clean
        ? await o.store.transition({
            id: inst.id,
            from,
            to: "idle",
            actor: "instance",
            reason: "reset at its own request: runtime clean",
            set: { ...RELEASED_CLAIM_FIELDS, claimedAt: null },
          })
        : await o.store.transition({ id: inst.id, from, to: "dead", actor: "instance", reason: `reset at its own request: ${why}` });
      if (!row) {
        const now = (await o.store.getInstance(inst.id)) ?? inst;
        throw refused(now, "The instance changed state during the reset; look again");
      }
      if (row.status === "dead") await retired(row);
      else o.onChanged?.(row);
      return { ok: true, changed: true, instanceId: row.id, status: row.status };
    },
  );

  app.post(
    "/api/instance/self/destroy",
    {
      onRequest,
      schema: {
        description:
          "The instance asks to be destroyed: its row goes dead at once (the reconciler deletes it at the provider and refills the pool) and its resources are deleted.",
        security,
        response: { 200: Moved, ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      log(req, inst, "self/destroy");
      if (inst.status === "claiming") {
        await note(inst, "asked to be destroyed while being claimed: refused");
        throw refused(inst, "The instance is being claimed right now; try again in a moment");
      }
      const row = await o.store.transition({ id: inst.id, from: inst.status, to: "dead", actor: "instance", reason: "destroyed at its own request" });
      if (!row) {
        const now = (await o.store.getInstance(inst.id)) ?? inst;
        throw refused(now, "The instance changed state meanwhile; look again");
      }
      await retired(row);
      return { ok: true, changed: true, instanceId: row.id, status: row.status };
    },
  );

  app.get(
    "/api/instance/credits",
    {
      onRequest,
      schema: {
        description: "Remaining spend on the instance's own key (asked of the vendor now, else the last recorded).",
        security,
        response: { 200: CreditsView, ...errs },
      },
    },
    async (req) => {
      const inst = self(req);
      log(req, inst, "credits");
      await note(inst, "checked its credits");
      if (!o.resources) throw new PoolError("RESOURCE_NOT_FOUND", "This pool gives its instances no key with a spending limit.");
      return o.resources.credits(inst.id);
    },
  );

  function log(req: FastifyRequest, inst: InstanceRecord, route: string): void {
    req.log.info({ instanceId: inst.id, status: inst.status, route }, `instance route ${route}`);
  }
}
