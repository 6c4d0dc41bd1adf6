/**
 * The local provider: runs each instance as a child process on this machine, the way a cloud runs a
 * service. Every child gets its own process group (so a delete kills the runtime and everything it
 * forked) and the env marker `AGENT_POOL_OWNER` (so orphans of a crashed manager can be found in the
 * process table). What runs is recorded in `<stateDir>/instances.json`, so a restarted manager adopts
 * the instances still alive instead of leaking them (the earlier system leaked instances).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import net from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { systemClock, type Clock } from "../clock.ts";
import { PoolError } from "../errors.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing } from "./provider.ts";
import { HAS_PROCFS, findProcesses, groupAlive, groupMembers, isRunning, readEnviron, readStat } from "./process-table.ts";

export interface LocalProviderLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface LocalProviderOptions {
  /** Folder the provider owns: state file and per-instance logs. */
  stateDir: string;
  /** argv of the runtime; default: the reference runtime `src/runtime/main.ts` run through tsx. */
  command?: string[];
  /** Extra env for every instance (pool settings). */
  env?: Record<string, string>;
  /** Loopback address instances listen on and are probed at. Default 127.0.0.1. */
  host?: string;
  /** Identifies this manager's data dir; default derived from `stateDir`. */
  ownerTag?: string;
  logger?: LocalProviderLogger;
  /** How long the port probe keeps trying before the instance is left DEPLOYING. Default 120 s. */
  startTimeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL of an instance's process group. Default 3 s. */
  stopTimeoutMs?: number;
  clock?: Clock;
  /**
   * Called when an instance starts accepting connections or exits. A hint only (the reconciler
   * wakes and looks sooner than its poll); the periodic pass converges without it.
   */
  onChange?: () => void;
}

/** One line of the state file. */
export interface LocalStateEntry {
  instanceId: string;
  name: string;
  pid: number;
  port: number;
  /** ISO time. */
  startedAt: string;
  command: string[];
  /** The owner id the instance was created with (absent: made before owner ids). */
  ownerId?: string;
}

export interface LocalStateFile {
  version: 1;
  ownerTag: string;
  instances: LocalStateEntry[];
}

type LocalStatus = "DEPLOYING" | "SUCCESS" | "CRASHED";

interface Entry extends LocalStateEntry {
  status: LocalStatus;
  /** Our child; null for an instance adopted from an earlier manager. */
  child: ChildProcess | null;
  /** `/proc` start time of the pid when we took it on, so a recycled pid is not taken for it. */
  procStart: string | null;
  exited: boolean;
  removing: boolean;
  deleting: Promise<void> | null;
  probeTimer: NodeJS.Timeout | null;
  probeSocket: net.Socket | null;
}

const REF_PREFIX = "local:";
const STATE_FILE = "instances.json";
const PROBE_INTERVAL_MS = 100;
const PROBE_CONNECT_TIMEOUT_MS = 1_000;
const KILL_WAIT_MS = 2_000;
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Parent env passed through to instances; the rest (DB URLs, API tokens) stays with the manager. */
const PASS_ENV = new Set([
  "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
  "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
  "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
  "SYSTEMROOT", "SystemRoot", "COMSPEC", "WINDIR",
]);

const noopLogger: LocalProviderLogger = { info() {}, warn() {}, error() {} };

/** argv of the reference runtime: this node, the tsx loader, and `src/runtime/main.ts`. */
export function defaultRuntimeCommand(): string[] {
  const tsx = import.meta.resolve("tsx");
  const main = fileURLToPath(new URL("../runtime/main.ts", import.meta.url));
  return [process.execPath, "--import", tsx, main];
}

export function defaultOwnerTag(stateDir: string): string {
  return `agent-pool-${createHash("sha256").update(resolve(stateDir)).digest("hex").slice(0, 16)}`;
}

export class LocalProvider implements Provider {
  readonly kind = "local";
  readonly stateDir: string;
  readonly ownerTag: string;
  readonly #command: string[];
  readonly #env: Record<string, string>;
  readonly #host: string;
  readonly #log: LocalProviderLogger;
  readonly #startTimeoutMs: number;
  readonly #stopTimeoutMs: number;
  readonly #clock: Clock;
  readonly #onChange: (() => void) | undefined;
  readonly #entries = new Map<string, Entry>();
  #started = false;
  #closing: Promise<void> | null = null;

