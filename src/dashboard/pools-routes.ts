/**
 * The dashboard's routes for several pools and for operators' actions on agents (issue 11): the
 * pools page (bars, create / change / delete through the registry and its validation), the versions
 * table and upgrade jobs of a pool with live progress, and an instance's protect / release / upgrade
 * controls. Registered by the dashboard plugin, behind the same session, CSRF token and origin
 * checks as its other routes; every answer is HTML escaped by `html`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { InstanceRecord } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { AgentOperations } from "../pool/agent-operations.ts";
import type { PoolOperations, PoolSummary } from "../pool/operations.ts";
import { planItems } from "../upgrade/select.ts";
import { html, type SafeHtml } from "./html.ts";
import * as pv from "./pools-views.ts";
import { historyPanel, historyRange, historySection, historySinceMs } from "./history-views.ts";
import * as v from "./views.ts";

/** What these routes use of the dashboard plugin. */
export interface DashboardKit {
  ops: PoolOperations;
  agents: AgentOperations | undefined;
  ctx(pool?: string, templateHash?: string): v.PageContext;
  poolOf(req: FastifyRequest): string;
  poolCtx(req: FastifyRequest): Promise<v.PageContext>;
  send(reply: FastifyReply, status: number, body: SafeHtml | string): FastifyReply;
  answer(req: FastifyRequest, reply: FastifyReply, fragment: SafeHtml, status?: number): Promise<FastifyReply>;
  csrf(req: FastifyRequest): string;
  authed: { onRequest: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown> };
  mutating: { onRequest: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>; preHandler: (req: FastifyRequest) => Promise<void> };
}

type Body = Record<string, string> | undefined;

/** The agent cards' controls (release, upgrade, protect); none without agent operations. */
export function agentActionsFor(kit: DashboardKit, ctx: v.PageContext): ((a: InstanceRecord) => SafeHtml) | undefined {
  return kit.agents ? (a) => pv.agentActions(ctx, a) : undefined;
}

export function instanceControlsFor(_kit: DashboardKit, inst: InstanceRecord): SafeHtml {
  return pv.instanceControls(inst);
}

/** Outdated agents a bulk upgrade would take (protected ones excluded). */
async function outdatedAgents(kit: DashboardKit, pool: string): Promise<number> {
  const [record, rows] = await Promise.all([kit.ops.registry.get(pool), kit.ops.instances(pool)]);
  return planItems(record, "all", rows).filter((i) => i.state === "pending").length;
}

/** The main page's switcher, agent controls and versions/upgrades section for its pool. */
export async function mainPageExtras(
  kit: DashboardKit,
  ctx: v.PageContext,
  _summary: PoolSummary,
): Promise<Pick<v.MainPageInput, "switcher" | "agentActions" | "extra">> {
  const pools = await kit.ops.pools();
  const switcher = pv.poolSwitcher(pools, ctx.poolId);
  const h = await kit.ops.history(ctx.poolId, historySinceMs("hour"));
  const history = historySection(ctx.poolId, "hour", h.rows, h.now);
  if (!kit.agents) return { switcher, extra: history };
  const [versions, jobs, outdated] = await Promise.all([kit.agents.versions(ctx.poolId), kit.agents.jobs(ctx.poolId, 5), outdatedAgents(kit, ctx.poolId)]);
  return { switcher, agentActions: agentActionsFor(kit, ctx), extra: html`${history}${pv.versionsSection(ctx, { versions, jobs, outdated })}` };
}

/**
 * A pool form as the registry takes it: empty text means "none" (the deployment's default) for the
 * optional settings, an empty number is left out, the env is KEY=value lines, the command a JSON
 * array or a command line. The registry validates the rest, with the configuration file's rules.
 */
