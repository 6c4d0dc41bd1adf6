/**
 * Configuration: one zod schema parses the environment once at start-up. Each variable is
 * documented here and in the README with its default; an invalid value stops the process with a
 * message that names the variable and what it accepts.
 */
import { z } from "zod";

const int = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `a whole number from ${min} to ${max}`).max(max, `a whole number from ${min} to ${max}`));

/** Dollars with at most two decimals (a spending limit). */
const usdAmount = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+(\.\d{1,2})?$/, `an amount in dollars from ${min} to ${max} (e.g. 20 or 12.50)`)
    .transform(Number)
    .pipe(z.number().min(min, `an amount in dollars from ${min} to ${max}`).max(max, `an amount in dollars from ${min} to ${max}`));

const optionalString = z
  .string()
  .trim()
  .transform((s) => (s === "" ? undefined : s))
  .optional();

/** Defaults of a claim body's optional `agentName` and `instructions` (those of the earlier system, seed §2.4). */
export const DEFAULT_CLAIM_AGENT_NAME = "Assistant";
export const DEFAULT_CLAIM_INSTRUCTIONS = "You are a helpful AI assistant.";

/** A DNS name or an IPv4 address, as `URL.hostname` gives them (lowercase, no port). */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

export const ENV_SCHEMA = z
  .object({
    /** HTTP port of the pool manager. */
    PORT: int(0, 65535).default(3001),
    /** Address the HTTP server binds to. */
    HOST: z.string().trim().min(1).default("127.0.0.1"),
    /** Postgres URL; unset → embedded PGlite in DATA_DIR. */
    DATABASE_URL: optionalString.pipe(
      z
        .string()
        .regex(/^postgres(ql)?:\/\//, "a postgres:// or postgresql:// URL")
        .optional(),
    ),
    /**
     * Postgres: a statement running longer than this is cancelled by the server (0 = no limit). A
     * stuck lock or a runaway query then fails one pass or one request instead of holding a
     * connection for ever. Migrations are exempt (they may wait for another replica's).
     */
    PG_STATEMENT_TIMEOUT_MS: int(0, 3600 * 1000).default(15_000),
    /**
     * Postgres: connections per process. Several replicas share the server's `max_connections`
     * (each process also holds one more for LISTEN).
     */
    PG_POOL_MAX: int(1, 1000).default(10),
    /** Where the embedded database, the generated API key and the local provider's state live. */
    DATA_DIR: z.string().trim().min(1).default("./.data"),
    /** Bearer key of the API; unset → generated once, kept in DATA_DIR, printed at first start. */
    POOL_API_KEY: optionalString.pipe(z.string().min(16, "at least 16 characters").optional()),
    /** Dashboard login password; unset → the API key is the password. */
    ADMIN_PASSWORD: optionalString,
    /** Name of the default pool. */
    POOL_ID: z
      .string()
      .trim()
      .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, "lowercase letters, digits and '-', at most 32 characters")
      .default("default"),
    /** Idle instances to keep warm. */
    POOL_MIN_IDLE: int(0, 1000).default(3),
    /** Never more instances than this, whatever their status. */
    POOL_MAX_TOTAL: int(1, 10000).default(10),
    /**
     * Sizing policy of the pool made from these variables (issue 13), JSON: `{"mode":"fixed"}` (keep
     * POOL_MIN_IDLE, the default) or `{"mode":"demand","floor":1,"safetyFactor":1.2,…}` (README, "Pool sizing").
     */
    POOL_SIZING: optionalString,
    /** Runtime label of the pool made from these variables (clients select a pool by it). */
    POOL_RUNTIME: optionalString.pipe(
      z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,64}$/, "letters, digits, '.', '_' or '-'")
        .optional(),
    ),
    /**
     * A JSON file describing the pools (`{"globalMaxTotal": 50, "pools": [{"id": "hermes", ...}]}`);
     * when set, it replaces the single pool of POOL_ID / POOL_MIN_IDLE / POOL_MAX_TOTAL.
     */
    POOLS_FILE: optionalString,
    /** Most instances of every pool together (also settable as `globalMaxTotal` in POOLS_FILE). */
    GLOBAL_MAX_TOTAL: int(1, 100_000).optional(),
    /** How long an instance may take to become healthy before it is declared dead. */
    POOL_STUCK_TIMEOUT_MS: int(1000, 24 * 3600 * 1000).default(15 * 60 * 1000),
    /** Interval between reconcile passes. */
    TICK_INTERVAL_MS: int(100, 3600 * 1000).default(5000),
    /** Timeout of one health check. */
    HEALTH_TIMEOUT_MS: int(100, 120_000).default(5000),
    /** Health checks run at once. */
    HEALTH_CONCURRENCY: int(1, 1000).default(32),
    /**
     * How often an idle instance is health-checked (jittered ±20 %, so checks spread evenly). Each
     * instance has its own schedule; a pass checks only those due, so health traffic is about
     * instances / this interval whatever the tick.
     */
    HEALTH_IDLE_INTERVAL_MS: int(1000, 3600 * 1000).default(30_000),
    /** How often a claimed (or pending, crashed) instance is health-checked. */
    HEALTH_CLAIMED_INTERVAL_MS: int(1000, 3600 * 1000).default(60_000),
    /** Most health checks in one pass, the longest overdue first (a backlog is worked off over passes). */
    HEALTH_CHECKS_PER_PASS: int(1, 1_000_000).default(2_000),
    /** Consecutive failed health checks before a once-healthy instance is declared broken. */
    HEALTH_FAILURE_THRESHOLD: int(1, 100).default(3),
    /** Timeout of the provision call to an instance during a claim. */
    PROVISION_TIMEOUT_MS: int(1000, 600_000).default(75_000),
    /**
     * A `claiming` row is resolved by the sweeper once its attempt's deadline (provision timeout +
     * reset + status, from the pick, by the database clock) is this far past; an idempotency record
     * is taken over once its claim's deadline is this far past.
     */
    CLAIM_SWEEP_MARGIN_MS: int(0, 3600 * 1000).default(30_000),
    /** Timeout of the reset, and of the status call after it, when a provision failed (and of a release's). */
    RESET_TIMEOUT_MS: int(100, 120_000).default(15_000),
    /** Agents one upgrade job upgrades at once (issue 11). */
    UPGRADE_CONCURRENCY: int(1, 50).default(2),
    /** A running upgrade job whose runner has not renewed it for this long is taken over by another runner (a restart). */
    UPGRADE_JOB_STALE_MS: int(1_000, 3600 * 1000).default(60_000),
    /**
     * Overall deadline of one claim, waiting included; unset: 60 s of waiting + 2 attempts
     * (2 × (PROVISION_TIMEOUT_MS + 2 × RESET_TIMEOUT_MS)).
     */
    CLAIM_DEADLINE_MS: int(1000, 3600 * 1000).optional(),
    /** Most claims one pool's queue holds waiting (`waitMs`); one beyond gets 503 QUEUE_FULL with Retry-After. */
    CLAIM_QUEUE_MAX: int(1, 100_000).default(100),
    /** A waiting claim whose process stopped renewing it (a dead replica) loses its place after this long (database clock). */
    CLAIM_QUEUE_TTL_MS: int(1_000, 600_000).default(15_000),
    /** Waiting claims are woken by change hints; without one they look again this often (a hint can be lost). */
    CLAIM_QUEUE_RECHECK_MS: int(100, 600_000).default(5_000),
    /** A join still waiting for acceptance this long after its claim is retired (its slot freed). */
    PENDING_ACCEPTANCE_TIMEOUT_MS: int(1000, 7 * 24 * 3600 * 1000).default(10 * 60 * 1000),
    /** Status-change events (and dead rows, once their events are gone) are kept this many days. */
    EVENT_RETENTION_DAYS: int(1, 3650).default(30),
    /** Pools' per-minute history (dashboard, sizing) is kept this many days. */
    POOL_HISTORY_RETENTION_DAYS: int(1, 3650).default(8),
    /** How often each replica adds what it measured to the pool history. */
    POOL_HISTORY_FLUSH_MS: int(100, 300_000).default(60_000),
    /** Idempotency records are kept this many days (longer while their agent lives). */
    CLAIM_RECORD_RETENTION_DAYS: int(1, 3650).default(7),
    /** How long an instance unknown to the database may live at the provider before it is deleted. */
    ORPHAN_GRACE_MS: int(0, 24 * 3600 * 1000).default(60_000),
    /** Most provider deletions in one pass (a guard against mass deletion). */
    MAX_DELETES_PER_TICK: int(1, 1000).default(10),
    /**
     * Most provider creations in one pass. The provider paces its own requests (Railway: at 80 % of
     * RAILWAY_MAX_RPS), so a fill goes at the provider's pace, not at this cap per starting poll.
     */
    MAX_CREATES_PER_TICK: int(1, 1000).default(100),
    /** Creates at once. */
    CREATE_CONCURRENCY: int(1, 100).default(8),
    /** Creates failing in a row before creating halts (30 s, doubling each time, at most 10 min). */
    CREATE_HALT_AFTER_FAILURES: int(1, 1000).default(5),
    /**
     * A rollout (a change of a pool's template) halts after this many new instances in a row failed
     * before becoming idle (the provider refused the create, the process crashed, its health check
     * never passed).
     */
    ROLLOUT_HALT_AFTER_FAILURES: int(1, 100).default(3),
    /**
     * Interval between passes while instances are starting (never above TICK_INTERVAL_MS); each
     * pass is one provider listing. Unset: 250 ms with the local provider (a listing costs nothing
     * there, and a new instance is handed out within a quarter second of answering), 5 s on
     * Railway (deploys take minutes; a faster poll would only spend the hourly API budget).
     */
    STARTING_POLL_MS: int(100, 3600 * 1000).optional(),
    /**
     * Trust X-Forwarded-For from this many proxy hops; 0 = use the socket address. Unset: 1 inside a
     * Railway deployment (its edge is one hop), else 0 (see `proxyPlatform`).
     */
    TRUST_PROXY: int(0, 10).optional(),
    /** Requests per minute per client on the API's mutating routes. */
    MUTATION_RATE_LIMIT_PER_MIN: int(1, 100_000).default(120),
    /** Agent name of a claim whose body has none (the earlier system's landing page sends only `joinUrl`); empty → the default. */
    CLAIM_DEFAULT_AGENT_NAME: optionalString.pipe(z.string().max(200, "a name of at most 200 characters").default(DEFAULT_CLAIM_AGENT_NAME)),
    /** Instructions of a claim whose body has none; empty → the default. */
    CLAIM_DEFAULT_INSTRUCTIONS: optionalString.pipe(z.string().max(50_000, "at most 50,000 characters").default(DEFAULT_CLAIM_INSTRUCTIONS)),
    /**
     * Comma-separated host names a claim's `joinUrl` may have (exact match, case-insensitive);
     * unset → any. The earlier system refused `dev.` invite links in production, where joining a
     * conversation of the other network only fails after an instance was spent on it.
     */
    JOIN_URL_HOSTS: optionalString.pipe(
      z
        .string()
        .transform((s) =>
          s
            .split(",")
            .map((h) => h.trim().toLowerCase().replace(/\.$/, ""))
            .filter((h) => h !== ""),
        )
        .pipe(
          z
            .array(z.string().regex(HOST_NAME, "comma-separated host names, e.g. convos.org,popup.convos.org"))
            .min(1, "comma-separated host names, e.g. convos.org,popup.convos.org"),
        )
        .optional(),
    ),
    /** Requests per minute per instance on its own routes (`/api/instance/…`). */
    INSTANCE_RATE_LIMIT_PER_MIN: int(1, 100_000).default(60),
    /**
     * OpenRouter provisioning (management) key: set → every new instance gets its own OpenRouter key
     * (OPENROUTER_API_KEY), made before it boots and deleted with it. Never logged or shown.
     */
    OPENROUTER_PROVISIONING_KEY: optionalString,
    /** OpenRouter's API base (a stand-in's in tests). */
    OPENROUTER_API_URL: z.string().trim().url("a URL").default("https://openrouter.ai/api/v1"),
    /** Spending limit of each new instance's key, in dollars. */
    OPENROUTER_KEY_LIMIT: usdAmount(0, 1_000_000).default(20),
    /** The highest limit an operator's top-up may give a key, in dollars. */
    OPENROUTER_KEY_LIMIT_MAX: usdAmount(0, 1_000_000).default(100),
    /** Timeout of one OpenRouter request. */
    OPENROUTER_REQUEST_TIMEOUT_MS: int(1000, 120_000).default(15_000),
    /** Interval between passes of the resource reconciler (collects resources no live instance owns). */
    RESOURCE_TICK_INTERVAL_MS: int(100, 3600 * 1000).default(15_000),
    /** Age (at the vendor) before a resource of ours that no live instance owns is deleted. */
    RESOURCE_ORPHAN_GRACE_MS: int(0, 7 * 24 * 3600 * 1000).default(10 * 60 * 1000),
    /** Most resource deletions at the vendor per pass. */
    MAX_RESOURCE_DELETES_PER_TICK: int(1, 1000).default(10),
    /** Compute provider: `local` runs instances as child processes on this machine. */
    PROVIDER: z.enum(["local", "railway"], { message: "one of: local, railway" }).default("local"),
    /** Local provider: command that starts one instance (JSON array or a shell-free space-separated line); unset → the reference runtime. */
    LOCAL_RUNTIME_COMMAND: optionalString,
    /** Local provider: how long to wait for a new process to accept connections. */
    LOCAL_START_TIMEOUT_MS: int(100, 600_000).default(60_000),
    /** Railway: a workspace/account token, sent as `Authorization: Bearer`. */
    RAILWAY_API_TOKEN: optionalString,
    /** Railway: a project token, sent as `Project-Access-Token` (one project only; cannot create projects). */
    RAILWAY_PROJECT_TOKEN: optionalString,
    /** Railway: GraphQL endpoint. */
    RAILWAY_API_URL: z.string().trim().url("a URL").default("https://backboard.railway.com/graphql/v2"),
    /** Railway: comma-separated project ids the instances live in. */
    RAILWAY_PROJECT_IDS: optionalString,
    /**
     * Railway: environment of the instances; unset → the one named RAILWAY_INSTANCE_ENVIRONMENT_NAME
     * in each project. Not `RAILWAY_ENVIRONMENT_ID`: Railway sets that in every deployment to the
     * pool manager's OWN environment, which would silently point creates at the wrong place.
     */
    RAILWAY_INSTANCE_ENVIRONMENT_ID: optionalString,
    RAILWAY_INSTANCE_ENVIRONMENT_NAME: z.string().trim().min(1).default("production"),
    /**
     * The pool manager's public URL (Railway: https://<RAILWAY_PUBLIC_DOMAIN> when unset). With a
     * workspace id, the pool registers a Railway deployment webhook there at start-up.
     */
    POOL_PUBLIC_URL: optionalString.pipe(
      z
        .string()
        .regex(/^https?:\/\/[^\s/]+/, "an http(s) URL")
        .optional(),
    ),
    /** Railway deployment webhooks (hints to check an instance at once): `auto` (when possible) or `off`. */
    RAILWAY_WEBHOOKS: z.enum(["auto", "off"], { message: "auto or off" }).default("auto"),
    /** Railway: workspace id; set → a new project is created when every project holds 100 services. */
    RAILWAY_WORKSPACE_ID: optionalString,
    /**
     * Railway: service-name prefix. Names are `<prefix>-<pool tag>-<instance id>-<owner id>`, at most
     * 32 characters: 14 for the id, 5 for the owner id, 5 at least for the (shortened) pool tag and
     * 4 dashes leave 5 for the prefix (src/provider/railway/names.ts).
     */
    RAILWAY_SERVICE_PREFIX: z
      .string()
      .trim()
      .regex(
        /^[a-z][a-z0-9]{0,4}$/,
        "1 to 5 lowercase letters or digits, starting with a letter (a service name holds the prefix, the pool tag, the instance id and the owner id in Railway's 32 characters)",
      )
      .default("ap"),
    /** Railway: scheme of instance URLs (http only for a local stand-in). */
    RAILWAY_URL_SCHEME: z.enum(["https", "http"], { message: "https or http" }).default("https"),
    /** Railway: requests per second to stay under (Pro allows 50). */
    RAILWAY_MAX_RPS: int(1, 1000).default(50),
    /** Railway: timeout of one API request. */
    RAILWAY_REQUEST_TIMEOUT_MS: int(1000, 120_000).default(20_000),
    /** Image instances run from (Railway), e.g. ghcr.io/org/runtime:tag. */
    INSTANCE_IMAGE: optionalString,
    /** Port the runtime listens on inside its container (Railway). */
    INSTANCE_PORT: int(1, 65535).default(8080),
    /** Name of this deployment (shown in the dashboard; `production` makes destructive confirmations louder). */
    POOL_ENVIRONMENT: z.string().trim().min(1).default("local"),
    /** Log level. */
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  // Only when both parsed: a non-number already has its own message.
  .refine((c) => typeof c.POOL_MIN_IDLE !== "number" || typeof c.POOL_MAX_TOTAL !== "number" || c.POOL_MIN_IDLE <= c.POOL_MAX_TOTAL, {
    message: "a number no larger than POOL_MAX_TOTAL",
    path: ["POOL_MIN_IDLE"],
  })
  .refine((c) => typeof c.CLAIM_DEADLINE_MS !== "number" || typeof c.RESET_TIMEOUT_MS !== "number" || c.CLAIM_DEADLINE_MS >= 2 * c.RESET_TIMEOUT_MS + 2_000, {
    message: "at least 2 × RESET_TIMEOUT_MS + 2000 (room for one attempt: a provision, then a reset and a status call)",
    path: ["CLAIM_DEADLINE_MS"],
  })
  .refine(
    (c) => typeof c.OPENROUTER_KEY_LIMIT !== "number" || typeof c.OPENROUTER_KEY_LIMIT_MAX !== "number" || c.OPENROUTER_KEY_LIMIT <= c.OPENROUTER_KEY_LIMIT_MAX,
    {
      message: "an amount no smaller than OPENROUTER_KEY_LIMIT",
      path: ["OPENROUTER_KEY_LIMIT_MAX"],
    },
  )
  .refine((c) => c.PROVIDER !== "railway" || c.RAILWAY_API_TOKEN !== undefined || c.RAILWAY_PROJECT_TOKEN !== undefined, {
    message: "RAILWAY_API_TOKEN or RAILWAY_PROJECT_TOKEN when PROVIDER=railway",
    path: ["RAILWAY_API_TOKEN"],
  })
  .refine((c) => c.PROVIDER !== "railway" || (c.RAILWAY_PROJECT_IDS ?? "").split(",").some((x) => x.trim() !== ""), {
    message: "at least one project id (comma-separated) when PROVIDER=railway",
    path: ["RAILWAY_PROJECT_IDS"],
  })
  .refine((c) => c.PROVIDER !== "railway" || c.INSTANCE_IMAGE !== undefined, {
    message: "the runtime image to deploy when PROVIDER=railway",
    path: ["INSTANCE_IMAGE"],
  });

