/**
 * The dashboard's markup for several pools and for operators' actions on agents (issue 11): the
 * pool switcher, the pools page (each pool's bar, its settings with secret-looking values masked,
 * create / change / delete forms), the versions table, upgrade jobs with their progress, and the
 * release / upgrade / protect controls. Pure functions; every value goes through the escaping
 * `html` template, and a pool's environment is only ever rendered masked (poolView).
 */
import type { InstanceRecord, PoolRecord, UpgradeJobRecord } from "../db/store.ts";
import type { PoolVersions } from "../pool/agent-operations.ts";
import type { PoolSummary } from "../pool/operations.ts";
import { poolView } from "../pool/registry.ts";
import { html, type SafeHtml } from "./html.ts";
import { STATUS_LABELS, ago, domId, envBadge, isProduction, layout, poolQuery, type PageContext } from "./views.ts";

/** Links to every pool's page (the current one marked) and to the pools page. */
export function poolSwitcher(pools: ReadonlyArray<Pick<PoolRecord, "id" | "runtime">>, current: string | null, oob = false): SafeHtml {
  return html`<nav class="pools-nav" id="pools-nav" aria-label="Pools"${oob ? html` hx-swap-oob="true"` : ""}>${pools.map(
    (p) =>
      html`<a href="/${poolQuery(p.id)}" id="${domId("pool-link", p.id)}" title="runtime ${p.runtime}"${p.id === current ? html` aria-current="page"` : ""}>${p.id}</a>`,
  )}<a href="/dashboard/pools" class="manage" id="pools-manage"${current === null ? html` aria-current="page"` : ""}>Pools…</a></nav>`;
}

// ---------------------------------------------------------------- the pools page

export interface PoolCard {
  pool: PoolRecord;
  summary: PoolSummary;
}

export function poolsPage(ctx: PageContext, p: { cards: PoolCard[]; csrf: string; flash?: SafeHtml | undefined }): SafeHtml {
  const csrfField = html`<input type="hidden" name="_csrf" value="${p.csrf}">`;
  return layout(
    ctx,
    `agent-pool · pools (${ctx.environment})`,
    html`<header class="top">
  <div class="brand">
    <span class="logo" aria-hidden="true">◆</span>
    <strong>agent-pool</strong>
    <span class="muted">pools</span>
    ${envBadge(ctx.environment)}
    ${poolSwitcher(
      p.cards.map((c) => c.pool),
      null,
    )}
  </div>
  <div class="top-right">
    <form method="post" action="/logout">${csrfField}<button type="submit" class="ghost">Log out</button></form>
  </div>
</header>
<main class="wrap">
${p.flash ? html`<div class="flash">${p.flash}</div>` : ""}
<section class="card" aria-labelledby="pools-h">
  <div class="card-head"><h2 id="pools-h">Pools</h2><span class="muted small">A pool is a template: what its instances run, and how many.</span></div>
  <div id="pools-notice" class="notice" role="status" aria-live="polite"></div>
  <div id="pools-list" hx-get="/dashboard/pools/list" hx-trigger="pool-changed from:body, every 15s">${poolCards(ctx, p.cards)}</div>
</section>
<section class="card" aria-labelledby="pool-new-h">
  <div class="card-head"><h2 id="pool-new-h">New pool</h2></div>
  ${poolForm(null, "new")}
</section>
</main>`,
    html` hx-headers="${JSON.stringify({ "x-csrf-token": p.csrf })}"`,
  );
}

export function poolCards(ctx: PageContext, cards: PoolCard[]): SafeHtml {
  if (cards.length === 0) return html`<div class="empty"><p><strong>No pools.</strong></p><p class="muted">Create one below.</p></div>`;
  const prod = isProduction(ctx.environment);
  return html`<ul class="pool-cards agents">${cards.map((c) => poolCard(c, prod))}</ul>`;
}

