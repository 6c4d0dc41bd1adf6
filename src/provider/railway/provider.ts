/**
 * The Railway provider: one Railway service per instance, named
 * `<servicePrefix>-<poolTag>-<instanceId>-<ownerId>` (names.ts), in one environment of one or more projects.
 *
 * Budget first (seed §5.4: the earlier 1+N calls per tick used 82% of the hourly budget):
 * `list()` is one request per call for every project and instance; creates are two requests
 * (service with image + variables inline, then its domain); every request is paced by the client.
 * Safety second (seed §8): a listing that failed throws or says `complete: false`, never an empty
 * complete listing; a create never leaves a half-made service; a rename is never dropped silently;
 * a service carrying another deployment's owner id is listed (for the reconciler to report) but
 * never deleted or renamed from here.
 */
import { systemClock, type Clock } from "../../clock.ts";
import { PoolError } from "../../errors.ts";
import type { CreateInstanceSpec, Provider, ProviderBudget, ProviderInstance, ProviderListing, UpgradeInstanceSpec } from "../provider.ts";
import {
  GraphQLClient,
  RailwayApiError,
  isRailwayApiError,
  noopLogger,
  type FailureKind,
  type GraphQLResult,
  type RailwayLogger,
  type RateLimitState,
  type Transport,
} from "./client.ts";
import {
  NOTIFICATION_RULE_CREATE,
  NOTIFICATION_RULES,
  PROJECT_CREATE,
  PROJECT_SERVICE_NAMES,
  PROJECT_TOKEN_SCOPE,
  SERVICE_CREATE,
  SERVICE_DELETE,
  SERVICE_DELETE_IN_ENVIRONMENT,
  SERVICE_DOMAIN_CREATE,
  SERVICE_INSTANCE_DEPLOY,
  SERVICE_INSTANCE_SOURCE,
  SERVICE_RENAME,
  TOKEN_CHECK,
  VARIABLES_UPSERT,
  listDocument,
  listPageDocument,
  resolveDocument,
  type Connection,
  type ListData,
  type NotificationRulesData,
  type ProjectCreateData,
  type ProjectEnvironmentsNode,
  type ProjectServiceNamesData,
  type ProjectServicesNode,
  type ProjectTokenScopeData,
  type ResolveData,
  type ServiceCreateData,
  type ServiceDeleteData,
  type ServiceDomainCreateData,
  type ServiceInstanceDeployData,
  type ServiceInstanceSourceData,
  type ServiceNode,
  type ServiceRenameData,
  type VariablesUpsertData,
} from "./operations.ts";
import { ServiceNames, type ParsedServiceName } from "./names.ts";
import { mapDeployStatus, pickDeployment } from "./status.ts";

export { ownPrefixFor } from "./names.ts";

/** Deployment events the pool listens to (Railway's names; the earlier system consumed these). */
export const DEPLOYMENT_EVENT_TYPES = [
  "Deployment.deployed",
  "Deployment.crashed",
  "Deployment.failed",
  "Deployment.oom_killed",
  "Deployment.slept",
  "Deployment.resumed",
  "Deployment.removed",
];

export const DEFAULT_RAILWAY_API_URL = "https://backboard.railway.com/graphql/v2";
export const DEFAULT_SERVICE_PREFIX = "ap";

/** Options of the Railway provider (plain object; the lead maps env vars onto it). */
export interface RailwayOptions {
  /** GraphQL endpoint. Default `https://backboard.railway.com/graphql/v2`. */
  apiUrl?: string;
  /** Account or workspace token, sent as `Authorization: Bearer <token>`. Needed for `workspaceId`. */
  apiToken?: string;
  /** Project token, sent as `Project-Access-Token: <token>` (one environment of one project). Used when `apiToken` is unset. */
  projectToken?: string;
  /** Projects the pool's services live in (several pools and environments may share them). */
  projectIds: string[];
  /**
   * Environment to run in. Unset → the environment named `environmentName` in each project, resolved
   * once at `open()`. Environment ids belong to one project: with several projects, the others use
   * `environmentName`.
   */
  environmentId?: string;
  /** Environment name looked up when `environmentId` is unset (case-insensitive). Default `production`. */
  environmentName?: string;
  /** Workspace in which to create a project when every project is full (100 services); unset → create fails instead. */
  workspaceId?: string;
  /** Pool id; part of every service name. */
  poolId: string;
  /**
   * The deployment's owner id (5 characters of [a-z0-9], recorded once per database): part of every
   * service name this provider gives, and `create()` refuses a spec with another one.
   */
  ownerId: string;
  /**
   * First part of every service name; only services named `<servicePrefix>-<poolTag>-<instanceId>-<ownerId>`
   * (or, made before owner ids, `<servicePrefix>-<poolTag>-<instanceId>`) are this pool's. Default
   * `ap`: Railway caps service names at 32 characters. `poolTag` is the pool id when the name fits,
   * else a stable short form of it (its start + 4 hash characters). At most 5 characters (names.ts).
   */
  servicePrefix?: string;
  /** Railway's service name limit. Default 32. */
  maxServiceNameLength?: number;
  /** Longest instance id the names must hold (the default ids are `i-` + 12). Default 14. */
  maxInstanceIdLength?: number;
  /** Image every instance runs (INSTANCE_IMAGE), e.g. `ghcr.io/org/agent-runtime:1.2.3`. */
  image: string;
  /** PORT given to the runtime and the port the public domain routes to. Default 8080. */
  instancePort?: number;
  /** Scheme of instance URLs (`https://<domain>`). Default `https`; tests against a stand-in use `http`. */
  urlScheme?: "https" | "http";
  /** Timeout of every HTTP request. Default 20 000 ms. */
  requestTimeoutMs?: number;
  /** Railway's per-second limit (Pro: 50). Requests are spaced to 80% of it. Default 50. */
  maxRequestsPerSecond?: number;
  /** At most one `projectCreate` per this interval (Railway: ~1 per 30 s per user). Default 30 000 ms. */
  projectCreateIntervalMs?: number;
  /** Services a project can hold. Default 100 (Railway's cap). */
  maxServicesPerProject?: number;
  /** Below this fraction of the hourly budget left, creates are spaced out. Default 0.1. */
  lowBudgetFraction?: number;
  /**
   * What the instance id part of a service name must look like. Default: exactly one `-`
   * (`i-abc123`), which keeps pools whose ids prefix each other apart (`default` never claims
   * `default-2`'s `ap-default-2-i-x-k2f9q`).
   */
  instanceIdPattern?: RegExp;
  /** First retry delay of a failed rename (doubles, capped at 5 min). Default 5 000 ms. */
  renameRetryBaseMs?: number;
  /** Attempts before a rename is given up (logged as an error, counted). Default 20. */
  maxRenameAttempts?: number;
  /** Called with each project this provider creates, so it can be persisted/configured. */
  onProjectCreated?: (project: { id: string; name: string; environmentId: string }) => void;
  /** pino-like logger. */
  logger?: RailwayLogger;
  clock?: Clock;
  /** Injectable wait (tests pass a fake; pacing and Retry-After use it). */
  sleep?: (ms: number) => Promise<void>;
  /** Jitter source in [0,1). */
  random?: () => number;
  /** HTTP transport (tests); default undici `request()` with a keep-alive Agent. */
  transport?: Transport;
}

