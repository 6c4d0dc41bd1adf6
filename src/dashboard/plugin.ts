/**
 * The operator dashboard: server-rendered pages at `/`, htmx for the interactions, a server-sent
 * event stream for live updates. It calls `PoolOperations` in-process and reads the store; it never
 * calls the provider, and the page makes no request outside this server (htmx and our script are
 * served from here, QR codes are inline SVG rendered here; the earlier dashboard fetched them from
 * a third party and embedded the API key in its HTML, seed §8).
 *
 * Security: a signed, expiring, HttpOnly, SameSite=Strict session cookie (session.ts); every POST
 * needs the session's CSRF token (hidden field or `X-CSRF-Token`) and, when the browser sends one,
 * a same-origin `Origin`; failed logins are rate-limited per address (TRUST_PROXY applied) on the
 * store's shared counters, so every replica sees the same failures; responses carry a strict CSP
 * with no inline script or style. The session is checked in `onRequest`, before a body is parsed.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import formbody from "@fastify/formbody";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import QRCode from "qrcode";
import { z } from "zod";
import type { Store } from "../db/store.ts";
import { PoolError, isPoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { PoolOperations } from "../pool/operations.ts";
import type { PoolChangeWatcher } from "../http/changes.ts";
import { html, type SafeHtml } from "./html.ts";
import { ChangeFeed } from "./live.ts";
import { LoginThrottle } from "../http/rate-limit.ts";
import { SessionKeys, readCookie, serializeCookie, type Session } from "./session.ts";
import type { ResourceService } from "../resource/service.ts";
import type { AgentOperations } from "../pool/agent-operations.ts";
import type { AgentSpend } from "./spend.ts";
import type { RolloutService } from "../pool/rollouts.ts";
import { registerRolloutPages } from "./rollout-pages.ts";
import { usd } from "../resource/top-up.ts";
import * as v from "./views.ts";
import { POOL_ID_RE } from "../pool/template.ts";
import { agentActionsFor, instanceControlsFor, mainPageExtras, registerPoolAdminRoutes, type DashboardKit } from "./pools-routes.ts";

export interface DashboardOptions {
  ops: PoolOperations;
  store: Store;
  poolId: string;
  /** Login password; when unset the API key is the password. */
  adminPassword?: string | undefined;
  apiKey: string;
  /** POOL_ENVIRONMENT: shown as a badge; `production` makes confirmations louder. */
  environment?: string | undefined;
  /** Force the cookie's Secure flag (default: NODE_ENV=production, or the request came over https). */
  secureCookies?: boolean | undefined;
  sessionTtlMs?: number;
  /** Failed logins allowed per address per minute. */
  loginAttemptsPerMinute?: number;
  /** The process's reader of a pool's changes, shared with the API's event stream. */
  changesOf: (pool: string) => PoolChangeWatcher;
  /** Most live pages per process. */
  maxLiveClients?: number;
  /** Milliseconds since the epoch (tests move time). */
  now?: () => number;
  /** Per-instance resources: each agent's spend on its key and the top-up control (issue 12). */
  resources?: ResourceService | null | undefined;
  /** Rollouts (issue 11): the rollout page of each pool, and the live feed watches them. */
  rollouts?: RolloutService | null | undefined;
  /** Release, upgrades and versions of agents (issue 11); their controls only when set. */
  agents?: AgentOperations | undefined;
}

const COOKIE = "ap_session";
const SECURE_COOKIE = "__Host-ap_session"; // __Host-: only over https, only from this host, Path=/
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join("; ");

const LaunchForm = z.object({
  mode: z.enum(["new", "join"]).default("new"),
  agentName: z.string().trim().min(1, "Give the agent a name.").max(200, "The name is too long (200 characters at most)."),
  instructions: z.string().max(50_000, "The instructions are too long (50,000 characters at most).").default(""),
  joinUrl: z.string().trim().max(2000, "The invite link is too long.").default(""),
});

