import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomId } from "../clock.ts";
import { readLockHolder } from "../data-dir-lock.ts";
import type { PoolError } from "../errors.ts";
import type { CreateInstanceSpec } from "./provider.ts";
import { LocalProvider, type LocalProviderOptions, type LocalStateFile } from "./local.ts";
import { findProcesses, isRunning, readEnviron, readStat } from "./process-table.ts";
import { freePort, waitFor } from "../../test/support/process.ts";

const NODE = process.execPath;
/** Stand-in runtime: answers every request with its pid, the pids of the processes it started
 * (`globalThis.kids`) and the env vars the test looks at. */
const SERVER_JS =
  "const h=require('node:http');h.createServer((q,s)=>{const e=process.env;" +
  "s.setHeader('content-type','application/json');" +
  "s.end(JSON.stringify({pid:process.pid,kids:globalThis.kids||[],env:{PORT:e.PORT,INSTANCE_ID:e.INSTANCE_ID,GATEWAY_TOKEN:e.GATEWAY_TOKEN," +
  "AGENT_POOL_OWNER:e.AGENT_POOL_OWNER,AGENT_POOL_OWNER_ID:e.AGENT_POOL_OWNER_ID,POOL_SETTING:e.POOL_SETTING,SPEC_VAR:e.SPEC_VAR,MANAGER_SECRET:e.MANAGER_SECRET}}))" +
  "}).listen(Number(process.env.PORT),'127.0.0.1')";
const SERVER_CMD = [NODE, "-e", SERVER_JS];
/** A shell that forks a grandchild (sleep) and then becomes the server: the group has two processes. */
const FORKING_CMD = ["sh", "-c", 'sleep 1000 & exec "$0" -e "$1"', NODE, SERVER_JS];
/** A server that ignores SIGTERM, so only the SIGKILL of the group stops it. */
const STUBBORN_CMD = [NODE, "-e", `process.on('SIGTERM',()=>{});${SERVER_JS}`];
/**
 * A runtime wrapper like the earlier system's pool-server: it starts its "runtime" detached (own
 * session and group, setsid) and serves. Two such grandchildren: one keeps the env (marker), one runs
 * with a cleared env (found only through the ppid tree). Both ignore SIGTERM, the way a busy runtime
 * may, so only a SIGKILL aimed at them stops them.
 */
const DETACHING_JS =
  "const{spawn}=require('node:child_process');" +
  "const keep=\"process.on('SIGTERM',()=>{});setInterval(()=>{},1<<30)\";" +
  "const a=spawn(process.execPath,['-e',keep],{detached:true,stdio:'ignore'});" +
  "const b=spawn(process.execPath,['-e',keep],{detached:true,stdio:'ignore',env:{PATH:process.env.PATH}});" +
  "a.unref();b.unref();globalThis.kids=[a.pid,b.pid];" +
  SERVER_JS;
const DETACHING_CMD = [NODE, "-e", DETACHING_JS];

const dirs: string[] = [];
const tags: string[] = [];
const providers: LocalProvider[] = [];
const spawned: ChildProcess[] = [];
/** Processes a test found and must not leave behind if it fails. */
const loosePids: number[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-local-"));
  dirs.push(dir);
  return dir;
}

function newTag(): string {
  const tag = `test-${randomId(10)}`;
  tags.push(tag);
  return tag;
}

async function openProvider(opts: Partial<LocalProviderOptions> = {}): Promise<LocalProvider> {
  const provider = await LocalProvider.open({
    stateDir: opts.stateDir ?? join(tempDir(), "local"),
    ownerTag: opts.ownerTag ?? newTag(),
    command: SERVER_CMD,
    startTimeoutMs: 15_000,
    ...opts,
  });
  providers.push(provider);
  return provider;
}

function spec(extra: Partial<CreateInstanceSpec> = {}): CreateInstanceSpec {
  const instanceId = `i-${randomId(12)}`;
  return { instanceId, poolId: "p-test", name: `pool-test-${instanceId}`, gatewayToken: `tok-${randomId(8)}`, ownerId: "own01", env: {}, ...extra };
}

/** The shared poller at 25 ms. */
const until = <T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000) =>
  waitFor(what, async () => (await fn()) || null, timeoutMs, 25) as Promise<NonNullable<T>>;