export function poolFormInput(body: Body, create: boolean): Record<string, unknown> {
  const f = body ?? {};
  const text = (k: string) => (typeof f[k] === "string" ? f[k]!.trim() : undefined);
  const out: Record<string, unknown> = {};
  if (create) out.id = text("id") ?? "";
  const runtime = text("runtime");
  if (runtime) out.runtime = runtime;
  const provider = text("provider");
  if (provider !== undefined) out.provider = provider === "" ? null : provider;
  const image = text("image");
  if (image !== undefined) out.image = image === "" ? null : image;
  const command = text("command");
  if (command !== undefined) {
    if (command === "") out.command = null;
    else if (command.startsWith("[")) {
      try {
        out.command = JSON.parse(command) as unknown;
      } catch {
        throw new PoolError("VALIDATION_FAILED", "The command is not a JSON array; give one, or a plain command line.");
      }
    } else out.command = command.split(/\s+/);
  }
  for (const k of ["minIdle", "maxTotal", "maxSurge"]) {
    const n = text(k);
    if (n) out[k] = /^\d+$/.test(n) ? Number(n) : n; // a non-number is refused by the registry, with its field
  }
  for (const k of ["claimAgentName", "claimInstructions"]) {
    const x = text(k);
    if (x !== undefined) out[k] = x === "" ? null : x;
  }
  const hosts = text("joinUrlHosts");
  if (hosts !== undefined) out.joinUrlHosts = hosts === "" ? null : hosts.split(/[\s,]+/).filter(Boolean);
  const env = typeof f.env === "string" ? f.env : undefined;
  if (env !== undefined) {
    const vars: Record<string, string> = {};
    for (const line of env.split(/\r?\n/)) {
      if (line.trim() === "") continue;
      const eq = line.indexOf("=");
      if (eq <= 0) throw new PoolError("VALIDATION_FAILED", `Each environment line is KEY=value; “${line.trim().slice(0, 60)}” is not.`);
      vars[line.slice(0, eq).trim()] = line.slice(eq + 1);
    }
    out.env = vars;
  }
  return out;
}

