/**
 * The local provider's upgrade in place (issue 11): the process is restarted with the new command,
 * keeping its instance id, gateway token, port and own variables (read back from /proc for an
 * instance adopted from an earlier manager), under the template's new variables; the state file
 * records the new pid and command; the old process is gone and its exit is no crash.
 */
import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomId } from "../clock.ts";
import { LocalProvider, type LocalStateFile } from "./local.ts";
import { findProcesses, isRunning } from "./process-table.ts";
import { waitFor } from "../../test/support/process.ts";

const NODE = process.execPath;
/** Answers with its pid, its argv (the command's version) and the variables the test looks at. */
const SERVER_JS =
  "const h=require('node:http');h.createServer((q,s)=>{const e=process.env;" +
  "s.setHeader('content-type','application/json');" +
  "s.end(JSON.stringify({pid:process.pid,argv:process.argv.slice(1),env:{PORT:e.PORT,INSTANCE_ID:e.INSTANCE_ID,GATEWAY_TOKEN:e.GATEWAY_TOKEN," +
  "AGENT_POOL_OWNER_ID:e.AGENT_POOL_OWNER_ID,OWN_KEY:e.OWN_KEY,TEMPLATE_VAR:e.TEMPLATE_VAR}}))" +
  "}).listen(Number(process.env.PORT),'127.0.0.1')";
const cmd = (version: string) => [NODE, "-e", SERVER_JS, version];

const dirs: string[] = [];
const tags: string[] = [];
const providers: LocalProvider[] = [];
const spawned: ChildProcess[] = [];

afterEach(async () => {
  await Promise.allSettled(providers.splice(0).map((p) => p.close()));
});
after(() => {
  for (const child of spawned) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const tag of tags) for (const p of findProcesses({ AGENT_POOL_OWNER: tag })) process.kill(p.pid, "SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-upgrade-"));
  dirs.push(dir);
  return dir;
}

function newTag(): string {
  const tag = `test-${randomId(10)}`;
  tags.push(tag);
  return tag;
}

async function open(stateDir: string, ownerTag: string): Promise<LocalProvider> {
  const p = await LocalProvider.open({ stateDir, ownerTag, command: cmd("v1"), startTimeoutMs: 15_000 });
  providers.push(p);
  return p;
}

const until = <T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000) =>
  waitFor(what, async () => (await fn()) || null, timeoutMs, 25) as Promise<NonNullable<T>>;

async function entry(p: LocalProvider, ref: string) {
  return (await p.list()).instances.find((i) => i.ref === ref);
}

async function ask(url: string): Promise<{ pid: number; argv: string[]; env: Record<string, string | undefined> }> {
  return (await (await fetch(url)).json()) as never;
}

function stateOf(p: LocalProvider, instanceId: string) {
  const state = JSON.parse(readFileSync(join(p.stateDir, "instances.json"), "utf8")) as LocalStateFile;
  return state.instances.find((e) => e.instanceId === instanceId);
}

test("an upgrade restarts the process with the new command: same id, token and port; its own variables kept, the template's laid over", async () => {
  const tag = newTag();
  const p = await open(join(tempDir(), "local"), tag);
  const made = await p.create({
    instanceId: "i-up1",
    poolId: "p",
    name: "n",
    gatewayToken: "tok-1",
    ownerId: "own01",
    env: { OWN_KEY: "key-of-i-up1", TEMPLATE_VAR: "old" },
  });
  await until("SUCCESS", async () => (await entry(p, made.ref))?.deployStatus === "SUCCESS");
  const before = await ask(made.url!);
  assert.deepEqual(before.argv, ["v1"]);

  await p.upgrade(made.ref, { instanceId: "i-up1", poolId: "p", gatewayToken: "tok-1", ownerId: "own01", env: { TEMPLATE_VAR: "new" }, command: cmd("v2") });
  const now = await entry(p, made.ref);
  assert.equal(now?.url, made.url, "same address (same port)");
  assert.equal(now?.image, cmd("v2").join(" "), "the listing reports the new command");
  await until("SUCCESS again", async () => (await entry(p, made.ref))?.deployStatus === "SUCCESS");
  const after = await ask(made.url!);
  assert.deepEqual(after.argv, ["v2"]);
  assert.notEqual(after.pid, before.pid);
  assert.equal(isRunning(before.pid), false, "the old process is gone");
  assert.equal(after.env.INSTANCE_ID, "i-up1");
  assert.equal(after.env.GATEWAY_TOKEN, "tok-1");
  assert.equal(after.env.PORT, before.env.PORT);
  assert.equal(after.env.AGENT_POOL_OWNER_ID, "own01");
  assert.equal(after.env.OWN_KEY, "key-of-i-up1", "the instance's own variable survives");
  assert.equal(after.env.TEMPLATE_VAR, "new", "the template's variable is the new one");
  const rec = stateOf(p, "i-up1");
  assert.equal(rec?.pid, after.pid, "the state file records the new pid");
  assert.deepEqual(rec?.command, cmd("v2"));
  assert.equal(rec?.port, Number(before.env.PORT));
  assert.deepEqual(
    findProcesses({ AGENT_POOL_OWNER: tag }).map((x) => x.pid),
    [after.pid],
    "one process for the instance",
  );
  // The restart was no crash: the instance stays up.
  assert.equal((await entry(p, made.ref))?.deployStatus, "SUCCESS");
});

