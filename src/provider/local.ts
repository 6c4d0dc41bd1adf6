/**
 * The local provider: runs each instance as a child process on this machine, the way a cloud runs a
 * service. Every child gets its own process group and the env marker `INSTANCE_ID` + `AGENT_POOL_OWNER`
 * (the state dir's tag), so everything an instance runs can be found in the process table, even a
 * descendant that left the group (setsid) and was reparented to init; and `AGENT_POOL_OWNER_ID`, the
 * deployment's owner id, which `list()` reports as the instance's owner. What runs is recorded in
 * `<stateDir>/instances.json`, so a restarted manager adopts the instances still alive instead of
 * leaking them (the earlier system leaked instances).
 *
 * One manager per state dir: `start()` locks it (`<stateDir>/.lock`, pid + start time), because two
 * managers adopting the same processes from one state file delete each other's instances, and on
 * Postgres nothing else stops two of them sharing a DATA_DIR.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import net from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { systemClock, type Clock } from "../clock.ts";
import { lockDataDir } from "../data-dir-lock.ts";
import { PoolError } from "../errors.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing, UpgradeInstanceSpec } from "./provider.ts";
import { SAFE_ID, defaultOwnerTag, legacyOwnerTags, readStateFile, writeStateFile, type LocalStateEntry } from "./local-state.ts";
import {
  HAS_PROCFS,
  ProcessSnapshot,
  groupAlive,
  isRunning,
  pollUntil,
  readEnviron,
  readStat,
  stopProcesses,
  strayProcesses,
  treeProcesses,
  type ProcessSet,
} from "./process-table.ts";

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
  /** Grace between SIGTERM and SIGKILL of an instance's processes. Default 3 s. */
  stopTimeoutMs?: number;
  clock?: Clock;
  /**
   * Called when an instance starts accepting connections or exits. A hint only (the reconciler
   * wakes and looks sooner than its poll); the periodic pass converges without it.
   */
  onChange?: () => void;
}

export type { LocalStateEntry, LocalStateFile } from "./local-state.ts";
export { defaultOwnerTag, legacyOwnerTags } from "./local-state.ts";

type LocalStatus = "DEPLOYING" | "SUCCESS" | "CRASHED";

interface Entry extends LocalStateEntry {
  ownerTag: string;
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
  /**
   * The environment the process was started with, when we started it (kept in memory only: it holds
   * the gateway token and the instance's keys, which the state file must not). An adopted process's
   * is read back from /proc when needed.
   */
  env: Record<string, string> | null;
  /** An upgrade under way (a delete waits for it). */
  upgrading: Promise<void> | null;
  /** An upgrade is restarting the process: its exit is not a crash. */
  restarting: boolean;
}

const REF_PREFIX = "local:";
const STATE_FILE = "instances.json";
const PROBE_INTERVAL_MS = 100;
const PROBE_CONNECT_TIMEOUT_MS = 1_000;
const KILL_WAIT_MS = 2_000;
/** Env var carrying the deployment's owner id into the instance (read back from /proc on adoption). */
export const OWNER_ID_ENV = "AGENT_POOL_OWNER_ID";

/** Parent env passed through to instances; the rest (DB URLs, API tokens) stays with the manager. */
const PASS_ENV = new Set([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "LANG",
  "LANGUAGE",
  "TZ",
  "TMPDIR",
  "TEMP",
  "TMP",
  "NODE_EXTRA_CA_CERTS",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "SYSTEMROOT",
  "SystemRoot",
  "COMSPEC",
  "WINDIR",
]);

const noopLogger: LocalProviderLogger = { info() {}, warn() {}, error() {} };

/**
 * argv of the reference runtime, beside this module: compiled (`dist/runtime/main.js`, `npm run
 * build`) it runs on plain node; from the sources it runs `src/runtime/main.ts` through tsx.
 */
