/**
 * The CLI's commands for pools and agents (issue 11): list and show pools, create / change / delete
 * one (from flags or a JSON file), protect an instance, release an agent, upgrade one agent or a
 * pool's with progress. Registered on the program by cli.ts, built on the client library like every
 * other remote command.
 */
import { type Command, Option } from "commander";
import { readFileSync } from "node:fs";
import type { PoolClient, PoolSettingsInput, UpgradeJob } from "./client/index.ts";

/** A command's options as commander hands them: untyped; each command reads and checks its own. */
// biome-ignore lint/suspicious/noExplicitAny: commander types no option; a command reads each as the type its flag declares
export type CommandOptions = Record<string, any>;

/** What cli.ts lends these commands (its remote runner and renderings). */
export interface CliKit {
  remote<A extends unknown[]>(
    run: (c: PoolClient, o: { json?: boolean } & CommandOptions, ...args: A) => Promise<[value: unknown, human: () => string]>,
  ): (...args: unknown[]) => Promise<void>;
  table(rows: Array<Record<string, unknown>>, columns: string[]): string;
  usage(message: string): never;
}

/** One example per command (the help lists them; test/cli.test.ts checks there is one for each). */
export const ADMIN_EXAMPLES: Array<[command: string, example: string]> = [
  ["pools", "agent-pool pools"],
  [
    "pool",
    "agent-pool pool hermes                # settings, counts, versions, upgrades\n  $ agent-pool pool create hermes --runtime hermes --image ghcr.io/acme/hermes:1 --min-idle 2\n  $ agent-pool pool update hermes --file hermes.json\n  $ agent-pool pool delete hermes",
  ],
  ["protect", "agent-pool protect i-0abc123def45"],
  ["unprotect", "agent-pool unprotect i-0abc123def45"],
  ["release", "agent-pool release i-0abc123def45     # reset it and return it to the pool"],
  ["upgrade", "agent-pool upgrade i-0abc123def45     # to its pool's current template, with progress\n  $ agent-pool upgrade --pool hermes --all"],
];

const collect = (v: string, prev: string[]) => [...prev, v];

/** The settings given as flags (only those given), or the JSON file's, flags winning. */
function settingsFrom(o: CommandOptions, kit: CliKit): PoolSettingsInput {
  let s: PoolSettingsInput = {};
  if (o.file) {
    try {
      const parsed = JSON.parse(readFileSync(o.file, "utf8")) as unknown;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) kit.usage(`--file ${o.file}: expected a JSON object of pool settings`);
      s = parsed as PoolSettingsInput;
    } catch (err) {
      kit.usage(`--file ${o.file}: ${(err as Error).message}`);
    }
  }
  const int = (name: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) kit.usage(`--${name}: expected a whole number, got ${JSON.stringify(v)}`);
    return n;
  };
  if (o.runtime !== undefined) s.runtime = o.runtime;
  if (o.provider !== undefined) s.provider = o.provider === "default" ? null : o.provider;
  if (o.image !== undefined) s.image = o.image === "" ? null : o.image;
  if (o.command !== undefined) s.command = parseCommand(o.command, kit);
  if (o.env.length > 0) {
    s.env = { ...(s.env ?? {}) };
    for (const kv of o.env as string[]) {
      const eq = kv.indexOf("=");
      if (eq <= 0) kit.usage(`--env: expected KEY=VALUE, got ${JSON.stringify(kv)}`);
      s.env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
  }
  const minIdle = int("min-idle", o.minIdle);
  if (minIdle !== undefined) s.minIdle = minIdle;
  const maxTotal = int("max-total", o.maxTotal);
  if (maxTotal !== undefined) s.maxTotal = maxTotal;
  const maxSurge = int("max-surge", o.maxSurge);
  if (maxSurge !== undefined) s.maxSurge = maxSurge;
  if (o.agentName !== undefined) s.claimAgentName = o.agentName === "" ? null : o.agentName;
  if (o.instructions !== undefined) s.claimInstructions = o.instructions === "" ? null : o.instructions;
  if (o.sizing !== undefined) s.sizing = parseSizing(String(o.sizing), kit);
  if (o.joinHosts !== undefined)
    s.joinUrlHosts =
      o.joinHosts === ""
        ? null
        : String(o.joinHosts)
            .split(",")
            .map((h) => h.trim())
            .filter(Boolean);
  return s;
}

/** `fixed`, `demand` (its defaults) or a JSON policy; the server validates the fields. */
function parseSizing(v: string, kit: CliKit): NonNullable<PoolSettingsInput["sizing"]> {
  const t = v.trim();
  if (t === "fixed" || t === "demand") return { mode: t };
  try {
    const p = JSON.parse(t) as unknown;
    if (typeof p === "object" && p !== null && !Array.isArray(p)) return p as NonNullable<PoolSettingsInput["sizing"]>;
  } catch {
    /* reported below */
  }
  return kit.usage(`--sizing: expected fixed, demand or a JSON policy such as '{"mode":"demand","floor":1}', got ${JSON.stringify(v)}`);
}

