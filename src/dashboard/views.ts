/**
 * The dashboard's markup: the login page, the main page and the fragments htmx swaps into it. Pure
 * functions of their inputs; every user-provided value goes through the escaping `html` template.
 * No view takes a secret: an instance's gateway token and the API key never reach these functions.
 */
import type { InstanceEvent, InstanceRecord } from "../db/store.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { PoolSummary } from "../pool/operations.ts";
import { html, raw, type SafeHtml } from "./html.ts";
import { spendBlock, type AgentSpend } from "./spend.ts";

export interface Assets {
  css: string;
  htmx: string;
  app: string;
}

export interface PageContext {
  /** The pool the page shows (`?pool=`, default POOL_ID). */
  poolId: string;
  environment: string;
  assets: Assets;
  now: number;
  /** That pool's current template hash: instances of another one are marked "older template". */
  templateHash?: string | undefined;
}

/** `?pool=<id>`: every fragment and action of a page names its pool. */
export function poolQuery(poolId: string): string {
  return `?pool=${encodeURIComponent(poolId)}`;
}

export const STATUS_LABELS: Record<InstanceStatus, string> = {
  idle: "Idle",
  starting: "Starting",
  claiming: "Claiming",
  claimed: "Claimed",
  pending_acceptance: "Pending",
  crashed: "Crashed",
  dead: "Dead",
  sleeping: "Sleeping",
};

/** Counted in the pool bar, in this order (sleeping only when there are some). */
const BAR_STATUSES: InstanceStatus[] = ["idle", "starting", "claiming", "claimed", "pending_acceptance", "crashed", "sleeping"];

export function isProduction(environment: string): boolean {
  return /^prod(uction)?$/i.test(environment.trim());
}

// htmx without eval, without injected styles (the CSP allows neither) and without its history
// cache (it would copy pages, invite links included, into localStorage). 4xx/5xx fragments are
// swapped in so errors show where the action was; a 401 redirects via HX-Redirect instead.
const HTMX_CONFIG = JSON.stringify({
  includeIndicatorStyles: false,
  allowEval: false,
  allowScriptTags: false,
  historyEnabled: false,
  selfRequestsOnly: true,
  responseHandling: [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "401", swap: false, error: true },
    { code: "[45]..", swap: true, error: true },
  ],
});

export function layout(ctx: PageContext, title: string, body: SafeHtml, bodyAttrs: SafeHtml = html``): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<meta name="color-scheme" content="light">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${ctx.assets.css}">
<script src="${ctx.assets.htmx}" defer></script>
<script src="${ctx.assets.app}" defer></script>
</head>
<body${bodyAttrs}>
${body}
</body>
</html>
`;
}

export function envBadge(environment: string): SafeHtml {
  const prod = isProduction(environment);
  return html`<span class="env ${prod ? "env-prod" : ""}" title="POOL_ENVIRONMENT">${environment}</span>`;
}

// ---------------------------------------------------------------- login

export interface LoginPageInput {
  error?: string | undefined;
  /** Usernames are not a thing here; this only changes the hint. */
  usesApiKey: boolean;
}

export function loginPage(ctx: PageContext, p: LoginPageInput): SafeHtml {
  return layout(
    ctx,
    `Sign in · agent-pool`,
    html`<main class="login">
<form class="card login-card" method="post" action="/login">
  <h1>agent-pool ${envBadge(ctx.environment)}</h1>
  <p class="muted">Operator dashboard of pool <code>${ctx.poolId}</code>.</p>
  ${p.error ? html`<div class="banner error" role="alert">${p.error}</div>` : ""}
  <input type="text" name="username" value="operator" autocomplete="username" hidden>
  <label for="password">${p.usesApiKey ? "Password (the API key)" : "Admin password"}</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
  <button type="submit" class="primary">Sign in</button>
