/**
 * The dashboard's rollout page (issue 11): one pool's current rollout (progress, outcome, why it
 * halted), its controls (pause, resume, roll back) and its history. Pure functions of their inputs,
 * every value through the escaping `html` template; the panel re-fetches itself when the live feed
 * says something changed (a rollout's progress is part of what the feed watches).
 */
import type { RolloutRecord, RolloutStatus } from "../db/rollouts.ts";
import { html, type SafeHtml } from "./html.ts";
import { ago, envBadge, isProduction, layout, type PageContext, poolQuery } from "./views.ts";

export const ROLLOUT_LABELS: Record<RolloutStatus, string> = {
  running: "Running",
  paused: "Paused",
  complete: "Complete",
  halted: "Halted",
  superseded: "Superseded",
};

export interface RolloutPageInput {
  pool: { id: string; templateHash: string; canRollBack: boolean; minIdle: number; maxSurge: number };
  current: RolloutRecord | null;
  history: RolloutRecord[];
  csrf: string;
}

export function rolloutPage(ctx: PageContext, p: RolloutPageInput, flash?: SafeHtml): SafeHtml {
  return layout(
    ctx,
    `Rollouts · ${p.pool.id} · agent-pool (${ctx.environment})`,
    html`<header class="top">
  <div class="brand">
    <span class="logo" aria-hidden="true">◆</span>
    <a href="/"><strong>agent-pool</strong></a>
    <span class="muted">rollouts of pool <code>${p.pool.id}</code></span>
    ${envBadge(ctx.environment)}
  </div>
  <div class="top-right">
    <span id="live" class="live" role="status" data-state="connecting" data-events="/dashboard/events${poolQuery(p.pool.id)}">Connecting…</span>
    <a href="/${poolQuery(p.pool.id)}" class="small">Back to the dashboard</a>
  </div>
</header>
<main class="wrap">
${flash ? html`<div class="flash">${flash}</div>` : ""}
<div id="rollout-notice" class="notice" role="status" aria-live="polite"></div>
${rolloutPanel(ctx, p)}
</main>`,
    html` hx-headers="${JSON.stringify({ "x-csrf-token": p.csrf })}"`,
  );
}