/** A JSON array of arguments, or a plain command line split on spaces ("" clears it: the default runtime). */
function parseCommand(v: string, kit: CliKit): string[] | null {
  if (v.trim() === "") return null;
  if (v.trim().startsWith("[")) {
    try {
      const arr = JSON.parse(v) as unknown;
      if (Array.isArray(arr) && arr.every((x) => typeof x === "string")) return arr as string[];
    } catch {
      /* reported below */
    }
    kit.usage(`--command: expected a JSON array of strings, got ${JSON.stringify(v)}`);
  }
  return v.trim().split(/\s+/);
}

function settingsOptions(cmd: Command): Command {
  return cmd
    .option("--file <path>", "a JSON file of settings (flags given too win)")
    .option("--runtime <label>", "label claims select the pool by (e.g. hermes)")
    .addOption(new Option("--provider <kind>", "provider of its instances").choices(["local", "railway", "default"]))
    .option("--image <image>", 'image instances run (Railway); "" for the deployment\'s default')
    .option("--command <argv>", 'command instances run (local): a JSON array or a command line; "" for the default')
    .option("--env <KEY=VALUE>", "environment of its instances (repeat it; replaces the pool's environment)", collect, [])
    .option("--min-idle <n>", "idle instances to keep warm")
    .option("--max-total <n>", "never more instances than this")
    .option("--max-surge <n>", "a rollout creates at most this many at once")
    .option("--sizing <policy>", 'idle target: fixed (min idle), demand, or a JSON policy (\'{"mode":"demand","floor":1,"schedule":[…]}\')')
    .option("--agent-name <name>", "claims' default agent name (\"\" for the deployment's)")
    .option("--instructions <text>", "claims' default instructions (\"\" for the deployment's)")
    .option("--join-hosts <hosts>", 'comma-separated hosts a claim\'s invite link may have ("" for any)');
}

const sizingLine = (s: { mode: string } & Record<string, unknown>) =>
  s.mode === "fixed"
    ? "fixed (min idle)"
    : `demand: floor ${s.floor}, ceiling ${s.ceiling ?? "max total"}, safety ×${s.safetyFactor}, window ${s.windowMinutes} min, cooldown ${s.cooldownMinutes} min` +
      (Array.isArray(s.schedule) && s.schedule.length
        ? `; schedule (${s.timeZone}) ${(s.schedule as Array<{ days: string[]; from: string; to: string; floor: number }>).map((x) => `${x.days.join(",")} ${x.from}-${x.to} ≥${x.floor}`).join("; ")}`
        : "");

const template = (p: { image: string | null; command: string[] | null }) => p.image ?? (p.command ? p.command.join(" ") : "(default)");

function progressLine(job: UpgradeJob): string {
  return `upgrade ${job.id}: ${job.done}/${job.total - job.skipped} upgraded, ${job.failed} failed, ${job.skipped} skipped, ${job.remaining} remaining${job.state === "done" ? " — done" : ""}`;
}

function jobReport(job: UpgradeJob, kit: CliKit): string {
  return [
    `upgrade ${job.id} of pool ${job.pool} (${job.scope}) ${job.state}${job.resumed ? `, resumed ${job.resumed}× after a restart` : ""}: ${job.done} upgraded, ${job.failed} failed, ${job.skipped} skipped${job.remaining ? `, ${job.remaining} remaining` : ""}`,
    "",
    kit.table(
      job.items.map((i) => ({ instance: i.instanceId, state: i.state, detail: i.detail })),
      ["instance", "state", "detail"],
    ),
  ].join("\n");
}

