/**
 * The pool history panel (issue 13): instances by status over time with the sizing target, claims
 * per minute split into warm hits and misses, and claim latency p50/p99, over the last hour, day or
 * week. Rendered here as inline SVG (the page's CSP allows no external resource and no inline
 * style; colours come from app.css classes). Pure: bins in, markup out.
 */
import { binHistory, histQuantileMs, type HistoryBin, type HistoryRow } from "../pool/history.ts";
import { html, raw, type SafeHtml } from "./html.ts";

export const HISTORY_RANGES = {
  hour: { label: "Last hour", binMs: 60_000, bins: 60 },
  day: { label: "Last day", binMs: 15 * 60_000, bins: 96 },
  week: { label: "Last week", binMs: 3_600_000, bins: 168 },
} as const;
export type HistoryRange = keyof typeof HISTORY_RANGES;

export function historyRange(v: unknown): HistoryRange {
  return v === "day" || v === "week" ? v : "hour";
}

export function historySinceMs(range: HistoryRange): number {
  const r = HISTORY_RANGES[range];
  return r.binMs * r.bins;
}

const W = 600;
const H = 110;

/** The panel's inner markup (what /dashboard/history answers, swapped into #history). */
export function historyPanel(poolId: string, range: HistoryRange, rows: readonly HistoryRow[], now: Date): SafeHtml {
  const r = HISTORY_RANGES[range];
  const end = Math.ceil(now.getTime() / r.binMs) * r.binMs;
  const bins = binHistory(rows, end, r.binMs, r.bins);
  const q = (x: HistoryRange) => `/dashboard/history?pool=${encodeURIComponent(poolId)}&range=${x}`;
  const tabs = (Object.keys(HISTORY_RANGES) as HistoryRange[]).map(
    (x) =>
      html`<button type="button" class="${x === range ? "primary" : "ghost"}" id="history-range-${x}" hx-get="${q(x)}" hx-target="#history" aria-pressed="${String(x === range)}">${HISTORY_RANGES[x].label}</button>`,
  );
  const warm = sum(bins, (b) => b.claimsWarm);
  const missed = sum(bins, (b) => b.claimsWaited + b.claimsEmpty);
  const idleHours = sum(bins, (b) => b.idleSeconds) / 3600;
  const refills = sum(bins, (b) => b.refills);
  const latest = [...bins].reverse().find((b) => b.targetSummary);
  const perMinute = (n: number) => n / Math.max(1, r.binMs / 60_000);
  return html`<div class="history-tabs" role="group" aria-label="History range">${tabs}</div>
<p class="history-target" id="history-target">${latest?.targetSummary || "No sizing decision recorded in this range yet."}</p>
<p class="meta" id="history-totals"><strong>${warm + missed}</strong> claims · <strong>${warm + missed ? pct(warm / (warm + missed)) : "–"}</strong> warm hits · ${missed} missed · ${idleHours.toFixed(1)} idle instance-hours · ${refills} refills${refills ? html` (mean ${fmtMs(sum(bins, (b) => b.refillMsSum) / refills)})` : ""}</p>
<figure class="chart"><figcaption>Instances by status, and the target the sizing policy chose</figcaption>${instancesChart(bins)}
  <p class="legend"><span class="key s-idle"></span>idle <span class="key s-starting"></span>starting <span class="key s-claimed"></span>claimed <span class="key s-crashed"></span>other <span class="key target"></span>target</p></figure>
<figure class="chart"><figcaption>Claims per minute: warm hits and misses (waited or pool empty)</figcaption>${claimsChart(bins, perMinute)}
  <p class="legend"><span class="key s-idle"></span>warm <span class="key s-pending_acceptance"></span>waited <span class="key s-crashed"></span>empty</p></figure>
<figure class="chart"><figcaption>Claim latency p50 and p99 (served claims)</figcaption>${latencyChart(bins)}
  <p class="legend"><span class="key p50"></span>p50 <span class="key p99"></span>p99</p></figure>`;
}

/** The whole section, for the pool's main page. */
export function historySection(poolId: string, range: HistoryRange, rows: readonly HistoryRow[], now: Date): SafeHtml {
  return html`<section class="card" aria-labelledby="history-h" id="history-card">
  <div class="card-head"><h2 id="history-h">Pool history</h2><span class="muted small">per minute, every replica added up</span></div>
  <div id="history">${historyPanel(poolId, range, rows, now)}</div>
</section>`;
}