export type Config = Omit<z.infer<typeof ENV_SCHEMA>, "STARTING_POLL_MS" | "TRUST_PROXY"> & {
  /** STARTING_POLL_MS, or the provider's default when unset. */
  STARTING_POLL_MS: number;
  /** TRUST_PROXY, or the platform's default when unset (`trustProxyFrom` says which). */
  TRUST_PROXY: number;
  trustProxyFrom: "env" | "platform" | "default";
  /** The hosting platform the environment shows, when it is one known to put a proxy in front. */
  proxyPlatform: ProxyPlatform | null;
  /** Environment variables passed through to every instance (`INSTANCE_ENV_FOO=bar` → `FOO=bar`). */
  instanceEnv: Record<string, string>;
  /** LOCAL_RUNTIME_COMMAND parsed into argv, or undefined for the reference runtime. */
  localRuntimeCommand: string[] | undefined;
};

export interface ProxyPlatform {
  name: string;
  /** Proxies it puts in front of the server, when that is known and fixed; null: not known. */
  hops: number | null;
}

/**
 * Hosting platforms that put a proxy in front of the server, recognised by variables they set in
 * every deployment (and that people do not set by hand: not RAILWAY_ENVIRONMENT_ID, which the
 * configuration also accepts outside Railway). Only Railway's hop count is relied on (its edge is
 * one proxy); on the others the server warns and leaves TRUST_PROXY to the operator.
 */
