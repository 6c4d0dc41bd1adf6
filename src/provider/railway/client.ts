/**
 * GraphQL transport for Railway's public API: auth headers, per-call timeouts, request pacing,
 * 429/Retry-After handling, rate-limit header tracking and failure classification.
 *
 * Why this much: the earlier system spent 82% of the hourly budget on polling, lost 40 of 90
 * renames to 429s and retried in lock-step after 429s (seed §5.4, #246). Every request here goes
 * through one pacer (even spacing below the per-second limit, one global pause after a 429), and
 * every failure ends up in exactly one class of `FailureKind`, logged with the operation name
 * (never the token) and counted per operation.
 */
import { Agent, request } from "undici";
import { systemClock, type Clock } from "../../clock.ts";
import { PoolError } from "../../errors.ts";

/** How a call failed. `ok` is only used in stats. */
export type FailureKind =
  | "timeout" // no answer within requestTimeoutMs
  | "network" // connection refused/reset, DNS, TLS
  | "http_5xx" // 5xx (or another unexpected HTTP status) with a JSON or empty body
  | "non_json" // a body that is not JSON: an HTML error page from the edge (Cloudflare), a proxy
  | "graphql_error" // HTTP 200 + `errors` that fit no other class ("Problem processing request")
  | "auth" // 401/403, or "Not Authorized" / "Project Token not found" in `errors`
  | "rate_limited" // 429, or the throttle messages Railway sends as GraphQL errors
  | "validation"; // 400 (parse/validation), or a validation code/message in `errors`

export const FAILURE_KINDS: readonly FailureKind[] = ["timeout", "network", "http_5xx", "non_json", "graphql_error", "auth", "rate_limited", "validation"];

export interface RailwayLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export const noopLogger: RailwayLogger = { info() {}, warn() {}, error() {}, debug() {} };

export interface GraphQLErrorShape {
  message: string;
  path?: ReadonlyArray<string | number>;
  extensions?: { code?: string; [k: string]: unknown };
}

/** A Railway call that failed; a `PoolError` with code PROVIDER_ERROR so the HTTP layer maps it. */
export class RailwayApiError extends PoolError {
  constructor(
    readonly operation: string,
    readonly failure: FailureKind,
    message: string,
    readonly httpStatus: number | null = null,
    readonly graphqlErrors: GraphQLErrorShape[] = [],
    readonly data: unknown = null,
    options?: { cause?: unknown },
  ) {
    super("PROVIDER_ERROR", `railway ${operation}: ${failure}: ${message}`, { operation, failure, httpStatus }, options);
    this.name = "RailwayApiError";
  }
}

export function isRailwayApiError(err: unknown): err is RailwayApiError {
  return err instanceof RailwayApiError;
}

/** The last rate-limit headers seen (any response, including errors). */
export interface RateLimitState {
  /** `X-RateLimit-Limit`: requests allowed in the current window. */
  limit: number | null;
  /** `X-RateLimit-Remaining`. */
  remaining: number | null;
  /** `X-RateLimit-Reset`, parsed (epoch s, epoch ms, delta seconds or an ISO date). */
  resetAt: Date | null;
  /** When these were read. */
  observedAt: Date | null;
  /** 429s seen since start. */
  throttled: number;
}

export interface TransportRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
  timeoutMs: number;
}

export interface TransportResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One HTTP POST. Throws `TransportError` (or anything: classed `network`) when no response came.
 * Injectable for tests; the default uses undici's `request()` with a keep-alive `Agent`.
 */
export type Transport = (req: TransportRequest) => Promise<TransportResponse>;

export class TransportError extends Error {
  constructor(
    readonly kind: "timeout" | "network",
    message: string,
    /** True when the request certainly did not reach the server (connection refused): safe to resend a write. */
    readonly notSent = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "TransportError";
  }
}