/** The live part: the current rollout, its controls and the history (swapped whole). */
export function rolloutPanel(ctx: PageContext, p: RolloutPageInput): SafeHtml {
  const url = `/dashboard/rollouts/${encodeURIComponent(p.pool.id)}`;
  return html`<div id="rollout-panel" hx-get="${url}/panel" hx-trigger="pool-changed from:body, every 30s" hx-swap="outerHTML">
<section class="card" aria-labelledby="rollout-h">
  <div class="card-head"><h2 id="rollout-h">Current rollout</h2><span class="muted small">template <code id="pool-template">${p.pool.templateHash}</code> · keeps ${p.pool.minIdle} idle claimable · max surge ${p.pool.maxSurge}</span></div>
  ${p.current ? currentRollout(ctx, p.current) : html`<div class="empty" id="rollout-none"><p><strong>No rollout yet.</strong></p><p class="muted">Changing the pool's image, command or environment starts one.</p></div>`}
  ${controls(ctx, p, url)}
</section>
<section class="card" aria-labelledby="history-h">
  <div class="card-head"><h2 id="history-h">History</h2></div>
  ${historyTable(ctx, p.history)}
</section>
</div>`;
}

function currentRollout(ctx: PageContext, r: RolloutRecord): SafeHtml {
  const total = r.retired + r.remaining;
  const done = total === 0 ? 1 : r.retired;
  const of = Math.max(total, 1);
  return html`<div class="rollout" id="rollout-${r.id}">
  <p class="rollout-head">
    <span id="rollout-status" class="badge r-${r.status}">${ROLLOUT_LABELS[r.status]}</span>
    <strong>Rollout ${r.id}</strong> <span class="muted">(${r.reason})</span>
    <code>${r.fromHash ?? "?"}</code> → <code>${r.toHash}</code>
  </p>
  <svg class="capbar" viewBox="0 0 ${of} 1" preserveAspectRatio="none" role="img" aria-label="${r.retired} of ${total} old instances replaced"><rect x="0" y="0" width="${done}" height="1" class="seg r-done"></rect></svg>
  <p class="capacity"><strong id="rollout-updated">${r.retired}</strong> of <strong id="rollout-total">${total}</strong> replaced · ${r.remaining} left</p>
  <dl class="rollout-facts">
    <div><dt>In flight</dt><dd id="rollout-inflight">${r.inFlight}</dd></div>
    <div><dt>New instances</dt><dd id="rollout-created">${r.created}</dd></div>
    <div><dt>Failed</dt><dd id="rollout-failed"${r.failed > 0 ? html` class="error-text"` : ""}>${r.failed} <span class="muted small">(${r.failuresInARow} in a row; halts at ${r.haltAfter})</span></dd></div>
    <div><dt>Claimable</dt><dd id="rollout-claimable">${r.claimable ?? "—"} <span class="muted small">(fewest ${r.minClaimable ?? "—"})</span></dd></div>
    <div><dt>Started</dt><dd><time datetime="${r.startedAt.toISOString()}" title="${r.startedAt.toISOString()}">${ago(ctx.now, r.startedAt)} ago</time></dd></div>
    <div><dt>${r.finishedAt ? "Finished" : "Updated"}</dt><dd><time datetime="${(r.finishedAt ?? r.updatedAt).toISOString()}" title="${(r.finishedAt ?? r.updatedAt).toISOString()}">${ago(ctx.now, r.finishedAt ?? r.updatedAt)} ago</time></dd></div>
  </dl>
  ${r.status === "halted" ? html`<div id="rollout-halt" class="banner error" role="alert"><strong>Halted:</strong> ${r.haltReason ?? "no reason recorded"}. Roll back, or fix the cause and resume.</div>` : ""}
  ${r.status === "complete" ? html`<div id="rollout-outcome" class="banner ok" role="status">Complete: every idle instance runs template <code>${r.toHash}</code>. Claimed agents keep theirs.</div>` : ""}
  ${r.status === "paused" ? html`<div class="banner info" role="status">Paused: nothing is created or retired until it is resumed.</div>` : ""}
</div>`;
}

function controls(ctx: PageContext, p: RolloutPageInput, url: string): SafeHtml {
  const s = p.current?.status;
  const prod = isProduction(ctx.environment);
  const back = `${prod ? "PRODUCTION: " : ""}Roll pool “${p.pool.id}” back to its previous template? Its idle instances are replaced again.`;
  const buttons = [
    s === "running" ? html`<button id="rollout-pause" type="submit" formaction="${url}/pause" hx-post="${url}/pause">Pause</button>` : "",
    s === "paused" || s === "halted"
      ? html`<button id="rollout-resume" type="submit" formaction="${url}/resume" hx-post="${url}/resume">${s === "halted" ? "Retry" : "Resume"}</button>`
      : "",
    p.pool.canRollBack
      ? html`<button id="rollout-rollback" type="submit" class="danger" formaction="${url}/rollback" hx-post="${url}/rollback" hx-confirm="${back}">Roll back</button>`
      : "",
  ];
  if (buttons.every((b) => b === "")) return html``;
  // hx-swap: the panel around it swaps outerHTML, which the buttons would inherit.
  return html`<form class="controls" method="post" action="${url}/pause" hx-target="#rollout-notice" hx-swap="innerHTML">
    <input type="hidden" name="_csrf" value="${p.csrf}">
    ${buttons}
  </form>`;
}

function historyTable(ctx: PageContext, rows: RolloutRecord[]): SafeHtml {
  if (rows.length === 0) return html`<p class="muted" id="history-none">No earlier rollout.</p>`;
  return html`<table class="rtable" id="rollout-history">
  <thead><tr><th>Rollout</th><th>Status</th><th>Why</th><th>Template</th><th>Replaced</th><th>Failed</th><th>Started</th></tr></thead>
  <tbody>${rows.map(
    (r) => html`<tr id="history-${r.id}">
    <td>${r.id}</td>
    <td><span class="badge r-${r.status}">${ROLLOUT_LABELS[r.status]}</span>${r.haltReason ? html`<div class="small error-text">${r.haltReason}</div>` : ""}</td>
    <td>${r.reason}</td>
    <td><code>${r.fromHash ?? "?"}</code> → <code>${r.toHash}</code></td>
    <td>${r.retired} / ${r.retired + r.remaining}</td>
    <td>${r.failed}</td>
    <td><time datetime="${r.startedAt.toISOString()}" title="${r.startedAt.toISOString()}">${ago(ctx.now, r.startedAt)} ago</time></td>
  </tr>`,
  )}</tbody>
</table>`;
}
