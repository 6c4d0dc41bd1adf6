/**
 * Railway stand-in: a local GraphQL server that behaves like `https://backboard.railway.com/graphql/v2`
 * closely enough to hold a Railway provider to Railway's REAL schema and habits.
 *
 * - Every operation is parsed and validated against Railway's introspection schema (loaded at runtime
 *   from RAILWAY_SCHEMA_PATH or `<repo>/../shared/railway/schema.json`; nothing of it lives in the repo),
 *   then executed with graphql-js against that same schema. Parse/validation/variable errors are HTTP 400
 *   (Apollo codes), execution and auth errors HTTP 200 + `errors` (Railway's documented convention).
 * - Auth (`Authorization: Bearer` account/workspace token, `Project-Access-Token` project token), per-token
 *   hourly + per-second rate limits with `X-RateLimit-*` headers, the projectCreate throttle, the
 *   services-per-project cap, and fault injection for everything a client must survive.
 * - Deployments run real processes through the project's LocalProvider (the reference runtime by default).
 *
 * Domains → runtime processes: every service domain is a real TCP listener on 127.0.0.1 (a small proxy)
 * and is reported as the domain `127.0.0.1:<port>`, so with instance URL scheme `http` the pool reaches
 * `http://<domain>`. Why a proxy and not the runtime's own port: like a Railway hostname, the domain must
 * exist before the first deploy and survive redeploys (each deployment is a new process on a new port).
 * The proxy forwards to the service instance's current SUCCESS deployment, and answers like Railway's
 * edge when nothing runs there (502 "Application failed to respond"). A deleted service's domain stops
 * listening. With `runtimes: false` domains are fake `<name>-<rand>.up.railway.app` hostnames.
 *
 * Lifecycle: QUEUED → BUILDING → DEPLOYING every `stepMs`; at DEPLOYING the runtime starts with the
 * deployment's variables as env; SUCCESS once its port accepts (and `healthcheckPath` answers 200 when
 * set); FAILED if it exits or times out while deploying; CRASHED if it exits after SUCCESS. All
 * deployments of a service share the runtime's INSTANCE_ID, so a new deployment stops the previous
 * process before it starts its own (no overlap, unlike Railway's default). No restart policy is modelled.
 */
import { randomBytes, randomUUID, createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  GraphQLError,
  Kind,
  buildClientSchema,
  execute,
  isNonNullType,
  parse,
  validate,
  type DocumentNode,
  type GraphQLFieldResolver,
  type GraphQLSchema,
  type IntrospectionQuery,
  type OperationDefinitionNode,
  type SelectionSetNode,
} from "graphql";
import { LocalProvider, type LocalProviderLogger, type LocalStateFile } from "../../src/provider/local.ts";

// ---- public types --------------------------------------------------------------------------------

export const DEPLOYMENT_STATUSES = [
  "BUILDING",
  "CRASHED",
  "DEPLOYING",
  "FAILED",
  "INITIALIZING",
  "NEEDS_APPROVAL",
  "QUEUED",
  "REMOVED",
  "REMOVING",
  "SKIPPED",
  "SLEEPING",
  "SUCCESS",
  "WAITING",
] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATUSES)[number];

export type FaultKind = "html5xx" | "429burst" | "outage" | "graphqlError" | "throttleMessage";

export interface FaultOptions {
  /** html5xx: 502 (default) or 503 etc. */
  status?: number;
  /** 429burst: Retry-After seconds (default 1). */
  retryAfterSec?: number;
  /** outage: lasts this long instead of `n` requests. */
  durationMs?: number;
  /** outage: drop the connection without a response (default) or answer 503 HTML. */
  mode?: "reset" | "503";
  /** graphqlError / throttleMessage: the error message. */
  message?: string;
  /** Only requests whose query text contains this (or matches) are hit; others pass. */
  match?: string | RegExp;
  /** Execute the operation first, then lose the response (a write that happened but looked failed). */
  afterExecute?: boolean;
}

export interface RateLimitOptions {
  /** Requests per hour per token; null disables. Default 10 000 (Pro). */
  perHour?: number | null;
  /** Requests per second per token; null disables. Default 50 (Pro). */
  perSecond?: number | null;
  /** "token" (default): one budget per token; "account": all Bearer tokens share one (xmtplabs' observation). */
  scope?: "token" | "account";
  /** X-RateLimit-Reset format; Railway's is unverified. Default epoch seconds. */
  resetFormat?: "epoch" | "iso";
}

export interface RailwayStandinOptions {
  /** Default: railwaySchemaPath(). */
  schemaPath?: string;
  /** Start real runtime processes for deployments. Default true. */
  runtimes?: boolean;
  /** argv of the runtime; default the reference runtime (src/runtime/main.ts). */
  runtimeCommand?: string[];
  /** Deliver deployment notifications to registered webhook rules (default true). */
  webhooks?: boolean;
  /** Extra env for every runtime, under the service variables (e.g. RUNTIME_BOOT_DELAY_MS). */
  runtimeEnv?: Record<string, string>;
  /** Delay between lifecycle steps. Default 50 ms. */
  stepMs?: number;
  /** false: deployments only move when the test calls advance(). Default true. */
  autoAdvance?: boolean;
  /** A deployment still DEPLOYING after this is FAILED (healthcheckTimeout, when set, wins). Default 60 s. */
  deployTimeoutMs?: number;
  rateLimit?: RateLimitOptions;
  /** Per-token minimum gap between projectCreate calls; 0 disables. Default 30 000. */
  projectCreateIntervalMs?: number;
  /** Per-token minimum gap between volumeCreate calls; 0 (default) disables. */
  volumeCreateIntervalMs?: number;
  /** Default 100 (Railway's cap, per the earlier pool's sharding plan). */
  maxServicesPerProject?: number;
  /** Error message at the cap. Railway's exact wording is not in our sources (UNVERIFIED). */
  serviceLimitMessage?: string;
  /** Railway docs: "Service names have a max length of 32 characters". Default 32. */
  maxServiceNameLength?: number;
  /** Project names: max 32 (earlier pool's notes). Default 32. */
  maxProjectNameLength?: number;
  /** Caps `first`/omitted `first` on connections; Railway's cap is unverified. Default none. */
  maxPageSize?: number | null;
  /** HTTP status for requests with a missing/unknown token; Railway's convention is 200. */
  authFailureStatus?: 200 | 401 | 403;
  /** Owner tag the local provider puts on every runtime (AGENT_POOL_OWNER). */
  ownerTag?: string;
  logger?: LocalProviderLogger;
}

export interface RecordedRequest {
  seq: number;
  /** ms since epoch. */
  at: number;
  /** The operation's name if it has one, else its root fields joined by "+" (xmtplabs sends anonymous operations). */
  op: string;
  operationName: string | null;
  operationType: "query" | "mutation" | "subscription" | null;
  /** Root field names (not aliases) of the executed operation. */
  rootFields: string[];
  query: string;
  variables: unknown;
  /** HTTP status; 0 when the connection was dropped. */
  status: number;
  auth: "bearer" | "project" | "none";
  /** Error messages of the response. */
  errors: string[];
  fault: FaultKind | null;
}

/**
 * One change to the set of services or their names, in the order it happened (what fault runs count
 * "services at the stand-in at any moment" from, and tell who deleted or renamed what).
 */
export interface ServiceLogEntry {
  seq: number;
  /** ms since epoch. */
  at: number;
  kind: "create" | "delete" | "rename";
  serviceId: string;
  projectId: string;
  /** The name after the change (create, rename) or at deletion. */
  name: string;
  /** rename: the name before. */
  previousName?: string;
  /** `tokenId(token)` of the request that made the change. */
  tokenId: string | null;
}

export interface ValidationFailure {
  seq: number;
  query: string;
  variables: unknown;
  status: number;
  errors: string[];
}

export interface DeploymentSnapshot {
  id: string;
  status: DeploymentStatus;
  environmentId: string;
  createdAt: string;
  image: string | null;
  /** Base URL of its runtime process, while one runs. */
  runtimeUrl: string | null;
}

export interface ServiceSnapshot {
  id: string;
  name: string;
  projectId: string;
  createdAt: string;
  /** Per environment id. */
  variables: Record<string, Record<string, string>>;
  image: string | null;
  /** Reported domains (`127.0.0.1:<port>` with runtimes). */
  domains: string[];
  /** Newest first. */
  deployments: DeploymentSnapshot[];
}

export interface RailwayStandin {
  /** `http://127.0.0.1:<port>/graphql/v2` */
  readonly url: string;
  /** Webhook deliveries attempted so far. */
  readonly webhooksSent: number;
  /** Lose every deployment notification from now on. */
  dropWebhooks: boolean;
  /** Workspace token (what a pool is configured with): `Authorization: Bearer <token>`. `me` fails with it, as on Railway. */
  readonly token: string;
  /** Account token: everything, including `me`. */
  readonly accountToken: string;
  readonly workspaceId: string;
  /** AGENT_POOL_OWNER of every runtime this stand-in starts (for findProcesses). */
  readonly ownerTag: string;
  readonly schema: GraphQLSchema;
  readonly requests: RecordedRequest[];
  /** Requests per root field name. */
  readonly counts: Record<string, number>;
  /** Every request answered 400 (parse, validation, variables, bad body). */
  readonly validationFailures: ValidationFailure[];
  /** Every service create, delete and rename, oldest first (not cleared by resetCounters). */
  readonly serviceLog: ServiceLogEntry[];
  /** The id `serviceLog` records for requests made with this token (null for an unknown token). */
  tokenId(token: string): string | null;
  projectToken(projectId: string, environmentId?: string): string;
  createToken(kind: "account" | "workspace", workspaceId?: string): string;
  createWorkspace(name: string): { workspaceId: string; token: string };
  /** Direct state change (no API call, no throttle): a project with a `production` environment (+ extras). */
  createProject(
    name: string,
    opts?: { environments?: string[]; workspaceId?: string },
  ): { projectId: string; environmentId: string; environmentIds: Record<string, string> };
  resetCounters(): void;
  resetRateLimits(): void;
  failNext(n: number, kind: FaultKind, opts?: FaultOptions): void;
  clearFaults(): void;
  /** Kills the runtime of the service's running deployment (real SIGKILL) and waits for CRASHED. */
  crashDeployment(serviceId: string): Promise<void>;
  /** Sets the newest deployment's status and freezes its lifecycle; stopped statuses stop its runtime. */
  setDeploymentStatus(serviceId: string, status: DeploymentStatus): void;
  /** One lifecycle step for every moving deployment (for autoAdvance: false). */
  advance(): void;
  setStepMs(ms: number): void;
  services(projectId: string): ServiceSnapshot[];
  service(serviceId: string): ServiceSnapshot | null;
  /** The runtime base URL of the service's SUCCESS deployment (bypasses domains). */
  runtimeUrl(serviceId: string): string | null;
  close(): Promise<void>;
}

// ---- schema --------------------------------------------------------------------------------------

/** Path of Railway's introspection schema, or null when it is not available (tests must skip visibly). */
export function railwaySchemaPath(): string | null {
  const fromEnv = process.env.RAILWAY_SCHEMA_PATH?.trim();
  if (fromEnv) return existsSync(fromEnv) ? fromEnv : null;
  const fallback = fileURLToPath(new URL("../../../shared/railway/schema.json", import.meta.url));
  return existsSync(fallback) ? fallback : null;
}

const schemaCache = new Map<string, GraphQLSchema>();

export function loadRailwaySchema(path: string): GraphQLSchema {
  let schema = schemaCache.get(path);
  if (!schema) {
    const json = JSON.parse(readFileSync(path, "utf8")) as { data?: IntrospectionQuery } & Partial<IntrospectionQuery>;
    schema = buildClientSchema((json.data ?? json) as IntrospectionQuery);
    schemaCache.set(path, schema);
  }
  return schema;
}

// ---- internal state ------------------------------------------------------------------------------

type Args = Record<string, unknown>;

interface TokenRec {
  token: string;
  id: string;
  kind: "account" | "workspace" | "project";
  workspaceId: string | null;
  projectId: string | null;
  environmentId: string | null;
  createdAt: string;
}

interface Auth {
  kind: "none" | "bad-bearer" | "bad-project" | "account" | "workspace" | "project";
  token: TokenRec | null;
}

interface Ctx {
  auth: Auth;
  rateKey: string;
}