function instancesChart(bins: HistoryBin[]): SafeHtml {
  const top = Math.max(1, ...bins.map((b) => Math.max((b.idle ?? 0) + (b.starting ?? 0) + (b.claimed ?? 0) + (b.other ?? 0), b.target ?? 0)));
  const bw = W / bins.length;
  const rects: string[] = [];
  bins.forEach((b, i) => {
    if (b.idle === null) return;
    let y = H;
    for (const [n, cls] of [
      [b.idle, "s-idle"],
      [b.starting, "s-starting"],
      [b.claimed, "s-claimed"],
      [b.other, "s-crashed"],
    ] as const) {
      const h = ((n ?? 0) / top) * H;
      if (h <= 0) continue;
      y -= h;
      rects.push(
        `<rect class="seg ${cls}" x="${f(i * bw)}" y="${f(y)}" width="${f(bw * 0.9)}" height="${f(h)}"><title>${time(b.start)}: ${n} ${cls.slice(2)}</title></rect>`,
      );
    }
  });
  const line = polyline(
    bins.map((b, i) => (b.target === null ? null : [i * bw + bw / 2, H - (b.target / top) * H])),
    "target-line",
  );
  return svg("history-instances", `instances by status, up to ${top}`, rects.join("") + line, top);
}

function claimsChart(bins: HistoryBin[], perMinute: (n: number) => number): SafeHtml {
  const rate = bins.map((b) => [perMinute(b.claimsWarm), perMinute(b.claimsWaited), perMinute(b.claimsEmpty)] as const);
  const top = Math.max(0.1, ...rate.map(([a, b, c]) => a + b + c));
  const bw = W / bins.length;
  const rects: string[] = [];
  rate.forEach((parts, i) => {
    let y = H;
    parts.forEach((n, k) => {
      const h = (n / top) * H;
      if (h <= 0) return;
      y -= h;
      const cls = ["s-idle", "s-pending_acceptance", "s-crashed"][k]!;
      rects.push(
        `<rect class="seg ${cls}" x="${f(i * bw)}" y="${f(y)}" width="${f(bw * 0.9)}" height="${f(h)}"><title>${time(bins[i]!.start)}: ${n.toFixed(2)}/min ${["warm", "waited", "empty"][k]}</title></rect>`,
      );
    });
  });
  return svg("history-claims", `claims per minute, up to ${top.toFixed(1)}`, rects.join(""), Number(top.toFixed(1)));
}

function latencyChart(bins: HistoryBin[]): SafeHtml {
  const p50 = bins.map((b) => histQuantileMs(b.latencyHist, 0.5));
  const p99 = bins.map((b) => histQuantileMs(b.latencyHist, 0.99));
  const topMs = Math.max(100, ...p99.map((x) => x ?? 0));
  const bw = W / bins.length;
  const pts = (xs: Array<number | null>) => xs.map((v, i) => (v === null ? null : ([i * bw + bw / 2, H - (v / topMs) * H] as [number, number])));
  return svg("history-latency", `claim latency, up to ${fmtMs(topMs)}`, polyline(pts(p50), "p50-line") + polyline(pts(p99), "p99-line"), fmtMs(topMs));
}

function svg(id: string, label: string, body: string, top: number | string): SafeHtml {
  // Stretched to the card's width (bars and lines only; the scale is written beside it, not in it).
  return html`<div class="chart-box"><span class="axis-label">${String(top)}</span><svg id="${id}" class="history-chart" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${label}">${raw(
    `<line class="axis" x1="0" y1="${H}" x2="${W}" y2="${H}"></line>${body}`,
  )}</svg></div>`;
}

/** Line segments through consecutive points (a gap where a bin has no value). */
function polyline(points: Array<readonly [number, number] | null>, cls: string): string {
  const runs: string[][] = [[]];
  for (const p of points) {
    if (p === null) runs.push([]);
    else runs.at(-1)!.push(`${f(p[0])},${f(p[1])}`);
  }
  return runs
    .filter((r) => r.length > 0)
    .map((r) =>
      r.length === 1
        ? `<circle class="${cls}" cx="${r[0]!.split(",")[0]}" cy="${r[0]!.split(",")[1]}" r="2"></circle>`
        : `<polyline class="${cls}" points="${r.join(" ")}"></polyline>`,
    )
    .join("");
}

const f = (x: number) => (Math.round(x * 10) / 10).toString();
const sum = (bins: HistoryBin[], g: (b: HistoryBin) => number) => bins.reduce((n, b) => n + g(b), 0);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const time = (d: Date) => d.toISOString().slice(5, 16).replace("T", " ");

function fmtMs(ms: number): string {
  if (ms >= 60_000) return `${(ms / 60_000).toFixed(1)} min`;
  if (ms >= 1_000) return `${(ms / 1_000).toFixed(1)} s`;
  return `${Math.round(ms)} ms`;
}