</form>
</main>`,
  );
}

// ---------------------------------------------------------------- main page

export interface MainPageInput {
  summary: PoolSummary;
  agents: InstanceRecord[];
  instances: InstanceRecord[];
  csrf: string;
  maxBatch: number;
  /** A message from a form posted without JavaScript. */
  flash?: SafeHtml | undefined;
  /** Spend on each agent's own key, by instance id (per-instance resources, issue 12). */
  spend?: ReadonlyMap<string, AgentSpend> | undefined;
  /** The pool switcher (issue 11: several pools), shown in the header. */
  switcher?: SafeHtml | undefined;
  /** Controls of an agent's card beyond kill/dismiss (release, upgrade, protect). */
  agentActions?: ((a: InstanceRecord) => SafeHtml) | undefined;
  /** Sections after the instances (versions, upgrades). */
  extra?: SafeHtml | undefined;
}

export function mainPage(ctx: PageContext, p: MainPageInput): SafeHtml {
  const prod = isProduction(ctx.environment);
  // Every form names the page's pool too (its actions act on that pool).
  const csrfField = html`<input type="hidden" name="_csrf" value="${p.csrf}"><input type="hidden" name="pool" value="${ctx.poolId}">`;
  const q = poolQuery(ctx.poolId);
  const drainConfirm = `${prod ? "PRODUCTION: " : ""}Drain idle instances of pool “${ctx.poolId}”? They are deleted.`;
  const live = ["pool-changed from:body", "every 30s"].join(", ");
  return layout(
    ctx,
    `agent-pool · ${ctx.poolId} (${ctx.environment})`,
    html`<header class="top">
  <div class="brand">
    <span class="logo" aria-hidden="true">◆</span>
    <strong>agent-pool</strong>
    <span class="muted">pool <code>${ctx.poolId}</code></span>
    ${envBadge(ctx.environment)}
    ${p.switcher ?? ""}
  </div>
  <div class="top-right">
    <span id="live" class="live" role="status" data-state="connecting" data-events="/dashboard/events${q}">Connecting…</span>
    <form method="post" action="/logout">${csrfField}<button type="submit" class="ghost">Log out</button></form>
  </div>
</header>
<main class="wrap">
${p.flash ? html`<div class="flash">${p.flash}</div>` : ""}
<section class="card" aria-labelledby="pool-h">
  <div class="card-head"><h2 id="pool-h">Pool</h2><a id="rollouts-link" class="small" href="/dashboard/rollouts/${ctx.poolId}">Rollouts</a></div>
  <div id="pool-stats" hx-get="/dashboard/pool${q}" hx-trigger="${live}">${poolStats(p.summary)}</div>
  <form class="controls" method="post" action="/dashboard/pool/add" hx-target="#pool-notice">
    ${csrfField}
    <label for="pool-n">Instances</label>
    <input id="pool-n" name="count" type="number" inputmode="numeric" min="1" max="${p.maxBatch}" value="1" required>
    <button id="pool-add" type="submit" hx-post="/dashboard/pool/add">Add</button>
    <button id="pool-drain" type="submit" formaction="/dashboard/pool/drain" hx-post="/dashboard/pool/drain" hx-confirm="${drainConfirm}">Drain</button>
    <span class="spacer"></span>
    <button id="pool-reconcile" type="submit" class="ghost" formaction="/dashboard/pool/reconcile" hx-post="/dashboard/pool/reconcile">Reconcile now</button>
  </form>
  <div id="pool-notice" class="notice" role="status" aria-live="polite"></div>
</section>
<div class="columns">
<section class="card" aria-labelledby="launch-h">
  <div class="card-head"><h2 id="launch-h">Launch an agent</h2></div>
  ${launchForm(p.summary, csrfField)}
  <div id="launch-result" aria-live="polite"></div>
</section>
<section class="card" aria-labelledby="agents-h">
  <div class="card-head"><h2 id="agents-h">Live agents</h2></div>
  <div id="agents-notice" class="notice" role="status" aria-live="polite"></div>
  <div id="agents" hx-get="/dashboard/agents${q}" hx-trigger="${live}">${agentsList(ctx, p.agents, p.spend, p.agentActions)}</div>