interface WorkspaceRec {
  id: string;
  name: string;
  createdAt: string;
}
interface ProjectRec {
  id: string;
  seq: number;
  name: string;
  description: string | null;
  workspaceId: string;
  createdAt: string;
  updatedAt: string;
  deleted: boolean;
  isPublic: boolean;
  prDeploys: boolean;
}
interface EnvRec {
  id: string;
  seq: number;
  projectId: string;
  name: string;
  createdAt: string;
  updatedAt: string;
  isEphemeral: boolean;
  deleted: boolean;
  sharedVariables: Record<string, string>;
}
interface Source {
  image: string | null;
  repo: string | null;
}
interface InstanceRec {
  id: string;
  serviceId: string;
  environmentId: string;
  createdAt: string;
  updatedAt: string;
  source: Source | null;
  startCommand: string | null;
  healthcheckPath: string | null;
  healthcheckTimeout: number | null;
  numReplicas: number;
  region: string | null;
  restartPolicyType: string;
  restartPolicyMaxRetries: number;
  sleepApplication: boolean;
  rootDirectory: string | null;
  limits: { vCPUs?: number; memoryGB?: number };
  variables: Record<string, string>;
  settings: Record<string, unknown>;
}
interface ServiceRec {
  id: string;
  seq: number;
  projectId: string;
  name: string;
  icon: string | null;
  createdAt: string;
  updatedAt: string;
  deleted: boolean;
  instances: Map<string, InstanceRec>;
}
interface DeploymentRec {
  id: string;
  seq: number;
  serviceId: string;
  environmentId: string;
  projectId: string;
  status: DeploymentStatus;
  createdAt: string;
  updatedAt: string;
  statusUpdatedAt: string;
  image: string | null;
  healthcheckPath: string | null;
  timeoutMs: number;
  env: Record<string, string>;
  frozen: boolean;
  timer: NodeJS.Timeout | null;
  deadline: number;
  /** Local provider instance id while a process exists. */
  localId: string | null;
  runtimeUrl: string | null;
  probing: boolean;
  reason: string | null;
}
interface DomainRec {
  id: string;
  seq: number;
  serviceId: string;
  environmentId: string;
  projectId: string;
  host: string;
  targetPort: number | null;
  createdAt: string;
  updatedAt: string;
  proxy: DomainProxy | null;
}
interface VolumeRec {
  id: string;
  seq: number;
  projectId: string;
  name: string;
  createdAt: string;
  deleted: boolean;
  instances: { id: string; seq: number; serviceId: string | null; environmentId: string; mountPath: string; region: string | null; createdAt: string }[];
}
interface RuleRec {
  id: string;
  workspaceId: string;
  projectId: string | null;
  eventTypes: string[];
  severities: string[];
  channels: { id: string; config: unknown; createdAt: string }[];
  createdAt: string;
}
interface PendingFault {
  kind: FaultKind;
  remaining: number;
  until: number | null;
  opts: FaultOptions;
}

/** Deployment statuses Railway notifies about, and their event names (`Deployment.<name>`). */
const DEPLOY_EVENTS: Partial<Record<DeploymentStatus, string>> = {
  SUCCESS: "deployed",
  CRASHED: "crashed",
  FAILED: "failed",
  SLEEPING: "slept",
  REMOVED: "removed",
};

const IN_PROGRESS = new Set<DeploymentStatus>(["QUEUED", "WAITING", "BUILDING", "DEPLOYING", "INITIALIZING", "NEEDS_APPROVAL"]);
const STOPPED = new Set<DeploymentStatus>(["CRASHED", "FAILED", "REMOVED", "REMOVING", "SKIPPED", "SLEEPING"]);
const MAX_BODY_BYTES = 2 * 1024 * 1024;

function notAuthorized(): GraphQLError {
  return new GraphQLError("Not Authorized");
}
function problem(): GraphQLError {
  return new GraphQLError("Problem processing request");
}
function badInput(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: "BAD_USER_INPUT" } });
}
function traceId(): string {
  return BigInt(`0x${randomBytes(8).toString("hex")}`)
    .toString()
    .slice(0, 19);
}
function rand(n: number): string {
  const abc = "abcdefghijklmnopqrstuvwxyz0123456789";
  let s = "";
  for (const b of randomBytes(n)) s += abc[b % abc.length];
  return s;
}
function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function has(o: Record<string, unknown>, k: string): boolean {
  return Object.hasOwn(o, k);
}
function strOrNull(v: unknown): string | null {
  return v === undefined || v === null ? null : String(v);
}
function slug(name: string): string {
  return (
    name
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 40) || "service"
  );
}

// ---- pagination ----------------------------------------------------------------------------------

interface PageArgs {
  first?: number | null;
  after?: string | null;
  last?: number | null;
  before?: string | null;
}

function encodeCursor(seq: number): string {
  return Buffer.from(`cursor:${seq}`).toString("base64");
}
function decodeCursor(c: string): number {
  const m = /^cursor:(\d+)$/.exec(Buffer.from(c, "base64").toString("utf8"));
  if (!m) throw badInput(`Invalid cursor: ${c}`);
  return Number(m[1]);
}

// ---- rate limiter --------------------------------------------------------------------------------

interface Bucket {
  hourStart: number;
  hourCount: number;
  recent: number[];
}
interface RateDecision {
  ok: boolean;
  retryAfterSec: number;
  headers: Record<string, string>;
}

class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  constructor(readonly opts: Required<RateLimitOptions>) {}

  #bucket(key: string, now: number): Bucket {
    let b = this.#buckets.get(key);
    if (!b || now >= b.hourStart + 3_600_000) {
      b = { hourStart: now, hourCount: 0, recent: b?.recent ?? [] };
      this.#buckets.set(key, b);
    }
    while (b.recent.length > 0 && b.recent[0]! <= now - 1000) b.recent.shift();
    return b;
  }

  take(key: string): RateDecision {
    const now = Date.now();
    const b = this.#bucket(key, now);
    const { perHour, perSecond } = this.opts;
    let retryAfterSec = 0;
    if (perHour !== null && b.hourCount >= perHour) retryAfterSec = Math.max(1, Math.ceil((b.hourStart + 3_600_000 - now) / 1000));
    else if (perSecond !== null && b.recent.length >= perSecond) retryAfterSec = Math.max(1, Math.ceil((b.recent[0]! + 1000 - now) / 1000));
    if (retryAfterSec === 0) {
      b.hourCount++;
      b.recent.push(now);
    }
    return { ok: retryAfterSec === 0, retryAfterSec, headers: this.headers(key) };
  }

  peek(key: string): { remaining: number; resetAt: number } {
    const now = Date.now();
    const b = this.#bucket(key, now);
    const limit = this.opts.perHour ?? 1_000_000_000;
    return { remaining: Math.max(0, limit - b.hourCount), resetAt: b.hourStart + 3_600_000 };
  }

  headers(key: string): Record<string, string> {
    const { remaining, resetAt } = this.peek(key);
    const limit = this.opts.perHour ?? 1_000_000_000;
    const reset = this.opts.resetFormat === "iso" ? new Date(resetAt).toISOString() : String(Math.ceil(resetAt / 1000));
    const policy = [`${limit};w=3600`];
    if (this.opts.perSecond !== null) policy.push(`${this.opts.perSecond};w=1`);
    return {
      "x-ratelimit-limit": String(limit),
      "x-ratelimit-remaining": String(remaining),
      "x-ratelimit-reset": reset,
      "ratelimit-limit": String(limit),
      "ratelimit-remaining": String(remaining),
      "ratelimit-reset": String(Math.max(0, Math.ceil((resetAt - Date.now()) / 1000))),
      "ratelimit-policy": policy.join(", "),
    };
  }

  reset(): void {
    this.#buckets.clear();
  }
}

// ---- domain proxy --------------------------------------------------------------------------------

