/**
 * An agent's spend on its own key (issue 12), as its card on the dashboard shows it: what it spent
 * of its limit, as a bar, and the operator's top-up control, bounded by the configured maximum (the
 * server refuses more whatever the form says). Pure; no secret ever reaches it (there is none in a
 * resource view: only its numbers).
 */
import { html, type SafeHtml } from "./html.ts";
import { usd } from "../resource/top-up.ts";

export interface AgentSpend {
  kind: string;
  limit: number | null;
  usage: number | null;
  remaining: number | null;
  /** The largest limit a top-up may reach; null: the kind cannot be topped up. */
  maxLimit: number | null;
}

function domSafe(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, "_");
}

export function spendBlock(instanceId: string, s: AgentSpend): SafeHtml {
  const used = s.usage ?? 0;
  const limit = s.limit;
  const pct = limit && limit > 0 ? Math.min(100, Math.round((used / limit) * 1000) / 10) : 0;
  const level = pct >= 90 ? "high" : pct >= 70 ? "mid" : "low";
  const room = limit !== null && s.maxLimit !== null ? Math.round((s.maxLimit - limit) * 100) / 100 : 0;
  const inputId = `topup-${domSafe(instanceId)}`;
  return html`<div class="spend" id="spend-${domSafe(instanceId)}">
  <p class="meta"><span class="spend-text">Spent <strong class="spend-used">${usd(used)}</strong>${limit !== null ? html` of <span class="spend-limit">${usd(limit)}</span>` : " (no limit)"}</span> <span class="muted small">${s.kind}</span></p>
  ${limit !== null ? html`<svg class="spendbar" viewBox="0 0 100 1" preserveAspectRatio="none" role="img" aria-label="${pct}% of the spending limit used"><rect x="0" y="0" width="${pct}" height="1" class="spent ${level}"></rect></svg>` : ""}
  ${
    room > 0
      ? html`<form class="topup" hx-post="/dashboard/agents/${encodeURIComponent(instanceId)}/top-up" hx-target="#agents-notice">
    <label for="${inputId}">Top up (at most ${usd(room)} more)</label>
    <input id="${inputId}" name="amount" type="number" inputmode="decimal" min="0.01" step="0.01" max="${room.toFixed(2)}" value="${Math.min(room, 10).toFixed(2)}" required>
    <button type="submit">Top up</button>
  </form>`
      : s.maxLimit !== null && limit !== null
        ? html`<p class="meta muted small">At the maximum limit (${usd(s.maxLimit)}).</p>`
        : ""
  }
</div>`;
}
