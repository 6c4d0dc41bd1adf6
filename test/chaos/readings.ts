/**
 * What a fault run reads back besides the API: the deployment's owner id and the lease holder
 * from the database, the runtimes' own provision records, and the replicas' log lines.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import type { RuntimeEvent } from "./checks.ts";
import type { Replica } from "./cluster.ts";

export async function readOwnerId(databaseUrl: string): Promise<string> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    const { rows } = await c.query<{ owner_id: string }>("SELECT owner_id FROM deployment");
    if (!rows[0]) throw new Error("no owner id recorded in the database");
    return rows[0].owner_id;
  } finally {
    await c.end();
  }
}

/** Who holds the pool's reconciler lease (`<host>:<pid>:<random>`), or null. */
export async function leaseHolder(databaseUrl: string, poolId: string): Promise<string | null> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    const { rows } = await c.query<{ holder: string }>("SELECT holder FROM leases WHERE name = $1 AND expires_at > now()", [`reconciler:${poolId}`]);
    return rows[0]?.holder ?? null;
  } finally {
    await c.end();
  }
}

export function readRuntimeRecords(dir: string): Map<string, RuntimeEvent[]> {
  const out = new Map<string, RuntimeEvent[]>();
  for (const f of readdirSync(dir)) {
    if (!f.endsWith(".jsonl")) continue;
    const lines = readFileSync(join(dir, f), "utf8").split("\n").filter(Boolean);
    out.set(
      f.slice(0, -".jsonl".length),
      lines.map((l) => JSON.parse(l) as RuntimeEvent),
    );
  }
  return out;
}

/** The replicas' "hourly budget low; spacing creates" log lines: how many, and the longest wait. */
export function budgetWaits(replicas: readonly Replica[]): { count: number; maxWaitMs: number } {
  let count = 0;
  let maxWaitMs = 0;
  for (const line of replicas.flatMap((r) => r.output().split("\n"))) {
    if (!line.includes("hourly budget low")) continue;
    count++;
    try {
      maxWaitMs = Math.max(maxWaitMs, Number((JSON.parse(line) as { waitMs?: unknown }).waitMs) || 0);
    } catch {
      // not a JSON log line
    }
  }
  return { count, maxWaitMs };
}
