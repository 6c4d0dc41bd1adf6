import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lockDataDir, readLockHolder } from "./data-dir-lock.ts";
import type { PoolError } from "./errors.ts";
import { readStat } from "./provider/process-table.ts";
import { waitFor } from "../test/support/process.ts";

const dirs: string[] = [];
const children: ChildProcess[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-lock-"));
  dirs.push(dir);
  return dir;
}

/** A live process that is not this one. */
async function otherProcess(): Promise<number> {
  const child = spawn(process.execPath, ["-e", "setInterval(()=>{},1<<30)"], { stdio: "ignore" });
  children.push(child);
  const pid = child.pid!;
  await waitFor("child running", () => readStat(pid) !== null, 10_000, 20);
  return pid;
}

function deadPid(): number {
  const pid = spawnSync(process.execPath, ["-e", ""]).pid; // exited and reaped
  assert.ok(pid);
  return pid;
}

const locked = (pid: number) => (err: unknown) => {
  assert.equal((err as PoolError).code, "DATA_DIR_LOCKED");
  assert.match((err as Error).message, new RegExp(`in use by process ${pid};`));
  return true;
};

after(() => {
  for (const c of children) c.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("the lock names this process by pid and start time; a second take in this process is refused until release", () => {
  const dir = tempDir();
  const release = lockDataDir(dir, { what: "state dir", hint: "go away" });
  const holder = readLockHolder(join(dir, ".lock"));
  assert.equal(holder?.pid, process.pid);
  assert.equal(holder?.startTime, readStat(process.pid)?.startTime);
  assert.throws(
    () => lockDataDir(dir, { what: "state dir", hint: "go away" }),
    (err: unknown) => {
      locked(process.pid)(err);
      assert.equal((err as Error).message, `state dir ${dir} is in use by process ${process.pid}; go away`);
      return true;
    },
  );
  release();
  assert.equal(existsSync(join(dir, ".lock")), false);
  release(); // idempotent
  lockDataDir(dir)();
});

test("a live holder is refused; a dead one, a recycled pid (other start time) or garbage is taken over", async () => {
  const dir = tempDir();
  const path = join(dir, ".lock");
  const live = await otherProcess();
  const liveStart = readStat(live)!.startTime;

  writeFileSync(path, JSON.stringify({ pid: live, startTime: liveStart, token: "x" }));
  assert.throws(() => lockDataDir(dir), locked(live));
  writeFileSync(path, `${live}\n`); // the bare pid earlier versions wrote: no start time to check
  assert.throws(() => lockDataDir(dir), locked(live));

  for (const stale of [
    JSON.stringify({ pid: live, startTime: `${liveStart}0`, token: "x" }), // the pid now runs another process
    JSON.stringify({ pid: deadPid(), startTime: "1", token: "x" }),
    `${deadPid()}\n`,
    "not a lock",
    JSON.stringify({ pid: process.pid, startTime: "1", token: "x" }), // our pid, not taken by us: an earlier run's
  ]) {
    writeFileSync(path, stale);
    const release = lockDataDir(dir);
    assert.equal(readLockHolder(path)?.pid, process.pid, `took over ${stale}`);
    release();
  }
});

test("release leaves a lock that was taken over alone", () => {
  const dir = tempDir();
  const path = join(dir, ".lock");
  const release = lockDataDir(dir);
  // Thought dead and taken over by someone else (here: rewritten as another holder).
  writeFileSync(path, JSON.stringify({ pid: process.pid, startTime: readStat(process.pid)?.startTime, token: "someone-else" }));
  release();
  assert.equal(readLockHolder(path)?.token, "someone-else");
});