</section>
</div>
<section class="card" aria-labelledby="instances-h">
  <div class="card-head"><h2 id="instances-h">Instances</h2><span class="muted small">Select a row for its event history.</span></div>
  <div id="instances" hx-get="/dashboard/instances${q}" hx-trigger="${live}">${instancesTable(ctx, p.instances)}</div>
</section>
${p.extra ?? ""}
</main>`,
    // Every htmx request carries the CSRF token; forms carry it as a hidden field too.
    html` hx-headers="${JSON.stringify({ "x-csrf-token": p.csrf })}"`,
  );
}

// ---------------------------------------------------------------- pool bar

export function poolStats(s: PoolSummary): SafeHtml {
  const c = s.counts;
  const shown = BAR_STATUSES.filter((st) => st !== "sleeping" || c.sleeping > 0);
  const cap = Math.max(s.maxTotal, c.total, 1);
  let x = 0;
  // A stacked bar in SVG: sizes are attributes, so the strict CSP (no inline styles) holds.
  const segments = shown.map((st) => {
    const w = c[st];
    const seg = w > 0 ? html`<rect x="${x}" y="0" width="${w}" height="1" class="seg s-${st}"></rect>` : "";
    x += w;
    return seg;
  });
  return html`<div class="stats">
  ${shown.map(
    (st) =>
      html`<div class="stat s-${st}${c[st] > 0 ? "" : " zero"}"><span class="n" id="count-${st}">${c[st]}</span><span class="l">${STATUS_LABELS[st]}</span></div>`,
  )}
</div>
<svg class="capbar" viewBox="0 0 ${cap} 1" preserveAspectRatio="none" role="img" aria-label="${c.total} of ${s.maxTotal} instances in use">${segments}</svg>
<p class="capacity"><strong id="count-total">${c.total}</strong> of ${s.maxTotal} max · keeps <strong>${s.minIdle}</strong> idle</p>
${foreignNotice(s.foreign)}`;
}

/** Other deployments' resources sharing this pool's naming at the provider: said, never hidden. */
function foreignNotice(foreign: PoolSummary["foreign"]): SafeHtml | "" {
  if (foreign.length === 0) return "";
  const owners = [...new Set(foreign.map((f) => f.owner ?? "none"))];
  const names =
    foreign
      .slice(0, 5)
      .map((f) => f.name)
      .join(", ") + (foreign.length > 5 ? ", …" : "");
  return html`<div id="foreign-notice" class="banner info" role="status">${foreign.length} resource${foreign.length === 1 ? "" : "s"} named like this pool's
  belong${foreign.length === 1 ? "s" : ""} to ${owners.length === 1 ? (owners[0] === "none" ? "no deployment (made before owner ids)" : `another deployment (owner ${owners[0]})`) : `other deployments (owners ${owners.join(", ")})`}
  and ${foreign.length === 1 ? "is" : "are"} left alone: ${names}.</div>`;
}

/** The launch button and its availability message; swapped out-of-band when the counts change. */
export function launchStatus(s: PoolSummary, oob = false): SafeHtml {
  const idle = s.counts.idle;
  const msg =
    idle > 0
      ? html`<p class="hint ok-text">${idle} idle instance${idle === 1 ? "" : "s"} ready.</p>`
      : html`<p class="hint warn-text" id="launch-unavailable">No idle instance right now${
          s.counts.starting > 0 ? html` (${s.counts.starting} starting)` : ""
        }. Add one above or wait for the pool to refill.</p>`;
  return html`<div id="launch-status" class="launch-status"${oob ? raw(' hx-swap-oob="true"') : ""}>
  <button id="launch-submit" type="submit" class="primary"${idle > 0 ? "" : raw(" disabled")}>Launch agent</button>
  ${msg}