export function undiciTransport(agent: Agent): Transport {
  return async (req) => {
    try {
      const res = await request(req.url, {
        method: "POST",
        headers: req.headers,
        body: req.body,
        dispatcher: agent,
        signal: AbortSignal.timeout(req.timeoutMs),
        headersTimeout: req.timeoutMs,
        bodyTimeout: req.timeoutMs,
      });
      const body = await res.body.text();
      return { status: res.statusCode, headers: res.headers as Record<string, string | string[] | undefined>, body };
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string } };
      const code = e.code ?? e.cause?.code ?? "";
      if (
        e.name === "TimeoutError" ||
        e.name === "AbortError" ||
        code === "UND_ERR_HEADERS_TIMEOUT" ||
        code === "UND_ERR_BODY_TIMEOUT" ||
        code === "UND_ERR_CONNECT_TIMEOUT"
      ) {
        throw new TransportError("timeout", `no answer within ${req.timeoutMs} ms`, false, { cause: err });
      }
      throw new TransportError("network", `${code || e.name || "error"}: ${e.message ?? ""}`.slice(0, 300), code === "ECONNREFUSED", { cause: err });
    }
  };
}

export interface GraphQLClientOptions {
  apiUrl: string;
  /** Account/workspace token: `Authorization: Bearer`. */
  apiToken?: string | undefined;
  /** Project token: `Project-Access-Token` (no Bearer). */
  projectToken?: string | undefined;
  requestTimeoutMs?: number | undefined;
  /** Railway's per-second limit; requests are spaced to `paceFraction` of it. */
  maxRequestsPerSecond?: number | undefined;
  /** Fraction of `maxRequestsPerSecond` actually used (default 0.8). */
  paceFraction?: number | undefined;
  /** Retries after a 429 / throttle message (default 3). */
  maxRetries?: number | undefined;
  /** Longest wait the client accepts for a retry or a rate-limit pause; longer → fail now (default 60 s). */
  maxRetryWaitMs?: number | undefined;
  logger?: RailwayLogger | undefined;
  clock?: Clock | undefined;
  sleep?: ((ms: number) => Promise<void>) | undefined;
  /** [0,1) source for jitter (tests make it deterministic). */
  random?: (() => number) | undefined;
  transport?: Transport | undefined;
  userAgent?: string | undefined;
}

export interface CallOptions {
  /** Name used in logs and stats (`list`, `serviceCreate`, …). */
  operation: string;
  /** Safe to resend after a timeout/5xx (reads). Writes are resent only when certainly not executed (429, refused). */
  idempotent: boolean;
  /** Return `{data, errors}` when both are present instead of throwing (the listing marks itself incomplete). */
  allowPartial?: boolean;
  /** Retry GraphQL throttle messages here (default true); projectCreate handles its own. */
  retryThrottle?: boolean;
  timeoutMs?: number;
}

export interface GraphQLResult<T> {
  data: T;
  errors: GraphQLErrorShape[];
}

