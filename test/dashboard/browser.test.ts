/**
 * The dashboard in a real browser (headless Chromium driven by playwright-core: Debian's when it is
 * installed, else the one the @sparticuz/chromium package ships, see test/support/browser.ts) against the real
 * server started as a process on its embedded defaults: sign in, watch the pool fill, see a change
 * arrive without a reload, launch an agent and chat with it at its invite link, kill it, crash one
 * and dismiss it, create a pool and switch to it and back, release an agent. The page must make no request outside our server and violate no CSP rule.
 * Screenshots at 1280 and 375 px go to .test-artifacts/.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { launchChromium } from "../support/browser.ts";
import { REPO_ROOT, cleanUpPool, runtimeProcesses, startPoolProcess, waitFor, type PoolProcess } from "../support/process.ts";

const ARTIFACTS = join(REPO_ROOT, ".test-artifacts");

describe("dashboard in Chromium", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-browser-"));
  let pool: PoolProcess | null = null;
  let browser: Browser | null = null;
  let context: BrowserContext;
  let page: Page;
  const external: string[] = [];
  const consoleErrors: string[] = [];

  before(async () => {
    // Never skip and never download a browser: a missing one fails the test with its reason.
    mkdirSync(ARTIFACTS, { recursive: true });
    let launched: Awaited<ReturnType<typeof launchChromium>>;
    [pool, launched] = await Promise.all([
      startPoolProcess({ DATA_DIR: dataDir, TICK_INTERVAL_MS: "1000", LOCAL_START_TIMEOUT_MS: "20000" }),
      launchChromium(),
    ]);
    browser = launched.browser;
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
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
  });

  after(async () => {
    await browser?.close();
    await cleanUpPool(pool, dataDir);
  });

  const text = (sel: string) => page.locator(sel).first().textContent();
  const waitText = (sel: string, want: string, timeout = 20_000) =>
    page.waitForFunction(([s, w]) => document.querySelector(s!)?.textContent?.trim() === w, [sel, want] as const, { timeout });

  it("signs in with the keyboard and shows 3 idle instances, updated live", async () => {
    await page.goto(pool!.url);
    assert.match(page.url(), /\/login$/);
    const apiKey = readFileSync(join(dataDir, "api-key"), "utf8").trim();
    // The password field has focus on load (autofocus); Enter submits. Wait for that focus before typing:
    // on a loaded CI machine the keys once went out before it landed, into nothing (CI run of stop 14).
    await page.waitForFunction(() => document.activeElement?.id === "password", null, { timeout: 10_000 });
    await page.keyboard.type(apiKey);
    await Promise.all([page.waitForURL(`${pool!.url}/`), page.keyboard.press("Enter")]);
    assert.equal(await page.title(), "agent-pool · default (local)");
    await page.locator('#live[data-state="on"]').waitFor({ timeout: 10_000 });
    await waitText("#count-idle", "3", 30_000);
    assert.equal(await text("#count-total"), "3");
    assert.equal(await page.locator("#launch-submit").isDisabled(), false);
  });

  it("updates the pool bar without a reload when another tab adds an instance", async () => {
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const other = await context.newPage();
    await other.goto(pool!.url);
    await other.fill("#pool-n", "1");
    await other.click("#pool-add");
    await other.locator("#pool-notice .banner.ok").waitFor();
    await other.close();
    await waitText("#count-total", "4", 10_000);
    assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, "the page was not reloaded");
  });

  let inviteUrl = "";
  let firstId = "";
  it("launches an agent and shows its QR code, invite link and instance id", async () => {
    await page.fill("#agent-name", "Captain Hook");
    await page.fill("#instructions", "You are a pirate who loves gold.");
    await page.click("#launch-submit");
    await page.locator("#launch-result .qr svg").waitFor({ timeout: 15_000 });
    inviteUrl = await page.locator("#launch-result input.invite-url").inputValue();
    assert.match(inviteUrl, /^http:\/\/127\.0\.0\.1:\d+\/i\//);
    firstId = (await text("#launch-instance"))!.trim();
    assert.match(firstId, /^i-/);
    // The agent appears in the live list, its name as text.
    const card = page.locator(`#agent-${firstId}`);
    await card.waitFor();
    assert.equal((await card.locator(".agent-name").textContent())?.trim(), "Captain Hook");
  });

  it("exchanges a message with the agent at its invite link", async () => {
    const chat = await context.newPage();
    await chat.goto(inviteUrl);
    await chat.fill("#text", "Ahoy! Where is the treasure?");
    await chat.keyboard.press("Enter");
    const reply = chat.locator(".msg.agent p", { hasText: "As a pirate who loves gold" });
    await reply.waitFor({ timeout: 10_000 });
    assert.match((await reply.textContent())!, /you said “Ahoy! Where is the treasure\?”/);
    await chat.close();
  });

  it("renders at 1280 and 375 px (screenshots)", async () => {
    await page.waitForFunction(() => document.querySelectorAll("#instances .irow-wrap").length >= 4);
    // Expand the agent's instance: its event history loads on demand.
    await page.click(`#inst-sum-${firstId}`);
    await page.locator(`#inst-${firstId} .events li`, { hasText: "created a conversation" }).waitFor();
    // Top of the page, nothing focused: the sticky header sits where it belongs in a full-page shot.
    await page.evaluate(() => {
      (document.activeElement as HTMLElement | null)?.blur();
      window.scrollTo(0, 0);
    });
    await page.screenshot({ path: join(ARTIFACTS, "dashboard-1280.png"), fullPage: true });
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") copyFileSync(join(ARTIFACTS, "dashboard-1280.png"), join(REPO_ROOT, "docs", "dashboard.png"));
    await page.setViewportSize({ width: 375, height: 812 });
    const overflow = await page.evaluate(() => {
      window.scrollTo(0, 0);
      return document.documentElement.scrollWidth;
    });
    assert.ok(overflow <= 375, `no horizontal scrolling at 375 px (page is ${overflow} px wide)`);
    await page.screenshot({ path: join(ARTIFACTS, "dashboard-375.png"), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("shows an agent's QR code on demand, by keyboard", async () => {
    await page.focus(`#qr-sum-${firstId}`);
    await page.keyboard.press("Enter");
    await page.locator(`#qr-${firstId} .qr svg`).waitFor();
  });

  it("kills the agent after a confirmation, and it leaves the live list", async () => {
    let asked = "";
    page.once("dialog", (d) => {
      asked = d.message();
      void d.accept();
    });
    await page.click(`#kill-${firstId}`);
    await page.locator(`#agent-${firstId}`).waitFor({ state: "detached", timeout: 10_000 });
    assert.match(asked, /^Kill agent “Captain Hook”\?/);
    await page.locator("#agents-notice .banner.ok").waitFor();
  });

  it("shows a crashed agent first, in red, and dismisses it (a hostile name renders as text)", async () => {
    const hostile = `Doomed <img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`;
    await page.fill("#agent-name", hostile);
    await page.fill("#instructions", "");
    await page.click("#launch-submit");
    // The previous launch's result is still shown until this one's arrives.
    await page.locator("#launch-result .banner.ok", { hasText: "Doomed" }).waitFor({ timeout: 15_000 });
    const id = (await text("#launch-instance"))!.trim();
    // A newer agent that stays healthy: claimed agents are listed newest first, so the crashed one
    // is first only because crashed agents come first.
    await page.fill("#agent-name", "Survivor");
    await page.click("#launch-submit");
    await page.locator("#launch-result .banner.ok", { hasText: "Survivor" }).waitFor({ timeout: 15_000 });
    const survivor = (await text("#launch-instance"))!.trim();
    await page.locator(`#agent-${survivor}`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator("#agents .agent").first().getAttribute("id"), `agent-${survivor}`, "newest claimed agent first before the crash");
    const proc = await waitFor("the agent's runtime process", () => runtimeProcesses(dataDir).find((p) => p.env.INSTANCE_ID === id));
    process.kill(-proc.pgid, "SIGKILL");
    // The reconciler's health checks notice; the page hears about it from the server, not a reload.
    const card = page.locator(`#agent-${id}.s-crashed`);
    await card.waitFor({ timeout: 20_000 });
    assert.equal(await page.locator("#agents .agent").first().getAttribute("id"), `agent-${id}`, "crashed agents come first");
    assert.equal(await text("#count-crashed"), "1");
    assert.equal((await card.locator(".agent-name").textContent())?.trim(), hostile);
    assert.equal(await page.locator("#agents img, #agents script, #launch-result img, #launch-result script").count(), 0);
    assert.notEqual(await page.title(), "pwned");
    page.once("dialog", (d) => void d.accept());
    await page.click(`#dismiss-${id}`);
    await page.locator(`#agent-${id}`).waitFor({ state: "detached", timeout: 10_000 });
    await waitText("#count-crashed", "0", 10_000);
  });

  it("creates a pool on the pools page, switches to it and back (each page live on its own pool)", async () => {
    await page.click("#pools-manage");
    await page.waitForURL(`${pool!.url}/dashboard/pools`);
    assert.equal(await page.title(), "agent-pool · pools (local)");
    await page.fill("#pf-new-id", "blue");
    await page.fill("#pf-new-minIdle", "1");
    await page.fill("#pf-new-maxTotal", "2");
    await page.fill("#pf-new-env", "PLAN=pro\nSERVICE_TOKEN=hunter2");
    await page.click("#pf-new-submit");
    await page.locator("#pools-notice .banner.ok", { hasText: "Created pool blue" }).waitFor();
    const card = page.locator("#pool-card-blue");
    await card.waitFor();
    assert.match((await card.textContent())!, /SERVICE_TOKEN=••••••/);
    assert.doesNotMatch(await page.content(), /hunter2/);
    // The switcher in the header (refreshed with the list): to the new pool, whose own instance fills it.
    await page.locator("#pool-link-blue").waitFor();
    await Promise.all([page.waitForURL(`${pool!.url}/?pool=blue`), page.click("#pool-link-blue")]);
    assert.equal(await page.title(), "agent-pool · blue (local)");
    await page.locator('#live[data-state="on"]').waitFor({ timeout: 10_000 });
    await waitText("#count-idle", "1", 30_000);
    assert.equal(await text("#count-total"), "1");
    assert.equal(await page.locator("#pool-link-blue[aria-current=page]").count(), 1);
    await Promise.all([page.waitForURL(`${pool!.url}/?pool=default`), page.click("#pool-link-default")]);
    assert.equal(await page.title(), "agent-pool · default (local)");
    await page.locator('#live[data-state="on"]').waitFor({ timeout: 10_000 });
  });

  it("releases an agent after a confirmation: its instance is reset and back in the pool", async () => {
    await page.fill("#agent-name", "Short Stay");
    await page.fill("#instructions", "");
    await page.click("#launch-submit");
    await page.locator("#launch-result .banner.ok", { hasText: "Short Stay" }).waitFor({ timeout: 15_000 });
    const id = (await text("#launch-instance"))!.trim();
    await page.locator(`#agent-${id}`).waitFor();
    let asked = "";
    page.once("dialog", (d) => {
      asked = d.message();
      void d.accept();
    });
    await page.click(`#release-${id}`);
    await page.locator("#agents-notice .banner.ok", { hasText: "back in the pool" }).waitFor({ timeout: 15_000 });
    assert.match(asked, /^Release agent “Short Stay”\?/);
    await page.locator(`#agent-${id}`).waitFor({ state: "detached", timeout: 10_000 });
    // The instance itself stays, idle again.
    await page.locator(`#inst-${id} .badge.s-idle`).waitFor({ timeout: 10_000 });
  });

  it("made no request outside our server and broke no CSP rule", () => {
    assert.deepEqual(external, []);
    assert.deepEqual(
      consoleErrors.filter((e) => /Content Security Policy|Refused to/i.test(e)),
      [],
    );
  });
});