</div>`;
}

function launchForm(s: PoolSummary, csrfField: SafeHtml): SafeHtml {
  return html`<form id="launch-form" class="launch" method="post" action="/dashboard/launch" hx-post="/dashboard/launch" hx-target="#launch-result" hx-disabled-elt="find #launch-submit">
  ${csrfField}
  <fieldset class="mode">
    <legend>Mode</legend>
    <label class="choice"><input type="radio" name="mode" value="new" checked> New conversation</label>
    <label class="choice"><input type="radio" name="mode" value="join"> Join a conversation</label>
  </fieldset>
  <div class="field join-only">
    <label for="join-url">Invite link</label>
    <input id="join-url" name="joinUrl" type="url" inputmode="url" maxlength="2000" placeholder="https://…/i/…" autocomplete="off">
  </div>
  <div class="field">
    <label for="agent-name">Agent name</label>
    <input id="agent-name" name="agentName" maxlength="200" required autocomplete="off" placeholder="e.g. Ada">
  </div>
  <div class="field">
    <label for="instructions">Instructions</label>
    <textarea id="instructions" name="instructions" rows="4" maxlength="50000" placeholder="e.g. You are a friendly travel guide for Lisbon."></textarea>
  </div>
  ${launchStatus(s)}
</form>`;
}

export interface LaunchResultInput {
  agentName: string;
  instanceId: string;
  inviteUrl: string | null;
  joined: boolean;
  status: "claimed" | "pending_acceptance";
  /** Inline SVG of the invite URL's QR code (generated by us). */
  qrSvg: string | null;
}

export function launchResult(r: LaunchResultInput): SafeHtml {
  if (r.joined || r.status === "pending_acceptance") {
    const text =
      r.status === "pending_acceptance"
        ? html`<strong>${r.agentName}</strong> asked to join the conversation and is waiting for its owner to accept.`
        : html`<strong>${r.agentName}</strong> joined the conversation.`;
    return html`<div class="banner ok" role="status">${text} Instance <code>${r.instanceId}</code>.</div>`;
  }
  return html`<div class="result" role="status">
  <div class="banner ok"><strong>${r.agentName}</strong> is ready. Scan the code or share the link.</div>
  ${r.inviteUrl ? inviteBlock(r.instanceId, r.inviteUrl, r.qrSvg, "launch") : html`<p>The agent has no invite link.</p>`}
  <p class="muted small">Instance <code id="launch-instance">${r.instanceId}</code></p>
</div>`;
}

function inviteBlock(instanceId: string, url: string, qrSvg: string | null, where: string): SafeHtml {
  const inputId = domId(`${where}-invite`, instanceId);
  return html`<div class="invite">
  ${qrSvg ? html`<div class="qr" role="img" aria-label="QR code of the invite link">${raw(qrSvg)}</div>` : ""}
  <div class="invite-link">
    <label for="${inputId}">Invite link</label>
    <div class="copy-row">
      <input id="${inputId}" class="invite-url" type="text" readonly value="${url}">
      <button type="button" class="copy" data-copy="${inputId}">Copy</button>
    </div>
    ${isHttpUrl(url) ? html`<a href="${url}" target="_blank" rel="noopener noreferrer">Open the conversation ↗</a>` : ""}
  </div>