/** A fixed loopback port standing for a Railway hostname; forwards to the current deployment. */
class DomainProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  port = 0;

  constructor(readonly upstream: () => number | null) {
    this.#server = net.createServer((client) => this.#onConnection(client));
  }

  listen(): Promise<void> {
    return new Promise((ok, fail) => {
      this.#server.once("error", fail);
      this.#server.listen(0, "127.0.0.1", () => {
        const addr = this.#server.address();
        this.port = typeof addr === "object" && addr ? addr.port : 0;
        ok();
      });
    });
  }

  #track(s: net.Socket): void {
    this.#sockets.add(s);
    s.once("close", () => this.#sockets.delete(s));
  }

  #onConnection(client: net.Socket): void {
    this.#track(client);
    client.on("error", () => client.destroy());
    const port = this.upstream();
    if (port === null) {
      // What Railway's edge says when no deployment answers.
      client.once("data", () => {
        const body = JSON.stringify({ status: "error", code: 502, message: "Application failed to respond", request_id: rand(22) });
        client.end(
          `HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
            `connection: close\r\nx-railway-fallback: true\r\n\r\n${body}`,
        );
      });
      return;
    }
    const up = net.connect({ host: "127.0.0.1", port });
    this.#track(up);
    up.on("error", () => {
      up.destroy();
      client.destroy();
    });
    client.on("close", () => up.destroy());
    up.on("close", () => client.destroy());
    client.pipe(up).pipe(client);
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((ok) => this.#server.close(() => ok()));
  }
}

// ---- the stand-in --------------------------------------------------------------------------------

class Standin implements RailwayStandin {
  url = "";
  readonly token: string;
  readonly accountToken: string;
  readonly workspaceId: string;
  readonly ownerTag: string;
  readonly requests: RecordedRequest[] = [];
  readonly counts: Record<string, number> = {};
  readonly validationFailures: ValidationFailure[] = [];
  readonly serviceLog: ServiceLogEntry[] = [];

  readonly #runtimes: boolean;
  #stepMs: number;
  readonly #autoAdvance: boolean;
  readonly #deployTimeoutMs: number;
  readonly #limiter: RateLimiter;
  readonly #rateScope: "token" | "account";
  readonly #projectCreateIntervalMs: number;
  readonly #volumeCreateIntervalMs: number;
  readonly #maxServices: number;
  readonly #serviceLimitMessage: string;
  readonly #maxServiceName: number;
  readonly #maxProjectName: number;
  readonly #maxPageSize: number | null;
  readonly #authFailureStatus: 200 | 401 | 403;
  readonly #opts: RailwayStandinOptions;

  readonly #tokens = new Map<string, TokenRec>();
  readonly #workspaces = new Map<string, WorkspaceRec>();
  readonly #projects = new Map<string, ProjectRec>();
  readonly #envs = new Map<string, EnvRec>();
  readonly #services = new Map<string, ServiceRec>();
  readonly #deployments = new Map<string, DeploymentRec>();
  readonly #domains = new Map<string, DomainRec>();
  readonly #volumes = new Map<string, VolumeRec>();
  readonly #rules = new Map<string, RuleRec>();
  /** Webhook deliveries attempted (tests). */
  webhooksSent = 0;
  /** Lose every delivery from now on (a webhook is a hint: the pool must converge without it). */
  dropWebhooks = false;
  readonly #lastProjectCreate = new Map<string, number>();
  readonly #lastVolumeCreate = new Map<string, number>();
  readonly #faults: PendingFault[] = [];
  readonly #pending = new Set<Promise<unknown>>();
  readonly #userId = randomUUID();
  #seq = 0;
  #reqSeq = 0;
  #server: Server | null = null;
  #provider: LocalProvider | null = null;
  #stateDir: string | null = null;
  #monitor: NodeJS.Timeout | null = null;
  #monitorBusy = false;
  #closed = false;
  #closing: Promise<void> | null = null;
  readonly #rootValue: Record<string, (args: Args, ctx: Ctx) => unknown>;

  constructor(
    readonly schema: GraphQLSchema,
    opts: RailwayStandinOptions,
  ) {
    this.#opts = opts;
    this.#runtimes = opts.runtimes ?? true;
    this.#stepMs = opts.stepMs ?? 50;
    this.#autoAdvance = opts.autoAdvance ?? true;
    this.#deployTimeoutMs = opts.deployTimeoutMs ?? 60_000;
    const rl = opts.rateLimit ?? {};
    this.#limiter = new RateLimiter({
      perHour: rl.perHour === undefined ? 10_000 : rl.perHour,
      perSecond: rl.perSecond === undefined ? 50 : rl.perSecond,
      scope: rl.scope ?? "token",
      resetFormat: rl.resetFormat ?? "epoch",
    });
    this.#rateScope = rl.scope ?? "token";
    this.#projectCreateIntervalMs = opts.projectCreateIntervalMs ?? 30_000;
    this.#volumeCreateIntervalMs = opts.volumeCreateIntervalMs ?? 0;
    this.#maxServices = opts.maxServicesPerProject ?? 100;
    this.#serviceLimitMessage = opts.serviceLimitMessage ?? `Project has reached the maximum of ${this.#maxServices} services`;
    this.#maxServiceName = opts.maxServiceNameLength ?? 32;
    this.#maxProjectName = opts.maxProjectNameLength ?? 32;
    this.#maxPageSize = opts.maxPageSize ?? null;
    this.#authFailureStatus = opts.authFailureStatus ?? 200;
    this.ownerTag = opts.ownerTag ?? `railway-standin-${rand(12)}`;

    const ws = this.createWorkspace("Stand-in Workspace");
    this.workspaceId = ws.workspaceId;
    this.token = ws.token;
    this.accountToken = this.createToken("account");
    this.#rootValue = this.#buildRoot();
  }

  // ---- lifecycle of the stand-in ----

  async start(): Promise<void> {
    if (this.#runtimes) {
      this.#stateDir = mkdtempSync(join(tmpdir(), "railway-standin-"));
      this.#provider = await LocalProvider.open({
        stateDir: this.#stateDir,
        ownerTag: this.ownerTag,
        ...(this.#opts.runtimeCommand ? { command: this.#opts.runtimeCommand } : {}),
        env: this.#opts.runtimeEnv ?? {},
        ...(this.#opts.logger ? { logger: this.#opts.logger } : {}),
        startTimeoutMs: this.#deployTimeoutMs,
      });
      this.#monitor = setInterval(() => void this.#monitorTick(), 50);
      this.#monitor.unref();
    }
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.#sendJson(res, 500, { errors: [{ message: `stand-in bug: ${(err as Error).message}` }] });
        else res.destroy();
      });
    });
    this.#server = server;
    await new Promise<void>((ok, fail) => {
      server.once("error", fail);
      server.listen(0, "127.0.0.1", () => ok());
    });
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    this.url = `http://127.0.0.1:${port}/graphql/v2`;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#monitor) clearInterval(this.#monitor);
      for (const d of this.#deployments.values()) if (d.timer) clearTimeout(d.timer);
      const server = this.#server;
      if (server) {
        server.closeAllConnections();
        await new Promise<void>((ok) => server.close(() => ok()));
      }
      await Promise.allSettled([...this.#domains.values()].map((d) => d.proxy?.close()));
      await Promise.allSettled([...this.#pending]);
      if (this.#provider) await this.#provider.close();
      if (this.#stateDir) rmSync(this.#stateDir, { recursive: true, force: true });
    })();
    return this.#closing;
  }

  // ---- test controls ----

  createWorkspace(name: string): { workspaceId: string; token: string } {
    const id = randomUUID();
    this.#workspaces.set(id, { id, name, createdAt: this.#now() });
    return { workspaceId: id, token: this.createToken("workspace", id) };
  }

  createToken(kind: "account" | "workspace", workspaceId?: string): string {
    const token = randomUUID();
    const ws = kind === "workspace" ? (workspaceId ?? this.workspaceId) : null;
    if (ws !== null && !this.#workspaces.has(ws)) throw new Error(`stand-in: no workspace ${ws}`);
    this.#tokens.set(token, { token, id: randomUUID(), kind, workspaceId: ws, projectId: null, environmentId: null, createdAt: this.#now() });
    return token;
  }

  projectToken(projectId: string, environmentId?: string): string {
    const p = this.#projects.get(projectId);
    if (!p || p.deleted) throw new Error(`stand-in: no project ${projectId}`);
    const env = environmentId ?? this.#envsOf(p)[0]?.id;
    if (!env) throw new Error(`stand-in: project ${projectId} has no environment`);
    const token = randomUUID();
    this.#tokens.set(token, { token, id: randomUUID(), kind: "project", workspaceId: p.workspaceId, projectId, environmentId: env, createdAt: this.#now() });
    return token;
  }

  createProject(name: string, opts: { environments?: string[]; workspaceId?: string } = {}) {
    const p = this.#newProject(name, opts.workspaceId ?? this.workspaceId, "production", null);
    const environmentIds: Record<string, string> = {};
    for (const e of this.#envsOf(p)) environmentIds[e.name] = e.id;
    for (const extra of opts.environments ?? []) environmentIds[extra] = this.#newEnv(p, extra, false).id;
    return { projectId: p.id, environmentId: environmentIds.production!, environmentIds };
  }

  tokenId(token: string): string | null {
    return this.#tokens.get(token)?.id ?? null;
  }

  #logService(kind: ServiceLogEntry["kind"], s: ServiceRec, ctx: Ctx | null, previousName?: string): void {
    this.serviceLog.push({
      seq: this.serviceLog.length + 1,
      at: Date.now(),
      kind,
      serviceId: s.id,
      projectId: s.projectId,
      name: s.name,
      ...(previousName !== undefined ? { previousName } : {}),
      tokenId: ctx?.auth.token?.id ?? null,
    });
  }

  resetCounters(): void {
    this.requests.length = 0;
    this.validationFailures.length = 0;
    for (const k of Object.keys(this.counts)) delete this.counts[k];
  }

  resetRateLimits(): void {
    this.#limiter.reset();
    this.#lastProjectCreate.clear();
    this.#lastVolumeCreate.clear();
  }

  failNext(n: number, kind: FaultKind, opts: FaultOptions = {}): void {
    const until = kind === "outage" && opts.durationMs !== undefined ? Date.now() + opts.durationMs : null;
    this.#faults.push({ kind, remaining: until !== null ? Infinity : n, until, opts });
  }

  clearFaults(): void {
    this.#faults.length = 0;
  }

  async crashDeployment(serviceId: string): Promise<void> {
    const d = this.#deploymentsOfService(serviceId).find((x) => x.localId !== null || x.status === "SUCCESS");
    if (!d) throw new Error(`stand-in: service ${serviceId} has no running deployment`);
    if (!d.localId || !this.#stateDir) {
      this.#setStatus(d, "CRASHED");
      return;
    }
    const state = JSON.parse(readFileSync(join(this.#stateDir, "instances.json"), "utf8")) as LocalStateFile;
    const entry = state.instances.find((e) => e.instanceId === d.localId);
    if (!entry) throw new Error(`stand-in: no process recorded for ${d.localId}`);
    try {
      process.kill(-entry.pid, "SIGKILL");
    } catch {
      /* already gone: the monitor reports it */
    }
    const deadline = Date.now() + 10_000;
    while (d.localId !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (d.localId !== null) throw new Error(`stand-in: deployment ${d.id} did not crash in time`);
  }

  setDeploymentStatus(serviceId: string, status: DeploymentStatus): void {
    if (!DEPLOYMENT_STATUSES.includes(status)) throw new Error(`stand-in: ${status} is not a DeploymentStatus`);
    const d = this.#deploymentsOfService(serviceId)[0];
    if (!d) throw new Error(`stand-in: service ${serviceId} has no deployment`);
    d.frozen = true;
    if (d.timer) clearTimeout(d.timer);
    d.timer = null;
    this.#setStatus(d, status);
    if (STOPPED.has(status)) this.#stopRuntime(d);
  }

  advance(): void {
    for (const d of [...this.#deployments.values()]) if (!d.frozen && IN_PROGRESS.has(d.status)) this.#step(d);
  }

  setStepMs(ms: number): void {
    this.#stepMs = ms;
  }

  services(projectId: string): ServiceSnapshot[] {
    return [...this.#services.values()].filter((s) => s.projectId === projectId && !s.deleted).map((s) => this.#snapshot(s));
  }

  service(serviceId: string): ServiceSnapshot | null {
    const s = this.#services.get(serviceId);
    return s && !s.deleted ? this.#snapshot(s) : null;
  }

  runtimeUrl(serviceId: string): string | null {
    return this.#deploymentsOfService(serviceId).find((d) => d.status === "SUCCESS" && d.runtimeUrl)?.runtimeUrl ?? null;
  }

  #snapshot(s: ServiceRec): ServiceSnapshot {
    const variables: Record<string, Record<string, string>> = {};
    let image: string | null = null;
    for (const i of s.instances.values()) {
      variables[i.environmentId] = { ...i.variables };
      image ??= i.source?.image ?? null;
    }
    return {
      id: s.id,
      name: s.name,
      projectId: s.projectId,
      createdAt: s.createdAt,
      variables,
      image,
      domains: [...this.#domains.values()].filter((d) => d.serviceId === s.id).map((d) => this.#domainName(d)),
      deployments: this.#deploymentsOfService(s.id).map((d) => ({
        id: d.id,
        status: d.status,
        environmentId: d.environmentId,
        createdAt: d.createdAt,
        image: d.image,
        runtimeUrl: d.runtimeUrl,
      })),
    };
  }

  // ---- HTTP ----

  #sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const payload = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(payload), ...headers });
    res.end(payload);
  }

  #sendHtml(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
    const title = `${status} ${status === 502 ? "Bad Gateway" : status === 503 ? "Service Unavailable" : status === 504 ? "Gateway Timeout" : "Error"}`;
    const html = `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n`;
    res.writeHead(status, { "content-type": "text/html", "content-length": Buffer.byteLength(html), server: "cloudflare", ...headers });
    res.end(html);
  }

  #readBody(req: IncomingMessage): Promise<string | null> {
    return new Promise((ok, fail) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          ok(null);
          req.resume();
          return;
        }
        chunks.push(c);
      });
      req.on("end", () => ok(size > MAX_BODY_BYTES ? null : Buffer.concat(chunks).toString("utf8")));
      req.on("error", fail);
    });
  }

  #identify(req: IncomingMessage): Auth {
    const pat = req.headers["project-access-token"];
    if (typeof pat === "string") {
      const rec = this.#tokens.get(pat.trim());
      return rec && rec.kind === "project" && this.#projects.get(rec.projectId!)?.deleted === false
        ? { kind: "project", token: rec }
        : { kind: "bad-project", token: null };
    }
    const authz = req.headers.authorization;
    if (typeof authz === "string") {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(authz.trim());
      const rec = m ? this.#tokens.get(m[1]!) : undefined;
      if (rec && rec.kind !== "project") return { kind: rec.kind, token: rec };
      return { kind: "bad-bearer", token: null };
    }
    // Team-Access-Token does not exist at Railway: ignored like any unknown header.
    return { kind: "none", token: null };
  }

  #rateKey(auth: Auth, req: IncomingMessage): string {
    if (!auth.token) return `anon:${req.socket.remoteAddress ?? ""}`;
    if (this.#rateScope === "account" && auth.token.kind !== "project") return "account";
    return `token:${auth.token.token}`;
  }

  #takeFault(query: string): PendingFault | null {
    const now = Date.now();
    for (let i = 0; i < this.#faults.length; i++) {
      const f = this.#faults[i]!;
      if (f.until !== null && now >= f.until) {
        this.#faults.splice(i--, 1);
        continue;
      }
      const m = f.opts.match;
      if (m !== undefined && !(typeof m === "string" ? query.includes(m) : m.test(query))) continue;
      f.remaining--;
      if (f.remaining <= 0) this.#faults.splice(i, 1);
      return f;
    }
    return null;
  }

  #applyFault(f: PendingFault, res: ServerResponse, rec: RecordedRequest, rateHeaders: Record<string, string>): void {
    rec.fault = f.kind;
    switch (f.kind) {
      case "html5xx":
        rec.status = f.opts.status ?? 502;
        this.#sendHtml(res, rec.status);
        return;
      case "429burst": {
        rec.status = 429;
        const retry = String(f.opts.retryAfterSec ?? 1);
        rec.errors = ["Rate limit exceeded"];
        this.#sendJson(
          res,
          429,
          { data: null, errors: [{ message: "Rate limit exceeded", extensions: { code: "RATE_LIMITED" } }] },
          {
            ...rateHeaders,
            "x-ratelimit-remaining": "0",
            "ratelimit-remaining": "0",
            "retry-after": retry,
          },
        );
        return;
      }
      case "outage":
        if (f.opts.mode === "503") {
          rec.status = 503;
          this.#sendHtml(res, 503);
          return;
        }
        rec.status = 0;
        res.socket?.destroy();
        return;
      case "graphqlError":
      case "throttleMessage": {
        const message = f.opts.message ?? (f.kind === "graphqlError" ? "Problem processing request" : "Only one project can be created per user");
        rec.status = 200;
        rec.errors = [message];
        this.#sendJson(
          res,
          200,
          {
            data: null,
            errors: [{ message, locations: [{ line: 1, column: 1 }], extensions: { code: "INTERNAL_SERVER_ERROR" }, traceId: traceId() }],
          },
          rateHeaders,
        );
        return;
      }
    }
  }

  #reject400(res: ServerResponse, rec: RecordedRequest, errors: object[], headers: Record<string, string>): void {
    rec.status = 400;
    rec.errors = errors.map((e) => String((e as { message?: unknown }).message));
    this.validationFailures.push({ seq: rec.seq, query: rec.query, variables: rec.variables, status: 400, errors: rec.errors });
    this.#sendJson(res, 400, { errors: errors.map((e) => ({ ...e, traceId: traceId() })) }, headers);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "http://standin.invalid").pathname;
    if (path !== "/graphql/v2" && path !== "/graphql/v2/") {
      return this.#sendJson(res, 404, { errors: [{ message: `Cannot ${req.method ?? "GET"} ${path}` }] });
    }
    if (req.method !== "POST") return this.#sendJson(res, 405, { errors: [{ message: "Method not allowed" }] }, { allow: "POST" });
    const raw = await this.#readBody(req);
    if (raw === null) return this.#sendJson(res, 413, { errors: [{ message: "Request entity too large" }] });

    let body: unknown;
    let bodyError: string | null = null;
    try {
      body = JSON.parse(raw);
    } catch {
      bodyError = "POST body sent invalid JSON.";
    }
    const b = isObject(body) ? body : {};
    const query = typeof b.query === "string" ? b.query : "";
    const variables = b.variables ?? null;
    const operationName = typeof b.operationName === "string" ? b.operationName : null;

    let document: DocumentNode | null = null;
    let parseError: GraphQLError | null = null;
    if (query) {
      try {
        document = parse(query);
      } catch (err) {
        parseError = err as GraphQLError;
      }
    }
    const opInfo = document ? describeOperation(document, operationName) : { type: null, name: null, rootFields: [] };
    const rec: RecordedRequest = {
      seq: ++this.#reqSeq,
      at: Date.now(),
      op: operationName ?? opInfo.name ?? (opInfo.rootFields.join("+") || "(unparsed)"),
      operationName,
      operationType: opInfo.type,
      rootFields: opInfo.rootFields,
      query,
      variables,
      status: 0,
      auth: "none",
      errors: [],
      fault: null,
    };
    this.requests.push(rec);
    for (const f of new Set(opInfo.rootFields)) this.counts[f] = (this.counts[f] ?? 0) + 1;

    // Faults come from the edge, in front of auth and rate limiting.
    const fault = this.#takeFault(query);
    if (fault && !fault.opts.afterExecute) return this.#applyFault(fault, res, rec, {});

    const auth = this.#identify(req);
    rec.auth = auth.kind === "project" || auth.kind === "bad-project" ? "project" : auth.kind === "none" ? "none" : "bearer";
    const rateKey = this.#rateKey(auth, req);
    const decision = this.#limiter.take(rateKey);
    if (!decision.ok) {
      rec.status = 429;
      rec.errors = ["Rate limit exceeded"];
      // Body undocumented (UNVERIFIED); Retry-After in integer seconds is what the CLI relies on.
      return this.#sendJson(
        res,
        429,
        { data: null, errors: [{ message: "Rate limit exceeded", extensions: { code: "RATE_LIMITED" } }] },
        {
          ...decision.headers,
          "retry-after": String(decision.retryAfterSec),
        },
      );
    }
    const headers = decision.headers;

    if (bodyError) return this.#reject400(res, rec, [{ message: bodyError, extensions: { code: "BAD_REQUEST" } }], headers);
    if (!query)
      return this.#reject400(res, rec, [{ message: "GraphQL operations must contain a non-empty `query`.", extensions: { code: "BAD_REQUEST" } }], headers);
    if (variables !== null && !isObject(variables)) {
      return this.#reject400(res, rec, [{ message: "`variables` in a POST body should be an object.", extensions: { code: "BAD_REQUEST" } }], headers);
    }
    if (parseError || !document) {
      return this.#reject400(res, rec, [{ ...(parseError?.toJSON() ?? { message: "Syntax Error" }), extensions: { code: "GRAPHQL_PARSE_FAILED" } }], headers);
    }
    const invalid = validate(this.schema, document);
    if (invalid.length > 0) {
      return this.#reject400(
        res,
        rec,
        invalid.map((e) => ({ ...e.toJSON(), extensions: { code: "GRAPHQL_VALIDATION_FAILED" } })),
        headers,
      );
    }

    const unauthenticated = auth.kind === "none" || auth.kind === "bad-bearer" || auth.kind === "bad-project";
    if (unauthenticated && this.#authFailureStatus !== 200) {
      rec.status = this.#authFailureStatus;
      rec.errors = ["Not Authorized"];
      return this.#sendJson(
        res,
        rec.status,
        { data: null, errors: [{ message: "Not Authorized", extensions: { code: "UNAUTHENTICATED" }, traceId: traceId() }] },
        headers,
      );
    }

    const ctx: Ctx = { auth, rateKey };
    const result = await execute({
      schema: this.schema,
      document,
      rootValue: this.#rootValue,
      contextValue: ctx,
      variableValues: (variables as Record<string, unknown> | null) ?? undefined,
      operationName,
      fieldResolver,
    });
    if (result.data === undefined) {
      // Variable coercion / operation selection: the request itself is malformed.
      return this.#reject400(
        res,
        rec,
        (result.errors ?? []).map((e) => ({ ...e.toJSON(), extensions: { code: "BAD_USER_INPUT" } })),
        headers,
      );
    }
    const out: Record<string, unknown> = { data: result.data };
    if (result.errors?.length) {
      out.errors = result.errors.map((e) => {
        const j = e.toJSON();
        return { ...j, extensions: { code: "INTERNAL_SERVER_ERROR", ...(j.extensions ?? {}) }, traceId: traceId() };
      });
      rec.errors = result.errors.map((e) => e.message);
    }
    if (fault) return this.#applyFault(fault, res, rec, headers);
    rec.status = 200;
    this.#sendJson(res, 200, out, headers);
  }

  // ---- state helpers ----

  #now(): string {
    return new Date().toISOString();
  }

  #nextSeq(): number {
    return ++this.#seq;
  }

  #newProject(name: string, workspaceId: string, envName: string, description: string | null): ProjectRec {
    const now = this.#now();
    const p: ProjectRec = {
      id: randomUUID(),
      seq: this.#nextSeq(),
      name,
      description,
      workspaceId,
      createdAt: now,
      updatedAt: now,
      deleted: false,
      isPublic: false,
      prDeploys: false,
    };
    this.#projects.set(p.id, p);
    this.#newEnv(p, envName, false);
    return p;
  }

  #newEnv(p: ProjectRec, name: string, isEphemeral: boolean, source?: EnvRec): EnvRec {
    const now = this.#now();
    const e: EnvRec = {
      id: randomUUID(),
      seq: this.#nextSeq(),
      projectId: p.id,
      name,
      createdAt: now,
      updatedAt: now,
      isEphemeral,
      deleted: false,
      sharedVariables: { ...(source?.sharedVariables ?? {}) },
    };
    this.#envs.set(e.id, e);
    for (const s of this.#liveServices(p)) {
      const from = source ? s.instances.get(source.id) : undefined;
      s.instances.set(e.id, this.#newInstance(s, e.id, from));
    }
    return e;
  }

  #newInstance(s: ServiceRec, environmentId: string, from?: InstanceRec): InstanceRec {
    const now = this.#now();
    return {
      id: randomUUID(),
      serviceId: s.id,
      environmentId,
      createdAt: now,
      updatedAt: now,
      source: from?.source ? { ...from.source } : null,
      startCommand: from?.startCommand ?? null,
      healthcheckPath: from?.healthcheckPath ?? null,
      healthcheckTimeout: from?.healthcheckTimeout ?? null,
      numReplicas: from?.numReplicas ?? 1,
      region: from?.region ?? null,
      restartPolicyType: from?.restartPolicyType ?? "ON_FAILURE",
      restartPolicyMaxRetries: from?.restartPolicyMaxRetries ?? 10,
      sleepApplication: from?.sleepApplication ?? false,
      rootDirectory: from?.rootDirectory ?? null,
      limits: { ...(from?.limits ?? {}) },
      variables: { ...(from?.variables ?? {}) },
      settings: { ...(from?.settings ?? {}) },
    };
  }

  #envsOf(p: ProjectRec): EnvRec[] {
    return [...this.#envs.values()].filter((e) => e.projectId === p.id && !e.deleted);
  }

  #liveServices(p: ProjectRec): ServiceRec[] {
    return [...this.#services.values()].filter((s) => s.projectId === p.id && !s.deleted);
  }

  #deploymentsOfService(serviceId: string, environmentId?: string): DeploymentRec[] {
    return [...this.#deployments.values()]
      .filter((d) => d.serviceId === serviceId && (environmentId === undefined || d.environmentId === environmentId))
      .sort((a, b) => b.seq - a.seq);
  }

  #domainName(d: DomainRec): string {
    return d.proxy ? `127.0.0.1:${d.proxy.port}` : d.host;
  }

  // ---- access ----

  #requireAuth(ctx: Ctx): void {
    const k = ctx.auth.kind;
    if (k === "bad-project") throw new GraphQLError("Project Token not found");
    if (k === "none" || k === "bad-bearer") throw notAuthorized();
  }

  #canWorkspace(ctx: Ctx, workspaceId: string): boolean {
    const t = ctx.auth.token;
    if (!t) return false;
    if (t.kind === "account") return this.#workspaces.has(workspaceId);
    return t.workspaceId === workspaceId && t.kind === "workspace";
  }

  #project(ctx: Ctx, id: unknown): ProjectRec {
    const p = this.#projects.get(String(id));
    const t = ctx.auth.token;
    if (!p || p.deleted || !t) throw notAuthorized();
    if (t.kind === "project" ? t.projectId !== p.id : !this.#canWorkspace(ctx, p.workspaceId)) throw notAuthorized();
    return p;
  }

  #env(ctx: Ctx, id: unknown, projectId?: string): EnvRec {
    const e = this.#envs.get(String(id));
    if (!e || e.deleted || (projectId !== undefined && e.projectId !== projectId)) throw notAuthorized();
    this.#project(ctx, e.projectId);
    const t = ctx.auth.token!;
    if (t.kind === "project" && t.environmentId !== e.id) throw notAuthorized();
    return e;
  }

  #service(ctx: Ctx, id: unknown): ServiceRec {
    const s = this.#services.get(String(id));
    if (!s || s.deleted) throw notAuthorized();
    this.#project(ctx, s.projectId);
    return s;
  }

  #instance(ctx: Ctx, serviceId: unknown, environmentId: unknown): InstanceRec {
    const s = this.#service(ctx, serviceId);
    const e = this.#env(ctx, environmentId, s.projectId);
    const i = s.instances.get(e.id);
    if (!i) throw notAuthorized();
    return i;
  }

  #deployment(ctx: Ctx, id: unknown): DeploymentRec {
    const d = this.#deployments.get(String(id));
    if (!d) throw notAuthorized();
    this.#project(ctx, d.projectId);
    return d;
  }

  #throttle(ctx: Ctx, map: Map<string, number>, intervalMs: number, message: string): void {
    if (intervalMs <= 0) return;
    const key = ctx.auth.token?.token ?? "";
    const last = map.get(key);
    const now = Date.now();
    if (last !== undefined && now - last < intervalMs) throw new GraphQLError(message);
    map.set(key, now);
  }

  // ---- views (plain objects; functions are resolved lazily by the default field resolver) ----

  #connection<T extends { seq: number }>(items: T[], args: PageArgs, node: (t: T) => unknown, order: "asc" | "desc" = "asc") {
    const ahead = (a: number, b: number): boolean => (order === "asc" ? a < b : a > b);
    let list = [...items].sort((a, b) => (order === "asc" ? a.seq - b.seq : b.seq - a.seq));
    if (args.after != null) {
      const c = decodeCursor(args.after);
      list = list.filter((t) => ahead(c, t.seq));
    }
    if (args.before != null) {
      const c = decodeCursor(args.before);
      list = list.filter((t) => ahead(t.seq, c));
    }
    let first = args.first ?? null;
    if (first !== null && first < 0) throw badInput("`first` must be a non-negative integer");
    if (args.last != null && args.last < 0) throw badInput("`last` must be a non-negative integer");
    if (this.#maxPageSize !== null) first = Math.min(first ?? this.#maxPageSize, this.#maxPageSize);
    let hasNextPage = false;
    let hasPreviousPage = false;
    if (first !== null && list.length > first) {
      list = list.slice(0, first);
      hasNextPage = true;
    }
    if (args.last != null && list.length > args.last) {
      list = list.slice(list.length - args.last);
      hasPreviousPage = true;
    }
    const edges = list.map((t) => ({ cursor: encodeCursor(t.seq), node: node(t) }));
    return {
      edges,
      pageInfo: { hasNextPage, hasPreviousPage, startCursor: edges[0]?.cursor ?? null, endCursor: edges[edges.length - 1]?.cursor ?? null },
    };
  }

  #workspaceView(w: WorkspaceRec, ctx: Ctx): object {
    return {
      id: w.id,
      name: w.name,
      createdAt: w.createdAt,
      updatedAt: w.createdAt,
      avatar: null,
      preferredRegion: null,
      projectCount: () => [...this.#projects.values()].filter((p) => p.workspaceId === w.id && !p.deleted).length,
      projects: (args: PageArgs) =>
        this.#connection(
          [...this.#projects.values()].filter((p) => p.workspaceId === w.id && !p.deleted),
          args,
          (p) => this.#projectView(p, ctx),
        ),
      apiTokenRateLimit: () => this.#tokenRateLimit(ctx),
    };
  }

  #tokenRateLimit(ctx: Ctx): object {
    const { remaining, resetAt } = this.#limiter.peek(ctx.rateKey);
    return { remainingPoints: remaining, resetsAt: new Date(resetAt).toISOString() };
  }

  #projectView(p: ProjectRec, ctx: Ctx): object {
    const envs = this.#envsOf(p);
    return {
      id: p.id,
      name: p.name,
      description: p.description,
      createdAt: p.createdAt,
      updatedAt: p.updatedAt,
      deletedAt: null,
      expiredAt: null,
      isPublic: p.isPublic,
      isTempProject: false,
      prDeploys: p.prDeploys,
      botPrEnvironments: false,
      focusedPrEnvironments: false,
      workspaceId: p.workspaceId,
      teamId: p.workspaceId,
      primaryEnvironmentId: envs.find((e) => !e.isEphemeral)?.id ?? null,
      baseEnvironmentId: null,
      baseEnvironment: null,
      featureFlags: [],
      members: [],
      workspace: () => this.#workspaceView(this.#workspaces.get(p.workspaceId)!, ctx),
      services: (args: PageArgs) => this.#connection(this.#liveServices(p), args, (s) => this.#serviceView(s, ctx)),
      environments: (args: PageArgs & { isEphemeral?: boolean | null }) =>
        this.#connection(
          envs.filter((e) => args.isEphemeral == null || e.isEphemeral === args.isEphemeral),
          args,
          (e) => this.#envView(e, ctx),
        ),
      volumes: (args: PageArgs) =>
        this.#connection(
          [...this.#volumes.values()].filter((v) => v.projectId === p.id && !v.deleted),
          args,
          (v) => this.#volumeView(v, ctx),
        ),
      deployments: (args: PageArgs) =>
        this.#connection(
          [...this.#deployments.values()].filter((d) => d.projectId === p.id),
          args,
          (d) => this.#deploymentView(d, ctx),
          "desc",
        ),
    };
  }

  #envView(e: EnvRec, ctx: Ctx): object {
    const p = this.#projects.get(e.projectId)!;
    const instances = () =>
      this.#liveServices(p)
        .map((s) => s.instances.get(e.id))
        .filter((i): i is InstanceRec => i !== undefined);
    return {
      id: e.id,
      name: e.name,
      projectId: e.projectId,
      isEphemeral: e.isEphemeral,
      createdAt: e.createdAt,
      updatedAt: e.updatedAt,
      deletedAt: null,
      canAccess: true,
      sourceEnvironment: null,
      unmergedChangesCount: 0,
      meta: null,
      canvasGroupRefs: {},
      config: () => this.#envConfig(e),
      configEtag: () =>
        createHash("sha256")
          .update(JSON.stringify(this.#envConfig(e)))
          .digest("hex")
          .slice(0, 16),
      deployments: (args: PageArgs) =>
        this.#connection(
          [...this.#deployments.values()].filter((d) => d.environmentId === e.id),
          args,
          (d) => this.#deploymentView(d, ctx),
          "desc",
        ),
      serviceInstances: (args: PageArgs) =>
        this.#connection(
          instances().map((i) => ({ i, seq: this.#services.get(i.serviceId)!.seq })),
          args,
          (x) => this.#instanceView(x.i, ctx),
        ),
    };
  }

  #envConfig(e: EnvRec): object {
    const services: Record<string, unknown> = {};
    for (const s of this.#liveServices(this.#projects.get(e.projectId)!)) {
      const i = s.instances.get(e.id);
      if (!i) continue;
      services[s.id] = {
        source: i.source ? { ...(i.source.image ? { image: i.source.image } : {}), ...(i.source.repo ? { repo: i.source.repo } : {}) } : undefined,
        deploy: { startCommand: i.startCommand ?? undefined, healthcheckPath: i.healthcheckPath ?? undefined, numReplicas: i.numReplicas },
        variables: Object.fromEntries(Object.entries(i.variables).map(([k, v]) => [k, { value: v }])),
      };
    }
    return { services, sharedVariables: Object.fromEntries(Object.entries(e.sharedVariables).map(([k, v]) => [k, { value: v }])) };
  }

  #serviceView(s: ServiceRec, ctx: Ctx): object {
    const p = this.#projects.get(s.projectId)!;
    return {
      id: s.id,
      name: s.name,
      icon: s.icon,
      createdAt: s.createdAt,
      updatedAt: s.updatedAt,
      deletedAt: null,
      projectId: s.projectId,
      templateId: null,
      templateServiceId: null,
      templateThreadSlug: null,
      groupId: null,
      featureFlags: [],
      isRestricted: false,
      hasHiddenRegistryCredentialsFromTemplate: false,
      project: () => this.#projectView(p, ctx),
      serviceInstances: (args: PageArgs) =>
        this.#connection(
          [...s.instances.values()].map((i) => ({ i, seq: this.#envs.get(i.environmentId)!.seq })).filter((x) => !this.#envs.get(x.i.environmentId)!.deleted),
          args,
          (x) => this.#instanceView(x.i, ctx),
        ),
      // Newest first across all environments: pools read deployments(first: 1) as "latest".
      deployments: (args: PageArgs) => this.#connection(this.#deploymentsOfService(s.id), args, (d) => this.#deploymentView(d, ctx), "desc"),
      repoTriggers: (args: PageArgs) => this.#connection([], args, () => null),
    };
  }

  #instanceView(i: InstanceRec, ctx: Ctx): object {
    const s = this.#services.get(i.serviceId)!;
    const deps = () => this.#deploymentsOfService(i.serviceId, i.environmentId);
    return {
      id: i.id,
      serviceId: i.serviceId,
      serviceName: s.name,
      environmentId: i.environmentId,
      createdAt: i.createdAt,
      updatedAt: i.updatedAt,
      deletedAt: null,
      source: i.source ? { ...i.source } : null,
      startCommand: i.startCommand,
      rootDirectory: i.rootDirectory,
      healthcheckPath: i.healthcheckPath,
      healthcheckTimeout: i.healthcheckTimeout,
      numReplicas: i.numReplicas,
      region: i.region,
      restartPolicyType: i.restartPolicyType,
      restartPolicyMaxRetries: i.restartPolicyMaxRetries,
      sleepApplication: i.sleepApplication,
      builder: "RAILPACK",
      isUpdatable: true,
      watchPatterns: [],
      buildCommand: null,
      cronSchedule: null,
      dockerfilePath: null,
      nextCronRunAt: null,
      preDeployCommand: null,
      railwayConfigFile: null,
      upstreamUrl: null,
      drainingSeconds: null,
      overlapSeconds: null,
      ipv6EgressEnabled: null,
      nixpacksPlan: null,
      railpackInfo: null,
      edgeConfig: null,
      domains: () => this.#allDomains(i),
      latestDeployment: () => {
        const d = deps()[0];
        return d ? this.#deploymentView(d, ctx) : null;
      },
      activeDeployments: () =>
        deps()
          .filter((d) => d.status === "SUCCESS" || d.status === "SLEEPING")
          .map((d) => this.#deploymentView(d, ctx)),
      service: () => this.#serviceView(s, ctx),
    };
  }

  #allDomains(i: InstanceRec): object {
    const serviceDomains = [...this.#domains.values()]
      .filter((d) => d.serviceId === i.serviceId && d.environmentId === i.environmentId)
      .sort((a, b) => a.seq - b.seq)
      .map((d) => this.#domainView(d));
    return { serviceDomains, customDomains: [] };
  }

  #domainView(d: DomainRec): object {
    const name = this.#domainName(d);
    return {
      id: d.id,
      domain: name,
      suffix: d.proxy ? null : "up.railway.app",
      environmentId: d.environmentId,
      serviceId: d.serviceId,
      projectId: d.projectId,
      targetPort: d.targetPort,
      syncStatus: "ACTIVE",
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
      deletedAt: null,
      edgeId: null,
      newDomainName: null,
      newHostLabel: null,
      cdnMode: null,
    };
  }

  #deploymentView(d: DeploymentRec, ctx: Ctx): object {
    const domain = [...this.#domains.values()].find((x) => x.serviceId === d.serviceId && x.environmentId === d.environmentId);
    const instStatus: Partial<Record<DeploymentStatus, string>> = {
      SUCCESS: "RUNNING",
      CRASHED: "CRASHED",
      DEPLOYING: "INITIALIZING",
      REMOVED: "REMOVED",
      REMOVING: "REMOVING",
      SLEEPING: "STOPPED",
    };
    const is = instStatus[d.status];
    return {
      id: d.id,
      status: d.status,
      createdAt: d.createdAt,
      updatedAt: d.updatedAt,
      statusUpdatedAt: d.statusUpdatedAt,
      environmentId: d.environmentId,
      projectId: d.projectId,
      serviceId: d.serviceId,
      url: domain ? this.#domainName(domain) : null,
      staticUrl: domain ? this.#domainName(domain) : null,
      meta: { image: d.image, ...(d.reason ? { reason: d.reason } : {}) },
      canRedeploy: true,
      canRollback: false,
      deploymentStopped: STOPPED.has(d.status),
      suggestAddServiceDomain: !domain,
      instances: is ? [{ id: `${d.id}-0`, status: is }] : [],
      sockets: [],
      creator: null,
      diagnosis: null,
      snapshotId: null,
      environment: () => this.#envView(this.#envs.get(d.environmentId)!, ctx),
      service: () => this.#serviceView(this.#services.get(d.serviceId)!, ctx),
    };
  }

  #volumeView(v: VolumeRec, ctx: Ctx): object {
    return {
      id: v.id,
      name: v.name,
      createdAt: v.createdAt,
      projectId: v.projectId,
      project: () => this.#projectView(this.#projects.get(v.projectId)!, ctx),
      volumeInstances: (args: PageArgs) =>
        this.#connection(v.instances, args, (vi) => ({
          id: vi.id,
          serviceId: vi.serviceId,
          environmentId: vi.environmentId,
          mountPath: vi.mountPath,
          region: vi.region,
          createdAt: vi.createdAt,
          deletedAt: null,
          currentSizeMB: 0,
          sizeMB: 5000,
          isPendingDeletion: false,
          externalId: null,
          state: "READY",
          volumeId: v.id,
          volume: () => this.#volumeView(v, ctx),
          environment: () => this.#envView(this.#envs.get(vi.environmentId)!, ctx),
          service: () => (vi.serviceId ? this.#serviceView(this.#services.get(vi.serviceId)!, ctx) : null),
        })),
    };
  }

  #ruleView(r: RuleRec): object {
    return {
      id: r.id,
      workspaceId: r.workspaceId,
      projectId: r.projectId,
      environmentId: null,
      serviceId: null,
      ephemeralEnvironments: null,
      eventTypes: r.eventTypes,
      severities: r.severities,
      createdAt: r.createdAt,
      updatedAt: r.createdAt,
      channels: r.channels.map((c) => ({ id: c.id, config: c.config, createdAt: c.createdAt, updatedAt: c.createdAt, workspaceId: r.workspaceId })),
    };
  }

  // ---- mutations' building blocks ----

  #checkServiceName(name: string): void {
    if (name.length > this.#maxServiceName) throw badInput(`Service name must be at most ${this.#maxServiceName} characters`);
  }

  #variablesInput(v: unknown): Record<string, string | null> {
    if (v === undefined || v === null) return {};
    if (!isObject(v)) throw badInput("variables must be an object of NAME: value");
    const out: Record<string, string | null> = {};
    for (const [k, val] of Object.entries(v)) out[k] = val === null ? null : typeof val === "object" ? JSON.stringify(val) : String(val);
    return out;
  }

  #applyVars(target: Record<string, string>, vars: Record<string, string | null>): void {
    for (const [k, v] of Object.entries(vars)) {
      if (v === null) delete target[k];
      else target[k] = v;
    }
  }

  #deleteService(s: ServiceRec, ctx: Ctx | null): void {
    if (!s.deleted) this.#logService("delete", s, ctx);
    s.deleted = true;
    for (const d of this.#deploymentsOfService(s.id)) {
      if (d.timer) clearTimeout(d.timer);
      d.timer = null;
      if (!STOPPED.has(d.status)) this.#setStatus(d, "REMOVED");
      this.#stopRuntime(d);
    }
    for (const dom of [...this.#domains.values()]) {
      if (dom.serviceId !== s.id) continue;
      this.#domains.delete(dom.id);
      if (dom.proxy) this.#track(dom.proxy.close());
    }
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch(() => {}).finally(() => this.#pending.delete(q));
    this.#pending.add(q);
  }

  // ---- deployment lifecycle ----

  #setStatus(d: DeploymentRec, status: DeploymentStatus, reason?: string): void {
    const before = d.status;
    d.status = status;
    d.updatedAt = d.statusUpdatedAt = this.#now();
    if (reason) d.reason = reason;
    if (before !== status) this.#notify(d);
  }

  /**
   * Railway's deployment notifications: a POST of `{type, resource, details}` to every webhook
   * channel of every rule whose event types name the event (Railway's `Deployment.<event>` names,
   * as the earlier system consumed them). Fire and forget, like Railway's delivery; `webhooks:
   * false` (or `dropWebhooks`) loses them, as a real delivery can be lost.
   */
  #notify(d: DeploymentRec): void {
    const event = DEPLOY_EVENTS[d.status];
    if (!event || this.dropWebhooks || this.#opts.webhooks === false) return;
    const type = `Deployment.${event}`;
    const body = JSON.stringify({
      type,
      timestamp: this.#now(),
      resource: {
        workspace: { id: this.workspaceId },
        project: { id: d.projectId },
        environment: { id: d.environmentId },
        service: { id: d.serviceId },
        deployment: { id: d.id },
      },
      details: { status: d.status, id: d.id },
    });
    for (const r of this.#rules.values()) {
      if (!r.eventTypes.includes(type)) continue;
      for (const ch of r.channels) {
        const cfg = ch.config as { type?: unknown; url?: unknown } | null;
        if (cfg?.type !== "webhook" || typeof cfg.url !== "string") continue;
        this.webhooksSent++;
        void fetch(cfg.url, { method: "POST", headers: { "content-type": "application/json" }, body }).catch(() => undefined);
      }
    }
  }

  #newDeployment(i: InstanceRec, image?: string | null): DeploymentRec {
    if (this.#closed) throw problem();
    const s = this.#services.get(i.serviceId)!;
    // A newer deployment supersedes the ones still in flight.
    for (const old of this.#deploymentsOfService(i.serviceId, i.environmentId)) {
      if (old.frozen || !IN_PROGRESS.has(old.status)) continue;
      if (old.timer) clearTimeout(old.timer);
      old.timer = null;
      this.#setStatus(old, "REMOVED", "superseded");
      this.#stopRuntime(old);
    }
    const now = this.#now();
    const d: DeploymentRec = {
      id: randomUUID(),
      seq: this.#nextSeq(),
      serviceId: s.id,
      environmentId: i.environmentId,
      projectId: s.projectId,
      status: "QUEUED",
      createdAt: now,
      updatedAt: now,
      statusUpdatedAt: now,
      image: image !== undefined ? image : (i.source?.image ?? null),
      healthcheckPath: i.healthcheckPath,
      timeoutMs: i.healthcheckTimeout ? i.healthcheckTimeout * 1000 : this.#deployTimeoutMs,
      env: { ...this.#envs.get(i.environmentId)!.sharedVariables, ...i.variables },
      frozen: false,
      timer: null,
      deadline: 0,
      localId: null,
      runtimeUrl: null,
      probing: false,
      reason: null,
    };
    this.#deployments.set(d.id, d);
    this.#schedule(d);
    return d;
  }

  #schedule(d: DeploymentRec): void {
    if (!this.#autoAdvance || this.#closed || d.frozen) return;
    if (d.timer) clearTimeout(d.timer);
    d.timer = setTimeout(() => this.#step(d), this.#stepMs);
    d.timer.unref();
  }

  #step(d: DeploymentRec): void {
    if (d.timer) clearTimeout(d.timer);
    d.timer = null;
    if (d.frozen || this.#closed) return;
    switch (d.status) {
      case "QUEUED":
        this.#setStatus(d, "BUILDING");
        this.#schedule(d);
        return;
      case "BUILDING":
        this.#setStatus(d, "DEPLOYING");
        d.deadline = Date.now() + d.timeoutMs;
        if (this.#runtimes) this.#track(this.#startRuntime(d));
        else this.#schedule(d);
        return;
      case "DEPLOYING":
        if (!this.#runtimes) this.#activate(d);
        return;
      default:
        return;
    }
  }

  /** d is live: the deployments it replaces go. */
  #activate(d: DeploymentRec): void {
    this.#setStatus(d, "SUCCESS");
    for (const old of this.#deploymentsOfService(d.serviceId, d.environmentId)) {
      if (old === d || old.seq > d.seq) continue;
      if (old.status === "SUCCESS" || old.status === "SLEEPING") {
        this.#setStatus(old, "REMOVED");
        this.#stopRuntime(old);
      }
    }
  }

  async #startRuntime(d: DeploymentRec): Promise<void> {
    const provider = this.#provider!;
    const s = this.#services.get(d.serviceId)!;
    const instanceId = d.env.INSTANCE_ID || s.id;
    // The previous deployment runs as the same INSTANCE_ID (the local provider's key): it goes first.
    // Another service's process with that id is left alone: the create below then FAILs this deployment.
    const olds = this.#deploymentsOfService(d.serviceId).filter((o) => o !== d && o.localId === instanceId);
    for (const old of olds) {
      if (old.status === "SUCCESS" || old.status === "SLEEPING") this.#setStatus(old, "REMOVED");
      await this.#stopRuntimeNow(old);
    }
    if (d.status !== "DEPLOYING" || this.#closed) return;
    const env = this.#envs.get(d.environmentId)!;
    const domain = [...this.#domains.values()].find((x) => x.serviceId === s.id && x.environmentId === d.environmentId);
    const runtimeEnv: Record<string, string> = {
      RAILWAY_PROJECT_ID: s.projectId,
      RAILWAY_ENVIRONMENT_ID: env.id,
      RAILWAY_ENVIRONMENT_NAME: env.name,
      RAILWAY_SERVICE_ID: s.id,
      RAILWAY_SERVICE_NAME: s.name,
      RAILWAY_DEPLOYMENT_ID: d.id,
      RAILWAY_PRIVATE_DOMAIN: `${slug(s.name)}.railway.internal`,
      ...(domain ? { RAILWAY_PUBLIC_DOMAIN: this.#domainName(domain) } : {}),
      ...d.env,
    };
    const gatewayToken = d.env.GATEWAY_TOKEN || randomBytes(32).toString("hex");
    try {
      const inst = await provider.create({ instanceId, poolId: s.projectId, name: s.name, gatewayToken, ownerId: "stand", env: runtimeEnv });
      d.localId = instanceId;
      d.runtimeUrl = inst.url;
    } catch (err) {
      if (d.status === "DEPLOYING" && !d.frozen) this.#setStatus(d, "FAILED", `runtime did not start: ${(err as Error).message}`);
      return;
    }
    // Cancelled, deleted or replaced while it spawned.
    if (d.status !== "DEPLOYING" && !d.frozen) await this.#stopRuntimeNow(d);
    else if (this.#services.get(d.serviceId)?.deleted) await this.#stopRuntimeNow(d);
  }

  #stopRuntime(d: DeploymentRec): void {
    if (d.localId !== null) this.#track(this.#stopRuntimeNow(d));
  }

  async #stopRuntimeNow(d: DeploymentRec): Promise<void> {
    const id = d.localId;
    if (id === null || !this.#provider) return;
    d.localId = null;
    d.runtimeUrl = null;
    await this.#provider.delete(`local:${id}`);
  }

  /** Follows the runtime processes: readiness (→ SUCCESS), exits (→ FAILED/CRASHED), deploy timeouts. */
  async #monitorTick(): Promise<void> {
    if (this.#monitorBusy || this.#closed || !this.#provider) return;
    const watched = [...this.#deployments.values()].filter((d) => d.localId !== null || (d.status === "DEPLOYING" && !d.frozen));
    if (watched.length === 0) return;
    this.#monitorBusy = true;
    try {
      const listing = await this.#provider.list();
      const byId = new Map(listing.instances.map((i) => [i.instanceId, i]));
      const now = Date.now();
      for (const d of watched) {
        if (this.#closed) return;
        if (d.localId === null) {
          if (d.status === "DEPLOYING" && !d.frozen && now > d.deadline && d.deadline > 0) this.#setStatus(d, "FAILED", "deploy timed out");
          continue;
        }
        const inst = byId.get(d.localId);
        if (!inst || inst.deployStatus === "CRASHED") {
          if (!d.frozen) {
            if (d.status === "DEPLOYING") this.#setStatus(d, "FAILED", "runtime exited while deploying");
            else if (d.status === "SUCCESS" || d.status === "SLEEPING") this.#setStatus(d, "CRASHED", "runtime exited");
          }
          await this.#stopRuntimeNow(d); // frees the instance id
          continue;
        }
        if (d.status !== "DEPLOYING" || d.frozen) continue;
        if (now > d.deadline) {
          this.#setStatus(d, "FAILED", "deploy timed out");
          this.#stopRuntime(d);
        } else if (inst.deployStatus === "SUCCESS" && !d.probing) {
          if (!d.healthcheckPath) this.#activate(d);
          else this.#track(this.#healthcheck(d));
        }
      }
    } catch (err) {
      this.#opts.logger?.warn({ err }, "railway stand-in: monitor failed");
    } finally {
      this.#monitorBusy = false;
    }
  }

  async #healthcheck(d: DeploymentRec): Promise<void> {
    d.probing = true;
    try {
      const r = await fetch(new URL(d.healthcheckPath!, d.runtimeUrl!), { signal: AbortSignal.timeout(1000) });
      await r.body?.cancel();
      if (r.status === 200 && d.status === "DEPLOYING" && !d.frozen) this.#activate(d);
    } catch {
      /* not yet */
    } finally {
      d.probing = false;
    }
  }

  // ---- root fields ----

  #buildRoot(): Record<string, (args: Args, ctx: Ctx) => unknown> {
    const q: Record<string, (args: Args, ctx: Ctx) => unknown> = {
      // ---- Query ----
      me: (_a, ctx) => {
        const t = ctx.auth.token!;
        if (t.kind !== "account") throw notAuthorized(); // workspace and project tokens cannot query `me`
        return {
          id: this.#userId,
          name: "Stand-in User",
          email: "standin@example.invalid",
          username: "standin",
          avatar: null,
          createdAt: t.createdAt,
          lastLogin: this.#now(),
          has2FA: false,
          hasPasskeys: false,
          isAdmin: false,
          isConductor: false,
          isVerified: true,
          agreedFairUse: true,
          featureFlags: [],
          flags: [],
          platformFeatureFlags: [],
          registrationStatus: "REGISTERED",
          riskLevel: null,
          termsAgreedOn: null,
          githubUsername: null,
          githubProviderId: null,
          banReason: null,
          profile: null,
          workspace: null,
          workspaces: () => [...this.#workspaces.values()].map((w) => this.#workspaceView(w, ctx)),
          apiTokenRateLimit: () => this.#tokenRateLimit(ctx),
          projects: (args: PageArgs) =>
            this.#connection(
              [...this.#projects.values()].filter((p) => !p.deleted),
              args,
              (p) => this.#projectView(p, ctx),
            ),
        };
      },
      project: (a, ctx) => this.#projectView(this.#project(ctx, a.id), ctx),
      projects: (a, ctx) => {
        const t = ctx.auth.token!;
        if (t.kind === "project") throw notAuthorized();
        if (a.workspaceId != null && !this.#canWorkspace(ctx, String(a.workspaceId))) throw notAuthorized();
        const list = [...this.#projects.values()].filter(
          (p) =>
            (a.includeDeleted === true || !p.deleted) && this.#canWorkspace(ctx, p.workspaceId) && (a.workspaceId == null || p.workspaceId === a.workspaceId),
        );
        return this.#connection(list, a as PageArgs, (p) => this.#projectView(p, ctx));
      },
      projectToken: (_a, ctx) => {
        const t = ctx.auth.token!;
        if (t.kind !== "project") throw new GraphQLError("Project Token not found");
        const p = this.#projects.get(t.projectId!)!;
        return {
          id: t.id,
          name: "stand-in project token",
          projectId: t.projectId,
          environmentId: t.environmentId,
          createdAt: t.createdAt,
          displayToken: `${t.token.slice(0, 4)}…`,
          project: () => this.#projectView(p, ctx),
          environment: () => this.#envView(this.#envs.get(t.environmentId!)!, ctx),
        };
      },
      environment: (a, ctx) => this.#envView(this.#env(ctx, a.id, a.projectId == null ? undefined : String(a.projectId)), ctx),
      environments: (a, ctx) => {
        const p = this.#project(ctx, a.projectId);
        const t = ctx.auth.token!;
        const list = this.#envsOf(p).filter(
          (e) => (a.isEphemeral == null || e.isEphemeral === a.isEphemeral) && (t.kind !== "project" || t.environmentId === e.id),
        );
        return this.#connection(list, a as PageArgs, (e) => this.#envView(e, ctx));
      },
      service: (a, ctx) => this.#serviceView(this.#service(ctx, a.id), ctx),
      serviceInstance: (a, ctx) => this.#instanceView(this.#instance(ctx, a.serviceId, a.environmentId), ctx),
      deployment: (a, ctx) => this.#deploymentView(this.#deployment(ctx, a.id), ctx),
      deployments: (a, ctx) => {
        const input = (a.input ?? {}) as Args;
        if (input.projectId == null && input.serviceId == null && input.environmentId == null)
          throw badInput("projectId, environmentId or serviceId is required");
        if (input.projectId != null) this.#project(ctx, input.projectId);
        if (input.serviceId != null) this.#service(ctx, input.serviceId);
        if (input.environmentId != null) this.#env(ctx, input.environmentId);
        const st = (input.status ?? {}) as { in?: string[] | null; notIn?: string[] | null };
        const list = [...this.#deployments.values()].filter(
          (d) =>
            (input.projectId == null || d.projectId === input.projectId) &&
            (input.serviceId == null || d.serviceId === input.serviceId) &&
            (input.environmentId == null || d.environmentId === input.environmentId) &&
            (input.includeDeleted === true || !this.#services.get(d.serviceId)!.deleted) &&
            (!st.in || st.in.includes(d.status)) &&
            !st.notIn?.includes(d.status),
        );
        return this.#connection(list, a as PageArgs, (d) => this.#deploymentView(d, ctx), "desc");
      },
      domains: (a, ctx) => {
        const p = this.#project(ctx, a.projectId);
        const i = this.#instance(ctx, a.serviceId, a.environmentId);
        if (this.#services.get(i.serviceId)!.projectId !== p.id) throw notAuthorized();
        return this.#allDomains(i);
      },
      variables: (a, ctx) => {
        const p = this.#project(ctx, a.projectId);
        const e = this.#env(ctx, a.environmentId, p.id);
        if (a.serviceId == null) return { ...e.sharedVariables };
        const i = this.#instance(ctx, a.serviceId, e.id);
        return a.unrendered === true ? { ...i.variables } : { ...e.sharedVariables, ...i.variables };
      },
      notificationRules: (a, ctx) => {
        if (!this.#canWorkspace(ctx, String(a.workspaceId))) throw notAuthorized();
        return [...this.#rules.values()]
          .filter((r) => r.workspaceId === a.workspaceId && (a.projectId == null || r.projectId === a.projectId))
          .map((r) => this.#ruleView(r));
      },

      // ---- Mutation ----
      projectCreate: (a, ctx) => {
        const input = a.input as Args;
        const t = ctx.auth.token!;
        if (t.kind === "project") throw notAuthorized();
        const workspaceId = input.workspaceId == null ? (t.kind === "workspace" ? t.workspaceId! : this.workspaceId) : String(input.workspaceId);
        if (!this.#canWorkspace(ctx, workspaceId)) throw notAuthorized();
        const name = input.name == null ? `project-${rand(6)}` : String(input.name);
        if (name.length > this.#maxProjectName) throw badInput(`Project name must be at most ${this.#maxProjectName} characters`);
        // xmtplabs saw ~1 projectCreate per 30 s per token, as a GraphQL error with HTTP 200.
        this.#throttle(ctx, this.#lastProjectCreate, this.#projectCreateIntervalMs, "Only one project can be created per user");
        const p = this.#newProject(
          name,
          workspaceId,
          input.defaultEnvironmentName == null ? "production" : String(input.defaultEnvironmentName),
          strOrNull(input.description),
        );
        if (input.isPublic === true) p.isPublic = true;
        if (input.prDeploys === true) p.prDeploys = true;
        return this.#projectView(p, ctx);
      },
      projectDelete: (a, ctx) => {
        const p = this.#project(ctx, a.id);
        if (ctx.auth.token!.kind === "project") throw notAuthorized();
        for (const s of this.#liveServices(p)) this.#deleteService(s, ctx);
        for (const v of this.#volumes.values()) if (v.projectId === p.id) v.deleted = true;
        p.deleted = true;
        return true;
      },
      environmentCreate: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        if (ctx.auth.token!.kind === "project") throw notAuthorized();
        const source = input.sourceEnvironmentId == null ? undefined : this.#env(ctx, input.sourceEnvironmentId, p.id);
        const e = this.#newEnv(p, String(input.name), input.ephemeral === true, source);
        if (source && input.skipInitialDeploys !== true) {
          for (const s of this.#liveServices(p)) {
            const i = s.instances.get(e.id);
            if (i?.source) this.#newDeployment(i);
          }
        }
        return this.#envView(e, ctx);
      },
      serviceCreate: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        const target = input.environmentId == null ? null : this.#env(ctx, input.environmentId, p.id);
        if (this.#liveServices(p).length >= this.#maxServices) throw new GraphQLError(this.#serviceLimitMessage);
        const src = isObject(input.source) ? input.source : null;
        const image = src ? strOrNull(src.image) : null;
        const repo = src ? strOrNull(src.repo) : null;
        const name =
          input.name == null ? slug((image ?? repo ?? "service").split("/").pop()!.split(":")[0]!).slice(0, this.#maxServiceName) : String(input.name);
        this.#checkServiceName(name);
        const vars = this.#variablesInput(input.variables);
        const now = this.#now();
        const s: ServiceRec = {
          id: randomUUID(),
          seq: this.#nextSeq(),
          projectId: p.id,
          name,
          icon: strOrNull(input.icon),
          createdAt: now,
          updatedAt: now,
          deleted: false,
          instances: new Map(),
        };
        this.#services.set(s.id, s);
        this.#logService("create", s, ctx);
        const targets: InstanceRec[] = [];
        for (const e of this.#envsOf(p)) {
          const i = this.#newInstance(s, e.id);
          s.instances.set(e.id, i);
          if (target === null ? !e.isEphemeral : target.id === e.id) targets.push(i);
        }
        for (const i of targets) {
          this.#applyVars(i.variables, vars);
          if (image || repo) {
            i.source = { image, repo };
            this.#newDeployment(i);
          }
        }
        return this.#serviceView(s, ctx);
      },
      serviceUpdate: (a, ctx) => {
        const s = this.#service(ctx, a.id);
        const input = a.input as Args;
        if (input.name != null) {
          this.#checkServiceName(String(input.name));
          const before = s.name;
          s.name = String(input.name);
          if (s.name !== before) this.#logService("rename", s, ctx, before);
        }
        if (has(input, "icon")) s.icon = strOrNull(input.icon);
        s.updatedAt = this.#now();
        return this.#serviceView(s, ctx);
      },
      serviceDelete: (a, ctx) => {
        const s = this.#service(ctx, a.id);
        if (a.environmentId != null) this.#env(ctx, a.environmentId, s.projectId);
        this.#deleteService(s, ctx);
        return true;
      },
      serviceConnect: (a, ctx) => {
        const s = this.#service(ctx, a.id);
        const input = a.input as Args;
        for (const i of s.instances.values()) {
          i.source = { image: strOrNull(input.image), repo: strOrNull(input.repo) };
          if (input.branch != null) i.settings.branch = input.branch;
          this.#newDeployment(i);
        }
        return this.#serviceView(s, ctx);
      },
      serviceDisconnect: (a, ctx) => {
        const s = this.#service(ctx, a.id);
        for (const i of s.instances.values()) i.source = i.source?.image ? { image: i.source.image, repo: null } : null;
        return this.#serviceView(s, ctx);
      },
      serviceDomainCreate: async (a, ctx) => {
        const input = a.input as Args;
        const i = this.#instance(ctx, input.serviceId, input.environmentId);
        const s = this.#services.get(i.serviceId)!;
        const now = this.#now();
        const d: DomainRec = {
          id: randomUUID(),
          seq: this.#nextSeq(),
          serviceId: s.id,
          environmentId: i.environmentId,
          projectId: s.projectId,
          host: `${slug(s.name)}-${rand(6)}.up.railway.app`,
          targetPort: (input.targetPort as number | null | undefined) ?? null,
          createdAt: now,
          updatedAt: now,
          proxy: null,
        };
        if (this.#runtimes) {
          const proxy = new DomainProxy(() => {
            const live = this.#deploymentsOfService(d.serviceId, d.environmentId).find((x) => x.status === "SUCCESS" && x.runtimeUrl);
            return live?.runtimeUrl ? Number(new URL(live.runtimeUrl).port) : null;
          });
          await proxy.listen();
          d.proxy = proxy;
        }
        this.#domains.set(d.id, d);
        return this.#domainView(d);
      },
      serviceDomainDelete: async (a, ctx) => {
        const d = this.#domains.get(String(a.id));
        if (!d) throw notAuthorized();
        this.#service(ctx, d.serviceId);
        this.#domains.delete(d.id);
        await d.proxy?.close();
        return true;
      },
      serviceDomainUpdate: (a, ctx) => {
        const input = a.input as Args;
        const d = this.#domains.get(String(input.serviceDomainId));
        if (!d || d.serviceId !== input.serviceId) throw notAuthorized();
        this.#service(ctx, d.serviceId);
        if (has(input, "targetPort")) d.targetPort = (input.targetPort as number | null) ?? null;
        d.updatedAt = this.#now();
        return true;
      },
      variableCollectionUpsert: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        const e = this.#env(ctx, input.environmentId, p.id);
        const vars = this.#variablesInput(input.variables);
        if (input.serviceId == null) {
          if (input.replace === true) e.sharedVariables = {};
          this.#applyVars(e.sharedVariables, vars);
          if (input.skipDeploys !== true)
            for (const s of this.#liveServices(p)) {
              const i = s.instances.get(e.id);
              if (i?.source) this.#newDeployment(i);
            }
          return true;
        }
        const i = this.#instance(ctx, input.serviceId, e.id);
        if (input.replace === true) i.variables = {};
        this.#applyVars(i.variables, vars);
        // Railway: an upsert redeploys the service unless skipDeploys.
        if (input.skipDeploys !== true && i.source) this.#newDeployment(i);
        return true;
      },
      variableUpsert: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        const e = this.#env(ctx, input.environmentId, p.id);
        const target = input.serviceId == null ? null : this.#instance(ctx, input.serviceId, e.id);
        this.#applyVars(target ? target.variables : e.sharedVariables, { [String(input.name)]: String(input.value) });
        if (target && input.skipDeploys !== true && target.source) this.#newDeployment(target);
        return true;
      },
      variableDelete: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        const e = this.#env(ctx, input.environmentId, p.id);
        const target = input.serviceId == null ? null : this.#instance(ctx, input.serviceId, e.id);
        delete (target ? target.variables : e.sharedVariables)[String(input.name)];
        if (target?.source) this.#newDeployment(target);
        return true;
      },
      serviceInstanceUpdate: (a, ctx) => {
        const s = this.#service(ctx, a.serviceId);
        const input = a.input as Args;
        const targets = a.environmentId == null ? [...s.instances.values()] : [this.#instance(ctx, s.id, a.environmentId)];
        for (const i of targets) {
          // Absent = leave, explicit null = clear (the CLI strips nulls for exactly this reason).
          let deploy = false;
          for (const [k, v] of Object.entries(input)) {
            switch (k) {
              case "source": {
                const src = isObject(v) ? { image: strOrNull(v.image), repo: strOrNull(v.repo) } : null;
                deploy = src !== null && (src.image !== null || src.repo !== null);
                i.source = src;
                break;
              }
              case "startCommand":
                i.startCommand = strOrNull(v);
                break;
              case "healthcheckPath":
                i.healthcheckPath = strOrNull(v);
                break;
              case "healthcheckTimeout":
                i.healthcheckTimeout = (v as number | null) ?? null;
                break;
              case "numReplicas":
                i.numReplicas = (v as number | null) ?? 1;
                break;
              case "region":
                i.region = strOrNull(v);
                break;
              case "restartPolicyType":
                i.restartPolicyType = (v as string | null) ?? "ON_FAILURE";
                break;
              case "restartPolicyMaxRetries":
                i.restartPolicyMaxRetries = (v as number | null) ?? 10;
                break;
              case "sleepApplication":
                i.sleepApplication = v === true;
                break;
              case "rootDirectory":
                i.rootDirectory = strOrNull(v);
                break;
              default:
                if (v === null) delete i.settings[k];
                else i.settings[k] = v;
            }
          }
          i.updatedAt = this.#now();
          // POOL-NEW: setting an image source through this mutation triggers a deploy.
          if (deploy) this.#newDeployment(i);
        }
        return true;
      },
      serviceInstanceLimitsUpdate: (a, ctx) => {
        const input = a.input as Args;
        const i = this.#instance(ctx, input.serviceId, input.environmentId);
        if (has(input, "vCPUs")) i.limits.vCPUs = (input.vCPUs as number | null) ?? undefined;
        if (has(input, "memoryGB")) i.limits.memoryGB = (input.memoryGB as number | null) ?? undefined;
        return true;
      },
      serviceInstanceRedeploy: (a, ctx) => {
        const i = this.#instance(ctx, a.serviceId, a.environmentId);
        if (!i.source && this.#deploymentsOfService(i.serviceId, i.environmentId).length === 0) throw problem();
        this.#newDeployment(i);
        return true;
      },
      serviceInstanceDeploy: (a, ctx) => {
        const i = this.#instance(ctx, a.serviceId, a.environmentId);
        if (!i.source) throw problem();
        this.#newDeployment(i);
        return true;
      },
      serviceInstanceDeployV2: (a, ctx) => {
        const i = this.#instance(ctx, a.serviceId, a.environmentId);
        if (!i.source) throw problem();
        return this.#newDeployment(i).id;
      },
      deploymentRedeploy: (a, ctx) => {
        const old = this.#deployment(ctx, a.id);
        const s = this.#services.get(old.serviceId)!;
        if (s.deleted) throw notAuthorized();
        // Replays the old deployment's image (the earlier pool learned this the hard way, #280).
        return this.#deploymentView(this.#newDeployment(s.instances.get(old.environmentId)!, old.image), ctx);
      },
      deploymentRestart: (a, ctx) => {
        const d = this.#deployment(ctx, a.id);
        if (d.status !== "SUCCESS" && d.status !== "CRASHED" && d.status !== "SLEEPING") throw problem();
        this.#stopRuntime(d);
        d.frozen = false;
        this.#setStatus(d, "BUILDING");
        this.#step(d); // straight to DEPLOYING: nothing to build
        return true;
      },
      deploymentCancel: (a, ctx) => {
        const d = this.#deployment(ctx, a.id);
        if (IN_PROGRESS.has(d.status)) {
          if (d.timer) clearTimeout(d.timer);
          d.timer = null;
          this.#setStatus(d, "REMOVED", "cancelled"); // UNVERIFIED: a cancelled deployment's final status
          this.#stopRuntime(d);
        }
        return true;
      },
      deploymentStop: (a, ctx) => {
        const d = this.#deployment(ctx, a.id);
        if (d.timer) clearTimeout(d.timer);
        d.timer = null;
        this.#setStatus(d, "REMOVED", "stopped");
        this.#stopRuntime(d);
        return true;
      },
      deploymentRemove: (a, ctx) => {
        const d = this.#deployment(ctx, a.id);
        if (d.timer) clearTimeout(d.timer);
        d.timer = null;
        this.#setStatus(d, "REMOVED", "removed");
        this.#stopRuntime(d);
        return true;
      },
      environmentPatchCommit: (a, ctx) => {
        const e = this.#env(ctx, a.environmentId);
        const p = this.#projects.get(e.projectId)!;
        const patch = a.patch ?? {};
        if (!isObject(patch)) throw badInput("patch must be an EnvironmentConfig object");
        const toDeploy = new Set<InstanceRec>();
        if (patch.services !== undefined && !isObject(patch.services)) throw badInput("patch.services must be an object");
        for (const [sid, cfg] of Object.entries((patch.services ?? {}) as Record<string, unknown>)) {
          const s = this.#services.get(sid);
          if (!s || s.deleted || s.projectId !== p.id) throw problem();
          const i = s.instances.get(e.id);
          if (!i) throw problem();
          if (cfg === null || (isObject(cfg) && cfg.isDeleted === true)) {
            this.#deleteService(s, ctx);
            continue;
          }
          if (!isObject(cfg)) throw badInput(`patch.services.${sid} must be an object`);
          if (isObject(cfg.source)) {
            const src = cfg.source;
            const next: Source = { image: i.source?.image ?? null, repo: i.source?.repo ?? null };
            if (has(src, "image")) next.image = strOrNull(src.image);
            if (has(src, "repo")) next.repo = strOrNull(src.repo);
            i.source = next.image || next.repo ? next : null;
            if (has(src, "rootDirectory")) i.rootDirectory = strOrNull(src.rootDirectory);
          }
          if (isObject(cfg.deploy)) {
            const dep = cfg.deploy;
            if (has(dep, "startCommand")) i.startCommand = strOrNull(dep.startCommand);
            if (has(dep, "healthcheckPath")) i.healthcheckPath = strOrNull(dep.healthcheckPath);
            if (has(dep, "healthcheckTimeout")) i.healthcheckTimeout = (dep.healthcheckTimeout as number | null) ?? null;
            if (has(dep, "numReplicas")) i.numReplicas = (dep.numReplicas as number | null) ?? 1;
            if (has(dep, "restartPolicyType")) i.restartPolicyType = (dep.restartPolicyType as string | null) ?? "ON_FAILURE";
            if (has(dep, "sleepApplication")) i.sleepApplication = dep.sleepApplication === true;
            if (isObject(dep.limitOverride)) i.settings.limitOverride = dep.limitOverride;
          }
          if (isObject(cfg.variables)) {
            for (const [k, v] of Object.entries(cfg.variables)) {
              if (v === null || (isObject(v) && v.isDeleted === true)) delete i.variables[k];
              else if (isObject(v) && has(v, "value")) i.variables[k] = String(v.value);
              else throw badInput(`patch.services.${sid}.variables.${k} must be {value} or null`);
            }
          }
          i.updatedAt = this.#now();
          toDeploy.add(i);
        }
        if (isObject(patch.sharedVariables)) {
          for (const [k, v] of Object.entries(patch.sharedVariables)) {
            if (v === null) delete e.sharedVariables[k];
            else if (isObject(v) && has(v, "value")) e.sharedVariables[k] = String(v.value);
          }
        }
        // One commit = one deployment per touched service, all variables in it.
        for (const i of toDeploy) if (i.source && !this.#services.get(i.serviceId)!.deleted) this.#newDeployment(i);
        return randomUUID();
      },
      volumeCreate: (a, ctx) => {
        const input = a.input as Args;
        const p = this.#project(ctx, input.projectId);
        const s = input.serviceId == null ? null : this.#service(ctx, input.serviceId);
        if (s && s.projectId !== p.id) throw notAuthorized();
        // Absent environmentId = every environment; explicit null = none (schema description).
        const envs = !has(input, "environmentId") ? this.#envsOf(p) : input.environmentId === null ? [] : [this.#env(ctx, input.environmentId, p.id)];
        this.#throttle(ctx, this.#lastVolumeCreate, this.#volumeCreateIntervalMs, "You are creating volumes too quickly");
        const now = this.#now();
        const v: VolumeRec = {
          id: randomUUID(),
          seq: this.#nextSeq(),
          projectId: p.id,
          name: `${s ? slug(s.name) : "volume"}-volume`,
          createdAt: now,
          deleted: false,
          instances: envs.map((e) => ({
            id: randomUUID(),
            seq: this.#nextSeq(),
            serviceId: s?.id ?? null,
            environmentId: e.id,
            mountPath: String(input.mountPath),
            region: strOrNull(input.region),
            createdAt: now,
          })),
        };
        this.#volumes.set(v.id, v);
        return this.#volumeView(v, ctx);
      },
      volumeDelete: (a, ctx) => {
        const v = this.#volumes.get(String(a.volumeId));
        if (!v || v.deleted) throw notAuthorized();
        this.#project(ctx, v.projectId);
        v.deleted = true;
        return true;
      },
      notificationRuleCreate: (a, ctx) => {
        const input = a.input as Args;
        if (!this.#canWorkspace(ctx, String(input.workspaceId))) throw notAuthorized();
        const now = this.#now();
        const r: RuleRec = {
          id: randomUUID(),
          workspaceId: String(input.workspaceId),
          projectId: strOrNull(input.projectId),
          eventTypes: (input.eventTypes as string[]) ?? [],
          severities: (input.severities as string[] | null) ?? [],
          channels: ((input.channelConfigs as unknown[]) ?? []).map((config) => ({ id: randomUUID(), config, createdAt: now })),
          createdAt: now,
        };
        this.#rules.set(r.id, r);
        return this.#ruleView(r);
      },
    };
    const root: Record<string, (args: Args, ctx: Ctx) => unknown> = {};
    for (const [name, fn] of Object.entries(q)) {
      root[name] = (args, ctx) => {
        this.#requireAuth(ctx);
        return fn(args, ctx);
      };
    }
    return root;
  }
}

/** Reads plain objects (functions are called with the field's args); loud about what is not modelled. */
const fieldResolver: GraphQLFieldResolver<unknown, Ctx> = (source, args, ctx, info) => {
  const value = isObject(source) ? source[info.fieldName] : undefined;
  const out = typeof value === "function" ? (value as (a: unknown, c: Ctx, i: unknown) => unknown)(args, ctx, info) : value;
  if (out !== undefined) return out;
  const isRoot = info.parentType === info.schema.getQueryType() || info.parentType === info.schema.getMutationType();
  if (isRoot || isNonNullType(info.returnType)) {
    throw new GraphQLError(`stand-in: ${info.parentType.name}.${info.fieldName} is not implemented`);
  }
  return null;
};

/** The operation to run and its root field names (fragments at the root followed). */
function describeOperation(
  doc: DocumentNode,
  operationName: string | null,
): { type: RecordedRequest["operationType"]; name: string | null; rootFields: string[] } {
  const ops = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const op = operationName ? ops.find((o) => o.name?.value === operationName) : ops[0];
  if (!op) return { type: null, name: null, rootFields: [] };
  const fragments = new Map(doc.definitions.flatMap((d) => (d.kind === Kind.FRAGMENT_DEFINITION ? [[d.name.value, d] as const] : [])));
  const fields: string[] = [];
  const seen = new Set<string>();
  const walk = (set: SelectionSetNode): void => {
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) fields.push(sel.name.value);
      else if (sel.kind === Kind.INLINE_FRAGMENT) walk(sel.selectionSet);
      else if (!seen.has(sel.name.value)) {
        seen.add(sel.name.value);
        const f = fragments.get(sel.name.value);
        if (f) walk(f.selectionSet);
      }
    }
  };
  walk(op.selectionSet);
  return { type: op.operation as RecordedRequest["operationType"], name: op.name?.value ?? null, rootFields: fields };
}

export async function startRailwayStandin(opts: RailwayStandinOptions = {}): Promise<RailwayStandin> {
  const path = opts.schemaPath ?? railwaySchemaPath();
  if (!path) throw new Error("no Railway schema: set RAILWAY_SCHEMA_PATH");
  const standin = new Standin(loadRailwaySchema(path), opts);
  try {
    await standin.start();
  } catch (err) {
    await standin.close();
    throw err;
  }
  return standin;
}