export function registerAdminCommands(program: Command, kit: CliKit): void {
  program
    .command("pools")
    .description("every pool with its template and counts")
    .action(
      kit.remote(async (c) => {
        const r = await c.pools();
        return [
          r,
          () =>
            kit.table(
              r.pools.map(({ pool: p, counts: n }) => ({
                pool: p.id,
                runtime: p.runtime,
                provider: p.provider ?? "(default)",
                template: template(p),
                hash: p.templateHash,
                idle: n.idle,
                claimed: n.claimed + n.pending_acceptance,
                total: `${n.total}/${p.maxTotal}`,
                "min idle": p.minIdle,
              })),
              ["pool", "runtime", "provider", "template", "hash", "idle", "claimed", "total", "min idle"],
            ),
        ];
      }),
    );

  const pool = program.command("pool").description("show, create, change or delete a pool (`agent-pool pool <id>` shows it)");
  pool
    .command("show <id>", { isDefault: true })
    .description("a pool's settings (secrets masked), counts, versions and latest upgrades")
    .action(
      kit.remote(async (c, _o, id: string) => {
        const [{ pool: p, counts: n }, v, u] = await Promise.all([c.pool(id), c.versions(id), c.upgradeJobs(id, 5)]);
        return [
          { pool: p, counts: n, versions: v.versions, upgrades: u.jobs },
          () =>
            [
              `pool ${p.id} (runtime ${p.runtime}, provider ${p.provider ?? "default"}) template ${p.templateHash}: ${template(p)}`,
              `min idle ${p.minIdle}, max total ${p.maxTotal}, max surge ${p.maxSurge}; ${n.idle} idle, ${n.claimed} claimed, ${n.total} in all`,
              `sizing        ${sizingLine(p.sizing)}`,
              `env           ${
                Object.entries(p.env)
                  .map(([k, x]) => `${k}=${x}`)
                  .join(" ") || "-"
              }`,
              `claim names   ${p.claimAgentName ?? "(deployment default)"}; invite hosts ${p.joinUrlHosts?.join(", ") ?? "any"}`,
              "",
              kit.table(
                v.versions.map((x) => ({
                  template: `${x.templateHash ?? "-"}${x.current ? " (current)" : ""}`,
                  runtime: x.runtimeType,
                  version: x.runtimeVersion,
                  status: x.status,
                  count: x.count,
                })),
                ["template", "runtime", "version", "status", "count"],
              ),
              ...(u.jobs.length
                ? [
                    "",
                    kit.table(
                      u.jobs.map((j) => ({
                        upgrade: j.id,
                        state: j.state,
                        done: j.done,
                        failed: j.failed,
                        skipped: j.skipped,
                        total: j.total,
                        at: j.createdAt,
                      })),
                      ["upgrade", "state", "done", "failed", "skipped", "total", "at"],
                    ),
                  ]
                : []),
            ].join("\n"),
        ];
      }),
    );
  settingsOptions(pool.command("create <id>").description("create a pool (its instances are made by the next pass)")).action(
    kit.remote(async (c, o, id: string) => {
      const r = await c.createPool({ ...settingsFrom(o, kit), id });
      return [r, () => `created pool ${r.pool.id} (runtime ${r.pool.runtime}, template ${r.pool.templateHash})`];
    }),
  );
  settingsOptions(pool.command("update <id>").description("change some of a pool's settings (a new image, command or env starts a rollout)")).action(
    kit.remote(async (c, o, id: string) => {
      const r = await c.updatePool(id, settingsFrom(o, kit));
      return [
        r,
        () =>
          `updated pool ${r.pool.id}${r.templateChanged ? `: new template ${r.pool.templateHash} (its idle instances are rolled out; upgrade its agents with \`agent-pool upgrade --pool ${r.pool.id} --all\`)` : ""}`,
      ];
    }),
  );
  pool
    .command("delete <id>")
    .description("delete a pool that holds no instance")
    .action(
      kit.remote(async (c, _o, id: string) => {
        const r = await c.deletePool(id);
        return [r, () => `deleted pool ${r.id}`];
      }),
    );

  for (const [name, value] of [
    ["protect", true],
    ["unprotect", false],
  ] as const) {
    program
      .command(`${name} <instance>`)
      .description(
        value ? "protect an instance: bulk operations (drain, rollouts, bulk upgrades, release) and claims leave it alone" : "remove an instance's protection",
      )
      .action(
        kit.remote(async (c, _o, id: string) => {
          const r = await c.protect(id, value);
          return [r, () => `${r.instance.id} is ${r.instance.protected ? "protected" : "not protected"}`];
        }),
      );
  }

  program
    .command("release <instance>")
    .description("factory-reset an agent: back to idle when its runtime comes back clean, else retired and replaced")
    .action(
      kit.remote(async (c, _o, id: string) => {
        const r = await c.release(id);
        return [
          r,
          () =>
            r.status === "idle"
              ? `released ${r.id}: reset clean, back in the pool`
              : `released ${r.id}: ${r.reason}; retired and replaced${r.deleteError ? ` (provider delete pending: ${r.deleteError})` : ""}`,
        ];
      }),
    );

  program
    .command("upgrade [instance]")
    .description("upgrade an agent, or a pool's (--pool with --all or --ids), to its pool's current template; shows progress until done")
    .option("--pool <pool>", "upgrade agents of this pool")
    .option("--all", "every agent of the pool on an older template (protected ones are skipped)")
    .option("--ids <ids>", "comma-separated agents of the pool")
    .option("--job <job>", "follow a job that already runs")
    .option("--no-wait", "print the job and return at once")
    .action(
      kit.remote(async (c, o, id: string | undefined) => {
        const given = [id !== undefined, o.pool !== undefined, o.job !== undefined].filter(Boolean).length;
        if (given !== 1) kit.usage("upgrade: give an instance, or --pool with --all or --ids, or --job");
        let job: UpgradeJob;
        if (id !== undefined) job = await c.upgrade(id);
        else if (o.job !== undefined) job = await c.upgradeJob(o.job);
        else {
          const ids = o.ids
            ? String(o.ids)
                .split(",")
                .map((x) => x.trim())
                .filter(Boolean)
            : undefined;
          if ((o.all === true) === (ids !== undefined && ids.length > 0)) kit.usage("upgrade --pool: give --all or --ids (not both)");
          job = await c.upgradePool(o.pool, o.all ? { all: true } : { ids: ids! });
        }
        if (o.wait !== false) {
          job = await c.waitForUpgrade(job.id, { pollMs: 500, onProgress: (j) => process.stderr.write(`agent-pool: ${progressLine(j)}\n`) });
          if (job.failed > 0) process.exitCode = 1;
        }
        const shown = job;
        return [shown, () => jobReport(shown, kit)];
      }),
    );
}
