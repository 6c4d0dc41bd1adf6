/**
 * `agent-pool` command line (the package's bin: `npx agent-pool <command>`). `serve` (the default)
 * runs the pool manager and `migrate` applies the database migrations; every other command talks
 * to a running pool manager through the client library (src/client), so the CLI gets the same
 * typed answers, errors and claim retries as any other client.
 */
import { Command, Option } from "commander";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { PoolApiError, PoolClient, PoolUnreachableError, type Counts } from "./client/index.ts";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { openStore } from "./db/open.ts";
import { isPoolError } from "./errors.ts";
import { serve } from "./serve.ts";
import { ROLLOUT_EXAMPLE, registerRolloutCommands } from "./rollout-cli.ts";
import { packageVersion } from "./version.ts";
import { ADMIN_EXAMPLES, type CommandOptions, registerAdminCommands } from "./cli-admin.ts";

interface GlobalOptions {
  json?: boolean;
  url?: string;
}

function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`agent-pool: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/**
 * Prints an error and exits 1: the server's message and its stable code on stderr; with --json
 * also the error as JSON on stdout (`{error, code, status?}`), so a script reading stdout always
 * gets JSON.
 */
function fail(err: unknown, o: GlobalOptions = {}): never {
  let body: Record<string, unknown>;
  let line: string;
  if (err instanceof PoolApiError) {
    body = { error: err.message, code: err.code, status: err.status, ...err.details };
    line = `${err.message} (${err.code})`;
    if (err.status === 401) line += `\nagent-pool: set POOL_API_KEY to the server's key (or DATA_DIR to the server's data directory)`;
  } else if (err instanceof PoolUnreachableError) {
    body = { error: err.message, code: err.code };
    line = `${err.message}; is it running? (POOL_URL or --url)`;
  } else if (isPoolError(err)) {
    body = { error: err.message, code: err.code };
    line = `${err.message} (${err.code})`;
  } else {
    body = { error: (err as Error).message, code: "INTERNAL" };
    line = (err as Error).message;
  }
  if (o.json) process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
  process.stderr.write(`agent-pool: ${line}\n`);
  process.exit(1);
}

function usage(message: string): never {
  process.stderr.write(`agent-pool: ${message}\n`);
  process.exit(2);
}

async function runServe(): Promise<void> {
  const config = configOrExit();
  const pool = await serve(config).catch((err) => fail(err));
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`agent-pool: ${signal} received, shutting down\n`);
    // A shutdown that hangs must not keep instances running forever: give it 30 s.
    const guard = setTimeout(() => {
      process.stderr.write("agent-pool: shutdown timed out\n");
      process.exit(1);
    }, 30_000);
    guard.unref();
    pool
      .close()
      .then(() => process.exit(0))
      .catch((err) => fail(err));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** One example per command, listed by `agent-pool --help` (and checked by test/cli.test.ts). */
const EXAMPLES: Array<[command: string, example: string]> = [
  ["serve", "agent-pool serve                      # the default; the same as npm start"],
  ["migrate", "DATABASE_URL=postgres://… agent-pool migrate"],
  ["status", "agent-pool status"],
  ["counts", "agent-pool counts --json"],
  ["agents", "agent-pool agents"],
  ["instance", "agent-pool instance i-0abc123def45"],
  ["claim", 'agent-pool claim --name Ada --instructions "You are a pirate"'],
  ["add", "agent-pool add 2"],
  ["replenish", "agent-pool replenish                  # a reconcile pass; with a count, like add"],
  ["drain", "agent-pool drain 1"],
  ["reconcile", "agent-pool reconcile --json"],
  ["kill", "agent-pool kill i-0abc123def45"],
  ["dismiss", "agent-pool dismiss i-0abc123def45"],
  ROLLOUT_EXAMPLE,
  ...ADMIN_EXAMPLES,
];

const program = new Command()
  .name("agent-pool")
  .description("Keeps a warm pool of pre-started AI agent instances.")
  .version(packageVersion().version)
  .addOption(new Option("--json", "print JSON (errors too: {error, code} on stdout, the message on stderr)"))
  .addOption(new Option("--url <url>", "pool manager to talk to").env("POOL_URL").default("http://127.0.0.1:3001"))
  .configureHelp({ showGlobalOptions: true })
  .addHelpText(
    "after",
    [
      "",
      "Examples:",
      ...EXAMPLES.map(([, e]) => `  $ ${e}`),
      "",
      "Commands that talk to a pool manager send POOL_API_KEY, or the key the server generated in",
      "DATA_DIR (default ./.data) when it runs on this machine.",
    ].join("\n"),
  );

const globals = (cmd: Command) => cmd.optsWithGlobals<GlobalOptions & Record<string, unknown>>();

function client(o: GlobalOptions): PoolClient {
  let key = process.env.POOL_API_KEY ?? null;
  if (!key) {
    // Same machine as an embedded server: its generated key is in the data dir.
    const file = join(resolve(process.env.DATA_DIR ?? "./.data"), "api-key");
    if (existsSync(file)) key = readFileSync(file, "utf8").trim();
  }
  return new PoolClient({ url: o.url ?? "http://127.0.0.1:3001", apiKey: key });
}

/** Runs a remote command: JSON or the human rendering on stdout, errors through `fail`. */
function remote<A extends unknown[]>(run: (c: PoolClient, o: GlobalOptions & CommandOptions, ...args: A) => Promise<[value: unknown, human: () => string]>) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const o = globals(cmd);
    const positional = args.slice(0, cmd.registeredArguments.length) as A;
    try {
      const [value, human] = await run(client(o), o, ...positional);
      process.stdout.write(`${o.json ? JSON.stringify(value, null, 2) : human()}\n`);
    } catch (err) {
      fail(err, o);
    }
  };
}

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return "(none)";
  const cell = (v: unknown) => (v === null || v === undefined ? "-" : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  return [line(columns), line(widths.map((w) => "-".repeat(w))), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join("\n");
}

const countsLine = (c: Counts) =>
  `idle ${c.idle}, starting ${c.starting}, claiming ${c.claiming}, claimed ${c.claimed}, pending ${c.pending_acceptance}, crashed ${c.crashed}, sleeping ${c.sleeping} — total ${c.total}`;

const count = (v: string | undefined, def: number | undefined): number | undefined => {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) usage(`expected a whole number of at least 1, got ${JSON.stringify(v)}`);
  return n;
};

program.command("serve", { isDefault: true }).description("run the pool manager (HTTP API, reconciler, provider); logs are JSON lines").action(runServe);

program
  .command("migrate")
  .description("apply database migrations and exit")
  .action(async (_o: unknown, cmd: Command) => {
    const o = globals(cmd);
    const config = configOrExit();
    const dataDir = resolve(config.DATA_DIR);
    mkdirSync(dataDir, { recursive: true });
    const store = await openStore({ databaseUrl: config.DATABASE_URL, dataDir: join(dataDir, "pglite") }).catch((err) => fail(err, o));
    await store.close();
    process.stdout.write(o.json ? `${JSON.stringify({ ok: true, backend: store.backend })}\n` : `migrations applied (${store.backend})\n`);
  });

// ---- commands that talk to a running pool manager ----

program
  .command("status")
  .description("counts and instances of a running pool manager")
  .action(
    remote(async (c) => {
      const s = await c.status();
      return [
        s,
        () =>
          [
            `pool ${s.pool} (min idle ${s.minIdle}, max total ${s.maxTotal}): ${countsLine(s.counts)}`,
            "",
            table(
              s.instances.map((i) => ({ id: i.id, status: i.status, deploy: i.deployStatus, agent: i.agentName, version: i.runtimeVersion, url: i.url })),
              ["id", "status", "deploy", "agent", "version", "url"],
            ),
          ].join("\n"),
      ];
    }),
  );

program
  .command("counts")
  .description("instances per status (needs no API key)")
  .action(
    remote(async (c) => {
      const n = await c.counts();
      return [n, () => countsLine(n)];
    }),
  );

program
  .command("agents")
  .description("crashed, pending and claimed agents, crashed first")
  .action(
    remote(async (c) => {
      const r = await c.agents();
      return [
        r,
        () =>
          table(
            r.agents.map((a) => ({ id: a.id, status: a.status, agent: a.agentName, source: a.claimSource, claimed: a.claimedAt, invite: a.inviteUrl })),
            ["id", "status", "agent", "source", "claimed", "invite"],
          ),
      ];
    }),
  );

program
  .command("instance <id>")
  .description("one instance and its recent events")
  .action(
    remote(async (c, _o, id: string) => {
      const { instance: i, events } = await c.instance(id);
      return [
        { instance: i, events },
        () =>
          [
            `instance      ${i.id} (${i.name})`,
            `status        ${i.status}${i.deployStatus ? ` (deploy ${i.deployStatus})` : ""}`,
            `agent         ${i.agentName ?? "-"}${i.claimSource ? ` via ${i.claimSource}` : ""}`,
            `conversation  ${i.conversationId ?? "-"}`,
            `invite URL    ${i.inviteUrl ?? "-"}`,
            `health        ${i.health.okAt ? `ok at ${i.health.okAt}` : "never ok"}${i.health.error ? `; last error: ${i.health.error}` : ""}`,
            "",
            table(
              events.map((e) => ({ at: e.at, from: e.from, to: e.to, actor: e.actor, reason: e.reason })),
              ["at", "from", "to", "actor", "reason"],
            ),
          ].join("\n"),
      ];
    }),
  );

program
  .command("claim")
  .description("claim an instance: a new conversation, or join one with --join (retries an empty pool up to --wait)")
  .option("--name <name>", "agent name (default: the server's CLAIM_DEFAULT_AGENT_NAME)")
  .option("--instructions <text>", "agent instructions (default: the server's CLAIM_DEFAULT_INSTRUCTIONS)")
  .option("--join <url>", "invite URL of a conversation to join")
  .option("--pool <pool>", "pool to claim from")
  .option("--source <source>", "where the claim comes from, shown with the agent", "cli")
  .option("--wait <seconds>", "keep retrying an empty pool for this long (0: one try)", "60")
  .option("--idempotency-key <key>", "key of this claim: rerunning with the same key returns the same agent")
  .action(
    remote(async (c, o) => {
      const wait = Number(o.wait);
      if (!Number.isFinite(wait) || wait < 0) usage(`--wait: expected a number of seconds, got ${JSON.stringify(o.wait)}`);
      const r = await c.claim(
        {
          ...(o.name !== undefined ? { agentName: o.name } : {}),
          ...(o.instructions !== undefined ? { instructions: o.instructions } : {}),
          ...(o.join ? { joinUrl: o.join } : {}),
          ...(o.pool ? { pool: o.pool } : {}),
          ...(o.source ? { source: o.source } : {}),
        },
        {
          deadlineMs: wait * 1000,
          ...(o.idempotencyKey ? { idempotencyKey: o.idempotencyKey } : {}),
          onRetry: ({ delayMs, error }) =>
            process.stderr.write(`agent-pool: ${error.message} (${error.code}); trying again in ${(delayMs / 1000).toFixed(1)} s\n`),
        },
      );
      return [
        r,
        () =>
          [
            `instance      ${r.instanceId}`,
            `agent         ${r.agentName}`,
            `status        ${r.status}`,
            `conversation  ${r.conversationId ?? "-"}`,
            `invite URL    ${r.inviteUrl ?? "-"}`,
          ].join("\n"),
      ];
    }),
  );

program
  .command("add <count>")
  .description("create up to COUNT instances now (bounded by max total)")
  .action(
    remote(async (c, _o, n: string) => {
      const r = await c.add(count(n, undefined)!);
      const errors = r.errors ?? [];
      return [r, () => `created ${r.created?.length ?? 0}${errors.length ? ` (${errors.length} errors: ${errors.join("; ")})` : ""}\n${countsLine(r.counts)}`];
    }),
  );

program
  .command("replenish [count]")
  .description("create up to COUNT instances now; with no COUNT, run a reconcile pass")
  .action(
    remote(async (c, _o, n: string | undefined) => {
      const r = await c.replenish(count(n, undefined));
      // With a count the server creates instances; without, it runs a reconcile pass (`result`).
      const created = r.created ?? r.result?.created ?? [];
      const errors = r.errors ?? r.result?.errors ?? [];
      return [r, () => `created ${created.length}${errors.length ? ` (${errors.length} errors: ${errors.join("; ")})` : ""}\n${countsLine(r.counts)}`];
    }),
  );

program
  .command("drain [count]")
  .description("delete up to COUNT idle instances (default 1)")
  .action(
    remote(async (c, _o, n: string | undefined) => {
      const r = await c.drain(count(n, 1));
      return [r, () => `drained ${r.drained.length}: ${r.drained.join(", ") || "-"}\n${countsLine(r.counts)}`];
    }),
  );

program
  .command("reconcile")
  .description("run a reconcile pass now and show what it did")
  .action(
    remote(async (c) => {
      const t = await c.reconcile();
      return [
        t,
        () =>
          [
            `pass of ${t.durationMs} ms${t.leader ? "" : " (another replica holds the lease: nothing done)"}: listing ${t.listing}, ${t.transitions.length} transitions, created ${t.created.length}, deleted ${t.deleted.length}`,
            ...t.errors.map((e) => `error: ${e}`),
            countsLine(t.counts),
          ].join("\n"),
      ];
    }),
  );

program
  .command("kill <id>")
  .description("kill an instance (provider delete; the row is kept in the event log)")
  .action(
    remote(async (c, _o, id: string) => {
      const r = await c.kill(id);
      return [r, () => `killed ${r.id}`];
    }),
  );

program
  .command("dismiss <id>")
  .description("dismiss a crashed agent")
  .action(
    remote(async (c, _o, id: string) => {
      const r = await c.dismiss(id);
      return [r, () => `dismissed ${r.id}`];
    }),
  );

registerRolloutCommands(program, { remote, table });
registerAdminCommands(program, { remote, table, usage });

await program.parseAsync(process.argv);