const THROTTLE_RE = /rate.?limit|too many requests|only one project can be created|too quickly|being ratelimited/i;
const AUTH_RE = /not authori[sz]ed|unauthori[sz]ed|project token not found|two factor authentication required|invalid (api )?token/i;
const VALIDATION_CODES = new Set(["GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED", "BAD_USER_INPUT"]);
const VALIDATION_RE =
  /^(Cannot query field|Unknown argument|Unknown type|Syntax Error|Variable "\$|Field "[^"]*" argument|Argument "[^"]*"|Expected type|Field "[^"]*" of type|Field "[^"]*" must not have a selection)/;

/** Classifies GraphQL errors of an HTTP 200 answer; the most actionable class wins. */
export function classifyGraphQLErrors(errors: readonly GraphQLErrorShape[]): FailureKind {
  let kind: FailureKind = "graphql_error";
  const rank: Record<string, number> = { graphql_error: 0, validation: 1, auth: 2, rate_limited: 3 };
  for (const e of errors) {
    const msg = String(e?.message ?? "");
    const code = e?.extensions?.code;
    let k: FailureKind = "graphql_error";
    if (THROTTLE_RE.test(msg)) k = "rate_limited";
    else if (AUTH_RE.test(msg)) k = "auth";
    else if ((code && VALIDATION_CODES.has(code)) || VALIDATION_RE.test(msg)) k = "validation";
    if ((rank[k] ?? 0) > (rank[kind] ?? 0)) kind = k;
  }
  return kind;
}

/** `Retry-After` as ms: integer seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | null {
  if (!value) return null;
  const s = value.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : Math.max(0, t - nowMs);
}

/** `X-RateLimit-Reset`: its format is not documented, so accept epoch s/ms, delta seconds or a date. */
export function parseReset(value: string | undefined, nowMs: number): Date | null {
  if (!value) return null;
  const s = value.trim();
  if (/^\d+(\.\d+)?$/.test(s)) {
    const n = Number(s);
    if (n > 1e12) return new Date(n);
    if (n > 1e9) return new Date(n * 1000);
    return new Date(nowMs + n * 1000);
  }
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : new Date(t);
}

function header(headers: TransportResponse["headers"], name: string): string | undefined {
  const v = headers[name] ?? headers[name.toLowerCase()];
  if (Array.isArray(v)) return v[0];
  return v;
}

function num(v: string | undefined): number | null {
  if (v === undefined || v.trim() === "") return null;
  const n = Number(v.trim().split(/[,;]/)[0]);
  return Number.isFinite(n) ? n : null;
}

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export class GraphQLClient {
  readonly #url: string;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #intervalMs: number;
  readonly #maxRetries: number;
  readonly #maxWaitMs: number;
  readonly #log: RailwayLogger;
  readonly #clock: Clock;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #random: () => number;
  readonly #transport: Transport;
  readonly #agent: Agent | null;
  /** Earliest time the next request may be sent (even spacing + 429 pauses). */
  #nextSlot = 0;
  #closed = false;
  readonly #stats: Record<string, Record<string, number>> = {};
  readonly #rate: RateLimitState = { limit: null, remaining: null, resetAt: null, observedAt: null, throttled: 0 };
  /** Requests actually sent (tests and the budget metric). */
  requestsSent = 0;

  constructor(opts: GraphQLClientOptions) {
    if (!opts.apiToken && !opts.projectToken) throw new PoolError("CONFIG_INVALID", "railway: apiToken or projectToken is required");
    this.#url = opts.apiUrl;
    this.#headers = { "content-type": "application/json", accept: "application/json", "user-agent": opts.userAgent ?? "agent-pool" };
    // Exactly one kind of token per request, as the CLI does: a project token never with a Bearer.
    if (opts.projectToken) this.#headers["project-access-token"] = opts.projectToken;
    else this.#headers.authorization = `Bearer ${opts.apiToken}`;
    this.#timeoutMs = opts.requestTimeoutMs ?? 20_000;
    const rps = Math.max(0.1, opts.maxRequestsPerSecond ?? 50);
    this.#intervalMs = 1000 / (rps * (opts.paceFraction ?? 0.8));
    this.#maxRetries = opts.maxRetries ?? 3;
    this.#maxWaitMs = opts.maxRetryWaitMs ?? 60_000;
    this.#log = opts.logger ?? noopLogger;
    this.#clock = opts.clock ?? systemClock;
    this.#sleep = opts.sleep ?? realSleep;
    this.#random = opts.random ?? Math.random;
    if (opts.transport) {
      this.#transport = opts.transport;
      this.#agent = null;
    } else {
      this.#agent = new Agent({ keepAliveTimeout: 10_000, connections: 16 });
      this.#transport = undiciTransport(this.#agent);
    }
  }

  get stats(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [op, m] of Object.entries(this.#stats)) out[op] = { ...m };
    return out;
  }

  get rateLimit(): RateLimitState {
    return { ...this.#rate };
  }

  /** Counts one outcome of an operation (also used by the provider for its own outcomes). */
  count(operation: string, outcome: string): void {
    this.#stats[operation] ??= {};
    const m = this.#stats[operation];
    m[outcome] = (m[outcome] ?? 0) + 1;
  }

  #now(): number {
    return this.#clock.now().getTime();
  }

  /** Waits for this request's slot. Fails fast instead of waiting out a long rate-limit pause. */
  async #acquire(operation: string): Promise<void> {
    const now = this.#now();
    const slot = Math.max(now, this.#nextSlot);
    if (slot - now > this.#maxWaitMs) {
      throw new RailwayApiError(operation, "rate_limited", `paused by an earlier 429 for ${Math.ceil((slot - now) / 1000)} s more`);
    }
    this.#nextSlot = slot + this.#intervalMs;
    if (slot > now) await this.#sleep(slot - now);
  }

  /** Holds every request until `untilMs`: one global pause, so concurrent callers do not retry in lock-step (#246). */
  #pause(untilMs: number): void {
    this.#nextSlot = Math.max(this.#nextSlot, untilMs);
  }

  #jitter(baseMs: number): number {
    return Math.round(baseMs * 0.2 * this.#random() + 250 * this.#random());
  }

  #track(headers: TransportResponse["headers"], status: number): void {
    const now = this.#now();
    const limit = num(header(headers, "x-ratelimit-limit") ?? header(headers, "ratelimit-limit"));
    const remaining = num(header(headers, "x-ratelimit-remaining") ?? header(headers, "ratelimit-remaining"));
    const reset = parseReset(header(headers, "x-ratelimit-reset") ?? header(headers, "ratelimit-reset"), now);
    if (limit !== null) this.#rate.limit = limit;
    if (remaining !== null) this.#rate.remaining = remaining;
    if (reset !== null) this.#rate.resetAt = reset;
    if (limit !== null || remaining !== null || reset !== null) this.#rate.observedAt = new Date(now);
    if (status === 429) this.#rate.throttled++;
  }

  /**
   * Sends one GraphQL document. Returns `{data, errors}` on success (errors only with
   * `allowPartial`); throws `RailwayApiError` otherwise. Never returns without data.
   */
  async call<T>(query: string, variables: Record<string, unknown>, opts: CallOptions): Promise<GraphQLResult<T>> {
    const { operation } = opts;
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    const body = JSON.stringify({ query, variables });
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new RailwayApiError(operation, "network", "client is closed");
      try {
        await this.#acquire(operation);
      } catch (err) {
        this.count(operation, "rate_limited");
        throw err;
      }
      const started = this.#now();
      let res: TransportResponse;
      try {
        this.requestsSent++;
        res = await this.#transport({ url: this.#url, headers: this.#headers, body, timeoutMs });
      } catch (err) {
        const kind: FailureKind = err instanceof TransportError ? err.kind : (err as Error)?.name === "TimeoutError" ? "timeout" : "network";
        const notSent = err instanceof TransportError && err.notSent;
        const failure = new RailwayApiError(operation, kind, (err as Error)?.message ?? String(err), null, [], null, { cause: err });
        if ((opts.idempotent || notSent) && attempt < Math.min(1, this.#maxRetries)) {
          this.#record(failure, attempt, true);
          await this.#sleep(500 + this.#jitter(500));
          continue;
        }
        this.#record(failure, attempt, false);
        throw failure;
      }
      this.#track(res.headers, res.status);
      let outcome = this.#interpret<T>(operation, res);
      if (!(outcome instanceof RailwayApiError) && outcome.errors.length > 0 && !opts.allowPartial) {
        const errs = outcome.errors;
        outcome = new RailwayApiError(operation, classifyGraphQLErrors(errs), errs[0]?.message ?? "errors", res.status, errs, outcome.data);
      }
      if (!(outcome instanceof RailwayApiError)) {
        if (outcome.errors.length > 0 && opts.allowPartial) {
          this.count(operation, "partial");
          this.#log.warn(
            { operation, failure: classifyGraphQLErrors(outcome.errors), errors: outcome.errors.slice(0, 5).map(brief) },
            "railway: partial answer",
          );
        } else {
          this.count(operation, "ok");
          this.#log.debug({ operation, ms: this.#now() - started, status: res.status }, "railway: ok");
        }
        return outcome;
      }
      const failure = outcome;
      if (failure.failure === "rate_limited" && (res.status === 429 || opts.retryThrottle !== false) && attempt < this.#maxRetries) {
        const retryAfter = parseRetryAfter(header(res.headers, "retry-after"), this.#now());
        const base = retryAfter ?? 5_000 * 2 ** attempt;
        const wait = base + this.#jitter(base);
        if (wait <= this.#maxWaitMs) {
          this.#record(failure, attempt, true, wait);
          this.#pause(this.#now() + wait);
          continue;
        }
        this.#pause(this.#now() + wait);
      } else if (opts.idempotent && (failure.failure === "http_5xx" || failure.failure === "non_json") && attempt < Math.min(1, this.#maxRetries)) {
        this.#record(failure, attempt, true);
        await this.#sleep(1_000 + this.#jitter(1_000));
        continue;
      }
      this.#record(failure, attempt, false);
      throw failure;
    }
  }

  #record(failure: RailwayApiError, attempt: number, retrying: boolean, waitMs?: number): void {
    this.count(failure.operation, failure.failure);
    const fields = {
      operation: failure.operation,
      failure: failure.failure,
      httpStatus: failure.httpStatus,
      attempt,
      retrying,
      ...(waitMs !== undefined ? { waitMs } : {}),
      errors: failure.graphqlErrors.slice(0, 3).map(brief),
      detail: failure.message.slice(0, 300),
    };
    if (retrying) this.#log.warn(fields, "railway: call failed, retrying");
    else this.#log.error(fields, "railway: call failed");
  }

  #interpret<T>(operation: string, res: TransportResponse): GraphQLResult<T> | RailwayApiError {
    const { status } = res;
    if (status === 429) return new RailwayApiError(operation, "rate_limited", "HTTP 429", status);
    type Body = { data?: unknown; errors?: GraphQLErrorShape[] };
    let json: Body | null = null;
    try {
      const parsed: unknown = res.body.length > 0 ? JSON.parse(res.body) : null;
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) json = parsed as Body;
    } catch {
      json = null;
    }
    const errors = Array.isArray(json?.errors) ? json.errors : [];
    const first = errors[0]?.message ?? "";
    if (status === 401) return new RailwayApiError(operation, "auth", `HTTP 401 ${first}`.trim(), status, errors);
    if (json === null && res.body.trim().length > 0) {
      // An edge (Cloudflare "Access denied") or proxy page: never a listing (seed §8).
      return new RailwayApiError(operation, "non_json", `HTTP ${status} with a non-JSON body (${res.body.trim().slice(0, 60).replace(/\s+/g, " ")}…)`, status);
    }
    if (status === 403) return new RailwayApiError(operation, "auth", `HTTP 403 ${first}`.trim(), status, errors);
    if (status === 400) return new RailwayApiError(operation, "validation", `HTTP 400 ${first}`.trim(), status, errors);
    if (status >= 500) return new RailwayApiError(operation, "http_5xx", `HTTP ${status} ${first}`.trim(), status, errors);
    if (status < 200 || status >= 300)
      return new RailwayApiError(operation, status >= 400 ? "validation" : "http_5xx", `unexpected HTTP ${status}`, status, errors);
    if (json === null) return new RailwayApiError(operation, "non_json", `HTTP ${status} with an empty body`, status);
    const data = json.data ?? null;
    if (errors.length > 0) {
      const kind = classifyGraphQLErrors(errors);
      if (data === null) return new RailwayApiError(operation, kind, first || "errors without data", status, errors, null);
      // Data and errors: the caller decides (allowPartial), otherwise it is a failure.
      return { data: data as T, errors };
    }
    if (data === null) return new RailwayApiError(operation, "graphql_error", "no data and no errors", status);
    return { data: data as T, errors: [] };
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#agent) await this.#agent.close().catch(() => {});
  }
}

function brief(e: GraphQLErrorShape): { message: string; path?: string; code?: string } {
  const out: { message: string; path?: string; code?: string } = { message: String(e?.message ?? "").slice(0, 200) };
  if (Array.isArray(e?.path)) out.path = e.path.join(".");
  if (e?.extensions?.code) out.code = String(e.extensions.code);
  return out;
}
