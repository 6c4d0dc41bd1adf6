/**
 * `npm run bench -- sizing` (issue 13): replays synthetic claim traces (steady Poisson, a morning
 * ramp, bursts of 20 claims in a second, a quiet night) through the real sizing planner against a
 * simulated provider (local: seconds to refill; Railway-like: 2–6 minutes), in simulated time (see
 * sizing-sim.ts), and prints for `fixed` at several min idle and for `demand`: warm-hit rate, p99
 * claim wait and idle instance-hours. Then it says, per provider, whether `demand` reached the best
 * fixed setting's warm-hit rate with at least 30% fewer idle instance-hours on the ramp and the
 * night, and if not, what the cheapest fixed setting at demand's hit rate costs.
 */
import type { SizingPolicy } from "../src/pool/sizing.ts";
import { REFILLS, simulate, traces, type SimResult } from "./sizing-sim.ts";

const SEED = 13;
const FIXED = [1, 2, 4, 8, 16, 24, 32];
const DEMAND: SizingPolicy = {
  mode: "demand",
  floor: 1,
  ceiling: null,
  safetyFactor: 1,
  windowMinutes: 15,
  cooldownMinutes: 20,
  timeZone: "UTC",
  schedule: [],
};
const DEMAND_SAFE: SizingPolicy = { ...DEMAND, floor: 2, safetyFactor: 1.5 };
const DEMAND_WIDE: SizingPolicy = { ...DEMAND, floor: 2, safetyFactor: 2 };
const DEMAND_SCHEDULED: SizingPolicy = {
  ...DEMAND_SAFE,
  schedule: [{ days: ["mon", "tue", "wed", "thu", "fri"], from: "07:00", to: "10:00", floor: 10 }],
};

interface Row {
  label: string;
  r: SimResult;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const wait = (ms: number) => (ms >= 60_000 ? `${(ms / 60_000).toFixed(1)} min` : `${(ms / 1000).toFixed(1)} s`);

export async function sizingBench(): Promise<void> {
  console.log("\n== sizing: fixed vs demand in simulated time (seed 13, real planner, pass every 10 s, claims wait up to 10 min) ==");
  const verdicts: string[] = [];
  for (const refill of REFILLS) {
    const defaultRefillMs = refill.name.startsWith("local") ? 10_000 : 180_000;
    for (const trace of traces(SEED)) {
      const rows: Row[] = [];
      for (const n of FIXED)
        rows.push({ label: `fixed min ${n}`, r: simulate(trace, refill, { policy: { mode: "fixed" }, minIdle: n, defaultRefillMs, seed: SEED }) });
      const demand = { label: "demand floor 1 ×1.0", r: simulate(trace, refill, { policy: DEMAND, minIdle: 0, defaultRefillMs, seed: SEED }) };
      const safe = { label: "demand floor 2 ×1.5", r: simulate(trace, refill, { policy: DEMAND_SAFE, minIdle: 0, defaultRefillMs, seed: SEED }) };
      const wide = { label: "demand floor 2 ×2.0", r: simulate(trace, refill, { policy: DEMAND_WIDE, minIdle: 0, defaultRefillMs, seed: SEED }) };
      const sched = {
        label: "demand floor 2 ×1.5, weekdays 07–10 ≥10",
        r: simulate(trace, refill, { policy: DEMAND_SCHEDULED, minIdle: 0, defaultRefillMs, seed: SEED }),
      };
      rows.push(demand, safe, wide, sched);
      console.log(`\n${refill.name} · ${trace.name} · ${trace.arrivals.length} claims`);
      console.log(`  ${"policy".padEnd(38)} ${"warm hits".padStart(9)} ${"p99 wait".padStart(9)} ${"idle inst-h".padStart(11)} ${"max target".padStart(10)}`);
      for (const { label, r } of rows) {
        console.log(
          `  ${label.padEnd(38)} ${pct(r.warmHitRate).padStart(9)} ${wait(r.p99WaitMs).padStart(9)} ${r.idleInstanceHours.toFixed(1).padStart(11)} ${String(r.maxTarget).padStart(10)}`,
        );
      }
      if (!/ramp|night/.test(trace.name)) continue;
      const fixed = rows.slice(0, FIXED.length);
      const best = fixed.reduce((a, b) => (b.r.warmHitRate > a.r.warmHitRate + 1e-9 ? b : a));
      for (const d of [demand, safe, wide, sched]) {
        const saving = 1 - d.r.idleInstanceHours / best.r.idleInstanceHours;
        const reaches = d.r.warmHitRate >= best.r.warmHitRate - 0.005;
        const ok = reaches && saving >= 0.3;
        // The cheapest fixed setting that is at least as warm as this demand policy.
        const peer = fixed.filter((f) => f.r.warmHitRate >= d.r.warmHitRate - 0.005).sort((a, b) => a.r.idleInstanceHours - b.r.idleInstanceHours)[0];
        verdicts.push(
          `${ok ? "MET    " : "NOT MET"} ${refill.name}, ${trace.name.split(",")[0]}: ${d.label} ${pct(d.r.warmHitRate)} warm at ${d.r.idleInstanceHours.toFixed(1)} idle inst-h` +
            ` vs best fixed (${best.label}) ${pct(best.r.warmHitRate)} at ${best.r.idleInstanceHours.toFixed(1)}: ${saving >= 0 ? `${(saving * 100).toFixed(0)}% fewer` : `${(-saving * 100).toFixed(0)}% more`}` +
            (reaches ? "" : `, ${((best.r.warmHitRate - d.r.warmHitRate) * 100).toFixed(1)} points colder`) +
            (peer && !reaches ? `; the cheapest fixed as warm (${peer.label}) costs ${peer.r.idleInstanceHours.toFixed(1)}` : ""),
        );
      }
    }
  }
  console.log(
    "\nThe aim (issue 13): demand reaches the best fixed warm-hit rate (within 0.5 points) with ≥30% fewer idle instance-hours on the ramp and night traces.",
  );
  for (const v of verdicts) console.log(`  ${v}`);
}