</div>`;
}

export function qrFragment(instanceId: string, url: string | null, qrSvg: string | null): SafeHtml {
  return url ? inviteBlock(instanceId, url, qrSvg, "agent") : html`<p class="muted">This agent has no invite link.</p>`;
}

export function banner(kind: "ok" | "error" | "info", message: string | SafeHtml): SafeHtml {
  return html`<div class="banner ${kind}" role="${kind === "error" ? "alert" : "status"}">${message}</div>`;
}

// ---------------------------------------------------------------- live agents

export function agentsList(
  ctx: PageContext,
  agents: InstanceRecord[],
  spend?: ReadonlyMap<string, AgentSpend>,
  actions?: (a: InstanceRecord) => SafeHtml,
): SafeHtml {
  if (agents.length === 0) {
    return html`<div class="empty"><p><strong>No live agents.</strong></p><p class="muted">Agents you launch appear here, crashed ones first.</p></div>`;
  }
  const prod = isProduction(ctx.environment);
  return html`<ul class="agents">${agents.map((a) => agentCard(ctx, a, prod, spend?.get(a.id), actions))}</ul>`;
}

function agentCard(ctx: PageContext, a: InstanceRecord, prod: boolean, spend: AgentSpend | undefined, actions?: (a: InstanceRecord) => SafeHtml): SafeHtml {
  const name = a.agentName ?? "(unnamed)";
  const crashed = a.status === "crashed";
  const since = a.claimedAt
    ? html`claimed <time datetime="${a.claimedAt.toISOString()}" title="${a.claimedAt.toISOString()}">${ago(ctx.now, a.claimedAt)} ago</time>`
    : "";
  const confirm = crashed
    ? `${prod ? "PRODUCTION: " : ""}Dismiss crashed agent “${name}”? What is left of its instance is deleted.`
    : `${prod ? "PRODUCTION: " : ""}Kill agent “${name}”? Its instance is deleted and the conversation ends for everyone in it.`;
  const action = crashed ? "dismiss" : "kill";
  return html`<li class="agent s-${a.status}" id="${domId("agent", a.id)}">
  <div class="agent-head">
    <strong class="agent-name">${name}</strong>
    <span class="badge s-${a.status}">${STATUS_LABELS[a.status]}</span>
  </div>
  ${instanceMarks(ctx, a)}
  <p class="meta">${since}${since ? " · " : ""}${a.claimSource ? html`<span class="source">via ${a.claimSource}</span> · ` : ""}<code>${a.id}</code></p>
  ${a.instructions ? html`<p class="instructions">${clip(a.instructions, 300)}</p>` : ""}
  ${crashed && a.healthError ? html`<p class="meta error-text">${a.healthError}</p>` : ""}
  ${spend ? spendBlock(a.id, spend) : ""}
  <div class="actions">
    ${
      a.inviteUrl
        ? html`<details class="qr-toggle" id="${domId("qr", a.id)}" hx-get="/dashboard/agents/${encodeURIComponent(a.id)}/qr" hx-trigger="toggle once" hx-target="find .qr-slot">
      <summary id="${domId("qr-sum", a.id)}"><span class="if-closed">Show QR</span><span class="if-open">Hide QR</span></summary>
      <div class="qr-slot"><p class="muted small">Loading…</p></div>
    </details>`
        : ""
    }
    ${actions ? actions(a) : ""}
    <button type="button" id="${domId(action, a.id)}" class="danger" hx-post="/dashboard/instances/${encodeURIComponent(a.id)}/${action}" hx-target="#agents-notice" hx-confirm="${confirm}">${crashed ? "Dismiss" : "Kill"}</button>
  </div>
</li>`;
}

// ---------------------------------------------------------------- instances

export function instancesTable(ctx: PageContext, rows: InstanceRecord[]): SafeHtml {
  if (rows.length === 0) {
    return html`<div class="empty"><p><strong>No instances yet.</strong></p><p class="muted">The reconciler creates them to keep the pool's idle minimum.</p></div>`;
  }
  return html`<div class="itable">
  <div class="irow ihead" aria-hidden="true"><span>Instance</span><span>Status</span><span>Age</span><span>In status</span><span>Last health check</span><span>Version</span></div>
  ${rows.map((r) => instanceRow(ctx, r))}
</div>`;
}

