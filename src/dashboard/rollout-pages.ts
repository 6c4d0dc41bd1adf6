/**
 * The rollout page's routes (issue 11), registered by the dashboard plugin with its own guards: a
 * session on every route (checked before any body is read), the CSRF token and same origin on
 * every POST. Pause, resume and roll back answer a banner to htmx (and make the page refresh its
 * panel at once), or the whole page with the banner on top to a form posted without JavaScript.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from "fastify";
import { PoolError } from "../errors.ts";
import type { PoolOperations } from "../pool/operations.ts";
import type { RolloutService } from "../pool/rollouts.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import { html, type SafeHtml } from "./html.ts";
import { rolloutPage, rolloutPanel, ROLLOUT_LABELS, type RolloutPageInput } from "./rollout-views.ts";
import { banner, type PageContext } from "./views.ts";

export interface RolloutPageDeps {
  ops: PoolOperations;
  rollouts: RolloutService;
  /** Route options of the plugin: a session (GET), a session + CSRF + same origin (POST). */
  authed: RouteShorthandOptions;
  mutating: RouteShorthandOptions;
  ctx: () => PageContext;
  csrf: (req: FastifyRequest) => string;
  send: (reply: FastifyReply, status: number, body: SafeHtml | string) => FastifyReply;
  isHtmx: (req: FastifyRequest) => boolean;
}

type PoolReq = FastifyRequest<{ Params: { pool: string } }>;

export function registerRolloutPages(app: FastifyInstance, d: RolloutPageDeps): void {
  const { ops, rollouts } = d;

  async function input(req: PoolReq): Promise<RolloutPageInput> {
    const id = req.params.pool;
    if (!POOL_ID_RE.test(id)) throw new PoolError("POOL_NOT_FOUND", `No pool named "${id}".`);
    const pool = await ops.registry.get(id);
    const s = await rollouts.state(id);
    return {
      pool: { id: pool.id, templateHash: pool.templateHash, canRollBack: pool.previousTemplate !== null, minIdle: pool.minIdle, maxSurge: pool.maxSurge },
      current: s.current,
      history: s.history,
      csrf: d.csrf(req),
    };
  }

  /** An action's answer: a banner for htmx (and a refresh of the panel), else the page with it. */
  async function answer(req: PoolReq, reply: FastifyReply, message: SafeHtml): Promise<FastifyReply> {
    if (d.isHtmx(req)) {
      reply.header("hx-trigger", "pool-changed");
      return d.send(reply, 200, banner("ok", message));
    }
    return d.send(reply, 200, rolloutPage(d.ctx(), await input(req), banner("ok", message)));
  }

  app.get<{ Params: { pool: string } }>("/dashboard/rollouts/:pool", d.authed, async (req, reply) =>
    d.send(reply, 200, rolloutPage(d.ctx(), await input(req))),
  );

  app.get<{ Params: { pool: string } }>("/dashboard/rollouts/:pool/panel", d.authed, async (req, reply) =>
    d.send(reply, 200, rolloutPanel(d.ctx(), await input(req))),
  );

  app.post<{ Params: { pool: string } }>("/dashboard/rollouts/:pool/pause", d.mutating, async (req, reply) => {
    const { pool } = await input(req);
    const r = await rollouts.pause(pool.id);
    return answer(req, reply, html`Rollout ${r.id} of <strong>${pool.id}</strong> is ${ROLLOUT_LABELS[r.status].toLowerCase()}.`);
  });

  app.post<{ Params: { pool: string } }>("/dashboard/rollouts/:pool/resume", d.mutating, async (req, reply) => {
    const { pool } = await input(req);
    const r = await rollouts.resume(pool.id);
    return answer(req, reply, html`Rollout ${r.id} of <strong>${pool.id}</strong> is running.`);
  });

  app.post<{ Params: { pool: string } }>("/dashboard/rollouts/:pool/rollback", d.mutating, async (req, reply) => {
    const { pool } = await input(req);
    const back = await ops.registry.rollBack(pool.id);
    req.log.info({ pool: pool.id, template: back.templateHash }, "dashboard rolled a pool back");
    return answer(req, reply, html`Pool <strong>${pool.id}</strong> goes back to template <code>${back.templateHash}</code>; a rollout of it started.`);
  });
}