function poolCard({ pool, summary }: PoolCard, prod: boolean): SafeHtml {
  const v = poolView(pool);
  const env = Object.entries(v.env);
  const c = summary.counts;
  const confirm = `${prod ? "PRODUCTION: " : ""}Delete pool “${pool.id}”? Only an empty pool can be deleted.`;
  return html`<li class="pool-card" id="${domId("pool-card", pool.id)}">
  <h3><a href="/${poolQuery(pool.id)}">${pool.id}</a> <span class="badge" title="runtime label claims select it by">${pool.runtime}</span> <code class="small" title="template hash">${pool.templateHash}</code></h3>
  <p class="meta">${pool.provider ?? "default provider"} · ${templateText(pool)}${env.length ? html` · env ${env.map(([k, x]) => html`<code>${k}=${x}</code> `)}` : ""}</p>
  ${miniBar(summary)}
  <p class="meta"><strong>${c.idle}</strong> idle · <strong>${c.claimed + c.pending_acceptance}</strong> agents · ${c.total} of ${pool.maxTotal} max · ${pool.sizing.mode === "demand" ? html`sizing <strong>demand</strong> (floor ${pool.sizing.floor}, ×${pool.sizing.safetyFactor})` : html`keeps ${pool.minIdle} idle`}${c.crashed ? html` · <span class="error-text">${c.crashed} crashed</span>` : ""}</p>
  <div class="actions">
    <a href="/${poolQuery(pool.id)}">Open</a>
    <details class="edit-toggle" id="${domId("pool-edit", pool.id)}"><summary>Edit</summary>${poolForm(pool, `edit-${pool.id}`)}</details>
    <button type="button" class="danger" id="${domId("pool-delete", pool.id)}" hx-post="/dashboard/pools/${encodeURIComponent(pool.id)}/delete" hx-target="#pools-notice" hx-confirm="${confirm}">Delete</button>
  </div>
</li>`;
}

/** The pool's counts as a stacked bar (no element ids: several of these share a page). */
function miniBar(s: PoolSummary): SafeHtml {
  const c = s.counts;
  const cap = Math.max(s.maxTotal, c.total, 1);
  let x = 0;
  const segs = (["idle", "starting", "claiming", "claimed", "pending_acceptance", "crashed", "sleeping"] as const).map((st) => {
    const w = c[st];
    const seg = w > 0 ? html`<rect x="${x}" y="0" width="${w}" height="1" class="seg s-${st}"></rect>` : "";
    x += w;
    return seg;
  });
  return html`<svg class="capbar" viewBox="0 0 ${cap} 1" preserveAspectRatio="none" role="img" aria-label="${c.total} of ${s.maxTotal} instances in use">${segs}</svg>`;
}

const templateText = (p: Pick<PoolRecord, "image" | "command">) => (p.image ? p.image : p.command ? p.command.join(" ") : "default runtime");

/** Create (pool null) or change form; the env is shown masked, and a mask sent back keeps the secret. */
export function poolForm(pool: PoolRecord | null, key: string): SafeHtml {
  const v = pool ? poolView(pool) : null;
  const id = (name: string) => domId(`pf-${key}`, name);
  const action = pool ? `/dashboard/pools/${encodeURIComponent(pool.id)}/update` : "/dashboard/pools";
  const target = pool ? "#pools-notice" : "#pools-notice";
  const field = (name: string, label: string, value: string | number | null | undefined, extra: SafeHtml | string = "") =>
    html`<div><label for="${id(name)}">${label}</label><input id="${id(name)}" name="${name}" value="${value ?? ""}"${extra}></div>`;
  const providerOpt = (value: string, label: string) => html`<option value="${value}"${(v?.provider ?? "") === value ? html` selected` : ""}>${label}</option>`;
  return html`<form class="pool-form" method="post" action="${action}" hx-post="${action}" hx-target="${target}">
  ${pool ? "" : field("id", "Id", "", html` required maxlength="32" pattern="[a-z0-9][a-z0-9-]{0,31}" autocomplete="off" placeholder="e.g. hermes"`)}
  ${field("runtime", "Runtime label", v?.runtime, html` maxlength="64" placeholder="${pool ? "" : "the id"}"`)}
  <div><label for="${id("provider")}">Provider</label><select id="${id("provider")}" name="provider">${providerOpt("", "deployment default")}${providerOpt("local", "local")}${providerOpt("railway", "railway")}</select></div>
  ${field("image", "Image (Railway)", v?.image, html` maxlength="500" placeholder="ghcr.io/…"`)}
  ${field("command", "Command (local)", v?.command ? JSON.stringify(v.command) : "", html` placeholder='["node", "runtime.js"] or a command line'`)}
  ${field("minIdle", "Min idle", v?.minIdle ?? 3, html` type="number" min="0" max="1000"`)}
  ${field("maxTotal", "Max total", v?.maxTotal ?? 10, html` type="number" min="0" max="10000"`)}
  ${field("maxSurge", "Max surge", v?.maxSurge ?? 2, html` type="number" min="1" max="100"`)}
  ${field("claimAgentName", "Default agent name", v?.claimAgentName, html` maxlength="200"`)}
  ${field("joinUrlHosts", "Invite hosts (comma-separated; empty: any)", v?.joinUrlHosts?.join(", "))}
  <div class="wide"><label for="${id("env")}">Environment (KEY=value per line; secret-looking values show as ••••••, kept unless you type a new one)</label>
    <textarea id="${id("env")}" name="env" rows="3" spellcheck="false">${
      v
        ? Object.entries(v.env)
            .map(([k, x]) => `${k}=${x}`)
            .join("\n")
        : ""
    }</textarea></div>
  <div class="wide"><label for="${id("claimInstructions")}">Default instructions</label>
    <textarea id="${id("claimInstructions")}" name="claimInstructions" rows="2">${v?.claimInstructions ?? ""}</textarea></div>
  <div class="buttons"><button type="submit" class="primary" id="${id("submit")}">${pool ? "Save changes" : "Create pool"}</button></div>
</form>`;
}