interface ProjectState {
  id: string;
  name: string | null;
  environmentId: string;
  /** Services (all of them, any pool) in the last listing of this project; null = never listed. */
  listedCount: number | null;
  /** `#seq` when that listing was sent: creates/deletes after it are not in `listedCount`. */
  listedSeq: number;
  /** Creates under way that hold a slot. */
  reserved: number;
  /** Railway said the project is full; cleared by the next listing. */
  full: boolean;
}

interface RefInfo {
  projectId: string;
  /** Another environment's instance of the service has an image or a deployment: delete only ours. */
  liveElsewhere: boolean;
  /** Owner id its name carried in the last listing (or ours, when we made it); null: none. */
  owner: string | null;
  /** Its name in the last listing, create or rename. */
  name: string;
}

export interface PendingRename {
  ref: string;
  name: string;
  attempts: number;
  nextAttemptAt: Date;
  lastFailure: FailureKind | "error";
}

/** Longest a create waits for its slot when the hourly budget is low; beyond it, deferred. */
const MAX_CREATE_WAIT_MS = 2_000;

/** Requests one create costs (service + domain); used to spread creates when the budget is low. */
const CALLS_PER_CREATE = 2;
const MAX_RENAME_BACKOFF_MS = 5 * 60_000;
const NOT_FOUND_RE = /not found|does not exist|no such service|could not find/i;
const PROJECT_FULL_RE = /(maximum|limit)\b.{0,30}\bservices|services\b.{0,20}\b(limit|maximum)|too many services/i;
const PROJECT_NAME_MAX = 32;

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export class RailwayProvider implements Provider {
  readonly kind = "railway";
  readonly #o: Required<Pick<RailwayOptions, "poolId" | "image">> & RailwayOptions;
  readonly #client: GraphQLClient;
  readonly #log: RailwayLogger;
  readonly #clock: Clock;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #random: () => number;
  /** The default pool's names (project names are based on them). */
  readonly #names: ServiceNames;
  /** Names of every pool this provider serves, by pool id (see knowPools). */
  readonly #poolNames = new Map<string, ServiceNames>();
  readonly #ownerId: string;
  readonly #scheme: string;
  readonly #port: number;
  readonly #maxServices: number;
  readonly #projects = new Map<string, ProjectState>();
  readonly #refs = new Map<string, RefInfo>();
  /** Creates (+1) and deletes (−1) since listings, by sequence number. */
  #events: Array<{ seq: number; projectId: string; delta: number }> = [];
  #seq = 0;
  #projectCreating: Promise<void> | null = null;
  #lastProjectCreateAt = Number.NEGATIVE_INFINITY;
  #nextCreateAt = 0;
  #counting: Promise<unknown> | null = null;
  readonly #renames = new Map<string, PendingRename>();
  #renameTimer: NodeJS.Timeout | null = null;
  #renaming: Promise<void> | null = null;
  #closed = false;

  /** Prefer `RailwayProvider.open()`, which resolves environments. */
  constructor(opts: RailwayOptions) {
    if (!opts.apiToken && !opts.projectToken) throw new PoolError("CONFIG_INVALID", "railway: set apiToken or projectToken");
    if (!opts.poolId) throw new PoolError("CONFIG_INVALID", "railway: poolId is required");
    if (!opts.image) throw new PoolError("CONFIG_INVALID", "railway: image is required");
    if (!Array.isArray(opts.projectIds) || (opts.projectIds.length === 0 && !opts.workspaceId)) {
      throw new PoolError("CONFIG_INVALID", "railway: projectIds must name at least one project (or set workspaceId)");
    }
    if (opts.workspaceId && !opts.apiToken)
      throw new PoolError("CONFIG_INVALID", "railway: workspaceId needs an apiToken (a project token cannot create projects)");
    this.#o = { ...opts };
    this.#log = opts.logger ?? noopLogger;
    this.#clock = opts.clock ?? systemClock;
    this.#sleep = opts.sleep ?? realSleep;
    this.#random = opts.random ?? Math.random;
    this.#ownerId = opts.ownerId;
    this.#names = this.#namesOf(opts.poolId);
    this.#scheme = opts.urlScheme ?? "https";
    this.#port = opts.instancePort ?? 8080;
    this.#maxServices = opts.maxServicesPerProject ?? 100;
    this.#client = new GraphQLClient({
      apiUrl: opts.apiUrl ?? DEFAULT_RAILWAY_API_URL,
      apiToken: opts.apiToken,
      projectToken: opts.apiToken ? undefined : opts.projectToken,
      requestTimeoutMs: opts.requestTimeoutMs,
      maxRequestsPerSecond: opts.maxRequestsPerSecond,
      logger: this.#log,
      clock: this.#clock,
      sleep: this.#sleep,
      random: this.#random,
      transport: opts.transport,
    });
  }

  /** A provider with its environments resolved (one request for every project). */
  static async open(opts: RailwayOptions): Promise<RailwayProvider> {
    const provider = new RailwayProvider(opts);
    try {
      await provider.#resolve();
    } catch (err) {
      await provider.close();
      throw err;
    }
    return provider;
  }

  // ---- observability ----

  /** `{[operation]: {[outcome]: count}}`; outcomes: `ok`, `partial`, the `FailureKind`s, and provider outcomes (`not_found`, `rename_queued`, …). */
  get stats(): Record<string, Record<string, number>> {
    return this.#client.stats;
  }

  /** Last `X-RateLimit-*` headers seen. */
  get rateLimit(): RateLimitState {
    return this.#client.rateLimit;
  }

  /**
   * The name a rename to `requested` gives the service: label separator fixed, fitted to 32
   * characters by cutting the label. Throws for a name that would not be this deployment's.
   */
  nameFor(requested: string): string {
    // The pool whose prefix the name carries decides; the default pool's names say why not otherwise.
    for (const names of this.#poolNames.values()) if (names.parse(requested) || requested.startsWith(names.ownPrefix)) return names.nameFor(requested);
    return this.#names.nameFor(requested);
  }

  renamePending(ref: string): boolean {
    return this.#renames.has(ref);
  }

  budget(): ProviderBudget {
    const rl = this.#client.rateLimit;
    return { limit: rl.limit, remaining: rl.remaining, pendingRenames: this.#renames.size };
  }

  /** HTTP requests sent so far. */
  get requestsSent(): number {
    return this.#client.requestsSent;
  }

  /** Renames that failed and wait for a retry. */
  get pendingRenames(): PendingRename[] {
    return [...this.#renames.values()].map((r) => ({ ...r, nextAttemptAt: new Date(r.nextAttemptAt) }));
  }

  /** Projects in use (configured, discovered in the workspace, created), with their environment and known service count. */
  get projects(): Array<{ id: string; environmentId: string; services: number | null }> {
    return [...this.#projects.values()].map((p) => ({ id: p.id, environmentId: p.environmentId, services: p.listedCount === null ? null : this.#countOf(p) }));
  }

  /** Service name of an instance of a pool (default: the provider's pool): `<prefix>-<poolTag>-<instanceId>-<ownerId>`. */
  serviceName(instanceId: string, poolId: string = this.#o.poolId): string {
    return this.#namesOf(poolId).serviceName(instanceId);
  }

  /** An instance id in a service name of any pool this provider serves (any owner, or none), or null. */
  parseInstanceId(name: string): string | null {
    return this.parseServiceName(name)?.instanceId ?? null;
  }

  /** Instance id, owner id (null: the form before owner ids) and label of a name of a pool this provider serves, or null. */
  parseServiceName(name: string): ParsedServiceName | null {
    for (const names of this.#poolNames.values()) {
      const parsed = names.parse(name);
      if (parsed) return parsed;
    }
    return null;
  }

  /**
   * The pools this provider serves: their services are listed (one listing for all of them). The
   * reconciler tells it every pass; a create for a pool not told yet adds it.
   */
  knowPools(poolIds: readonly string[]): void {
    for (const id of poolIds) this.#namesOf(id);
  }

  #namesOf(poolId: string): ServiceNames {
    let names = this.#poolNames.get(poolId);
    if (!names) {
      names = new ServiceNames({
        prefix: this.#o.servicePrefix ?? DEFAULT_SERVICE_PREFIX,
        poolId,
        ownerId: this.#o.ownerId,
        maxName: this.#o.maxServiceNameLength ?? 32,
        maxInstanceIdLength: this.#o.maxInstanceIdLength ?? 14,
        idPattern: this.#o.instanceIdPattern ?? /^[a-z0-9]+-[a-z0-9]+$/,
      });
      this.#poolNames.set(poolId, names);
    }
    return names;
  }

  // ---- open ----

  async #resolve(): Promise<void> {
    const o = this.#o;
    const wantName = (o.environmentName ?? "production").toLowerCase();
    if (!o.apiToken) {
      // Project token: it is scoped to one environment of one project, which it can tell us.
      if (o.projectIds.length !== 1) throw new PoolError("CONFIG_INVALID", "railway: a project token covers exactly one project");
      const projectId = o.projectIds[0]!;
      let environmentId = o.environmentId;
      if (!environmentId) {
        const r = await this.#client.call<ProjectTokenScopeData>(PROJECT_TOKEN_SCOPE, {}, { operation: "resolveEnvironments", idempotent: true });
        const scope = r.data.projectToken;
        if (!scope?.environmentId || scope.projectId !== projectId) {
          throw new PoolError("CONFIG_INVALID", "railway: the project token does not belong to the configured project");
        }
        environmentId = scope.environmentId;
      }
      this.#addProject(projectId, null, environmentId);
      return;
    }
    if (o.environmentId && o.projectIds.length === 1 && !o.workspaceId) {
      this.#addProject(o.projectIds[0]!, null, o.environmentId); // nothing to look up
      return;
    }
    const vars: Record<string, unknown> = {};
    for (const [i, id] of o.projectIds.entries()) vars[`p${i}`] = id;
    if (o.workspaceId) vars.w = o.workspaceId;
    const r = await this.#client.call<ResolveData>(resolveDocument(o.projectIds.length, !!o.workspaceId), vars, {
      operation: "resolveEnvironments",
      idempotent: true,
    });
    const pick = (node: ProjectEnvironmentsNode | null | undefined): string | null => {
      const envs = edgesOf(node?.environments);
      if (o.environmentId) {
        const byId = envs.find((e) => e.id === o.environmentId);
        if (byId?.id) return byId.id;
      }
      return envs.find((e) => (e.name ?? "").toLowerCase() === wantName)?.id ?? null;
    };
    const missing: string[] = [];
    o.projectIds.forEach((id, i) => {
      const node = r.data[`p${i}`] as ProjectEnvironmentsNode | null | undefined;
      const env = pick(node);
      if (!env) missing.push(id);
      else this.#addProject(id, node?.name ?? null, env);
    });
    if (missing.length > 0) {
      throw new PoolError(
        "CONFIG_INVALID",
        `railway: no environment ${o.environmentId ? `with id ${o.environmentId} or ` : ""}named "${wantName}" in project(s) ${missing.join(", ")}`,
      );
    }
    if (o.workspaceId) {
      // Projects this pool created earlier (by name): without them their instances would be invisible.
      const base = this.#projectNameBase();
      const ws = r.data.w as Connection<ProjectEnvironmentsNode> | null | undefined;
      if (ws?.pageInfo?.hasNextPage) {
        this.#log.warn(
          { workspaceId: o.workspaceId },
          "railway: workspace has more than 100 projects; only the first page was searched for this pool's projects (list them in projectIds)",
        );
      }
      for (const node of edgesOf(ws)) {
        if (!node.id || this.#projects.has(node.id) || !(node.name ?? "").startsWith(`${base}-`)) continue;
        const env = pick(node);
        if (env) {
          this.#addProject(node.id, node.name ?? null, env);
          this.#log.info({ projectId: node.id, name: node.name }, "railway: using a project this pool created earlier");
        }
      }
    }
    if (this.#projects.size === 0 && !o.workspaceId) throw new PoolError("CONFIG_INVALID", "railway: no project to use");
  }

  #addProject(id: string, name: string | null, environmentId: string, listedCount: number | null = null): ProjectState {
    const p: ProjectState = { id, name, environmentId, listedCount, listedSeq: this.#seq, reserved: 0, full: false };
    this.#projects.set(id, p);
    return p;
  }

  // ---- list ----

  /**
   * Every instance of this pool in our environment of every project: ONE request. Only a project
   * with more than one page of services costs follow-up page requests (the exception), and a
   * request that failed because single projects could not be read (their errors null the whole
   * answer: `project` is non-null in the schema) is re-sent once without them, as incomplete.
   */
  async list(): Promise<ProviderListing> {
    this.#assertOpen();
    const projects = [...this.#projects.values()];
    if (projects.length === 0) return { instances: [], complete: true };
    const seq = this.#seq;
    try {
      return await this.#listProjects(projects, seq, true);
    } finally {
      this.#scheduleRenames();
    }
  }

  async #listProjects(projects: ProjectState[], seq: number, mayRetryWithout: boolean): Promise<ProviderListing> {
    const vars: Record<string, unknown> = {};
    for (const [i, p] of projects.entries()) vars[`p${i}`] = p.id;
    let data: ListData;
    let complete = true;
    try {
      const r = await this.#client.call<ListData>(listDocument(projects.length), vars, { operation: "list", idempotent: true, allowPartial: true });
      data = r.data;
      if (r.errors.length > 0) complete = false; // any error: something may be missing
    } catch (err) {
      const bad = isRailwayApiError(err) ? this.#failedAliases(err, projects.length) : null;
      if (mayRetryWithout && bad && bad.size > 0 && bad.size < projects.length) {
        const ok = projects.filter((_, i) => !bad.has(i));
        this.#log.error(
          { operation: "list", unreadable: projects.filter((_, i) => bad.has(i)).map((p) => p.id) },
          "railway: projects unreadable; listing the others as incomplete",
        );
        const rest = await this.#listProjects(ok, seq, false);
        return { instances: rest.instances, complete: false };
      }
      throw asProviderError(err, "list");
    }
    if (!data || typeof data !== "object") throw new RailwayApiError("list", "graphql_error", "answer has no data");

    const instances: ProviderInstance[] = [];
    const services = new Map<number, ServiceNode[]>();
    const pending: Array<{ index: number; cursor: string }> = [];
    projects.forEach((_p, i) => {
      const node = data[`p${i}`];
      const conn = node?.services;
      if (!node || !conn || !Array.isArray(conn.edges)) {
        complete = false;
        return;
      }
      services.set(i, edgesOf(conn));
      if (conn.pageInfo?.hasNextPage) {
        if (conn.pageInfo.endCursor) pending.push({ index: i, cursor: conn.pageInfo.endCursor });
        else complete = false;
      }
    });
    // Follow-up pages (rare: a project holds at most 100 services).
    let guard = 0;
    while (pending.length > 0 && guard++ < 20) {
      const batch = pending.splice(0, pending.length);
      const pv: Record<string, unknown> = {};
      batch.forEach((b, j) => {
        pv[`p${j}`] = projects[b.index]!.id;
        pv[`a${j}`] = b.cursor;
      });
      try {
        const r = await this.#client.call<ListData>(listPageDocument(batch.length), pv, { operation: "listPage", idempotent: true, allowPartial: true });
        if (r.errors.length > 0) complete = false;
        batch.forEach((b, j) => {
          const conn = (r.data[`p${j}`] as ProjectServicesNode | null | undefined)?.services;
          if (!conn || !Array.isArray(conn.edges)) {
            complete = false;
            return;
          }
          services.get(b.index)!.push(...edgesOf(conn));
          if (conn.pageInfo?.hasNextPage && conn.pageInfo.endCursor) pending.push({ index: b.index, cursor: conn.pageInfo.endCursor });
        });
      } catch (err) {
        this.#log.warn({ operation: "listPage", err: (err as Error).message }, "railway: a follow-up page failed; listing is incomplete");
        complete = false;
        for (const b of batch) {
          // More than a page exists: count the project as full rather than guess.
          const p = projects[b.index]!;
          p.listedCount = Math.max(this.#maxServices, services.get(b.index)!.length);
          p.listedSeq = seq;
        }
        pending.length = 0;
      }
    }
    if (pending.length > 0) complete = false;

    for (const [i, list] of services) {
      const p = projects[i]!;
      if (!pending.some((b) => b.index === i)) {
        p.listedCount = list.length;
        p.listedSeq = seq;
        p.full = false;
      }
      for (const svc of list) {
        const inst = this.#toInstance(svc, p);
        if (inst === "incomplete") complete = false;
        else if (inst) instances.push(inst);
      }
    }
    this.#pruneEvents();
    return { instances, complete };
  }

  /** Alias indexes (`p3` → 3) named by the errors' paths, or null when an error names none. */
  #failedAliases(err: RailwayApiError, count: number): Set<number> | null {
    if (err.failure !== "graphql_error" && err.failure !== "auth") return null;
    if (err.graphqlErrors.length === 0) return null;
    const out = new Set<number>();
    for (const e of err.graphqlErrors) {
      const head = e.path?.[0];
      const m = typeof head === "string" ? /^p(\d+)$/.exec(head) : null;
      if (!m) return null;
      const i = Number(m[1]);
      if (i >= count) return null;
      out.add(i);
    }
    return out;
  }

  #toInstance(svc: ServiceNode, p: ProjectState): ProviderInstance | null | "incomplete" {
    if (!svc.id || typeof svc.name !== "string") return null;
    const parsed = this.parseServiceName(svc.name);
    // Not one of our pools': something else in the project. Another deployment's
    // services of this pool ARE listed, with their owner: the reconciler reports them and leaves them alone.
    if (!parsed) return null;
    const instances = edgesOf(svc.serviceInstances);
    const ours = instances.find((n) => n.environmentId === p.environmentId);
    if (!ours) {
      // Not in our environment, unless the instance list was cut short.
      return svc.serviceInstances?.pageInfo?.hasNextPage ? "incomplete" : null;
    }
    const newest = edgesOf(svc.deployments)[0] ?? null;
    const dep = pickDeployment(ours.latestDeployment, newest, p.environmentId);
    // serviceCreate puts the service in every (non-fork) environment of the project; only the target
    // environment gets the image and a deploy. An empty instance here next to a live one elsewhere was
    // created for another environment (a same-named pool there): not ours to list or delete.
    const liveElsewhere = instances.some((n) => n.environmentId !== p.environmentId && (!!n.source?.image || !!n.latestDeployment));
    if (liveElsewhere && !ours.source?.image && !dep) return null;
    this.#refs.set(svc.id, { projectId: p.id, liveElsewhere, owner: parsed.owner, name: svc.name });
    const domain = (ours.domains?.serviceDomains ?? []).find((d) => d && typeof d.domain === "string" && d.domain.length > 0)?.domain ?? null;
    return {
      ref: svc.id,
      instanceId: parsed.instanceId,
      name: svc.name,
      deployStatus: mapDeployStatus(dep?.status),
      url: domain ? `${this.#scheme}://${domain}` : null,
      image: ours.source?.image ?? null,
      createdAt: parseDate(svc.createdAt) ?? this.#clock.now(),
      owner: parsed.owner,
    };
  }

  // ---- create ----

  async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    this.#assertOpen();
    if (spec.ownerId !== this.#ownerId) {
      // The name carries the owner id; a service named with another would be another deployment's.
      throw new PoolError("PROVIDER_ERROR", `railway: provider of owner ${this.#ownerId} asked to create for owner ${JSON.stringify(spec.ownerId)}`);
    }
    const name = this.serviceName(spec.instanceId, spec.poolId);
    const parsed = this.#namesOf(spec.poolId).parse(name);
    const maxName = this.#o.maxServiceNameLength ?? 32;
    if (parsed?.instanceId !== spec.instanceId || parsed.owner !== this.#ownerId || name.length > maxName) {
      // A service we could not recognise later would be invisible to list(): a leak.
      throw new PoolError(
        "PROVIDER_ERROR",
        `railway: instance id ${JSON.stringify(spec.instanceId)} does not fit the service name pattern or the ${maxName}-character limit`,
      );
    }
    await this.#creationGate();
    const attempt = async (p: ProjectState) => {
      try {
        return await this.#createService(p, name, spec);
      } finally {
        p.reserved--;
      }
    };
    let project = await this.#reserveProject();
    let svcId: string;
    let createdAt: Date;
    try {
      ({ id: svcId, createdAt } = await attempt(project));
    } catch (err) {
      if (!(isRailwayApiError(err) && err.failure !== "rate_limited" && PROJECT_FULL_RE.test(err.message))) throw err;
      // Railway says the project is full (our count was behind): one more try elsewhere.
      project.full = true;
      this.#log.warn({ projectId: project.id }, "railway: project is full; trying another");
      project = await this.#reserveProject();
      ({ id: svcId, createdAt } = await attempt(project));
    }
    this.#events.push({ seq: ++this.#seq, projectId: project.id, delta: +1 });
    this.#refs.set(svcId, { projectId: project.id, liveElsewhere: false, owner: this.#ownerId, name });

    let domain: string;
    try {
      const r = await this.#client.call<ServiceDomainCreateData>(
        SERVICE_DOMAIN_CREATE,
        { input: { serviceId: svcId, environmentId: project.environmentId, targetPort: this.#port } },
        { operation: "serviceDomainCreate", idempotent: false },
      );
      const d = r.data.serviceDomainCreate?.domain;
      if (!d) throw new RailwayApiError("serviceDomainCreate", "graphql_error", "no domain in the answer");
      domain = d;
    } catch (err) {
      // No half-made instance: a service without a domain is unreachable (seed §8: instances stuck when the domain 404ed).
      this.#log.warn({ instanceId: spec.instanceId, ref: svcId, err: (err as Error).message }, "railway: domain failed; deleting the service");
      try {
        await this.delete(svcId);
      } catch (delErr) {
        this.#log.error(
          { instanceId: spec.instanceId, ref: svcId, err: (delErr as Error).message },
          "railway: could not delete the service after the domain failed; the orphan sweep must remove it",
        );
      }
      throw asProviderError(err, "serviceDomainCreate");
    }
    this.#log.info({ instanceId: spec.instanceId, ref: svcId, projectId: project.id }, "railway: instance created");
    return {
      ref: svcId,
      instanceId: spec.instanceId,
      name,
      deployStatus: null,
      url: `${this.#scheme}://${domain}`,
      image: spec.image ?? this.#o.image,
      createdAt,
      owner: this.#ownerId,
    };
  }

  async #createService(project: ProjectState, name: string, spec: CreateInstanceSpec): Promise<{ id: string; createdAt: Date }> {
    // Ours last, so an operator variable cannot replace the gateway token, the port or the owner.
    // AGENT_POOL_OWNER is for people reading the Railway console; the name is what the listing reads.
    const variables: Record<string, string> = {
      ...spec.env,
      GATEWAY_TOKEN: spec.gatewayToken,
      INSTANCE_ID: spec.instanceId,
      PORT: String(this.#port),
      AGENT_POOL_OWNER: this.#ownerId,
    };
    const input = { projectId: project.id, environmentId: project.environmentId, name, source: { image: spec.image ?? this.#o.image }, variables };
    let r: GraphQLResult<ServiceCreateData>;
    try {
      // allowPartial: with data, the service exists even if a nested field errored; throwing would leak it.
      r = await this.#client.call<ServiceCreateData>(SERVICE_CREATE, { input }, { operation: "serviceCreate", idempotent: false, allowPartial: true });
    } catch (err) {
      if (isRailwayApiError(err) && ["timeout", "network", "http_5xx", "non_json"].includes(err.failure)) {
        // The create may have happened without us hearing back: find it by name and remove it.
        await this.#cleanupAmbiguousCreate(project, name);
      }
      throw asProviderError(err, "serviceCreate");
    }
    const id = r.data.serviceCreate?.id;
    if (!id) {
      await this.#cleanupAmbiguousCreate(project, name);
      throw new RailwayApiError("serviceCreate", "graphql_error", "no service id in the answer");
    }
    return { id, createdAt: parseDate(r.data.serviceCreate?.createdAt) ?? this.#clock.now() };
  }

  /**
   * Removes the service a create without an answer may have made. Only a service with exactly the
   * full name we sent, owner id included: the instance id alone could also be in another
   * deployment's name (same pool, same project), and that one is not ours to remove.
   */
  async #cleanupAmbiguousCreate(project: ProjectState, name: string): Promise<void> {
    try {
      const r = await this.#client.call<ProjectServiceNamesData>(PROJECT_SERVICE_NAMES, { id: project.id }, { operation: "createCleanup", idempotent: true });
      for (const svc of edgesOf(r.data.project?.services)) {
        if (svc.name === name && svc.id) {
          this.#log.warn({ ref: svc.id, name }, "railway: removing a service whose create did not answer");
          this.#refs.set(svc.id, { projectId: project.id, liveElsewhere: false, owner: this.#ownerId, name });
          await this.delete(svc.id);
        }
      }
    } catch (err) {
      this.#log.error(
        { projectId: project.id, name, err: (err as Error).message },
        "railway: could not check for a half-made service; the orphan sweep must find it",
      );
    }
  }

  /** Services in a project now: last listing + creates/deletes since + creates under way. */
  #countOf(p: ProjectState): number {
    let n = p.listedCount ?? 0;
    for (const e of this.#events) if (e.projectId === p.id && e.seq > p.listedSeq) n += e.delta;
    return Math.max(0, n) + p.reserved;
  }

  #pruneEvents(): void {
    let min = Number.POSITIVE_INFINITY;
    for (const p of this.#projects.values()) min = Math.min(min, p.listedSeq);
    this.#events = this.#events.filter((e) => e.seq > min);
  }

  /** A project with room, holding one slot in it; creates a project (workspace) when all are full. */
  async #reserveProject(): Promise<ProjectState> {
    let counted = false;
    for (let round = 0; round < 10; round++) {
      this.#assertOpen();
      if (!counted && [...this.#projects.values()].some((p) => p.listedCount === null)) {
        counted = true;
        // Counts unknown (no listing yet): one shared listing, not one per concurrent create.
        this.#counting ??= this.list().finally(() => (this.#counting = null));
        try {
          await this.#counting;
        } catch (err) {
          throw asProviderError(err, "serviceCreate");
        }
      }
      for (const p of this.#projects.values()) {
        if (!p.full && p.listedCount !== null && this.#countOf(p) < this.#maxServices) {
          p.reserved++;
          return p;
        }
      }
      if (!this.#o.workspaceId) {
        throw new PoolError(
          "PROVIDER_ERROR",
          `railway: every project is full (${this.#maxServices} services each) and no workspaceId is set to create another`,
          { projects: this.#projects.size },
        );
      }
      this.#projectCreating ??= this.#createProject().finally(() => (this.#projectCreating = null));
      await this.#projectCreating;
    }
    throw new PoolError("PROVIDER_ERROR", "railway: could not find room for a service");
  }

  #projectNameBase(): string {
    // Railway caps project names at 32 characters; 9 are left for `-<time>`. From the prefix of the
    // names before owner ids, so the projects a pool created before the upgrade are still found.
    return this.#names.legacyPrefix.slice(0, PROJECT_NAME_MAX - 10).replace(/-+$/, "");
  }

  /** One project; at most one per `projectCreateIntervalMs`; waits out the throttle rather than failing. */
  async #createProject(): Promise<void> {
    const interval = this.#o.projectCreateIntervalMs ?? 30_000;
    const envName = this.#o.environmentName ?? "production";
    for (let attempt = 0; attempt < 6; attempt++) {
      this.#assertOpen();
      const wait = this.#lastProjectCreateAt + interval - this.#clock.now().getTime();
      if (wait > 0) {
        this.#log.info({ waitMs: wait }, "railway: waiting to create a project");
        await this.#sleep(wait);
      }
      this.#lastProjectCreateAt = this.#clock.now().getTime();
      const name = `${this.#projectNameBase()}-${this.#clock.now().getTime().toString(36)}`.slice(0, PROJECT_NAME_MAX);
      try {
        const r = await this.#client.call<ProjectCreateData>(
          PROJECT_CREATE,
          { input: { name, workspaceId: this.#o.workspaceId, defaultEnvironmentName: envName } },
          { operation: "projectCreate", idempotent: false, retryThrottle: false },
        );
        const node = r.data.projectCreate;
        const envs = edgesOf(node?.environments);
        const env = envs.find((e) => (e.name ?? "").toLowerCase() === envName.toLowerCase()) ?? envs[0];
        if (!node?.id || !env?.id) throw new RailwayApiError("projectCreate", "graphql_error", "no project id or environment in the answer");
        this.#addProject(node.id, node.name ?? name, env.id, 0);
        this.#log.info({ projectId: node.id, name, environmentId: env.id }, "railway: project created");
        try {
          this.#o.onProjectCreated?.({ id: node.id, name: node.name ?? name, environmentId: env.id });
        } catch (err) {
          this.#log.warn({ err: (err as Error).message }, "railway: onProjectCreated threw");
        }
        return;
      } catch (err) {
        if (isRailwayApiError(err) && err.failure === "rate_limited") {
          // "Only one project can be created per user" (HTTP 200 + error): wait an interval and retry.
          this.#log.warn({ attempt }, "railway: project creation throttled; waiting");
          continue;
        }
        throw asProviderError(err, "projectCreate");
      }
    }
    throw new PoolError("PROVIDER_ERROR", "railway: project creation kept being throttled");
  }

  /** Spreads creates out when the hourly budget runs low, so listing keeps working until the reset. */
  async #creationGate(): Promise<void> {
    const rl = this.#client.rateLimit;
    const frac = this.#o.lowBudgetFraction ?? 0.1;
    if (rl.limit === null || rl.remaining === null || rl.limit <= 0 || rl.remaining >= rl.limit * frac) return;
    const now = this.#clock.now().getTime();
    const toReset = rl.resetAt ? Math.max(0, rl.resetAt.getTime() - now) : 3_600_000;
    const spacing = Math.min(60_000, Math.max(1_000, (toReset * CALLS_PER_CREATE) / Math.max(1, rl.remaining)));
    const slot = Math.max(now, this.#nextCreateAt);
    // A create waits for its slot only briefly: a longer wait would happen inside a reconcile pass
    // and stop it (no listing, no checks) for up to a minute per create (the fault run saw one
    // 429 answering `remaining: 0` stall a replica's passes for 60 s, then 120 s). Beyond that the
    // create is deferred: it fails now, as "budget low", and a later pass tries again, by which time
    // the budget may have come back (answers after a 429 update it).
    if (slot - now > MAX_CREATE_WAIT_MS) {
      this.#client.count("serviceCreate", "budget_deferred");
      throw new PoolError("PROVIDER_ERROR", `railway: hourly budget low (${rl.remaining} of ${rl.limit} left): create deferred`, {
        deferred: true,
        retryInMs: slot - now,
      });
    }
    this.#nextCreateAt = slot + spacing;
    this.#client.count("serviceCreate", "budget_wait");
    this.#log.warn(
      { remaining: rl.remaining, limit: rl.limit, waitMs: slot - now, spacingMs: Math.round(spacing) },
      "railway: hourly budget low; spacing creates",
    );
    if (slot > now) await this.#sleep(slot - now);
  }

  // ---- delete ----

  async delete(ref: string): Promise<void> {
    this.#assertOpen();
    this.#refuseForeign(ref, "delete");
    const info = this.#refs.get(ref);
    const project = info ? this.#projects.get(info.projectId) : undefined;
    // Live in another environment too: delete only our environment's instance, not theirs.
    const scoped = !!info && info.liveElsewhere && !!project;
    try {
      const r = await this.#client.call<ServiceDeleteData>(
        scoped ? SERVICE_DELETE_IN_ENVIRONMENT : SERVICE_DELETE,
        scoped ? { id: ref, environmentId: project!.environmentId } : { id: ref },
        { operation: "serviceDelete", idempotent: true },
      );
      if (r.data.serviceDelete === false) throw new RailwayApiError("serviceDelete", "graphql_error", "serviceDelete returned false");
    } catch (err) {
      if (await this.#isGone(err, ref, "serviceDelete")) {
        this.#client.count("serviceDelete", "not_found");
        this.#log.info({ ref }, "railway: service already gone");
      } else {
        throw asProviderError(err, "serviceDelete");
      }
    }
    if (info) this.#events.push({ seq: ++this.#seq, projectId: info.projectId, delta: -1 });
    this.#refs.delete(ref);
    this.#renames.delete(ref);
  }

  /**
   * Did this failure say the service no longer exists? "not found", or a 200 "Not Authorized"
   * (Railway's answer for ids that are gone) while the token still reads our project.
   */
  async #isGone(err: unknown, ref: string, operation: string): Promise<boolean> {
    if (!isRailwayApiError(err) || err.httpStatus !== 200) return false;
    const text = err.graphqlErrors.map((e) => e.message).join(" ");
    if (err.failure === "graphql_error" && NOT_FOUND_RE.test(text)) return true;
    if (err.failure !== "auth" || !/not authori[sz]ed/i.test(text)) return false;
    const projectId = this.#refs.get(ref)?.projectId ?? this.#projects.keys().next().value;
    if (!projectId) return false;
    try {
      await this.#client.call(TOKEN_CHECK, { id: projectId }, { operation: `${operation}Check`, idempotent: true });
      return true;
    } catch {
      return false; // the token itself fails: a real auth problem
    }
  }

  // ---- upgrade ----

  /**
   * Redeploys a service with the template's image and variables (issue 11: a claimed agent moved to
   * its pool's current template): three requests (operations.ts, VARIABLES_UPSERT and after). The
   * template's variables are upserted over the service's (its own keys stay; a variable the template
   * dropped stays too), then ours last, as at create, so none of them can be replaced. The service
   * keeps its id and domain; the new deployment's progress is read by the next listings, like any.
   */
  async upgrade(ref: string, spec: UpgradeInstanceSpec): Promise<void> {
    this.#assertOpen();
    this.#refuseForeign(ref, "upgrade");
    if (spec.ownerId !== this.#ownerId) {
      throw new PoolError("PROVIDER_ERROR", `railway: provider of owner ${this.#ownerId} asked to upgrade for owner ${JSON.stringify(spec.ownerId)}`);
    }
    const info = this.#refs.get(ref);
    const project = info ? this.#projects.get(info.projectId) : undefined;
    if (!info || !project) {
      // Only a service a listing (or our create) showed is known with its project and environment.
      throw new PoolError("PROVIDER_ERROR", `railway: service ${ref} is not in the last listing; try again after the next pass`, { ref });
    }
    const variables: Record<string, string> = {
      ...spec.env,
      GATEWAY_TOKEN: spec.gatewayToken,
      INSTANCE_ID: spec.instanceId,
      PORT: String(this.#port),
      AGENT_POOL_OWNER: this.#ownerId,
    };
    const environmentId = project.environmentId;
    const image = spec.image ?? this.#o.image;
    try {
      const v = await this.#client.call<VariablesUpsertData>(
        VARIABLES_UPSERT,
        { input: { projectId: project.id, environmentId, serviceId: ref, variables, replace: false, skipDeploys: true } },
        { operation: "variableCollectionUpsert", idempotent: true },
      );
      if (v.data.variableCollectionUpsert === false)
        throw new RailwayApiError("variableCollectionUpsert", "graphql_error", "variableCollectionUpsert returned false");
      const u = await this.#client.call<ServiceInstanceSourceData>(
        SERVICE_INSTANCE_SOURCE,
        { serviceId: ref, environmentId, input: { source: { image } } },
        { operation: "serviceInstanceUpdate", idempotent: true },
      );
      if (u.data.serviceInstanceUpdate === false) throw new RailwayApiError("serviceInstanceUpdate", "graphql_error", "serviceInstanceUpdate returned false");
      const d = await this.#client.call<ServiceInstanceDeployData>(
        SERVICE_INSTANCE_DEPLOY,
        { serviceId: ref, environmentId },
        { operation: "serviceInstanceDeployV2", idempotent: false },
      );
      this.#log.info(
        { ref, instanceId: spec.instanceId, image, deploymentId: d.data.serviceInstanceDeployV2 ?? null },
        "railway: instance upgraded (redeployed)",
      );
    } catch (err) {
      throw asProviderError(err, "upgrade");
    }
  }

  // ---- rename ----

  /**
   * Renames a service. The name must keep our prefix (else the instance would vanish from
   * `list()`); `--<label>` may follow the instance id. A failure other than "gone" or "invalid"
   * queues the rename for a retry with backoff and resolves: the earlier system lost 40 of 90
   * renames to 429s (seed §5.4); here each one is retried until it lands or is given up loudly.
   */
  async rename(ref: string, name: string): Promise<void> {
    this.#assertOpen();
    this.#refuseForeign(ref, "rename");
    // `<serviceName(id)>-<label>` becomes `<serviceName(id)>--<label>`, and the label is cut to fit.
    name = this.nameFor(name);
    this.#renames.delete(ref);
    if (this.#refs.get(ref)?.name === name) {
      // Already so named (with a long pool id no label fits at all): no request.
      this.#client.count("serviceUpdate", "unchanged");
      return;
    }
    try {
      await this.#renameOnce(ref, name);
    } catch (err) {
      const f = isRailwayApiError(err) ? err.failure : "error";
      if (f === "validation") throw asProviderError(err, "serviceUpdate");
      this.#queueRename(ref, name, 1, f);
    }
  }

  /**
   * Defence in depth: the reconciler never deletes or renames another deployment's service, and
   * neither does this provider, whoever asks. Nothing is sent for a ref the last listing showed with
   * another owner id. A ref never listed, or listed without an owner (made before owner ids, and
   * adopted through a row), passes.
   */
  #refuseForeign(ref: string, what: "delete" | "rename" | "upgrade"): void {
    const owner = this.#refs.get(ref)?.owner ?? null;
    if (owner === null || owner === this.#ownerId) return;
    this.#client.count(what === "delete" ? "serviceDelete" : what === "upgrade" ? "serviceInstanceUpdate" : "serviceUpdate", "refused_foreign");
    throw new PoolError(
      "PROVIDER_ERROR",
      `railway: refusing to ${what} service ${ref}: it belongs to another deployment (owner ${owner}, ours ${this.#ownerId})`,
      {
        ref,
        owner,
      },
    );
  }

  /** true: done or gone. Throws on a failure worth retrying. */
  async #renameOnce(ref: string, name: string): Promise<void> {
    try {
      await this.#client.call<ServiceRenameData>(SERVICE_RENAME, { id: ref, input: { name } }, { operation: "serviceUpdate", idempotent: true });
      const info = this.#refs.get(ref);
      if (info) {
        info.name = name;
        info.owner = this.#ownerId; // a rename gives our form: an adopted service of the old form now carries our owner id
      }
    } catch (err) {
      if (await this.#isGone(err, ref, "serviceUpdate")) {
        this.#client.count("serviceUpdate", "not_found");
        this.#log.info({ ref }, "railway: rename of a service that is gone; dropped");
        return;
      }
      throw err;
    }
  }

  #queueRename(ref: string, name: string, attempts: number, lastFailure: PendingRename["lastFailure"]): void {
    const max = this.#o.maxRenameAttempts ?? 20;
    if (attempts >= max) {
      this.#client.count("serviceUpdate", "rename_abandoned");
      this.#log.error({ ref, name, attempts, lastFailure }, "railway: rename given up");
      return;
    }
    const base = this.#o.renameRetryBaseMs ?? 5_000;
    const delay = Math.min(MAX_RENAME_BACKOFF_MS, base * 2 ** (attempts - 1));
    const withJitter = delay + Math.round(delay * 0.2 * this.#random());
    this.#renames.set(ref, { ref, name, attempts, lastFailure, nextAttemptAt: new Date(this.#clock.now().getTime() + withJitter) });
    this.#client.count("serviceUpdate", "rename_queued");
    this.#log.warn({ ref, name, attempts, lastFailure, retryInMs: withJitter }, "railway: rename failed; will retry");
    this.#scheduleRenames();
  }

  /** Retries pending renames that are due (all of them with `force`). Also run by a timer and after `list()`. */
  async retryPendingRenames(opts: { force?: boolean } = {}): Promise<void> {
    if (this.#renaming) return this.#renaming;
    this.#renaming = (async () => {
      const now = this.#clock.now().getTime();
      for (const r of [...this.#renames.values()]) {
        if (this.#closed) return;
        if (!opts.force && r.nextAttemptAt.getTime() > now) continue;
        if (this.#renames.get(r.ref) !== r) continue; // replaced meanwhile
        this.#renames.delete(r.ref);
        const owner = this.#refs.get(r.ref)?.owner ?? null;
        if (owner !== null && owner !== this.#ownerId) {
          this.#log.warn({ ref: r.ref, name: r.name, owner }, "railway: queued rename dropped: the service now carries another deployment's owner id");
          continue;
        }
        try {
          await this.#renameOnce(r.ref, r.name);
          this.#client.count("serviceUpdate", "rename_retried_ok");
          this.#log.info({ ref: r.ref, name: r.name, attempts: r.attempts + 1 }, "railway: queued rename done");
        } catch (err) {
          if (this.#renames.has(r.ref)) continue; // a newer rename was queued meanwhile
          const f = isRailwayApiError(err) ? err.failure : "error";
          if (f === "validation") {
            this.#client.count("serviceUpdate", "rename_abandoned");
            this.#log.error({ ref: r.ref, name: r.name, err: (err as Error).message }, "railway: rename rejected as invalid; given up");
          } else {
            this.#queueRename(r.ref, r.name, r.attempts + 1, f);
          }
        }
      }
    })().finally(() => {
      this.#renaming = null;
      this.#scheduleRenames();
    });
    return this.#renaming;
  }

  #scheduleRenames(): void {
    if (this.#closed || this.#renaming) return;
    if (this.#renameTimer) {
      clearTimeout(this.#renameTimer);
      this.#renameTimer = null;
    }
    if (this.#renames.size === 0) return;
    let next = Number.POSITIVE_INFINITY;
    for (const r of this.#renames.values()) next = Math.min(next, r.nextAttemptAt.getTime());
    const delay = Math.max(0, next - this.#clock.now().getTime());
    this.#renameTimer = setTimeout(() => {
      this.#renameTimer = null;
      void this.retryPendingRenames().catch((err) => this.#log.error({ err: (err as Error).message }, "railway: rename retry failed"));
    }, delay);
    this.#renameTimer.unref?.();
  }

  // ---- deployment webhook ----

  /**
   * Registers a notification rule of the workspace that posts deployment events to `url`, unless
   * one with that URL exists (every replica and restart asks; one rule results). The events are
   * hints: each makes the pool check the instance at once, and a lost one only costs latency.
   * Needs the workspace id (RAILWAY_WORKSPACE_ID). Returns whether it created the rule.
   */
  async registerWebhook(url: string): Promise<"existing" | "created"> {
    this.#assertOpen();
    const workspaceId = this.#o.workspaceId;
    if (!workspaceId) throw new PoolError("CONFIG_INVALID", "railway: a deployment webhook needs RAILWAY_WORKSPACE_ID");
    const r = await this.#client.call<NotificationRulesData>(NOTIFICATION_RULES, { workspaceId }, { operation: "notificationRules", idempotent: true });
    const exists = (r.data.notificationRules ?? []).some((rule) =>
      (rule.channels ?? []).some((ch) => {
        const cfg = ch.config as { url?: unknown } | null;
        return cfg !== null && typeof cfg === "object" && cfg.url === url;
      }),
    );
    if (exists) return "existing";
    await this.#client.call(
      NOTIFICATION_RULE_CREATE,
      { input: { workspaceId, eventTypes: DEPLOYMENT_EVENT_TYPES, channelConfigs: [{ type: "webhook", url }] } },
      { operation: "notificationRuleCreate", idempotent: false },
    );
    return "created";
  }

  // ---- close ----

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#renameTimer) clearTimeout(this.#renameTimer);
    this.#renameTimer = null;
    if (this.#renames.size > 0) {
      this.#log.warn({ pending: this.pendingRenames.map((r) => ({ ref: r.ref, name: r.name })) }, "railway: closing with renames not done");
    }
    await this.#client.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new PoolError("PROVIDER_ERROR", "railway provider is closed");
  }
}

function edgesOf<T>(conn: Connection<T> | null | undefined): T[] {
  const out: T[] = [];
  if (!conn || !Array.isArray(conn.edges)) return out;
  for (const e of conn.edges) if (e?.node) out.push(e.node);
  return out;
}

function parseDate(s: unknown): Date | null {
  if (typeof s !== "string") return null;
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : new Date(t);
}

/** Every failure leaves as a PoolError PROVIDER_ERROR (RailwayApiError is one). */
function asProviderError(err: unknown, operation: string): PoolError {
  if (err instanceof PoolError) return err;
  return new PoolError("PROVIDER_ERROR", `railway ${operation}: ${(err as Error)?.message ?? String(err)}`, { operation }, { cause: err });
}