test("an upgrade to a command that exits at boot leaves the instance CRASHED (the observer's rules apply)", async () => {
  const p = await open(join(tempDir(), "local"), newTag());
  const made = await p.create({ instanceId: "i-up2", poolId: "p", name: "n", gatewayToken: "t", ownerId: "own01", env: {} });
  await until("SUCCESS", async () => (await entry(p, made.ref))?.deployStatus === "SUCCESS");
  await p.upgrade(made.ref, { instanceId: "i-up2", poolId: "p", gatewayToken: "t", ownerId: "own01", env: {}, command: [NODE, "-e", "process.exit(3)"] });
  await until("CRASHED", async () => (await entry(p, made.ref))?.deployStatus === "CRASHED");
});

test("an upgrade of an unknown instance, or one of another owner, is refused; a delete during an upgrade waits for it and stops the new process", async () => {
  const tag = newTag();
  const p = await open(join(tempDir(), "local"), tag);
  await assert.rejects(p.upgrade("local:i-nope", { instanceId: "i-nope", poolId: "p", gatewayToken: "t", ownerId: "own01", env: {} }), /no instance/);
  const made = await p.create({ instanceId: "i-up3", poolId: "p", name: "n", gatewayToken: "t", ownerId: "own01", env: {} });
  await assert.rejects(p.upgrade(made.ref, { instanceId: "i-up3", poolId: "p", gatewayToken: "t", ownerId: "other", env: {} }), /belongs to owner own01/);
  const upgrading = p.upgrade(made.ref, { instanceId: "i-up3", poolId: "p", gatewayToken: "t", ownerId: "own01", env: {}, command: cmd("v2") });
  const deleting = p.delete(made.ref);
  await upgrading;
  await deleting;
  assert.equal(await entry(p, made.ref), undefined);
  await until("no process left", () => findProcesses({ AGENT_POOL_OWNER: tag }).length === 0);
});

test("an instance adopted from a killed manager keeps its own variables through an upgrade (read back from its process)", async () => {
  const tag = newTag();
  const dir = tempDir();
  const stateDir = join(dir, "local");
  const script = join(dir, "manager.mjs");
  writeFileSync(
    script,
    `const [localUrl, stateDir, ownerTag, cmd] = process.argv.slice(2);
const { LocalProvider } = await import(localUrl);
const p = await LocalProvider.open({ stateDir, ownerTag, command: JSON.parse(cmd), startTimeoutMs: 15000 });
const made = await p.create({ instanceId: "i-adopted", poolId: "p", name: "n", gatewayToken: "tok-a", ownerId: "own01", env: { OWN_KEY: "key-of-i-adopted" } });
for (;;) {
  const { instances } = await p.list();
  if (instances.every((i) => i.deployStatus === "SUCCESS")) break;
  await new Promise((r) => setTimeout(r, 25));
}
process.stdout.write(JSON.stringify(made) + "\\n");
setInterval(() => {}, 1 << 30);
`,
  );
  const manager = spawn(
    NODE,
    ["--import", import.meta.resolve("tsx"), script, new URL("./local.ts", import.meta.url).href, stateDir, tag, JSON.stringify(cmd("v1"))],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  spawned.push(manager);
  let out = "";
  manager.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  await until("manager output", () => out.includes("\n"), 30_000);
  const made = JSON.parse(out) as { ref: string; url: string };
  manager.kill("SIGKILL");
  await until("manager gone", () => manager.exitCode !== null || manager.signalCode !== null);

  const p = await open(stateDir, tag);
  await until("adopted", async () => (await entry(p, made.ref))?.deployStatus === "SUCCESS");
  await p.upgrade(made.ref, { instanceId: "i-adopted", poolId: "p", gatewayToken: "tok-a", ownerId: "own01", env: { TEMPLATE_VAR: "t2" }, command: cmd("v2") });
  await until("SUCCESS after the upgrade", async () => (await entry(p, made.ref))?.deployStatus === "SUCCESS");
  const after = await ask(made.url);
  assert.deepEqual(after.argv, ["v2"]);
  assert.equal(after.env.OWN_KEY, "key-of-i-adopted");
  assert.equal(after.env.TEMPLATE_VAR, "t2");
  assert.equal(after.env.GATEWAY_TOKEN, "tok-a");
  assert.equal(after.env.AGENT_POOL_OWNER_ID, "own01");
});