// ---------------------------------------------------------------- versions and upgrades (main page)

export function versionsTable(v: PoolVersions): SafeHtml {
  if (v.rows.length === 0) return html`<p class="muted">No instances.</p>`;
  return html`<table class="vtable" id="versions-table">
  <thead><tr><th>Template</th><th>Runtime</th><th>Version</th><th>Status</th><th class="n">Instances</th></tr></thead>
  <tbody>${v.rows.map(
    (r) => html`<tr class="${r.current ? "v-current" : "v-old"}">
    <td><code>${r.templateHash ?? "—"}</code> ${r.current ? html`<span class="badge s-idle">current</span>` : html`<span class="badge mark-old">older</span>`}</td>
    <td>${r.runtimeType ?? html`<span class="muted">—</span>`}</td>
    <td>${r.runtimeVersion ?? html`<span class="muted">—</span>`}</td>
    <td><span class="badge s-${r.status}">${STATUS_LABELS[r.status]}</span></td>
    <td class="n">${r.count}</td>
  </tr>`,
  )}</tbody>
</table>`;
}

/**
 * The pool's bulk upgrade control and its latest jobs. While a job runs the panel reloads itself
 * every second (and stops once none runs): the progress is live without a page reload.
 */
export function upgradesPanel(ctx: PageContext, p: { jobs: UpgradeJobRecord[]; outdated: number }): SafeHtml {
  const running = p.jobs.some((j) => j.state === "running");
  const prod = isProduction(ctx.environment);
  const q = poolQuery(ctx.poolId);
  const confirm = `${prod ? "PRODUCTION: " : ""}Upgrade ${p.outdated} agent${p.outdated === 1 ? "" : "s"} of pool “${ctx.poolId}” to its current template? Each one's runtime restarts; protected agents are skipped.`;
  return html`<div id="upgrades" hx-get="/dashboard/upgrades${q}" hx-trigger="pool-changed from:body${running ? ", every 1s" : ""}" hx-swap="outerHTML">
  <div class="controls">
    <span id="outdated-count"><strong>${p.outdated}</strong> agent${p.outdated === 1 ? "" : "s"} on an older template</span>
    <span class="spacer"></span>
    <button type="button" id="upgrade-all" hx-post="/dashboard/pools/${encodeURIComponent(ctx.poolId)}/upgrade" hx-target="#upgrades-notice" hx-confirm="${confirm}"${p.outdated === 0 ? html` disabled` : ""}>Upgrade all agents</button>
  </div>
  ${p.jobs.length ? html`<ol class="jobs">${p.jobs.map((j) => jobBlock(ctx, j))}</ol>` : ""}
</div>`;
}

