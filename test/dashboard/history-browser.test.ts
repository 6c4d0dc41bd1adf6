/**
 * The pool history panel (issue 13) in a real browser against the real server process: after a few
 * claims (one served warm), the panel shows the sizing target with its numbers, the claims and the
 * warm-hit rate, and three inline SVG charts; the range buttons swap in the day and week views. No
 * request leaves our server and no CSP rule is broken (the charts are inline SVG styled by class).
 * Screenshot at 1280 px to .test-artifacts/dashboard-history-1280.png.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { launchChromium } from "../support/browser.ts";
import { REPO_ROOT, cleanUpPool, startPoolProcess, waitFor, type PoolProcess } from "../support/process.ts";

const ARTIFACTS = join(REPO_ROOT, ".test-artifacts");

describe("pool history panel in Chromium", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-history-"));
  let pool: PoolProcess | null = null;
  let browser: Browser | null = null;
  let page: Page;
  let apiKey = "";
  const external: string[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    let launched: Awaited<ReturnType<typeof launchChromium>>;
    [pool, launched] = await Promise.all([
      startPoolProcess({ DATA_DIR: dataDir, TICK_INTERVAL_MS: "1000", LOCAL_START_TIMEOUT_MS: "20000", POOL_HISTORY_FLUSH_MS: "300" }),
      launchChromium(),
    ]);
    browser = launched.browser;
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(10_000);
    page = await context.newPage();
    const origin = new URL(pool.url).origin;
    page.on("request", (r) => {
      if (!r.url().startsWith(`${origin}/`) && !r.url().startsWith("data:")) external.push(r.url());
    });
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    apiKey = readFileSync(join(dataDir, "api-key"), "utf8").trim();
  });

  after(async () => {
    await browser?.close();
    await cleanUpPool(pool, dataDir);
  });

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${pool!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  it("shows the target with its numbers, the claims split warm and missed, and three charts; the ranges swap in", async () => {
    await waitFor("3 idle", async () => (await api("GET", "/api/pool/counts")).body.idle >= 3, 30_000);
    // Two warm claims, then a demand policy (its decision is recorded by the next passes).
    for (let i = 0; i < 2; i++) assert.equal((await api("POST", "/api/pool/claim", { agentName: `A${i}`, instructions: "x" })).status, 200);
    assert.equal((await api("PATCH", "/api/pools/default", { sizing: { mode: "demand", floor: 2 } })).status, 200);

    await page.goto(`${pool!.url}/login`);
    await page.waitForFunction(() => document.activeElement?.id === "password", null, { timeout: 10_000 });
    await page.keyboard.type(apiKey);
    await Promise.all([page.waitForURL(`${pool!.url}/`), page.keyboard.press("Enter")]);
    await page.locator("#history-card").waitFor();

    // The panel is drawn with the page; the range buttons fetch it again (fresh counts).
    await waitFor(
      "the claims and the demand decision in the history",
      async () => {
        await page.click("#history-range-hour");
        await page.locator("#history-range-hour.primary").waitFor();
        const totals = (await page.locator("#history-totals").textContent()) ?? "";
        const target = (await page.locator("#history-target").textContent()) ?? "";
        return /2 claims · 100\.0% warm hits/.test(totals) && /claims\/min × .* refill p95/.test(target);
      },
      30_000,
    );
    assert.match((await page.locator("#history-target").textContent())!, /^target \d+ idle: [\d.]+ claims\/min × [\d.]+ (min|s) refill p95 × 1\.0/);
    for (const id of ["#history-instances", "#history-claims", "#history-latency"]) assert.equal(await page.locator(id).count(), 1, id);
    assert.ok((await page.locator("#history-instances rect.seg.s-idle").count()) > 0, "idle instances drawn");
    assert.ok((await page.locator("#history-claims rect.seg.s-idle").count()) > 0, "warm claims drawn");
    assert.ok((await page.locator("#history-instances polyline.target-line, #history-instances circle.target-line").count()) > 0, "the target drawn");
    // Charts are styled by the stylesheet (colour comes from a class, not an inline style).
    const fill = await page
      .locator("#history-claims rect.seg.s-idle")
      .first()
      .evaluate((el) => getComputedStyle(el).fill);
    assert.equal(fill, "rgb(34, 163, 90)");
    // From the top: a full-page shot of a scrolled page draws the sticky header in the middle.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(ARTIFACTS, "dashboard-history-1280.png"), fullPage: true });

    await page.click("#history-range-week");
    await page.locator("#history-range-week.primary").waitFor();
    assert.equal(await page.locator("#history-instances").count(), 1);
    assert.match((await page.locator("#history-totals").textContent())!, /2 claims/);
    await page.click("#history-range-day");
    await page.locator("#history-range-day.primary").waitFor();
    assert.equal(await page.locator("#history-range-week.primary").count(), 0);
  });

  it("made no request outside our server and broke no CSP rule", () => {
    assert.deepEqual(external, []);
    assert.deepEqual(
      consoleErrors.filter((e) => /Content Security Policy|Refused/i.test(e)),
      [],
    );
  });
});
