/**
 * A typed client of the pool manager's API (the CLI is built on it; other services import it as
 * `agent-pool/client`). Request and response types are the server's zod schemas (contract.ts).
 *
 * `claim()` is the one call that retries, because it is the one a client must not give up on too
 * early nor repeat blindly:
 * - one idempotency key per logical claim, generated at the call and sent on every try, so a retry
 *   after a dropped connection gets the agent the first try provisioned instead of a second one
 *   (the server answers a replay with the first result, and 409 CLAIM_IN_PROGRESS while the first
 *   try still runs, which is retried too);
 * - POOL_EMPTY, QUEUE_FULL and RATE_LIMITED wait what the server's Retry-After says (its estimate from the
 *   pool's boot times), other retryable answers back off exponentially with jitter;
 * - no try starts after the caller's deadline: when the next wait would end past it, the last
 *   error is thrown (with its `retryAfterSeconds`). A try in flight is never cut short by the
 *   deadline: abandoning a claim mid-provision would leave an agent that nobody holds.
 * Admin calls do not retry: a drain or an add repeated after a lost answer would act twice.
 */
import { randomUUID } from "node:crypto";
import type {
  Agents,
  ClaimInput,
  PoolChanged,
  PoolDeleted,
  Pools,
  PoolSettingsInput,
  PoolUpgradeInput,
  PoolWithCounts,
  Protected,
  ReleaseResult,
  UpgradeJob,
  UpgradeJobs,
  Versions,
  ClaimResult,
  Counts,
  DrainResult,
  InstanceDetail,
  Killed,
  ReplenishResult,
  RolloutAction,
  RolloutState,
  Status,
  Summary,
  TickResult,
  Version,
} from "./contract.ts";
import { PoolApiError, PoolUnreachableError, type ApiErrorCode } from "./errors.ts";

export interface PoolClientOptions {
  /** Base URL of the pool manager, e.g. http://127.0.0.1:3001. */
  url: string;
  /** The API key (POOL_API_KEY); only /healthz, /readyz, /version and the counts answer without it. */
  apiKey?: string | null | undefined;
  /** Timeout of one HTTP request. Default 120 s: a claim provisions for up to PROVISION_TIMEOUT_MS (75 s). */
  requestTimeoutMs?: number;
  /** Defaults to the global fetch. */
  fetch?: typeof globalThis.fetch;
  /** Idempotency keys of claims (tests make them readable). Default `claim-<uuid>`. */
  newIdempotencyKey?: () => string;
  /** Monotonic milliseconds for deadlines. Default performance.now. */
  now?: () => number;
  /** [0,1) source for backoff jitter. Default Math.random. */
  random?: () => number;
  /** Waits between tries. Default: a timer, cut short by the claim's signal. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface ClaimOptions {
  /** No try starts later than this many ms after the call. Default 60 s; 0 → one try only. */
  deadlineMs?: number;
  /** The logical claim's key; default: a new one per call. Pass your own to survive a restart of the caller. */
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Told before each wait (for logs and progress output). */
  onRetry?: (info: { attempt: number; delayMs: number; error: PoolApiError | PoolUnreachableError; idempotencyKey: string }) => void;
}

/** Answers worth another try of the same claim; anything else is final. */
const RETRYABLE: ReadonlySet<ApiErrorCode> = new Set([
  "POOL_EMPTY",
  "QUEUE_FULL",
  "RATE_LIMITED",
  "CLAIM_IN_PROGRESS",
  "NOT_READY",
  "HTTP_502",
  "HTTP_503",
  "HTTP_504",
]);
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 5_000;

export class PoolClient {
  readonly url: string;
  readonly #key: string | null;
  readonly #timeoutMs: number;
  readonly #fetch: typeof globalThis.fetch;
  readonly #newKey: () => string;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;

  constructor(o: PoolClientOptions) {
    this.url = o.url.replace(/\/+$/, "");
    this.#key = o.apiKey ?? null;
    this.#timeoutMs = o.requestTimeoutMs ?? 120_000;
    this.#fetch = o.fetch ?? globalThis.fetch;
    this.#newKey = o.newIdempotencyKey ?? (() => `claim-${randomUUID()}`);
    this.#now = o.now ?? (() => performance.now());
    this.#random = o.random ?? Math.random;
    this.#sleep = o.sleep ?? sleep;
  }