export function jobBlock(ctx: PageContext, j: UpgradeJobRecord): SafeHtml {
  const n = (s: string) => j.items.filter((i) => i.state === s).length;
  const [done, failed, skipped] = [n("upgraded"), n("failed"), n("skipped")];
  const toRun = j.items.length - skipped;
  const what = j.scope === "instance" ? `agent ${j.items[0]?.instanceId ?? ""}` : j.scope === "all" ? "all agents" : `${j.items.length} agents`;
  const items = html`<ol>${j.items.map(
    (i) =>
      html`<li><code>${i.instanceId}</code> <span class="badge job-${i.state}">${i.state}</span>${i.detail ? html` <span class="muted">${i.detail}</span>` : ""}</li>`,
  )}</ol>`;
  return html`<li class="job" id="${domId("job", j.id)}" data-state="${j.state}">
  <strong>Upgrade of ${what}</strong> <span class="badge ${j.state === "running" ? "s-starting" : failed ? "s-crashed" : "s-idle"}">${j.state === "running" ? "running" : failed ? "done, with failures" : "done"}</span>
  <progress max="${Math.max(toRun, 1)}" value="${done + failed}" aria-label="${done + failed} of ${toRun} agents handled"></progress>
  <p class="meta"><span class="job-counts">${done} of ${toRun} upgraded · ${failed} failed · ${skipped} skipped</span> · to template <code>${j.templateHash}</code> · started <time datetime="${j.createdAt.toISOString()}">${ago(ctx.now, j.createdAt)} ago</time>${
    j.resumed ? html` · resumed after a restart` : ""
  }</p>
  ${j.state === "running" || j.items.length <= 3 ? items : html`<details><summary>Each agent</summary>${items}</details>`}
</li>`;
}

// ---------------------------------------------------------------- controls of an instance

/** Release, upgrade and protect controls of an agent's card (answers go to the agents' notice). */
export function agentActions(ctx: PageContext, a: InstanceRecord): SafeHtml {
  if (a.status === "claiming") return html``;
  const prod = isProduction(ctx.environment);
  const name = a.agentName ?? a.id;
  const path = `/dashboard/instances/${encodeURIComponent(a.id)}`;
  const old = ctx.templateHash !== undefined && a.templateHash !== ctx.templateHash;
  const releaseConfirm = `${prod ? "PRODUCTION: " : ""}Release agent “${name}”? It leaves its conversation; its instance is reset and returned to the pool (or replaced if the reset does not come back clean).`;
  const upgradeConfirm = `${prod ? "PRODUCTION: " : ""}Upgrade agent “${name}” to the pool's current template? Its runtime restarts.`;
  return html`${
    a.protected
      ? html`<button type="button" id="${domId("release", a.id)}" disabled title="protected: unprotect it first">Release</button>`
      : html`<button type="button" id="${domId("release", a.id)}" hx-post="${path}/release" hx-target="#agents-notice" hx-confirm="${releaseConfirm}">Release</button>`
  }${old ? html`<button type="button" id="${domId("upgrade", a.id)}" hx-post="${path}/upgrade" hx-target="#agents-notice" hx-confirm="${upgradeConfirm}">Upgrade</button>` : ""}${protectButton(a, "#agents-notice")}`;
}

export function protectButton(a: InstanceRecord, target: string): SafeHtml {
  const path = `/dashboard/instances/${encodeURIComponent(a.id)}/protect`;
  const vals = JSON.stringify({ protected: a.protected ? "0" : "1" });
  return html`<button type="button" class="ghost" id="${domId(a.protected ? "unprotect" : "protect", a.id)}" hx-post="${path}" hx-vals="${vals}" hx-target="${target}">${a.protected ? "Unprotect" : "Protect"}</button>`;
}

/** Controls above an instance's event history: protection (and the instance's marks). */
export function instanceControls(inst: InstanceRecord): SafeHtml {
  if (inst.status === "dead" || inst.deletedAt !== null) return html``;
  const target = `#${domId("inst-notice", inst.id)}`;
  return html`<div class="inst-controls">${protectButton(inst, target)}<span class="inst-notice" id="${domId("inst-notice", inst.id)}" role="status"></span></div>`;
}

/** The main page's versions and upgrades section. */
export function versionsSection(ctx: PageContext, p: { versions: PoolVersions; jobs: UpgradeJobRecord[]; outdated: number }): SafeHtml {
  const q = poolQuery(ctx.poolId);
  return html`<section class="card" aria-labelledby="versions-h">
  <div class="card-head"><h2 id="versions-h">Versions and upgrades</h2><span class="muted small">Current template <code>${p.versions.templateHash}</code></span></div>
  <div id="versions" hx-get="/dashboard/versions${q}" hx-trigger="pool-changed from:body, every 30s">${versionsTable(p.versions)}</div>
  <div id="upgrades-notice" class="notice" role="status" aria-live="polite"></div>
  ${upgradesPanel(ctx, { jobs: p.jobs, outdated: p.outdated })}
</section>`;
}