/** htmx (vendored from the htmx.org package) and our script and styles, read once at start. */
function loadAssets(): { files: Map<string, { body: Buffer; type: string }>; urls: v.Assets } {
  const require = createRequire(import.meta.url);
  const sources: Array<[name: string, path: string, type: string]> = [
    ["htmx.min.js", require.resolve("htmx.org/dist/htmx.min.js"), "text/javascript; charset=utf-8"],
    ["app.js", fileURLToPath(new URL("./assets/app.js", import.meta.url)), "text/javascript; charset=utf-8"],
    ["app.css", fileURLToPath(new URL("./assets/app.css", import.meta.url)), "text/css; charset=utf-8"],
  ];
  const files = new Map<string, { body: Buffer; type: string }>();
  const urls: Record<string, string> = {};
  for (const [name, path, type] of sources) {
    const body = readFileSync(path);
    files.set(name, { body, type });
    // Content-hashed URLs: cached for long, never stale after an upgrade.
    urls[name] = `/dashboard/assets/${name}?v=${createHash("sha256").update(body).digest("hex").slice(0, 12)}`;
  }
  return { files, urls: { htmx: urls["htmx.min.js"]!, app: urls["app.js"]!, css: urls["app.css"]! } };
}

export async function dashboardPlugin(app: FastifyInstance, opts: DashboardOptions): Promise<void> {
  const { ops, poolId } = opts;
  const now = opts.now ?? Date.now;
  const environment = opts.environment ?? "local";
  const keys = new SessionKeys(opts.adminPassword ?? opts.apiKey);
  const ttlMs = opts.sessionTtlMs ?? 12 * 3600 * 1000;
  const assets = loadAssets();
  const logger = app.log as unknown as Logger;
  const throttle = new LoginThrottle({ store: opts.store, max: opts.loginAttemptsPerMinute ?? 5, windowMs: 60_000, logger, now });
  // One change feed per pool a page watches (pages take `?pool=`, default POOL_ID), each on the
  // process's reader of that pool's changes; at most `maxLiveClients` pages over all of them.
  const feeds = new Map<string, ChangeFeed>();
  const feedOf = (pool: string): ChangeFeed => {
    let f = feeds.get(pool);
    if (!f) {
      f = new ChangeFeed({
        store: opts.store,
        poolId: pool,
        changes: opts.changesOf(pool),
        summary: () => ops.summary(pool),
        logger,
        ...(opts.rollouts ? { watch: () => opts.store.rollouts.lastChange() } : {}),
      });
      feeds.set(pool, f);
    }
    return f;
  };
  const livePages = () => [...feeds.values()].reduce((n, f) => n + f.clientCount, 0);
  // Open streams would hold the server's close forever; onClose also ends one that started meanwhile.
  const closeFeeds = async () => {
    for (const f of feeds.values()) f.close();
  };
  app.addHook("preClose", closeFeeds);
  app.addHook("onClose", closeFeeds);

  await app.register(formbody, { parser: (s) => Object.fromEntries(new URLSearchParams(s)) });

  const ctx = (pool: string = poolId, templateHash?: string): v.PageContext => ({ poolId: pool, environment, assets: assets.urls, now: now(), templateHash });
  /**
   * The pool a request is about: a form's `pool` field, else `?pool=`, else POOL_ID. Checked for its
   * shape here; a pool that does not exist is a 404 from the first read of it.
   */
  const poolOf = (req: FastifyRequest): string => {
    const body = req.body as Record<string, unknown> | undefined;
    const query = req.query as Record<string, unknown> | undefined;
    const given = typeof body?.pool === "string" && body.pool !== "" ? body.pool : typeof query?.pool === "string" && query.pool !== "" ? query.pool : poolId;
    if (!POOL_ID_RE.test(given)) throw new PoolError("POOL_NOT_FOUND", "No such pool.");
    return given;
  };
  const secure = (req: FastifyRequest) => opts.secureCookies ?? (process.env.NODE_ENV === "production" || req.protocol === "https");
  const isHtmx = (req: FastifyRequest) => req.headers["hx-request"] === "true";

  function session(req: FastifyRequest): Session | null {
    const header = req.headers.cookie;
    return keys.verify(readCookie(header, SECURE_COOKIE) ?? readCookie(header, COOKIE), now());
  }

  function send(reply: FastifyReply, status: number, body: SafeHtml | string): FastifyReply {
    return reply.status(status).type("text/html; charset=utf-8").send(String(body));
  }

  app.addHook("onSend", async (_req, reply, payload) => {
    reply.header("content-security-policy", CSP);
    reply.header("x-content-type-options", "nosniff");
    reply.header("x-frame-options", "DENY");
    // Invite links are capabilities: no Referer leaves this origin. (Not no-referrer: with it,
    // browsers send `Origin: null` on our own form posts, which the origin check refuses.)
    reply.header("referrer-policy", "same-origin");
    if (!reply.getHeader("cache-control")) reply.header("cache-control", "no-store");
    return payload;
  });

  // Errors render as HTML: a banner for htmx (swapped where the action was), a page otherwise.
  app.setErrorHandler((err, req, reply) => {
    let status = 500;
    let message = "Internal error.";
    if (isPoolError(err)) {
      status = err.status;
      message = err.message;
    } else if (err instanceof Forbidden) {
      status = 403;
      message = err.message;
    } else if ((err as { code?: string }).code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      status = 413;
      message = "The form is too large.";
    } else if ((err as { statusCode?: number }).statusCode && (err as { statusCode: number }).statusCode < 500) {
      status = (err as { statusCode: number }).statusCode;
      message = "The request could not be read.";
    } else {
      req.log.error({ err }, "dashboard error");
    }
    return send(reply, status, isHtmx(req) ? v.banner("error", message) : v.errorPage(ctx(), status, message));
  });

  /**
   * onRequest: the request must carry a valid session. Before the body is parsed, so a signed-out
   * request is a 401 (or the login redirect) whatever it carries.
   */
  async function requireSession(req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    if (session(req)) return;
    if (isHtmx(req)) {
      reply.header("hx-redirect", "/login");
      return send(reply, 401, v.banner("error", "Your session has ended; sign in again."));
    }
    if (req.method === "GET" && req.routeOptions.url !== "/dashboard/events") return reply.redirect("/login", 303);
    return send(reply, 401, v.errorPage(ctx(), 401, "Your session has ended; sign in again."));
  }

  /** preHandler for POSTs: same origin (when the browser says) and the session's CSRF token. */
  async function requireCsrf(req: FastifyRequest): Promise<void> {
    requireSameOrigin(req);
    const s = session(req)!;
    const body = req.body as Record<string, unknown> | undefined;
    const given = req.headers["x-csrf-token"] ?? body?._csrf;
    if (!keys.checkCsrf(s, given)) throw new Forbidden("The form has expired or did not come from this dashboard; reload the page and try again.");
  }

  function requireSameOrigin(req: FastifyRequest): void {
    if (req.headers["sec-fetch-site"] === "cross-site") throw new Forbidden("Cross-site request refused.");
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let same = false;
    try {
      const o = new URL(origin);
      // Parse the Host header with the origin's scheme so default ports compare equal.
      same = o.host === new URL(`${o.protocol}//${req.headers.host ?? ""}`).host;
    } catch {}
    if (!same) throw new Forbidden("Cross-site request refused.");
  }

  const authed = { onRequest: requireSession };
  // The CSRF token may be in the form, so it is checked once the body is parsed.
  const mutating = { onRequest: requireSession, preHandler: requireCsrf };

  // ------------------------------------------------------------ assets (public: no data in them)

  app.get<{ Params: { name: string } }>("/dashboard/assets/:name", async (req, reply) => {
    const f = assets.files.get(req.params.name);
    if (!f) return send(reply, 404, v.errorPage(ctx(), 404, "Not found."));
    reply.header("cache-control", "public, max-age=31536000, immutable");
    return reply.type(f.type).send(f.body);
  });

  // ------------------------------------------------------------ login / logout

  app.get("/login", async (req, reply) => {
    if (session(req)) return reply.redirect("/", 303);
    return send(reply, 200, v.loginPage(ctx(), { usesApiKey: !opts.adminPassword }));
  });

  app.post<{ Body: Record<string, string> | undefined }>("/login", async (req, reply) => {
    requireSameOrigin(req);
    // Counted before the password is checked (see LoginThrottle); req.ip honours TRUST_PROXY.
    const wait = await throttle.attempt(req.ip);
    if (wait > 0) {
      reply.header("retry-after", String(wait));
      return send(reply, 429, v.errorPage(ctx(), 429, `Too many failed sign-ins from your address; try again in ${wait} s.`));
    }
    const password = typeof req.body?.password === "string" ? req.body.password : "";
    if (!password || !keys.checkPassword(password)) {
      req.log.warn({ ip: req.ip }, "dashboard sign-in failed");
      return send(reply, 401, v.loginPage(ctx(), { usesApiKey: !opts.adminPassword, error: "Wrong password." }));
    }
    await throttle.succeeded(req.ip);
    const { value } = keys.issue(now(), ttlMs);
    const sec = secure(req);
    reply.header("set-cookie", serializeCookie(sec ? SECURE_COOKIE : COOKIE, value, { secure: sec, maxAgeSeconds: Math.floor(ttlMs / 1000) }));
    return reply.redirect("/", 303);
  });

  app.post("/logout", mutating, async (req, reply) => {
    const sec = secure(req);
    reply.header("set-cookie", serializeCookie(sec ? SECURE_COOKIE : COOKIE, "", { secure: sec, maxAgeSeconds: 0 }));
    return reply.redirect("/login", 303);
  });

  // ------------------------------------------------------------ pages and fragments

  /** Spend on each agent's key, from what the resource reconciler recorded (no vendor call per page). */
  async function spendOf(pool: string): Promise<Map<string, AgentSpend> | undefined> {
    const r = opts.resources;
    if (!r) return undefined;
    const out = new Map<string, AgentSpend>();
    for (const [id, s] of await r.spendByInstance(pool)) out.set(id, { ...s, maxLimit: r.kind(s.kind)?.maxLimit ?? null });
    return out;
  }

  async function fullPage(req: FastifyRequest, flash?: SafeHtml): Promise<SafeHtml> {
    const pool = poolOf(req);
    const summary = await ops.summary(pool);
    const c = ctx(pool, summary.templateHash);
    const [agents, instances, spend, extras] = await Promise.all([ops.agents(pool), ops.instances(pool), spendOf(pool), mainPageExtras(kit, c, summary)]);
    return v.mainPage(c, { summary, agents, instances, csrf: keys.csrfToken(session(req)!), maxBatch: ops.maxBatch, flash, spend, ...extras });
  }
  /** The page context of a fragment: its pool, and that pool's template (older ones are marked). */
  async function poolCtx(req: FastifyRequest): Promise<v.PageContext> {
    const pool = poolOf(req);
    return ctx(pool, (await ops.summary(pool)).templateHash);
  }

  /** An action's answer: the fragment for htmx, else the whole page with it on top (no-JS forms). */
  async function answer(req: FastifyRequest, reply: FastifyReply, fragment: SafeHtml, status = 200): Promise<FastifyReply> {
    if (isHtmx(req)) {
      // Refresh the live parts right away rather than on the next feed tick.
      reply.header("hx-trigger", "pool-changed");
      return send(reply, status, fragment);
    }
    return send(reply, status, await fullPage(req, fragment));
  }

  /** What the pools and agents routes (pools-routes.ts) use of this plugin. */
  const kit: DashboardKit = {
    ops,
    agents: opts.agents,
    ctx,
    poolOf,
    poolCtx,
    send,
    answer,
    csrf: (req) => keys.csrfToken(session(req)!),
    authed,
    mutating,
  };

  app.get("/", authed, async (req, reply) => send(reply, 200, await fullPage(req)));

  app.get("/dashboard/pool", authed, async (req, reply) => {
    const s = await ops.summary(poolOf(req));
    return send(reply, 200, html`${v.poolStats(s)}${v.launchStatus(s, true)}`);
  });

  app.get("/dashboard/agents", authed, async (req, reply) => {
    const c = await poolCtx(req);
    const [agents, spend] = await Promise.all([ops.agents(c.poolId), spendOf(c.poolId)]);
    return send(reply, 200, v.agentsList(c, agents, spend, agentActionsFor(kit, c)));
  });

  app.get("/dashboard/instances", authed, async (req, reply) => {
    const c = await poolCtx(req);
    return send(reply, 200, v.instancesTable(c, await ops.instances(c.poolId)));
  });

  app.get<{ Params: { id: string } }>("/dashboard/instances/:id/events", authed, async (req, reply) => {
    const { instance, events } = await ops.instance(req.params.id);
    return send(reply, 200, html`${instanceControlsFor(kit, instance)}${v.eventsList(ctx(instance.poolId), instance, events)}`);
  });

  app.get<{ Params: { id: string } }>("/dashboard/agents/:id/qr", authed, async (req, reply) => {
    const { instance } = await ops.instance(req.params.id);
    return send(reply, 200, v.qrFragment(instance.id, instance.inviteUrl, await qrSvg(instance.inviteUrl)));
  });

  // No HEAD twin: it would open a stream whose head Node never sends (no body is ever written).
  app.get("/dashboard/events", { ...authed, exposeHeadRoute: false }, async (req, reply) => {
    const pool = poolOf(req);
    await ops.registry.get(pool); // an unknown pool is a 404, not a stream that never says anything
    // Refused before the stream starts, as a normal error; the page's EventSource retries.
    if (livePages() >= (opts.maxLiveClients ?? 200)) throw new PoolError("NOT_READY", "Too many live pages are open; try again later.");
    reply.hijack();
    await feedOf(pool).add(reply.raw, session(req)!.exp);
  });

  // ------------------------------------------------------------ actions

  app.post<{ Body: Record<string, string> | undefined }>("/dashboard/launch", { ...mutating, bodyLimit: 512 * 1024 }, async (req, reply) => {
    const parsed = LaunchForm.safeParse(req.body ?? {});
    if (!parsed.success) return answer(req, reply, v.banner("error", parsed.error.issues[0]?.message ?? "The form is not valid."), 400);
    const f = parsed.data;
    if (f.mode === "join" && !v.isHttpUrl(f.joinUrl)) {
      return answer(req, reply, v.banner("error", "Paste the invite link (http:// or https://) of the conversation to join."), 400);
    }
    try {
      const r = await ops.claim({
        agentName: f.agentName,
        instructions: f.instructions,
        source: "dashboard",
        pool: poolOf(req),
        ...(f.mode === "join" ? { joinUrl: f.joinUrl } : {}),
      });
      req.log.info({ instanceId: r.instanceId, joined: r.joined }, "dashboard launched an agent");
      return answer(req, reply, v.launchResult({ ...r, qrSvg: r.joined ? null : await qrSvg(r.inviteUrl) }));
    } catch (err) {
      if (isPoolError(err)) return answer(req, reply, v.banner("error", err.message), err.status);
      throw err;
    }
  });

  const countOf = (body: Record<string, string> | undefined): number => {
    const n = Number(body?.count ?? 1);
    if (!Number.isInteger(n) || n < 1 || n > ops.maxBatch) throw new PoolError("VALIDATION_FAILED", `Choose a number from 1 to ${ops.maxBatch}.`);
    return n;
  };
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const problems = (errors: string[]) => (errors.length ? html` <span class="error-text">Errors: ${errors.join("; ")}</span>` : "");

  app.post<{ Body: Record<string, string> | undefined }>("/dashboard/pool/add", mutating, async (req, reply) => {
    const r = await ops.add(countOf(req.body), poolOf(req));
    const kind = r.created.length > 0 ? "ok" : "error";
    const text = r.created.length > 0 ? `Starting ${plural(r.created.length, "new instance")}.` : "No instance was created (the pool is at its maximum?).";
    return answer(req, reply, v.banner(kind, html`${text}${problems(r.errors)}`));
  });

  app.post<{ Body: Record<string, string> | undefined }>("/dashboard/pool/drain", mutating, async (req, reply) => {
    const r = await ops.drain(countOf(req.body), poolOf(req));
    const text = r.drained.length > 0 ? `Drained ${plural(r.drained.length, "idle instance")}.` : "There was no idle instance to drain.";
    return answer(req, reply, v.banner(r.drained.length > 0 ? "ok" : "info", html`${text}${problems(r.errors)}`));
  });

  app.post("/dashboard/pool/reconcile", mutating, async (req, reply) => {
    const t = await ops.reconcile();
    const text = t.leader
      ? `Reconciled: ${plural(t.created.length, "instance")} created, ${plural(t.transitions.length, "status change")}.`
      : "Another replica holds the reconcile lease; it reconciles on its own schedule.";
    return answer(req, reply, v.banner(t.errors.length ? "error" : "ok", html`${text}${problems(t.errors)}`));
  });

  app.post<{ Params: { id: string } }>("/dashboard/instances/:id/kill", mutating, async (req, reply) => {
    const { instance } = await ops.instance(req.params.id);
    await ops.kill(instance.id);
    return answer(req, reply, v.banner("ok", html`Killed <strong>${instance.agentName ?? instance.id}</strong>.`));
  });

  app.post<{ Params: { id: string }; Body: Record<string, string> | undefined }>("/dashboard/agents/:id/top-up", mutating, async (req, reply) => {
    if (!opts.resources) throw new PoolError("RESOURCE_NOT_FOUND", "This pool gives its agents no key with a spending limit.");
    const { instance } = await ops.instance(req.params.id);
    const amount = Number(req.body?.amount ?? "");
    const r = await opts.resources.topUp(instance.id, amount);
    return answer(req, reply, v.banner("ok", html`Raised the spending limit of <strong>${instance.agentName ?? instance.id}</strong> to ${usd(r.limit)}.`));
  });

  app.post<{ Params: { id: string } }>("/dashboard/instances/:id/dismiss", mutating, async (req, reply) => {
    const { instance } = await ops.instance(req.params.id);
    await ops.dismiss(instance.id);
    return answer(req, reply, v.banner("ok", html`Dismissed <strong>${instance.agentName ?? instance.id}</strong>.`));
  });

  // ------------------------------------------------------------ rollouts (issue 11): their own file
  if (opts.rollouts) {
    registerRolloutPages(app, { ops, rollouts: opts.rollouts, authed, mutating, ctx, csrf: (req) => keys.csrfToken(session(req)!), send, isHtmx });
  }

  // ------------------------------------------------------------ pools, versions, upgrades (issue 11)

  registerPoolAdminRoutes(app, kit);
}

/** A refused cross-site or token-less request (403; the API's error registry has no such code). */
class Forbidden extends Error {}

/** The QR code of a URL as inline SVG, rendered here: no third party learns the invite link. */
async function qrSvg(url: string | null): Promise<string | null> {
  if (!url) return null;
  const svg = await QRCode.toString(url, { type: "svg", margin: 2, errorCorrectionLevel: "M" });
  // The library's output holds only paths and colors, never the URL; keep just the <svg> element.
  const start = svg.indexOf("<svg");
  return start >= 0 ? svg.slice(start).trim() : null;
}