  /** Claims an instance: a new conversation, or a join of `joinUrl`. Retries as the header says. */
  async claim(input: ClaimInput = {}, o: ClaimOptions = {}): Promise<ClaimResult> {
    const idempotencyKey = o.idempotencyKey ?? this.#newKey();
    const deadline = this.#now() + (o.deadlineMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#request<ClaimResult>("POST", "/api/pool/claim", input, { "idempotency-key": idempotencyKey }, o.signal);
      } catch (err) {
        if (!(err instanceof PoolUnreachableError) && !(err instanceof PoolApiError && RETRYABLE.has(err.code))) throw err;
        if (o.signal?.aborted) throw err;
        const delayMs = this.#delay(err, attempt);
        if (this.#now() + delayMs > deadline) throw err;
        o.onRetry?.({ attempt, delayMs, error: err, idempotencyKey });
        await this.#sleep(delayMs, o.signal);
      }
    }
  }

  /** Retry-After when the server sent one (plus up to 10 % so clients told alike do not return alike), else backoff. */
  #delay(err: PoolApiError | PoolUnreachableError, attempt: number): number {
    if (err instanceof PoolApiError && err.retryAfterSeconds !== undefined) {
      return Math.round(err.retryAfterSeconds * 1000 * (1 + 0.1 * this.#random()));
    }
    const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
    return Math.round(exp * (0.5 + 0.5 * this.#random()));
  }

  /** Counts, min idle, max total and every live instance. */
  status(): Promise<Status> {
    return this.#request("GET", "/api/pool/status");
  }
  /** Instances per status (public: no key needed). */
  counts(): Promise<Counts> {
    return this.#request("GET", "/api/pool/counts");
  }
  /** Counts with the pool's min idle and max total. */
  summary(): Promise<Summary> {
    return this.#request("GET", "/api/pool/summary");
  }
  /** Crashed, pending and claimed agents, crashed first. */
  agents(): Promise<Agents> {
    return this.#request("GET", "/api/pool/agents");
  }
  /** One instance and its recent events. */
  instance(id: string): Promise<InstanceDetail> {
    return this.#request("GET", `/api/pool/instances/${encodeURIComponent(id)}`);
  }
  /** With a count: create up to that many instances now (within max total). Without: a reconcile pass. */
  replenish(count?: number): Promise<ReplenishResult> {
    return this.#request("POST", "/api/pool/replenish", count === undefined ? {} : { count });
  }
  /** Create up to `count` instances now (within max total). */
  add(count: number): Promise<ReplenishResult> {
    return this.replenish(count);
  }
  /** Delete up to `count` idle instances. */
  drain(count = 1): Promise<DrainResult> {
    return this.#request("POST", "/api/pool/drain", { count });
  }
  /** Run a reconcile pass now. */
  reconcile(): Promise<TickResult> {
    return this.#request("POST", "/api/pool/reconcile");
  }
  /** Kill an instance (provider delete; the row stays, dead, in the event log). */
  kill(id: string): Promise<Killed> {
    return this.#request("DELETE", `/api/pool/instances/${encodeURIComponent(id)}`);
  }
  /** Dismiss a crashed agent. */
  dismiss(id: string): Promise<Killed> {
    return this.#request("DELETE", `/api/pool/crashed/${encodeURIComponent(id)}`);
  }
  /** The server's version (public). */
  version(): Promise<Version> {
    return this.#request("GET", "/version");
  }
  /** A pool's current rollout (progress, outcome) and its recent history. */
  rollout(pool: string): Promise<RolloutState> {
    return this.#request("GET", `/api/pools/${encodeURIComponent(pool)}/rollout`);
  }
  /** Pause a pool's running rollout (409 INVALID_TRANSITION when none runs). */
  pauseRollout(pool: string): Promise<RolloutAction> {
    return this.#request("POST", `/api/pools/${encodeURIComponent(pool)}/rollout/pause`);
  }
  /** Resume a pool's paused rollout, or retry a halted one (409 when there is nothing to resume). */
  resumeRollout(pool: string): Promise<RolloutAction> {
    return this.#request("POST", `/api/pools/${encodeURIComponent(pool)}/rollout/resume`);
  }
  /** Go back to a pool's previous template: a rollout of it starts. */
  rollBack(pool: string): Promise<PoolWithCounts> {
    return this.#request("POST", `/api/pools/${encodeURIComponent(pool)}/rollback`);
  }

  // ---- pools, protection, release, upgrades and versions (issue 11) ----

  /** Every pool with its settings (secret-looking env values masked) and counts. */
  pools(): Promise<Pools> {
    return this.#request("GET", "/api/pools");
  }
  /** One pool with its settings and counts. */
  pool(id: string): Promise<PoolWithCounts> {
    return this.#request("GET", `/api/pools/${encodeURIComponent(id)}`);
  }
  /** Creates a pool (its instances are made by the next pass). */
  createPool(settings: PoolSettingsInput & { id: string }): Promise<PoolWithCounts> {
    return this.#request("POST", "/api/pools", settings);
  }
  /** Changes some of a pool's settings; `templateChanged` says whether what instances run changed. */
  updatePool(id: string, patch: Omit<PoolSettingsInput, "id">): Promise<PoolChanged> {
    return this.#request("PATCH", `/api/pools/${encodeURIComponent(id)}`, patch);
  }
  /** Deletes a pool that holds no instance (409 POOL_NOT_EMPTY otherwise). */
  deletePool(id: string): Promise<PoolDeleted> {
    return this.#request("DELETE", `/api/pools/${encodeURIComponent(id)}`);
  }
  /** Protects an instance (bulk operations and claims leave it alone), or not. */
  protect(id: string, value = true): Promise<Protected> {
    return this.#request("POST", `/api/pool/instances/${encodeURIComponent(id)}/protect`, { protected: value });
  }
  /** Factory-resets an agent: back to idle when its runtime comes back clean, else retired. */
  release(id: string): Promise<ReleaseResult> {
    return this.#request("POST", `/api/pool/instances/${encodeURIComponent(id)}/release`);
  }
  /** Upgrades one agent to its pool's current template: the job (read its progress with upgradeJob). */
  async upgrade(id: string): Promise<UpgradeJob> {
    return (await this.#request<{ job: UpgradeJob }>("POST", `/api/pool/instances/${encodeURIComponent(id)}/upgrade`)).job;
  }
  /** Upgrades agents of a pool (`{ids}` or `{all: true}`): the job. */
  async upgradePool(poolId: string, which: PoolUpgradeInput): Promise<UpgradeJob> {
    return (await this.#request<{ job: UpgradeJob }>("POST", `/api/pools/${encodeURIComponent(poolId)}/upgrade`, which)).job;
  }
  /** An upgrade job with its progress. */
  async upgradeJob(jobId: string): Promise<UpgradeJob> {
    return (await this.#request<{ job: UpgradeJob }>("GET", `/api/upgrades/${encodeURIComponent(jobId)}`)).job;
  }
  /** A pool's latest upgrade jobs, newest first. */
  upgradeJobs(poolId: string, limit = 10): Promise<UpgradeJobs> {
    return this.#request("GET", `/api/pools/${encodeURIComponent(poolId)}/upgrades?limit=${limit}`);
  }
  /**
   * Polls an upgrade job until it is done, telling `onProgress` whenever its counts change. Reads
   * only (a lost answer is simply read again), so it retries a dropped connection.
   */
  async waitForUpgrade(
    jobId: string,
    o: { pollMs?: number; timeoutMs?: number; signal?: AbortSignal; onProgress?: (job: UpgradeJob) => void } = {},
  ): Promise<UpgradeJob> {
    const deadline = this.#now() + (o.timeoutMs ?? 30 * 60_000);
    let last = "";
    for (;;) {
      let job: UpgradeJob | null = null;
      try {
        job = await this.upgradeJob(jobId);
      } catch (err) {
        if (!(err instanceof PoolUnreachableError) || this.#now() > deadline) throw err;
      }
      if (job) {
        const key = `${job.state}:${job.done}:${job.failed}:${job.skipped}:${job.remaining}`;
        if (key !== last) o.onProgress?.(job);
        last = key;
        if (job.state === "done") return job;
      }
      if (this.#now() > deadline) throw new PoolApiError({ message: `upgrade job ${jobId} still running after the wait`, code: "TIMEOUT", status: 0 });
      await this.#sleep(o.pollMs ?? 1_000, o.signal);
    }
  }
  /** A pool's live instances by template (current or not), runtime type, version and status. */
  versions(poolId: string): Promise<Versions> {
    return this.#request("GET", `/api/pools/${encodeURIComponent(poolId)}/versions`);
  }

  async #request<T>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json", ...extra };
    if (this.#key) headers.authorization = `Bearer ${this.#key}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(`${this.url}${path}`, {
        method,
        headers,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      text = await res.text();
    } catch (err) {
      // The caller's own abort is theirs to handle; everything else is "no answer".
      if (signal?.aborted) throw signal.reason;
      throw new PoolUnreachableError(this.url, err);
    }
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      // Not JSON: a proxy's error page, described below by its status.
    }
    if (res.ok) return json as T;
    throw apiError(res, json);
  }
}

function apiError(res: Response, json: unknown): PoolApiError {
  const retryAfterSeconds = parseRetryAfter(res.headers.get("retry-after"));
  const body = json !== null && typeof json === "object" ? (json as Record<string, unknown>) : {};
  if (typeof body.error === "string" && typeof body.code === "string") {
    const { error, code, ...details } = body;
    return new PoolApiError({ message: error, code, status: res.status, details, retryAfterSeconds });
  }
  // Not one of our answers (a proxy in front of the server, or a server that is shutting down).
  return new PoolApiError({
    message: `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`,
    code: `HTTP_${res.status}`,
    status: res.status,
    retryAfterSeconds,
  });
}

/** Retry-After as seconds: a number of seconds or an HTTP date. */
export function parseRetryAfter(v: string | null, now = Date.now()): number | undefined {
  if (v === null || v.trim() === "") return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  // An HTTP date names its day and month; Date.parse alone would take "-1" for a year.
  if (!/[A-Za-z]{3}/.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