  /** Prefer `LocalProvider.open()`; a constructed provider must be `start()`ed before use. */
  constructor(opts: LocalProviderOptions) {
    this.stateDir = resolve(opts.stateDir);
    this.ownerTag = opts.ownerTag ?? defaultOwnerTag(this.stateDir);
    this.#command = opts.command ? [...opts.command] : defaultRuntimeCommand();
    if (this.#command.length === 0) throw new PoolError("CONFIG_INVALID", "local provider: empty command");
    this.#env = { ...(opts.env ?? {}) };
    this.#host = opts.host ?? "127.0.0.1";
    this.#log = opts.logger ?? noopLogger;
    this.#startTimeoutMs = opts.startTimeoutMs ?? 120_000;
    this.#stopTimeoutMs = opts.stopTimeoutMs ?? 3_000;
    this.#clock = opts.clock ?? systemClock;
    this.#onChange = opts.onChange;
  }

  /** A started provider: instances of an earlier manager adopted, its strays killed. */
  static async open(opts: LocalProviderOptions): Promise<LocalProvider> {
    const provider = new LocalProvider(opts);
    await provider.start();
    return provider;
  }

  get #statePath(): string {
    return join(this.stateDir, STATE_FILE);
  }

  #logPath(instanceId: string): string {
    return join(this.stateDir, "logs", `${instanceId}.log`);
  }

  /**
   * Reads the state file left by an earlier manager: live instances that are provably ours are adopted,
   * the rest are listed CRASHED for the reconciler; processes carrying our owner tag that the state does
   * not know (spawned just before a crash) are killed.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    mkdirSync(join(this.stateDir, "logs"), { recursive: true });
    const adoptProbes: Promise<void>[] = [];
    for (const rec of this.#readState()) {
      const owned = this.#isOurProcess(rec.pid, rec.instanceId);
      const entry: Entry = {
        ...rec,
        status: owned ? "DEPLOYING" : "CRASHED",
        child: null,
        procStart: owned ? (readStat(rec.pid)?.startTime ?? null) : null,
        exited: !owned,
        removing: false,
        deleting: null,
        probeTimer: null,
        probeSocket: null,
      };
      this.#entries.set(rec.instanceId, entry);
      if (owned) {
        this.#log.info({ instanceId: rec.instanceId, pid: rec.pid, port: rec.port }, "local provider: adopted instance");
        adoptProbes.push(this.#probeOnce(entry).then((ok) => {
          if (ok) this.#markReady(entry);
          else this.#probeLoop(entry, Date.now() + this.#startTimeoutMs);
        }));
      } else {
        this.#log.warn({ instanceId: rec.instanceId, pid: rec.pid }, "local provider: recorded instance is gone; listed as CRASHED");
      }
    }
    await this.#killStrays();
    await Promise.all(adoptProbes);
    this.#started = true;
    this.#writeState();
  }

  async list(): Promise<ProviderListing> {
    this.#assertStarted();
    const instances: ProviderInstance[] = [];
    for (const entry of this.#entries.values()) {
      try {
        // Adopted processes are not our children, so no exit event: check the pid is still the same process.
        if (!entry.child && !entry.exited && !isRunning(entry.pid, entry.procStart)) this.#markExited(entry, null, null);
      } catch (err) {
        this.#log.warn({ err, instanceId: entry.instanceId }, "local provider: liveness check failed");
      }
      instances.push(this.#toInstance(entry));
    }
    return { instances, complete: true };
  }

  async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    this.#assertStarted();
    if (this.#closing) throw new PoolError("PROVIDER_ERROR", "local provider is closing");
    const { instanceId } = spec;
    if (!SAFE_ID.test(instanceId)) throw new PoolError("PROVIDER_ERROR", `local provider: unsafe instance id ${JSON.stringify(instanceId)}`);
    if (this.#entries.has(instanceId)) throw new PoolError("PROVIDER_ERROR", `local provider: instance ${instanceId} already exists`);

    const port = await this.#freePort();
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && (PASS_ENV.has(k) || k.startsWith("LC_"))) env[k] = v;
    Object.assign(env, this.#env, spec.env, {
      PORT: String(port),
      GATEWAY_TOKEN: spec.gatewayToken,
      INSTANCE_ID: instanceId,
      AGENT_POOL_OWNER: this.ownerTag,
    });

    // Output goes to a file, not a pipe: a pipe would break (SIGPIPE/EPIPE) when the manager dies, and
    // the instances must outlive a manager crash to be adopted.
    const logFd = openSync(this.#logPath(instanceId), "a");
    let child: ChildProcess;
    try {
      const [file, ...args] = this.#command as [string, ...string[]];
      // detached: own process group, so delete can signal the whole group (a plain child.kill() on a
      // shell left the grandchild orphaned) and a Ctrl-C to the manager's terminal does not reach it.
      child = spawn(file, args, { detached: true, stdio: ["ignore", logFd, logFd], env });
      await new Promise<void>((resolveSpawn, rejectSpawn) => {
        child.once("spawn", resolveSpawn);
        child.once("error", rejectSpawn);
      });
    } catch (err) {
      throw new PoolError("PROVIDER_ERROR", `local provider: could not start ${this.#command[0]}`, { instanceId }, { cause: err });
    } finally {
      closeSync(logFd); // the child holds its own copy
    }
    const pid = child.pid!;
    if (this.#closing) {
      // close() began while we spawned: it did not see this child, so stop it here.
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      child.unref();
      throw new PoolError("PROVIDER_ERROR", "local provider is closing", { instanceId });
    }
    child.on("error", (err) => this.#log.warn({ err, instanceId, pid }, "local provider: child process error"));

    const entry: Entry = {
      instanceId,
      name: spec.name,
      pid,
      port,
      startedAt: this.#clock.now().toISOString(),
      command: [...this.#command],
      ownerId: spec.ownerId,
      status: "DEPLOYING",
      child,
      procStart: readStat(pid)?.startTime ?? null,
      exited: false,
      removing: false,
      deleting: null,
      probeTimer: null,
      probeSocket: null,
    };
    this.#entries.set(instanceId, entry);
    child.once("exit", (code, signal) => this.#markExited(entry, code, signal));
    try {
      this.#writeState();
    } catch (err) {
      // Not recorded = would be an orphan after a crash: do not leave it running.
      entry.removing = true;
      await this.#terminate(entry).catch(() => {});
      this.#entries.delete(instanceId);
      throw new PoolError("PROVIDER_ERROR", "local provider: could not record the instance", { instanceId }, { cause: err });
    }
    this.#log.info({ instanceId, pid, port }, "local provider: instance started");
    if (!entry.exited) this.#probeLoop(entry, Date.now() + this.#startTimeoutMs);
    return this.#toInstance(entry);
  }

  async delete(ref: string): Promise<void> {
    this.#assertStarted();
    const entry = this.#entryOf(ref);
    if (!entry) return;
    entry.deleting ??= (async () => {
      entry.removing = true;
      this.#stopProbe(entry);
      try {
        await this.#terminate(entry);
      } catch (err) {
        entry.removing = false;
        entry.deleting = null;
        throw err;
      }
      if (this.#entries.get(entry.instanceId) === entry) {
        this.#entries.delete(entry.instanceId);
        this.#writeState();
      }
      this.#log.info({ instanceId: entry.instanceId, pid: entry.pid }, "local provider: instance deleted");
    })();
    return entry.deleting;
  }

  async rename(ref: string, name: string): Promise<void> {
    this.#assertStarted();
    const entry = this.#entryOf(ref);
    if (!entry) throw new PoolError("INSTANCE_NOT_FOUND", `local provider: no instance ${ref}`);
    entry.name = name;
    this.#writeState();
  }

  /** Stops every instance (the manager calls this on SIGTERM/SIGINT: nothing may be left running). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const entries = [...this.#entries.values()];
      for (const entry of entries) {
        entry.removing = true;
        this.#stopProbe(entry);
      }
      const results = await Promise.allSettled(entries.map((e) => (e.deleting ?? this.#terminate(e))));
      const failed: Entry[] = [];
      results.forEach((r, i) => {
        const entry = entries[i]!;
        if (r.status === "rejected") {
          failed.push(entry);
          this.#log.error({ err: r.reason, instanceId: entry.instanceId, pid: entry.pid }, "local provider: could not stop instance");
        }
        // Whatever happened, our child handles must not keep the manager's event loop alive.
        entry.child?.unref();
        entry.child?.removeAllListeners();
      });
      // Anything still carrying our tag (a grandchild that left the group) goes too.
      for (const p of findProcesses({ AGENT_POOL_OWNER: this.ownerTag })) {
        if (p.pid === process.pid || failed.some((f) => f.pid === p.pgid)) continue;
        this.#signal(p.pid, "SIGKILL");
      }
      this.#entries.clear();
      for (const f of failed) this.#entries.set(f.instanceId, f); // keep them recorded for the next manager
      try {
        this.#writeState();
      } catch (err) {
        this.#log.error({ err }, "local provider: could not clear the state file");
      }
    })();
    return this.#closing;
  }

  // ---- internals ---------------------------------------------------------------------------------

  #assertStarted(): void {
    if (!this.#started) throw new PoolError("NOT_READY", "local provider: call start() (or use LocalProvider.open()) first");
  }

  #entryOf(ref: string): Entry | undefined {
    if (!ref.startsWith(REF_PREFIX)) return undefined;
    return this.#entries.get(ref.slice(REF_PREFIX.length));
  }

  #toInstance(entry: Entry): ProviderInstance {
    const host = this.#host.includes(":") ? `[${this.#host}]` : this.#host;
    return {
      ref: `${REF_PREFIX}${entry.instanceId}`,
      instanceId: entry.instanceId,
      name: entry.name,
      deployStatus: entry.status,
      url: `http://${host}:${entry.port}`,
      image: entry.command.join(" "),
      createdAt: new Date(entry.startedAt),
      owner: entry.ownerId ?? null,
    };
  }

  /** A recorded pid is ours only if it runs with our instance id and owner tag (pids get recycled). */
  #isOurProcess(pid: number, instanceId: string): boolean {
    if (!isRunning(pid)) return false;
    if (!HAS_PROCFS) return true; // cannot check more off Linux
    const env = readEnviron(pid);
    return env !== null && env.INSTANCE_ID === instanceId && env.AGENT_POOL_OWNER === this.ownerTag;
  }

  /** Whether the process group led by `entry.pid` still holds a process of this instance. */
  #groupIsOurs(entry: Entry): boolean {
    if (entry.child && !entry.exited) return true;
    if (!HAS_PROCFS) return !entry.exited;
    return groupMembers(entry.pid).some((m) => {
      const env = readEnviron(m.pid);
      return env !== null && env.INSTANCE_ID === entry.instanceId && env.AGENT_POOL_OWNER === this.ownerTag;
    });
  }

  #signal(target: number, sig: NodeJS.Signals): void {
    try {
      process.kill(target, sig);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ESRCH") this.#log.warn({ err, target, sig }, "local provider: kill failed");
    }
  }

  /** SIGTERM the instance's process group, wait, then SIGKILL it. Throws if it survives. */
  async #terminate(entry: Entry): Promise<void> {
    const pgid = entry.pid;
    if (!this.#groupIsOurs(entry)) return;
    this.#signal(-pgid, "SIGTERM");
    if (await waitUntil(() => !groupAlive(pgid), this.#stopTimeoutMs)) return;
    if (this.#groupIsOurs(entry)) this.#signal(-pgid, "SIGKILL");
    if (!(await waitUntil(() => !groupAlive(pgid), KILL_WAIT_MS))) {
      throw new PoolError("PROVIDER_ERROR", `local provider: process group ${pgid} survived SIGKILL`, { instanceId: entry.instanceId });
    }
  }

  /** Kills process groups carrying our owner tag that no adopted instance accounts for. */
  async #killStrays(): Promise<void> {
    const live = new Set<number>();
    for (const e of this.#entries.values()) if (!e.exited) live.add(e.pid);
    const ownPgid = readStat(process.pid)?.pgid ?? null;
    const groups = new Set<number>();
    for (const p of findProcesses({ AGENT_POOL_OWNER: this.ownerTag })) {
      if (p.pid === process.pid || live.has(p.pgid)) continue;
      if (p.pgid > 1 && p.pgid !== ownPgid) groups.add(p.pgid);
      else this.#signal(p.pid, "SIGKILL");
    }
    if (groups.size === 0) return;
    this.#log.warn({ pgids: [...groups] }, "local provider: killing stray instance processes not in the state file");
    await Promise.all(
      [...groups].map(async (pgid) => {
        this.#signal(-pgid, "SIGTERM");
        if (await waitUntil(() => !groupAlive(pgid), this.#stopTimeoutMs)) return;
        this.#signal(-pgid, "SIGKILL");
        await waitUntil(() => !groupAlive(pgid), KILL_WAIT_MS);
      }),
    );
  }

  #markExited(entry: Entry, code: number | null, signal: NodeJS.Signals | null): void {
    if (entry.exited) return;
    entry.exited = true;
    this.#stopProbe(entry);
    if (entry.removing) return;
    entry.status = "CRASHED";
    this.#log.warn({ instanceId: entry.instanceId, pid: entry.pid, code, signal }, "local provider: instance exited");
    // Like a cloud's crashed service, nothing of it keeps running (e.g. a grandchild of a shell).
    if (this.#groupIsOurs(entry)) this.#signal(-entry.pid, "SIGKILL");
    this.#hint();
  }

  #markReady(entry: Entry): void {
    if (entry.exited || entry.removing || entry.status !== "DEPLOYING") return;
    entry.status = "SUCCESS";
    this.#log.info({ instanceId: entry.instanceId, port: entry.port }, "local provider: instance accepts connections");
    this.#hint();
  }

  #hint(): void {
    if (this.#closing || !this.#onChange) return;
    try {
      this.#onChange();
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, "local provider: change hint failed");
    }
  }

  #stopProbe(entry: Entry): void {
    if (entry.probeTimer) clearTimeout(entry.probeTimer);
    entry.probeTimer = null;
    entry.probeSocket?.destroy();
    entry.probeSocket = null;
  }

  #probeLoop(entry: Entry, deadline: number): void {
    const attempt = (): void => {
      entry.probeTimer = null;
      if (entry.exited || entry.removing || entry.status !== "DEPLOYING") return;
      void this.#probeOnce(entry).then((ok) => {
        if (ok) return this.#markReady(entry);
        if (entry.exited || entry.removing) return;
        if (Date.now() >= deadline) {
          this.#log.warn({ instanceId: entry.instanceId, port: entry.port }, "local provider: instance did not accept connections in time");
          return;
        }
        entry.probeTimer = setTimeout(attempt, PROBE_INTERVAL_MS);
        entry.probeTimer.unref();
      });
    };
    attempt();
  }

  /** One TCP connect to the instance's port. */
  #probeOnce(entry: Entry): Promise<boolean> {
    return new Promise((done) => {
      const socket = net.connect({ host: this.#host, port: entry.port });
      entry.probeSocket = socket;
      socket.unref();
      socket.setTimeout(PROBE_CONNECT_TIMEOUT_MS);
      const finish = (ok: boolean): void => {
        socket.destroy();
        if (entry.probeSocket === socket) entry.probeSocket = null;
        done(ok);
      };
      socket.once("connect", () => finish(true));
      socket.once("error", () => finish(false));
      socket.once("timeout", () => finish(false));
      socket.once("close", () => finish(false)); // destroyed by stopProbe
    });
  }

  /** A port the OS says is free on the loopback (bind :0, read, close), not handed to another instance. */
  async #freePort(): Promise<number> {
    const taken = new Set([...this.#entries.values()].map((e) => e.port));
    for (let i = 0; i < 20; i++) {
      const port = await new Promise<number>((ok, fail) => {
        const server = net.createServer();
        server.unref();
        server.once("error", fail);
        server.listen(0, this.#host, () => {
          const addr = server.address();
          server.close(() => (addr && typeof addr === "object" ? ok(addr.port) : fail(new Error("no port"))));
        });
      });
      if (!taken.has(port)) return port;
    }
    throw new PoolError("PROVIDER_ERROR", "local provider: no free port");
  }

  #readState(): LocalStateEntry[] {
    let text: string;
    try {
      text = readFileSync(this.#statePath, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      // Unreadable state: its processes become strays and are killed below, rather than leaked.
      this.#log.error({ err, path: this.#statePath }, "local provider: state file is corrupt; ignoring it");
      return [];
    }
    const list = (parsed as Partial<LocalStateFile> | null)?.instances;
    if (!Array.isArray(list)) return [];
    return list.filter((e): e is LocalStateEntry => {
      const ok =
        e !== null && typeof e === "object" &&
        typeof e.instanceId === "string" && SAFE_ID.test(e.instanceId) &&
        typeof e.name === "string" &&
        Number.isInteger(e.pid) && e.pid > 1 &&
        Number.isInteger(e.port) &&
        typeof e.startedAt === "string" &&
        Array.isArray(e.command);
      if (!ok) this.#log.warn({ entry: e }, "local provider: skipping malformed state entry");
      return ok;
    });
  }

  /** Temp file + fsync + rename: a crash mid-write leaves the old state, never half a file. */
  #writeState(): void {
    const state: LocalStateFile = {
      version: 1,
      ownerTag: this.ownerTag,
      instances: [...this.#entries.values()].map((e) => ({
        instanceId: e.instanceId,
        name: e.name,
        pid: e.pid,
        port: e.port,
        startedAt: e.startedAt,
        command: e.command,
        ...(e.ownerId ? { ownerId: e.ownerId } : {}),
      })),
    };
    const tmp = `${this.#statePath}.${process.pid}.tmp`;
    const fd = openSync(tmp, "w");
    try {
      writeSync(fd, JSON.stringify(state, null, 2) + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.#statePath);
  }
}

/** Polls `pred` every 50 ms until it holds (true) or `timeoutMs` passes (false). */
async function waitUntil(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pred()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
