import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { emptyCounts, latencyBucket, type HistoryRow } from "../pool/history.ts";
import { historyPanel, historyRange, historySinceMs } from "./history-views.ts";

const NOW = new Date("2026-12-01T12:00:30Z");
const row = (minutesAgo: number, over: Partial<HistoryRow> = {}): HistoryRow => ({
  ...emptyCounts(),
  poolId: "p",
  minute: new Date(Date.parse("2026-12-01T12:00:00Z") - minutesAgo * 60_000),
  idle: null,
  starting: null,
  claimed: null,
  other: null,
  target: null,
  targetSummary: null,
  ...over,
});

describe("history panel", () => {
  it("reads a range, defaulting to the last hour", () => {
    assert.deepEqual([historyRange("day"), historyRange("week"), historyRange("year"), historyRange(undefined)], ["day", "week", "hour", "hour"]);
    assert.equal(historySinceMs("hour"), 3_600_000);
    assert.equal(historySinceMs("week"), 7 * 86_400_000);
  });

  it("shows the latest decision, totals with the warm-hit rate, and draws bars, the target and latency lines", () => {
    const lat = emptyCounts().latencyHist;
    lat[latencyBucket(200)] = 3;
    const out = String(
      historyPanel(
        "p",
        "hour",
        [
          row(3, {
            claimsWarm: 3,
            claimsWaited: 1,
            latencyHist: lat,
            idleSeconds: 3600,
            idle: 2,
            starting: 1,
            claimed: 1,
            other: 0,
            target: 3,
            targetSummary: "target 3 idle: old",
          }),
          row(1, {
            claimsEmpty: 1,
            refills: 2,
            refillMsSum: 8_000,
            idle: 1,
            starting: 2,
            claimed: 2,
            other: 1,
            target: 4,
            targetSummary: "target 4 idle: 1.0 claims/min × 4 s refill p95 × 1.0",
          }),
        ],
        NOW,
      ),
    );
    assert.match(out, /<p class="history-target" id="history-target">target 4 idle: 1.0 claims\/min × 4 s refill p95 × 1.0<\/p>/);
    assert.match(out, /<strong>5<\/strong> claims · <strong>60.0%<\/strong> warm hits · 2 missed · 1.0 idle instance-hours · 2 refills \(mean 4.0 s\)/);
    assert.match(out, /<svg id="history-instances"[^>]*>.*class="seg s-idle".*class="target-line"/s);
    assert.match(out, /<svg id="history-claims".*class="seg s-pending_acceptance"/s);
    assert.match(out, /<svg id="history-latency".*class="(p50|p99)-line"/s);
    assert.match(out, /id="history-range-hour" hx-get="\/dashboard\/history\?pool=p&amp;range=hour"/);
  });

  it("escapes what it shows and says when nothing was decided yet", () => {
    const out = String(historyPanel("p", "day", [row(2, { idle: 1, target: 1, targetSummary: "<script>alert(1)</script>" })], NOW));
    assert.doesNotMatch(out, /<script>/);
    assert.match(out, /&lt;script&gt;/);
    assert.match(String(historyPanel("p", "week", [], NOW)), /No sizing decision recorded in this range yet\./);
  });
});