export function defaultRuntimeCommand(): string[] {
  const compiled = import.meta.url.endsWith(".js");
  const main = fileURLToPath(new URL(`../runtime/main.${compiled ? "js" : "ts"}`, import.meta.url));
  return compiled ? [process.execPath, main] : [process.execPath, "--import", import.meta.resolve("tsx"), main];
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
  /** Every `AGENT_POOL_OWNER` tag a process of this state dir may carry (see legacyOwnerTags). */
  readonly #tags = new Set<string>();
  #unlock: (() => void) | null = null;
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
    this.#tags.add(this.ownerTag);
    for (const tag of legacyOwnerTags(this.stateDir)) this.#tags.add(tag);
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
   * Locks the state dir (DATA_DIR_LOCKED if another live manager holds it), then reads the state file
   * left by an earlier manager: live instances that are provably ours are adopted, the rest are listed
   * CRASHED for the reconciler; processes carrying our tag that no adopted instance accounts for
   * (spawned just before a crash, or left behind by a crashed instance) are stopped.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    mkdirSync(join(this.stateDir, "logs"), { recursive: true });
    this.#unlock ??= lockDataDir(this.stateDir, {
      what: "local provider state directory",
      hint: "another agent-pool manager runs its instances from it; stop it first or give this one its own DATA_DIR",
    });
    try {
      await this.#adopt();
    } catch (err) {
      this.#unlock();
      this.#unlock = null;
      throw err;
    }
    this.#started = true;
  }

  async #adopt(): Promise<void> {
    const { fileTag, entries } = readStateFile(this.#statePath, this.#log);
    if (fileTag) this.#tags.add(fileTag);
    for (const rec of entries) if (rec.ownerTag) this.#tags.add(rec.ownerTag);
    const adoptProbes: Promise<void>[] = [];
    for (const rec of entries) {
      const env = this.#recordedProcessEnv(rec);
      const owned = env !== null;
      const entry: Entry = {
        ...rec,
        ownerTag: rec.ownerTag ?? fileTag ?? this.ownerTag,
        status: owned ? "DEPLOYING" : "CRASHED",
        child: null,
        procStart: owned ? (readStat(rec.pid)?.startTime ?? null) : null,
        exited: !owned,
        removing: false,
        deleting: null,
        probeTimer: null,
        probeSocket: null,
        env: null,
        upgrading: null,
        restarting: false,
      };
      if (env && HAS_PROCFS) {
        // What the process really carries wins over the state file: a process without an owner id
        // (made by an earlier version) is reported ownerless, adopted only where a row matches it.
        entry.ownerTag = env.AGENT_POOL_OWNER!;
        if (env[OWNER_ID_ENV]) entry.ownerId = env[OWNER_ID_ENV];
        else delete entry.ownerId;
      }
      this.#entries.set(rec.instanceId, entry);
      if (owned) {
        this.#log.info({ instanceId: rec.instanceId, pid: rec.pid, port: rec.port }, "local provider: adopted instance");
        adoptProbes.push(
          this.#probeOnce(entry).then((ok) => {
            if (ok) this.#markReady(entry);
            else this.#probeLoop(entry, Date.now() + this.#startTimeoutMs);
          }),
        );
      } else {
        this.#log.warn({ instanceId: rec.instanceId, pid: rec.pid }, "local provider: recorded instance is gone; listed as CRASHED");
      }
    }
    await this.#killStrays();
    await Promise.all(adoptProbes);
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
    // The pool's template names the command; without one, the provider's default.
    const command = spec.command && spec.command.length > 0 ? spec.command : this.#command;

    const port = await this.#freePort();
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && (PASS_ENV.has(k) || k.startsWith("LC_"))) env[k] = v;
    Object.assign(env, this.#env, spec.env, {
      PORT: String(port),
      GATEWAY_TOKEN: spec.gatewayToken,
      INSTANCE_ID: instanceId,
      AGENT_POOL_OWNER: this.ownerTag,
      ...(spec.ownerId ? { [OWNER_ID_ENV]: spec.ownerId } : {}),
    });

    const child = await this.#spawn(instanceId, command, env);
    const pid = child.pid!;
    const entry: Entry = {
      instanceId,
      name: spec.name,
      pid,
      port,
      startedAt: this.#clock.now().toISOString(),
      command: [...command],
      ...(spec.ownerId ? { ownerId: spec.ownerId } : {}),
      ownerTag: this.ownerTag,
      status: "DEPLOYING",
      child,
      procStart: readStat(pid)?.startTime ?? null,
      exited: false,
      removing: false,
      deleting: null,
      probeTimer: null,
      probeSocket: null,
      env,
      upgrading: null,
      restarting: false,
    };
    this.#entries.set(instanceId, entry);
    this.#watchChild(entry, child);
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

  /**
   * Output goes to a file, not a pipe: a pipe would break (SIGPIPE/EPIPE) when the manager dies, and
   * the instances must outlive a manager crash to be adopted. detached: own session and process
   * group, so a Ctrl-C to the manager's terminal does not reach it, and what it forks is told apart
   * from the manager's other processes (a plain child.kill() on a shell left the grandchild orphaned).
   */
  async #spawn(instanceId: string, command: string[], env: Record<string, string>): Promise<ChildProcess> {
    const logFd = openSync(this.#logPath(instanceId), "a");
    let child: ChildProcess;
    try {
      const [file, ...args] = command as [string, ...string[]];
      child = spawn(file, args, { detached: true, stdio: ["ignore", logFd, logFd], env });
      await new Promise<void>((resolveSpawn, rejectSpawn) => {
        child.once("spawn", resolveSpawn);
        child.once("error", rejectSpawn);
      });
    } catch (err) {
      throw new PoolError("PROVIDER_ERROR", `local provider: could not start ${command[0]}`, { instanceId }, { cause: err });
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
    return child;
  }

  /** Only the entry's current child exits it: the process an upgrade replaced exits as planned. */
  #watchChild(entry: Entry, child: ChildProcess): void {
    child.once("exit", (code, signal) => {
      if (entry.child === child) this.#markExited(entry, code, signal);
    });
  }

  /**
   * Upgrades an instance in place (issue 11): stops its processes and starts the new command with
   * the same instance id, gateway token and port, keeping every variable the process had (its own
   * keys among them) under the template's new ones. The state file records the new pid and command.
   * Resolves once the new process runs; it is DEPLOYING until its port accepts, like a new one, and
   * CRASHED if it exits. A variable the template dropped stays until the instance is recreated
   * (as on Railway, where variables are upserted, not replaced).
   */
  async upgrade(ref: string, spec: UpgradeInstanceSpec): Promise<void> {
    this.#assertStarted();
    if (this.#closing) throw new PoolError("PROVIDER_ERROR", "local provider is closing");
    const entry = this.#entryOf(ref);
    if (!entry || entry.removing) throw new PoolError("INSTANCE_NOT_FOUND", `local provider: no instance ${ref}`);
    if (entry.upgrading) throw new PoolError("PROVIDER_ERROR", `local provider: instance ${entry.instanceId} is being upgraded already`);
    if (spec.ownerId && entry.ownerId && spec.ownerId !== entry.ownerId) {
      throw new PoolError("PROVIDER_ERROR", `local provider: instance ${entry.instanceId} belongs to owner ${entry.ownerId}, not ${spec.ownerId}`);
    }
    const command = spec.command && spec.command.length > 0 ? spec.command : this.#command;
    entry.restarting = true;
    const run = (async () => {
      // What the process runs with now (ours in memory; an adopted one's from /proc), before it stops.
      const had = entry.env ?? (entry.exited ? null : readEnviron(entry.pid)) ?? {};
      const env: Record<string, string> = {};
      for (const [k, v] of Object.entries(process.env)) if (v !== undefined && (PASS_ENV.has(k) || k.startsWith("LC_"))) env[k] = v;
      Object.assign(env, had, this.#env, spec.env, {
        PORT: String(entry.port),
        GATEWAY_TOKEN: spec.gatewayToken,
        INSTANCE_ID: entry.instanceId,
        AGENT_POOL_OWNER: this.ownerTag,
        ...(entry.ownerId ? { [OWNER_ID_ENV]: entry.ownerId } : {}),
      });
      this.#stopProbe(entry);
      const old = entry.child;
      await this.#terminate(entry);
      old?.unref();
      if (entry.removing || this.#closing) throw new PoolError("PROVIDER_ERROR", `local provider: instance ${entry.instanceId} was deleted during its upgrade`);
      let child: ChildProcess;
      try {
        child = await this.#spawn(entry.instanceId, command, env);
      } catch (err) {
        entry.exited = true;
        entry.status = "CRASHED";
        this.#hint();
        throw err;
      }
      entry.child = child;
      entry.pid = child.pid!;
      entry.procStart = readStat(entry.pid)?.startTime ?? null;
      entry.command = [...command];
      entry.env = env;
      entry.exited = false;
      entry.status = "DEPLOYING";
      this.#watchChild(entry, child);
      this.#writeState();
      this.#log.info({ instanceId: entry.instanceId, pid: entry.pid, port: entry.port }, "local provider: instance upgraded (restarted with the new command)");
      if (entry.removing) return; // deleted while it spawned: the delete stops it
      this.#probeLoop(entry, Date.now() + this.#startTimeoutMs);
      this.#hint();
    })();
    entry.upgrading = run.finally(() => {
      entry.upgrading = null;
      entry.restarting = false;
    });
    return entry.upgrading;
  }

  async delete(ref: string): Promise<void> {
    this.#assertStarted();
    const entry = this.#entryOf(ref);
    if (!entry) return;
    // An upgrade under way finishes first (its new process is then the one stopped).
    await entry.upgrading?.catch(() => undefined);
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

  /**
   * Stops every instance this provider runs, each with its descendants (the manager calls this on
   * SIGTERM/SIGINT: nothing of ours may be left running), then releases the state-dir lock. Only its
   * own entries: another manager's processes (another state dir, maybe the same owner id when both
   * share a database) are never signalled, as a sweep by tag or owner id would.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const entries = [...this.#entries.values()];
      for (const entry of entries) {
        entry.removing = true;
        this.#stopProbe(entry);
      }
      const results = await Promise.allSettled(entries.map((e) => e.deleting ?? this.#terminate(e)));
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
      this.#entries.clear();
      for (const f of failed) this.#entries.set(f.instanceId, f); // keep them recorded for the next manager
      try {
        if (this.#started) this.#writeState();
      } catch (err) {
        this.#log.error({ err }, "local provider: could not clear the state file");
      }
      this.#unlock?.();
      this.#unlock = null;
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

  /** Whether a process environment is marked as one of `instanceId`'s, by this state dir. */
  #carriesMarker(env: Record<string, string> | null, instanceId: string): boolean {
    return env !== null && env.INSTANCE_ID === instanceId && env.AGENT_POOL_OWNER !== undefined && this.#tags.has(env.AGENT_POOL_OWNER);
  }

  /**
   * The environment of a recorded pid if it is provably that instance's process: it runs with the
   * instance id and one of our tags (pids get recycled). `{}` off Linux, where nothing more can be
   * checked than that the pid runs; null when it is not ours.
   */
  #recordedProcessEnv(rec: LocalStateEntry): Record<string, string> | null {
    if (!isRunning(rec.pid)) return null;
    if (!HAS_PROCFS) return {};
    const env = readEnviron(rec.pid);
    return this.#carriesMarker(env, rec.instanceId) ? env : null;
  }

  /** The instance's processes in `snap` (see treeProcesses): its pid is its group and session id. */
  #processesOf(entry: Entry, snap: ProcessSnapshot, known: ProcessSet): ProcessSet {
    return treeProcesses(
      snap,
      {
        pid: entry.pid,
        startTime: entry.procStart,
        alive: entry.child !== null && !entry.exited,
        marked: (env) => this.#carriesMarker(env, entry.instanceId),
      },
      known,
    );
  }

  #signal(target: number, sig: NodeJS.Signals): void {
    try {
      process.kill(target, sig);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ESRCH") this.#log.warn({ err, target, sig }, "local provider: kill failed");
    }
  }

  /**
   * Stops the instance's processes, descendants included (see #processesOf): SIGTERM, grace, SIGKILL
   * (`graceful` false: SIGKILL at once). Throws if one survives.
   */
  async #terminate(entry: Entry, graceful = true): Promise<void> {
    if (!HAS_PROCFS) return this.#terminateGroup(entry, graceful);
    const known: ProcessSet = new Map();
    const stopped = await stopProcesses(() => this.#processesOf(entry, ProcessSnapshot.take(), known), {
      graceMs: graceful ? this.#stopTimeoutMs : 0,
      killWaitMs: KILL_WAIT_MS,
      onSignalError: (err, pid, sig) => this.#log.warn({ err, pid, sig }, "local provider: kill failed"),
    });
    if (!stopped) {
      throw new PoolError("PROVIDER_ERROR", `local provider: processes of instance ${entry.instanceId} survived SIGKILL`, {
        instanceId: entry.instanceId,
        pids: [...known.keys()].filter((pid) => isRunning(pid, known.get(pid))),
      });
    }
  }

  /** Off Linux (no /proc to walk): signal the process group, which is all that can be found. */
  async #terminateGroup(entry: Entry, graceful: boolean): Promise<void> {
    const pgid = entry.pid;
    if (entry.exited || !groupAlive(pgid)) return;
    if (graceful) {
      this.#signal(-pgid, "SIGTERM");
      if (await pollUntil(() => !groupAlive(pgid), this.#stopTimeoutMs)) return;
    }
    this.#signal(-pgid, "SIGKILL");
    if (!(await pollUntil(() => !groupAlive(pgid), KILL_WAIT_MS))) {
      throw new PoolError("PROVIDER_ERROR", `local provider: process group ${pgid} survived SIGKILL`, { instanceId: entry.instanceId });
    }
  }

  /**
   * Stops processes carrying one of our tags that no live adopted instance accounts for, with their
   * descendants: instances spawned just before a crash (not recorded yet), and what a crashed
   * instance left running. The lock makes this safe: no other live manager uses these tags.
   */
  async #killStrays(): Promise<void> {
    if (!HAS_PROCFS) return;
    const known: ProcessSet = new Map();
    const live = [...this.#entries.values()].filter((e) => !e.exited);
    const look = (): ProcessSet => {
      const snap = ProcessSnapshot.take();
      const accounted = new Set<number>();
      for (const e of live) for (const pid of this.#processesOf(e, snap, new Map()).keys()) accounted.add(pid);
      return strayProcesses(snap, (tag) => this.#tags.has(tag), accounted, known);
    };
    const first = look();
    if (first.size === 0) return;
    this.#log.warn({ pids: [...first.keys()] }, "local provider: stopping stray instance processes not in the state file");
    const stopped = await stopProcesses(look, {
      graceMs: this.#stopTimeoutMs,
      killWaitMs: KILL_WAIT_MS,
      onSignalError: (err, pid, sig) => this.#log.warn({ err, pid, sig }, "local provider: kill failed"),
    });
    if (!stopped) this.#log.error({ pids: [...known.keys()] }, "local provider: stray processes survived SIGKILL");
  }

  #markExited(entry: Entry, code: number | null, signal: NodeJS.Signals | null): void {
    // An upgrade stopping the old process on purpose: not an exit of the instance.
    if (entry.exited || entry.restarting) return;
    entry.exited = true;
    this.#stopProbe(entry);
    if (entry.removing) return;
    entry.status = "CRASHED";
    this.#log.warn({ instanceId: entry.instanceId, pid: entry.pid, code, signal }, "local provider: instance exited");
    // Like a cloud's crashed service, nothing of it keeps running (a grandchild of a shell, a runtime
    // its wrapper started detached).
    this.#terminate(entry, false).catch((err) =>
      this.#log.error({ err, instanceId: entry.instanceId }, "local provider: could not stop what the exited instance left running"),
    );
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

  #writeState(): void {
    writeStateFile(this.#statePath, this.ownerTag, this.#entries.values());
  }
}
