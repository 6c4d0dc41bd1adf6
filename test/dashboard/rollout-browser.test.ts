/**
 * The rollout page in a real browser (headless Chromium through playwright-core, see
 * test/support/browser.ts) against the real server started as a process on its embedded defaults
 * (local provider, PGlite, reference runtimes): a template change shows up live without a reload,
 * pause and resume by button, progress to complete, a roll back after a confirmation, the history.
 * The page makes no request outside our server and breaks no CSP rule. Screenshots at 1280 and
 * 375 px go to .test-artifacts/.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { launchChromium } from "../support/browser.ts";
import { REPO_ROOT, cleanUpPool, startPoolProcess, type PoolProcess } from "../support/process.ts";

const ARTIFACTS = join(REPO_ROOT, ".test-artifacts");

describe("rollout page in Chromium", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-rollout-browser-"));
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
      startPoolProcess({ DATA_DIR: dataDir, TICK_INTERVAL_MS: "1000", POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "4", LOCAL_START_TIMEOUT_MS: "20000" }),
      launchChromium(),
    ]);
    browser = launched.browser;
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(10_000);
    page = await context.newPage();
    const origin = new URL(pool.url).origin;
    page.on("request", (r) => {
      const u = r.url();
      if (!u.startsWith(`${origin}/`) && !u.startsWith("data:")) external.push(u);
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

  const api = (method: string, path: string, body?: unknown) =>
    fetch(`${pool!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  const text = async (sel: string) => (await page.locator(sel).first().textContent())?.trim();
  const waitText = (sel: string, want: string, timeout = 30_000) =>
    page.waitForFunction(([s, w]) => document.querySelector(s!)?.textContent?.trim() === w, [sel, want] as const, { timeout });

  it("signs in and opens the pool's rollout page from the dashboard", async () => {
    await page.goto(pool!.url);
    await page.fill("#password", apiKey);
    await Promise.all([page.waitForURL(`${pool!.url}/`), page.keyboard.press("Enter")]);
    await waitText("#count-idle", "2");
    await Promise.all([page.waitForURL(`${pool!.url}/dashboard/rollouts/default`), page.click("#rollouts-link")]);
    assert.match(await page.title(), /^Rollouts · default · agent-pool/);
    await page.locator('#live[data-state="on"]').waitFor();
    await page.locator("#rollout-none").waitFor();
  });

  it("shows a template change as it happens, without a reload", async () => {
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 7));
    const res = await api("PATCH", "/api/pools/default", { env: { RUNTIME_VERSION: "2.0.0-browser" } });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { templateChanged: boolean }).templateChanged, true);
    await waitText("#rollout-status", "Running", 10_000);
    assert.equal(await text("#rollout-total"), "2");
    assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 7, "the page was not reloaded");
  });

  it("pauses and resumes by button", async () => {
    await page.click("#rollout-pause");
    await page.locator("#rollout-notice .banner.ok", { hasText: "is paused" }).waitFor();
    await waitText("#rollout-status", "Paused", 10_000);
    await page.click("#rollout-resume");
    await page.locator("#rollout-notice .banner.ok", { hasText: "is running" }).waitFor();
    await waitText("#rollout-status", "Running", 10_000);
  });

  it("follows the progress to complete, then renders at 1280 and 375 px", async () => {
    await waitText("#rollout-status", "Complete", 60_000);
    assert.equal(await text("#rollout-updated"), "2");
    assert.equal(await text("#rollout-failed"), "0 (0 in a row; halts at 3)");
    await page.locator("#rollout-outcome").waitFor();
    const instances = (await (await api("GET", "/api/pool/status")).json()) as { instances: Array<{ status: string; runtimeVersion: string | null }> };
    assert.deepEqual(
      instances.instances.filter((i) => i.status === "idle").map((i) => i.runtimeVersion),
      ["2.0.0-browser", "2.0.0-browser"],
      "the new instances run the new template",
    );
    await page.screenshot({ path: join(ARTIFACTS, "rollout-1280.png"), fullPage: true });
    await page.setViewportSize({ width: 375, height: 812 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 375, `no horizontal scrolling at 375 px (page is ${overflow} px wide)`);
    await page.screenshot({ path: join(ARTIFACTS, "rollout-375.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("rolls back after a confirmation: a rollout back, the first one in the history", async () => {
    let asked = "";
    page.once("dialog", (d) => {
      asked = d.message();
      void d.accept();
    });
    await page.click("#rollout-rollback");
    await page.locator("#rollout-notice .banner.ok", { hasText: "a rollout of it started" }).waitFor();
    assert.match(asked, /^Roll pool “default” back to its previous template\?/);
    await page.locator(".rollout-head", { hasText: "(rolled back)" }).waitFor({ timeout: 10_000 });
    await page.locator("#rollout-history tr", { hasText: "template changed" }).waitFor();
    await waitText("#rollout-status", "Complete", 60_000);
  });

  it("made no request outside our server and broke no CSP rule", () => {
    assert.deepEqual(external, []);
    assert.deepEqual(
      consoleErrors.filter((e) => /Content Security Policy|Refused to/i.test(e)),
      [],
    );
  });
});