export function registerPoolAdminRoutes(app: FastifyInstance, kit: DashboardKit): void {
  const { ops } = kit;
  const isHtmx = (req: FastifyRequest) => req.headers["hx-request"] === "true";
  const agents = (): AgentOperations => {
    if (!kit.agents) throw new PoolError("NOT_FOUND", "This dashboard has no agent operations.");
    return kit.agents;
  };

  async function cards() {
    const pools = await ops.pools();
    return Promise.all(pools.map(async (pool) => ({ pool, summary: await ops.summary(pool.id) })));
  }

  /** A pools-page action's answer: the banner for htmx (the list refreshes), else the page. */
  async function answerPools(req: FastifyRequest, reply: FastifyReply, fragment: SafeHtml, status = 200): Promise<FastifyReply> {
    if (isHtmx(req)) {
      reply.header("hx-trigger", "pool-changed");
      return kit.send(reply, status, fragment);
    }
    return kit.send(reply, status, pv.poolsPage(kit.ctx(), { cards: await cards(), csrf: kit.csrf(req), flash: fragment }));
  }

  // ---- pools page

  app.get("/dashboard/pools", kit.authed, async (req, reply) => kit.send(reply, 200, pv.poolsPage(kit.ctx(), { cards: await cards(), csrf: kit.csrf(req) })));

  // The list, and the header's switcher out of band: a pool created or deleted shows there too.
  app.get("/dashboard/pools/list", kit.authed, async (_req, reply) => {
    const c = await cards();
    return kit.send(
      reply,
      200,
      html`${pv.poolCards(kit.ctx(), c)}${pv.poolSwitcher(
        c.map((x) => x.pool),
        null,
        true,
      )}`,
    );
  });

  app.post<{ Body: Body }>("/dashboard/pools", kit.mutating, async (req, reply) => {
    try {
      const pool = await ops.registry.create(poolFormInput(req.body, true));
      req.log.info({ pool: pool.id }, "dashboard created a pool");
      return answerPools(
        req,
        reply,
        v.banner("ok", html`Created pool <strong>${pool.id}</strong> (template <code>${pool.templateHash}</code>); its instances are made by the next pass.`),
      );
    } catch (err) {
      if (err instanceof PoolError) return answerPools(req, reply, v.banner("error", err.message), err.status);
      throw err;
    }
  });

  app.post<{ Params: { id: string }; Body: Body }>("/dashboard/pools/:id/update", kit.mutating, async (req, reply) => {
    try {
      const { pool, templateChanged } = await ops.registry.update(req.params.id, poolFormInput(req.body, false));
      return answerPools(
        req,
        reply,
        v.banner(
          "ok",
          html`Saved pool <strong>${pool.id}</strong>.${templateChanged ? html` New template <code>${pool.templateHash}</code>: its idle instances are replaced; upgrade its agents from its page.` : ""}`,
        ),
      );
    } catch (err) {
      if (err instanceof PoolError) return answerPools(req, reply, v.banner("error", err.message), err.status);
      throw err;
    }
  });

  app.post<{ Params: { id: string } }>("/dashboard/pools/:id/delete", kit.mutating, async (req, reply) => {
    try {
      await ops.registry.delete(req.params.id);
      return answerPools(req, reply, v.banner("ok", html`Deleted pool <strong>${req.params.id}</strong>.`));
    } catch (err) {
      if (err instanceof PoolError) return answerPools(req, reply, v.banner("error", err.message), err.status);
      throw err;
    }
  });

  // ---- versions and upgrades of a pool

  // The pool history panel (issue 13) for a range: last hour, day or week.
  app.get("/dashboard/history", kit.authed, async (req, reply) => {
    const pool = kit.poolOf(req);
    const range = historyRange((req.query as Record<string, unknown> | undefined)?.range);
    const h = await kit.ops.history(pool, historySinceMs(range));
    return kit.send(reply, 200, historyPanel(pool, range, h.rows, h.now));
  });

  app.get("/dashboard/versions", kit.authed, async (req, reply) => kit.send(reply, 200, pv.versionsTable(await agents().versions(kit.poolOf(req)))));

  app.get("/dashboard/upgrades", kit.authed, async (req, reply) => {
    const c = await kit.poolCtx(req);
    const [jobs, outdated] = await Promise.all([agents().jobs(c.poolId, 5), outdatedAgents(kit, c.poolId)]);
    return kit.send(reply, 200, pv.upgradesPanel(c, { jobs, outdated }));
  });

  app.post<{ Params: { id: string } }>("/dashboard/pools/:id/upgrade", kit.mutating, async (req, reply) => {
    const job = await agents().upgradePool(req.params.id, { all: true });
    const toRun = job.items.filter((i) => i.state === "pending").length;
    const skipped = job.items.length - toRun;
    return kit.answer(
      req,
      reply,
      v.banner(
        "ok",
        html`Upgrading ${toRun} agent${toRun === 1 ? "" : "s"} of pool <strong>${job.poolId}</strong>${skipped ? html` (${skipped} skipped)` : ""}; progress below.`,
      ),
    );
  });

  // ---- an instance's controls

  app.post<{ Params: { id: string }; Body: Body }>("/dashboard/instances/:id/protect", kit.mutating, async (req, reply) => {
    const value = req.body?.protected === "1" || req.body?.protected === "true";
    const row = await ops.protect(req.params.id, value);
    return kit.answer(
      req,
      reply,
      v.banner(
        "ok",
        html`<strong>${row.agentName ?? row.id}</strong> is ${value ? "protected: bulk operations and claims leave it alone" : "no longer protected"}.`,
      ),
    );
  });

  app.post<{ Params: { id: string } }>("/dashboard/instances/:id/release", kit.mutating, async (req, reply) => {
    const { instance } = await ops.instance(req.params.id);
    const r = await agents().release(instance.id);
    const name = instance.agentName ?? instance.id;
    return kit.answer(
      req,
      reply,
      r.status === "idle"
        ? v.banner("ok", html`Released <strong>${name}</strong>: its instance was reset clean and is back in the pool.`)
        : v.banner("info", html`Released <strong>${name}</strong>: ${r.reason}; its instance was retired and is replaced.`),
    );
  });

  app.post<{ Params: { id: string } }>("/dashboard/instances/:id/upgrade", kit.mutating, async (req, reply) => {
    const { instance } = await ops.instance(req.params.id);
    const job = await agents().upgradeInstance(instance.id);
    return kit.answer(
      req,
      reply,
      v.banner("ok", html`Upgrading <strong>${instance.agentName ?? instance.id}</strong> (job <code>${job.id}</code>); progress under Versions and upgrades.`),
    );
  });
}
