/**
 * `agent-pool` command line. `serve` (the default) runs the pool manager; `migrate` applies the
 * database migrations and exits.
 */
import { Command } from "commander";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { openStore } from "./db/open.ts";
import { isPoolError } from "./errors.ts";
import { serve } from "./serve.ts";
import { packageVersion } from "./version.ts";

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

function fail(err: unknown): never {
  const msg = isPoolError(err) ? `${err.message} (${err.code})` : (err as Error).message;
  process.stderr.write(`agent-pool: ${msg}\n`);
  process.exit(1);
}

async function runServe(): Promise<void> {
  const config = configOrExit();
  const pool = await serve(config).catch(fail);
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

const program = new Command()
  .name("agent-pool")
  .description("Keeps a warm pool of pre-started AI agent instances.")
  .version(packageVersion().version);

program.command("serve", { isDefault: true }).description("run the pool manager (HTTP API, reconciler, provider)").action(runServe);

program
  .command("migrate")
  .description("apply database migrations and exit")
  .action(async () => {
    const config = configOrExit();
    const dataDir = resolve(config.DATA_DIR);
    mkdirSync(dataDir, { recursive: true });
    const store = await openStore({ databaseUrl: config.DATABASE_URL, dataDir: join(dataDir, "pglite") }).catch(fail);
    await store.close();
    process.stdout.write(`migrations applied (${store.backend})\n`);
  });

// ---- commands that talk to a running server ----

interface Remote {
  url: string;
  key: string | null;
}

function remote(): Remote {
  const url = (process.env.POOL_URL ?? "http://127.0.0.1:3001").replace(/\/+$/, "");
  let key = process.env.POOL_API_KEY ?? null;
  if (!key) {
    // Same machine as an embedded server: its generated key is in the data dir.
    const file = join(resolve(process.env.DATA_DIR ?? "./.data"), "api-key");
    if (existsSync(file)) key = readFileSync(file, "utf8").trim();
  }
  return { url, key };
}

async function call(method: string, path: string, body?: unknown): Promise<any> {
  const r = remote();
  const headers: Record<string, string> = {};
  if (r.key) headers.authorization = `Bearer ${r.key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(`${r.url}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    process.stderr.write(`agent-pool: cannot reach the pool manager at ${r.url} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}); is it running? (POOL_URL)\n`);
    process.exit(1);
  }
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {}
  if (!res.ok) {
    const msg = json?.error ? `${json.error}${json.code ? ` (${json.code})` : ""}` : `HTTP ${res.status}`;
    const hint = res.status === 401 ? `\nagent-pool: set POOL_API_KEY${r.key ? " to the server's key" : ""} (or DATA_DIR to the server's data directory)` : "";
    process.stderr.write(`agent-pool: ${msg}${hint}\n`);
    process.exit(1);
  }
  return json;
}

function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return "(none)";
  const cell = (v: unknown) => (v === null || v === undefined ? "-" : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(columns), line(widths.map((w) => "-".repeat(w))), ...rows.map((r) => line(columns.map((c) => cell(r[c]))))].join("\n");
}

function out(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human()}\n`);
}

const countsLine = (c: Record<string, number>) =>
  `idle ${c.idle}, starting ${c.starting}, claiming ${c.claiming}, claimed ${c.claimed}, pending ${c.pending_acceptance}, crashed ${c.crashed}, sleeping ${c.sleeping} — total ${c.total}`;

program
  .command("status")
  .description("counts and instances of a running pool manager")
  .option("--json", "print JSON")
  .action(async (o: { json?: boolean }) => {
    const s = await call("GET", "/api/pool/status");
    out(!!o.json, s, () =>
      [
        `pool ${s.pool} (min idle ${s.minIdle}, max total ${s.maxTotal}): ${countsLine(s.counts)}`,
        "",
        table(
          s.instances.map((i: any) => ({ id: i.id, status: i.status, deploy: i.deployStatus, agent: i.agentName, version: i.runtimeVersion, url: i.url })),
          ["id", "status", "deploy", "agent", "version", "url"],
        ),
      ].join("\n"),
    );
  });

program
  .command("claim")
  .description("claim an instance: a new conversation, or join one with --join")
  .requiredOption("--name <name>", "agent name")
  .requiredOption("--instructions <text>", "agent instructions")
  .option("--join <url>", "invite URL of a conversation to join")
  .option("--pool <pool>", "pool to claim from")
  .option("--json", "print JSON")
  .action(async (o: { name: string; instructions: string; join?: string; pool?: string; json?: boolean }) => {
    const r = await call("POST", "/api/pool/claim", {
      agentName: o.name,
      instructions: o.instructions,
      ...(o.join ? { joinUrl: o.join } : {}),
      ...(o.pool ? { pool: o.pool } : {}),
    });
    out(!!o.json, r, () =>
      [`instance      ${r.instanceId}`, `status        ${r.status}`, `conversation  ${r.conversationId ?? "-"}`, `invite URL    ${r.inviteUrl ?? "-"}`].join("\n"),
    );
  });

const count = (v: string | undefined, def: number | undefined): number | undefined => {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`agent-pool: expected a whole number of at least 1, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
};

program
  .command("replenish [count]")
  .description("create up to COUNT instances now; with no COUNT, run a reconcile pass")
  .option("--json", "print JSON")
  .action(async (n: string | undefined, o: { json?: boolean }) => {
    const c = count(n, undefined);
    const r = await call("POST", "/api/pool/replenish", c === undefined ? {} : { count: c });
    // With a count the server creates instances; without, it runs a reconcile pass (`result`).
    const created: string[] = r.created ?? r.result?.created ?? [];
    const errors: string[] = r.errors ?? r.result?.errors ?? [];
    out(!!o.json, r, () => `created ${created.length}${errors.length ? ` (${errors.length} errors: ${errors.join("; ")})` : ""}\n${countsLine(r.counts)}`);
  });

program
  .command("drain [count]")
  .description("delete up to COUNT idle instances (default 1)")
  .option("--json", "print JSON")
  .action(async (n: string | undefined, o: { json?: boolean }) => {
    const r = await call("POST", "/api/pool/drain", { count: count(n, 1) });
    out(!!o.json, r, () => `drained ${r.drained.length}: ${r.drained.join(", ") || "-"}\n${countsLine(r.counts)}`);
  });

program
  .command("kill <id>")
  .description("kill an instance (provider delete; the row is kept in the event log)")
  .option("--json", "print JSON")
  .action(async (id: string, o: { json?: boolean }) => {
    const r = await call("DELETE", `/api/pool/instances/${encodeURIComponent(id)}`);
    out(!!o.json, r, () => `killed ${r.id}`);
  });

program
  .command("dismiss <id>")
  .description("dismiss a crashed agent")
  .option("--json", "print JSON")
  .action(async (id: string, o: { json?: boolean }) => {
    const r = await call("DELETE", `/api/pool/crashed/${encodeURIComponent(id)}`);
    out(!!o.json, r, () => `dismissed ${r.id}`);
  });

await program.parseAsync(process.argv);