export function proxyPlatform(env: NodeJS.ProcessEnv): ProxyPlatform | null {
  const set = (...names: string[]) => names.some((n) => (env[n] ?? "") !== "");
  if (set("RAILWAY_SERVICE_ID", "RAILWAY_DEPLOYMENT_ID", "RAILWAY_REPLICA_ID", "RAILWAY_PUBLIC_DOMAIN")) return { name: "Railway", hops: 1 };
  if (set("RENDER_SERVICE_ID")) return { name: "Render", hops: null };
  if (set("FLY_APP_NAME", "FLY_ALLOC_ID")) return { name: "Fly.io", hops: null };
  if (set("K_SERVICE", "K_REVISION")) return { name: "Cloud Run", hops: null };
  if (set("DYNO")) return { name: "Heroku", hops: null };
  return null;
}

/** The start-up warning when a known proxy platform runs the server with TRUST_PROXY=0, else null. */
export function trustProxyWarning(c: Pick<Config, "TRUST_PROXY" | "trustProxyFrom" | "proxyPlatform">): string | null {
  if (c.TRUST_PROXY !== 0 || !c.proxyPlatform) return null;
  const hint = c.proxyPlatform.hops !== null ? ` (${c.proxyPlatform.hops} on ${c.proxyPlatform.name})` : "";
  return (
    `running on ${c.proxyPlatform.name} with TRUST_PROXY=0${c.trustProxyFrom === "env" ? " (set explicitly)" : ""}: ` +
    `if a proxy forwards the requests, every client has its address, so all of them share one rate-limit bucket ` +
    `and five wrong passwords lock every operator out of the dashboard; set TRUST_PROXY to the number of proxies in front${hint}`
  );
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** Parses the environment. Throws ConfigError naming every bad variable and what it accepts. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = Object.keys(ENV_SCHEMA.shape);
  const input: Record<string, string> = {};
  for (const key of known) {
    const v = env[key];
    if (v !== undefined) input[key] = v;
  }
  // RAILWAY_ENVIRONMENT_ID/_NAME (the names the issue and older notes use) are honoured as the
  // instances' environment only where Railway's platform did not set them: inside a Railway
  // deployment (RAILWAY_SERVICE_ID present) they describe the pool manager's own environment.
  if (env.RAILWAY_SERVICE_ID === undefined) {
    if (input.RAILWAY_INSTANCE_ENVIRONMENT_ID === undefined && env.RAILWAY_ENVIRONMENT_ID) input.RAILWAY_INSTANCE_ENVIRONMENT_ID = env.RAILWAY_ENVIRONMENT_ID;
    if (input.RAILWAY_INSTANCE_ENVIRONMENT_NAME === undefined && env.RAILWAY_ENVIRONMENT_NAME)
      input.RAILWAY_INSTANCE_ENVIRONMENT_NAME = env.RAILWAY_ENVIRONMENT_NAME;
  }
  const parsed = ENV_SCHEMA.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? "config");
      const got = input[name];
      // Never echo secrets back into a log line.
      const shown = got === undefined || /KEY|TOKEN|PASSWORD|DATABASE_URL/.test(name) ? "" : ` (got ${JSON.stringify(got)})`;
      return `${name}: expected ${issue.message}${shown}`;
    });
    throw new ConfigError(problems);
  }
  const instanceEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith("INSTANCE_ENV_") && v !== undefined && k.length > "INSTANCE_ENV_".length) {
      instanceEnv[k.slice("INSTANCE_ENV_".length)] = v;
    }
  }
  let localRuntimeCommand: string[] | undefined;
  const cmd = parsed.data.LOCAL_RUNTIME_COMMAND;
  if (cmd !== undefined) {
    if (cmd.startsWith("[")) {
      const arr = z.array(z.string().min(1)).min(1).safeParse(safeJson(cmd));
      if (!arr.success) throw new ConfigError(["LOCAL_RUNTIME_COMMAND: expected a JSON array of strings or a command line"]);
      localRuntimeCommand = arr.data;
    } else {
      localRuntimeCommand = cmd.split(/\s+/).filter(Boolean);
    }
  }
  const STARTING_POLL_MS = parsed.data.STARTING_POLL_MS ?? (parsed.data.PROVIDER === "railway" ? 5_000 : 250);
  const platform = proxyPlatform(env);
  const TRUST_PROXY = parsed.data.TRUST_PROXY ?? platform?.hops ?? 0;
  const trustProxyFrom = parsed.data.TRUST_PROXY !== undefined ? "env" : platform?.hops != null ? "platform" : "default";
  return Object.freeze({ ...parsed.data, STARTING_POLL_MS, TRUST_PROXY, trustProxyFrom, proxyPlatform: platform, instanceEnv, localRuntimeCommand });
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}