async function statusOf(provider: LocalProvider, ref: string): Promise<string | null | undefined> {
  const { instances } = await provider.list();
  return instances.find((i) => i.ref === ref)?.deployStatus;
}

function pidOf(provider: LocalProvider, instanceId: string): number {
  const state = JSON.parse(readFileSync(join(provider.stateDir, "instances.json"), "utf8")) as LocalStateFile;
  const rec = state.instances.find((e) => e.instanceId === instanceId);
  assert.ok(rec, `state has ${instanceId}`);
  return rec.pid;
}

function ownedProcesses(tag: string): number[] {
  return findProcesses({ AGENT_POOL_OWNER: tag }).map((p) => p.pid);
}

/**
 * Runs a LocalProvider in a separate manager process that creates two instances, waits until both are
 * SUCCESS, prints them as one JSON line, then either hangs (to be SIGKILLed) or close()s and returns.
 */
function startManager(dir: string, stateDir: string, tag: string, mode: "hang" | "close", command = SERVER_CMD): ChildProcess {
  const script = join(dir, "manager.mjs");
  writeFileSync(
    script,
    `const [localUrl, stateDir, ownerTag, cmd, mode] = process.argv.slice(2);
const { LocalProvider } = await import(localUrl);
const p = await LocalProvider.open({ stateDir, ownerTag, command: JSON.parse(cmd), startTimeoutMs: 15000 });
const out = [];
for (const id of ["i-adopt-a", "i-adopt-b"]) {
  out.push(await p.create({ instanceId: id, poolId: "p", name: "n-" + id, gatewayToken: "t", ownerId: "own42", env: {} }));
}
for (;;) {
  const { instances } = await p.list();
  if (instances.every((i) => i.deployStatus === "SUCCESS")) break;
  await new Promise((r) => setTimeout(r, 25));
}
process.stdout.write(JSON.stringify(out) + "\\n");
if (mode === "hang") setInterval(() => {}, 1 << 30);
else await p.close(); // and nothing else: the process must then exit by itself
`,
  );
  const localUrl = new URL("./local.ts", import.meta.url).href;
  const manager = spawn(NODE, ["--import", import.meta.resolve("tsx"), script, localUrl, stateDir, tag, JSON.stringify(command), mode], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  spawned.push(manager);
  return manager;
}

afterEach(async () => {
  await Promise.allSettled(providers.splice(0).map((p) => p.close()));
});

after(() => {
  for (const child of spawned) {
    if (child.pid && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        try {
          process.kill(child.pid, "SIGKILL");
        } catch {
          /* gone */
        }
      }
    }
  }
  for (const pid of loosePids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  for (const tag of tags) {
    for (const pid of ownedProcesses(tag)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

test("create: DEPLOYING, then SUCCESS; the server answers at the url with the env it was given", async () => {
  process.env.MANAGER_SECRET = "must-not-leak";
  try {
    const provider = await openProvider({ env: { POOL_SETTING: "from-pool" } });
    const s = spec({ env: { SPEC_VAR: "from-spec" } });
    const created = await provider.create(s);
    assert.equal(created.deployStatus, "DEPLOYING");
    assert.equal(created.ref, `local:${s.instanceId}`);
    assert.equal(created.instanceId, s.instanceId);
    assert.equal(created.name, s.name);
    assert.match(created.url ?? "", /^http:\/\/127\.0\.0\.1:\d+$/);

    await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
    const res = await fetch(`${created.url}/`);
    const body = (await res.json()) as { pid: number; env: Record<string, string | undefined> };
    assert.equal(body.env.PORT, new URL(created.url!).port);
    assert.equal(body.env.INSTANCE_ID, s.instanceId);
    assert.equal(body.env.GATEWAY_TOKEN, s.gatewayToken);
    assert.equal(body.env.AGENT_POOL_OWNER, provider.ownerTag);
    assert.equal(body.env.AGENT_POOL_OWNER_ID, s.ownerId, "the process carries the owner id");
    assert.equal(created.owner, s.ownerId);
    assert.equal((await provider.list()).instances[0]?.owner, s.ownerId);
    assert.equal(body.env.POOL_SETTING, "from-pool");
    assert.equal(body.env.SPEC_VAR, "from-spec");
    assert.equal(body.env.MANAGER_SECRET, undefined, "the manager's own env is not passed through");

    // Own process group (pgid == pid), recorded in the state file.
    assert.equal(body.pid, pidOf(provider, s.instanceId));
    assert.equal(readStat(body.pid)?.pgid, body.pid);
    const state = JSON.parse(readFileSync(join(provider.stateDir, "instances.json"), "utf8")) as LocalStateFile;
    assert.deepEqual(
      { ...state.instances[0], startedAt: undefined },
      {
        instanceId: s.instanceId,
        name: s.name,
        pid: body.pid,
        port: Number(new URL(created.url!).port),
        startedAt: undefined,
        command: SERVER_CMD,
        ownerId: s.ownerId,
        ownerTag: provider.ownerTag,
      },
    );
    assert.ok(existsSync(join(provider.stateDir, "logs", `${s.instanceId}.log`)));
  } finally {
    delete process.env.MANAGER_SECRET;
  }
});

test("a child killed from outside is listed CRASHED until deleted", async () => {
  const provider = await openProvider();
  const s = spec();
  const created = await provider.create(s);
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  process.kill(pidOf(provider, s.instanceId), "SIGKILL");
  await until("CRASHED", async () => (await statusOf(provider, created.ref)) === "CRASHED");
  const listing = await provider.list();
  assert.equal(listing.complete, true);
  assert.equal(listing.instances.length, 1);
  await provider.delete(created.ref);
  assert.equal((await provider.list()).instances.length, 0);
});

test("onChange hints when an instance starts answering and when it exits, and not after close()", async () => {
  let hints = 0;
  const provider = await openProvider({ onChange: () => void hints++ });
  const s = spec();
  const created = await provider.create(s);
  assert.equal(hints, 0, "no hint before the instance answers");
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  assert.equal(hints, 1, "one hint when it answers");
  process.kill(pidOf(provider, s.instanceId), "SIGKILL");
  await until("CRASHED", async () => (await statusOf(provider, created.ref)) === "CRASHED");
  assert.equal(hints, 2, "one hint when it exits");
  await provider.create(spec());
  await provider.close();
  assert.equal(hints, 2, "instances stopped by close() send no hint");
});

test("delete kills the whole process group, grandchild included; unknown refs succeed", async () => {
  const provider = await openProvider({ command: FORKING_CMD });
  const s = spec();
  const created = await provider.create(s);
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  const pid = pidOf(provider, s.instanceId);
  // The shell's `sleep` carries the same env and sits in the same group.
  const members = await until("two processes", () => {
    const found = findProcesses({ INSTANCE_ID: s.instanceId });
    return found.length === 2 ? found : null;
  });
  assert.ok(members.every((m) => m.pgid === pid));

  await provider.delete(created.ref);
  for (const m of members) assert.equal(isRunning(m.pid), false, `pid ${m.pid} is gone`);
  assert.deepEqual(findProcesses({ INSTANCE_ID: s.instanceId }), []);
  assert.equal((await provider.list()).instances.length, 0);
  const state = JSON.parse(readFileSync(join(provider.stateDir, "instances.json"), "utf8")) as LocalStateFile;
  assert.deepEqual(state.instances, []);

  await provider.delete(created.ref); // again
  await provider.delete("local:i-never-existed");
  await provider.delete("railway:something-else");
});

test("delete SIGKILLs a group that ignores SIGTERM", async () => {
  const provider = await openProvider({ command: STUBBORN_CMD, stopTimeoutMs: 300 });
  const s = spec();
  const created = await provider.create(s);
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  const pid = pidOf(provider, s.instanceId);
  await provider.delete(created.ref);
  assert.equal(isRunning(pid), false);
});

test("rename updates the name in the listing and the state file", async () => {
  const provider = await openProvider();
  const s = spec();
  const created = await provider.create(s);
  await provider.rename(created.ref, "renamed");
  assert.equal((await provider.list()).instances[0]?.name, "renamed");
  const state = JSON.parse(readFileSync(join(provider.stateDir, "instances.json"), "utf8")) as LocalStateFile;
  assert.equal(state.instances[0]?.name, "renamed");
  await assert.rejects(provider.rename("local:i-nope", "x"));
});

test("a command that cannot start makes create throw and leaves nothing behind", async () => {
  const provider = await openProvider({ command: ["/nonexistent/agent-runtime"] });
  await assert.rejects(provider.create(spec()), /could not start/);
  assert.deepEqual((await provider.list()).instances, []);
});

test("close() stops every instance and clears the state file", async () => {
  const tag = newTag();
  const provider = await openProvider({ ownerTag: tag, command: FORKING_CMD });
  const a = await provider.create(spec());
  const b = await provider.create(spec());
  for (const ref of [a.ref, b.ref]) await until("SUCCESS", async () => (await statusOf(provider, ref)) === "SUCCESS");
  await until("4 processes", () => ownedProcesses(tag).length === 4);

  await provider.close();
  assert.deepEqual(ownedProcesses(tag), []);
  const state = JSON.parse(readFileSync(join(provider.stateDir, "instances.json"), "utf8")) as LocalStateFile;
  assert.deepEqual(state.instances, []);
  await provider.close(); // idempotent
  await assert.rejects(provider.create(spec()), /closing/);
});

test("a new manager adopts the instances of a killed one, kills strays, reports dead entries CRASHED", async () => {
  const tag = newTag();
  const dir = tempDir();
  const stateDir = join(dir, "local");

  // The first manager runs in its own process so it can be SIGKILLed like a crashed pool manager.
  const manager = startManager(dir, stateDir, tag, "hang");
  let out = "";
  manager.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  await until("manager output", () => out.includes("\n"), 30_000);
  const before = JSON.parse(out) as { ref: string; url: string; owner: string | null }[];
  assert.deepEqual(
    before.map((b) => b.owner),
    ["own42", "own42"],
  );
  const pidsBefore = ownedProcesses(tag).sort();
  assert.equal(pidsBefore.length, 2);

  // While that manager lives, no other may run from its state dir (whatever database they use).
  await assert.rejects(openProvider({ stateDir, ownerTag: tag }), (err: unknown) => {
    assert.equal((err as PoolError).code, "DATA_DIR_LOCKED");
    assert.match((err as Error).message, new RegExp(`in use by process ${manager.pid}\\b`));
    return true;
  });

  manager.kill("SIGKILL"); // its lock file stays, naming a dead process: taken over below
  await until("manager gone", () => manager.exitCode !== null || manager.signalCode !== null);
  assert.deepEqual(ownedProcesses(tag).sort(), pidsBefore, "instances survive the manager");

  // A stray: carries our tag but was never recorded (spawned just before the crash).
  const stray = spawn(NODE, ["-e", "setInterval(()=>{},1<<30)"], {
    detached: true,
    stdio: "ignore",
    env: { PATH: process.env.PATH ?? "", AGENT_POOL_OWNER: tag, INSTANCE_ID: "i-stray" },
  });
  spawned.push(stray);
  await until("stray running", () => ownedProcesses(tag).includes(stray.pid!));
  // A recycled pid: an unrelated live process now holds a recorded pid. And a pid that is just dead.
  const unrelated = spawn(NODE, ["-e", "setInterval(()=>{},1<<30)"], { detached: true, stdio: "ignore" });
  spawned.push(unrelated);
  const dead = spawn(NODE, ["-e", "0"], { stdio: "ignore" });
  await new Promise((r) => dead.once("exit", r));
  const state = JSON.parse(readFileSync(join(stateDir, "instances.json"), "utf8")) as LocalStateFile;
  const extra = (id: string, pid: number) => ({ instanceId: id, name: id, pid, port: 1, startedAt: new Date().toISOString(), command: ["x"] });
  state.instances.push(extra("i-recycled", unrelated.pid!), extra("i-dead", dead.pid!));
  writeFileSync(join(stateDir, "instances.json"), JSON.stringify(state));

  const provider = await openProvider({ stateDir, ownerTag: tag });
  const listing = await provider.list();
  const byRef = new Map(listing.instances.map((i) => [i.ref, i]));
  for (const b of before) {
    assert.equal(byRef.get(b.ref)?.deployStatus, "SUCCESS", `${b.ref} adopted`);
    assert.equal(byRef.get(b.ref)?.url, b.url);
    assert.equal(byRef.get(b.ref)?.owner, "own42", "an adopted instance reports the owner id its process carries");
  }
  assert.equal(readLockHolder(join(stateDir, ".lock"))?.pid, process.pid, "the dead manager's lock was taken over");
  assert.equal(byRef.get("local:i-recycled")?.deployStatus, "CRASHED");
  assert.equal(byRef.get("local:i-dead")?.deployStatus, "CRASHED");
  assert.equal(listing.instances.length, 4);
  assert.equal(isRunning(stray.pid!), false, "stray killed");
  assert.deepEqual(ownedProcesses(tag).sort(), pidsBefore, "no duplicate processes");

  // Deleting the recycled entry must not touch the unrelated process that holds its pid.
  await provider.delete("local:i-recycled");
  await provider.delete("local:i-dead");
  assert.equal(isRunning(unrelated.pid!), true);

  // Adopted instances: exit detected by polling, delete kills them.
  process.kill(pidsBefore[0]!, "SIGKILL");
  const crashedRef = await until("adopted CRASHED", async () => (await provider.list()).instances.find((i) => i.deployStatus === "CRASHED")?.ref);
  const alive = before.find((b) => b.ref !== crashedRef)!;
  await provider.delete(alive.ref);
  await provider.delete(crashedRef);
  assert.deepEqual(ownedProcesses(tag), []);
  assert.deepEqual((await provider.list()).instances, []);
});

test("after close() the manager's event loop is free: the process exits by itself", async () => {
  const tag = newTag();
  const dir = tempDir();
  const manager = startManager(dir, join(dir, "local"), tag, "close", FORKING_CMD);
  let out = "";
  manager.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  await until("manager exits by itself", () => manager.exitCode !== null || manager.signalCode !== null, 30_000);
  assert.equal(manager.exitCode, 0);
  assert.equal((JSON.parse(out) as unknown[]).length, 2);
  assert.deepEqual(ownedProcesses(tag), []);
});

test("the default command runs the reference runtime", async () => {
  const provider = await openProvider({ command: undefined, startTimeoutMs: 30_000 });
  const created = await provider.create(spec());
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS", 30_000);
  // The runtime answers 503 during its boot delay: poll until it says ready.
  const body = await until(
    "health 200",
    async () => {
      const res = await fetch(`${created.url}/pool/health`);
      if (res.status === 200) return (await res.json()) as { ready: boolean };
      await res.body?.cancel();
      return null;
    },
    30_000,
  );
  assert.equal(body.ready, true);
  const pid = pidOf(provider, created.instanceId!);
  await provider.delete(created.ref);
  assert.equal(isRunning(pid), false);
});

/** The pids the DETACHING_CMD wrapper reports, once it answers. */
async function wrapperTree(url: string): Promise<{ pid: number; kids: number[] }> {
  const body = (await (await fetch(`${url}/`)).json()) as { pid: number; kids: number[] };
  loosePids.push(...body.kids);
  return body;
}

test("delete stops a runtime its wrapper started detached (own session), env cleared or not", async () => {
  const provider = await openProvider({ command: DETACHING_CMD, stopTimeoutMs: 300 });
  const s = spec();
  const created = await provider.create(s);
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  const { pid, kids } = await wrapperTree(created.url!);
  assert.equal(kids.length, 2);
  for (const kid of kids) {
    assert.equal(isRunning(kid), true);
    assert.equal(readStat(kid)?.ppid, pid, "a child of the wrapper");
    assert.notEqual(readStat(kid)?.pgid, pid, "that left the instance's process group");
    assert.notEqual(readStat(kid)?.sid, pid, "and its session");
  }
  assert.equal(readEnviron(kids[1]!)?.INSTANCE_ID, undefined, "the second one carries no marker");

  await provider.delete(created.ref);
  for (const p of [pid, ...kids]) assert.equal(isRunning(p), false, `pid ${p} is gone`);
  assert.deepEqual(findProcesses({ INSTANCE_ID: s.instanceId }), []);
});

test("close() stops the detached runtimes of every instance too", async () => {
  const provider = await openProvider({ command: DETACHING_CMD, stopTimeoutMs: 300 });
  const trees: { pid: number; kids: number[] }[] = [];
  for (let i = 0; i < 2; i++) {
    const created = await provider.create(spec());
    await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
    trees.push(await wrapperTree(created.url!));
  }
  await provider.close();
  for (const { pid, kids } of trees) for (const p of [pid, ...kids]) assert.equal(isRunning(p), false, `pid ${p} is gone`);
});

test("when an instance exits, the runtime it started detached is stopped too", async () => {
  const provider = await openProvider({ command: DETACHING_CMD });
  const s = spec();
  const created = await provider.create(s);
  await until("SUCCESS", async () => (await statusOf(provider, created.ref)) === "SUCCESS");
  const { pid, kids } = await wrapperTree(created.url!);
  process.kill(pid, "SIGKILL"); // the wrapper crashes; its children are reparented to init
  await until("CRASHED", async () => (await statusOf(provider, created.ref)) === "CRASHED");
  // The one that kept its env is found by its marker after reparenting. The one with a cleared env
  // is not findable once orphaned (a documented limit): the test's cleanup kills it.
  await until("detached runtime stopped", () => !isRunning(kids[0]!));
  assert.deepEqual(findProcesses({ INSTANCE_ID: s.instanceId }), []);
});

test("one provider per state dir: a second fails with DATA_DIR_LOCKED; after close() one opens; a stale lock is taken over", async () => {
  const stateDir = join(tempDir(), "local");
  const first = await openProvider({ stateDir });
  const created = await first.create(spec());
  await assert.rejects(openProvider({ stateDir }), (err: unknown) => {
    assert.equal((err as PoolError).code, "DATA_DIR_LOCKED");
    assert.match((err as Error).message, new RegExp(`state directory .* is in use by process ${process.pid}\\b`));
    return true;
  });
  assert.ok(
    (await first.list()).instances.some((i) => i.ref === created.ref),
    "the refused one touched nothing",
  );
  assert.equal(isRunning(pidOf(first, created.instanceId!)), true);

  await first.close();
  assert.equal(existsSync(join(stateDir, ".lock")), false, "close() releases the lock");
  const second = await openProvider({ stateDir });
  await second.close();

  // A lock left by a process that died (a crashed manager) is stale.
  const dead = spawn(NODE, ["-e", "0"], { stdio: "ignore" });
  await new Promise((r) => dead.once("exit", r));
  writeFileSync(join(stateDir, ".lock"), JSON.stringify({ pid: dead.pid, startTime: "1", token: "dead" }));
  const third = await openProvider({ stateDir });
  assert.equal(readLockHolder(join(stateDir, ".lock"))?.pid, process.pid);
  await third.close();
});

test("two providers on different state dirs (same owner id): closing one leaves the other's processes running", async () => {
  // Even with the same tag (which only a caller passing one can cause): close() stops its own
  // instances, not whatever carries its tag or owner id.
  const tag = newTag();
  const a = await openProvider({ ownerTag: tag, command: FORKING_CMD });
  const b = await openProvider({ ownerTag: tag, command: FORKING_CMD });
  const ia = await a.create(spec({ ownerId: "same1" }));
  const ib = await b.create(spec({ ownerId: "same1" }));
  for (const [p, i] of [
    [a, ia],
    [b, ib],
  ] as const)
    await until("SUCCESS", async () => (await statusOf(p, i.ref)) === "SUCCESS");
  const bProcesses = await until("b's two processes", () => {
    const found = findProcesses({ INSTANCE_ID: ib.instanceId! });
    return found.length === 2 ? found : null;
  });

  await a.close();
  assert.deepEqual(findProcesses({ INSTANCE_ID: ia.instanceId! }), []);
  for (const p of bProcesses) assert.equal(isRunning(p.pid), true, `b's pid ${p.pid} still runs`);
  assert.equal(await statusOf(b, ib.ref), "SUCCESS");
  assert.equal(((await (await fetch(`${ib.url}/`)).json()) as { pid: number }).pid, pidOf(b, ib.instanceId!));
});

/** The tag the earlier serve.ts gave a data dir's instances (sha256 of the data dir, 16 hex). */
function earlierServeTag(dataDir: string): string {
  return createHash("sha256").update(dataDir).digest("hex").slice(0, 16);
}

/** A runtime process as an earlier version started it: the old tag, no owner id in its env. */
function earlierInstance(tag: string, instanceId: string, port: number): ChildProcess {
  const child = spawn(NODE, ["-e", SERVER_JS], {
    detached: true,
    stdio: "ignore",
    env: { PATH: process.env.PATH ?? "", INSTANCE_ID: instanceId, AGENT_POOL_OWNER: tag, PORT: String(port), GATEWAY_TOKEN: "t" },
  });
  spawned.push(child);
  return child;
}

/** A manager that dies without close(): its lock file stays behind, naming a process that is gone. */
async function crash(provider: LocalProvider): Promise<void> {
  providers.splice(providers.indexOf(provider), 1); // never closed
  const dead = spawn(NODE, ["-e", "0"], { stdio: "ignore" });
  await new Promise((r) => dead.once("exit", r));
  writeFileSync(join(provider.stateDir, ".lock"), JSON.stringify({ pid: dead.pid, startTime: "1", token: "crashed" }));
}

test("processes of an earlier version (old tag, no owner id) are adopted and report owner null, across restarts", async () => {
  const dataDir = tempDir();
  const stateDir = join(dataDir, "local");
  mkdirSync(stateDir, { recursive: true });
  const oldTag = earlierServeTag(dataDir);
  tags.push(oldTag);
  const [portA, portB] = [await freePort(), await freePort()];
  const a = earlierInstance(oldTag, "i-old-a", portA);
  const b = earlierInstance(oldTag, "i-old-b", portB);
  // A stray of that version: carries the old tag, never recorded.
  const stray = spawn(NODE, ["-e", "setInterval(()=>{},1<<30)"], {
    detached: true,
    stdio: "ignore",
    env: { PATH: process.env.PATH ?? "", AGENT_POOL_OWNER: oldTag, INSTANCE_ID: "i-old-stray" },
  });
  spawned.push(stray);
  await until("stray running", () => readEnviron(stray.pid!)?.AGENT_POOL_OWNER === oldTag);
  for (const port of [portA, portB])
    await until("answering", () =>
      fetch(`http://127.0.0.1:${port}/`).then(
        (r) => r.ok,
        () => false,
      ),
    );
  // The state file as earlier versions wrote it: no per-entry tag; `b` recorded with an owner id its
  // process does not carry (the version that recorded owner ids only in the state file).
  const entry = (id: string, pid: number, port: number) => ({ instanceId: id, name: id, pid, port, startedAt: new Date().toISOString(), command: ["node"] });
  writeFileSync(
    join(stateDir, "instances.json"),
    JSON.stringify({
      version: 1,
      ownerTag: oldTag,
      instances: [entry("i-old-a", a.pid!, portA), { ...entry("i-old-b", b.pid!, portB), ownerId: "own01" }],
    }),
  );

  // A new version with another tag adopts both, reports them ownerless, and stops the stray.
  const first = await openProvider({ stateDir });
  assert.notEqual(first.ownerTag, oldTag);
  const listed = async (p: LocalProvider) => new Map((await p.list()).instances.map((i) => [i.instanceId, i]));
  let byId = await listed(first);
  assert.equal(byId.get("i-old-a")?.deployStatus, "SUCCESS");
  assert.equal(byId.get("i-old-b")?.deployStatus, "SUCCESS");
  assert.equal(byId.get("i-old-a")?.owner, null);
  assert.equal(byId.get("i-old-b")?.owner, null, "the process is the truth: it carries no owner id");
  await until("stray stopped", () => !isRunning(stray.pid!));
  const made = await first.create(spec({ ownerId: "own77" }));
  await until("SUCCESS", async () => (await statusOf(first, made.ref)) === "SUCCESS");

  // That manager crashes; the next one (yet another tag) still adopts all three, owners as carried.
  await crash(first);
  const second = await openProvider({ stateDir });
  byId = await listed(second);
  assert.equal(byId.size, 3);
  for (const i of byId.values()) assert.equal(i.deployStatus, "SUCCESS", `${i.instanceId} adopted`);
  assert.equal(byId.get("i-old-a")?.owner, null);
  assert.equal(byId.get("i-old-b")?.owner, null);
  assert.equal(byId.get(made.instanceId!)?.owner, "own77");
  for (const c of [a, b]) assert.equal(isRunning(c.pid!), true);

  // And deletes them like its own.
  for (const i of byId.values()) await second.delete(i.ref);
  for (const c of [a, b]) assert.equal(isRunning(c.pid!), false);
  assert.deepEqual(findProcesses({ AGENT_POOL_OWNER: oldTag }), []);
  assert.deepEqual(findProcesses({ AGENT_POOL_OWNER: first.ownerTag }), []);
});