function instanceRow(ctx: PageContext, r: InstanceRecord): SafeHtml {
  const health = r.healthCheckedAt
    ? html`${ago(ctx.now, r.healthCheckedAt)} ago${
        r.healthFailures > 0 ? html` · <span class="error-text">${r.healthFailures} failed</span>` : html` · <span class="ok-text">ok</span>`
      }`
    : html`<span class="muted">never</span>`;
  return html`<details class="irow-wrap" id="${domId("inst", r.id)}" hx-get="/dashboard/instances/${encodeURIComponent(r.id)}/events" hx-trigger="toggle once" hx-target="find .events-slot">
  <summary class="irow" id="${domId("inst-sum", r.id)}">
    <span class="c-id"><code>${r.id}</code>${r.agentName ? html` <span class="muted">· ${r.agentName}</span>` : ""}${instanceMarks(ctx, r)}</span>
    <span><span class="k">Status</span><span class="badge s-${r.status}">${STATUS_LABELS[r.status]}</span></span>
    <span><span class="k">Age</span>${ago(ctx.now, r.createdAt)}</span>
    <span><span class="k">In status</span>${ago(ctx.now, r.statusChangedAt)}</span>
    <span><span class="k">Health</span>${health}</span>
    <span><span class="k">Version</span>${r.runtimeVersion ?? html`<span class="muted">—</span>`}</span>
  </summary>
  <div class="events-slot"><p class="muted small">Loading events…</p></div>
</details>`;
}

/** Badges of a protected instance and of one on an older template than its pool's. */
export function instanceMarks(ctx: PageContext, r: InstanceRecord): SafeHtml | "" {
  const old = ctx.templateHash !== undefined && r.templateHash !== ctx.templateHash;
  if (!r.protected && !old) return "";
  return html` ${r.protected ? html`<span class="badge mark-protected" title="bulk operations and claims leave it alone">protected</span>` : ""}${
    old
      ? html` <span class="badge mark-old" title="made from template ${r.templateHash ?? "(none)"}; the pool's is ${ctx.templateHash ?? ""}">older template</span>`
      : ""
  }`;
}

export function eventsList(ctx: PageContext, inst: InstanceRecord, events: InstanceEvent[]): SafeHtml {
  const health = inst.healthError ? html`<p class="small error-text">Last health error: ${inst.healthError}</p>` : "";
  if (events.length === 0) return html`${health}<p class="muted small">No events.</p>`;
  return html`${health}<ol class="events">${events.map(
    (e) => html`<li>
    <time datetime="${e.at.toISOString()}" title="${e.at.toISOString()}">${ago(ctx.now, e.at)} ago</time>
    <span class="transition">${e.fromStatus ? html`<span class="badge s-${e.fromStatus}">${STATUS_LABELS[e.fromStatus]}</span> → ` : ""}<span class="badge s-${e.toStatus}">${STATUS_LABELS[e.toStatus]}</span></span>
    <span class="actor">${e.actor}</span>
    <span class="reason">${e.reason}</span>
  </li>`,
  )}</ol>`;
}

// ---------------------------------------------------------------- errors

export function errorPage(ctx: PageContext, status: number, message: string): SafeHtml {
  return layout(
    ctx,
    `${status} · agent-pool`,
    html`<main class="login"><div class="card login-card">
  <h1>${status === 429 ? "Too many attempts" : "Something went wrong"}</h1>
  ${banner("error", message)}
  <p><a href="/">Back to the dashboard</a></p>
</div></main>`,
  );
}

// ---------------------------------------------------------------- helpers

/** "42 s", "5 min", "3 h 12 min", "2 d 4 h". */
export function ago(now: number, then: Date): string {
  const s = Math.max(0, Math.floor((now - then.getTime()) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

export function clip(s: string, max: number): string {
  const chars = [...s.trim()];
  return chars.length <= max
    ? chars.join("")
    : `${chars
        .slice(0, max - 1)
        .join("")
        .trimEnd()}…`;
}

/** An id attribute safe for any instance id (ours are already safe; this is belt and braces). */
export function domId(prefix: string, id: string): string {
  return `${prefix}-${id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

export function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}
