/**
 * Seeding pools from configuration at start-up, pure: what the configuration says, against what
 * the database holds, gives the writes to make.
 *
 * A pool the database does not have is created. A pool it has is rewritten only when its
 * configuration entry changed since it was last applied (the seed hash): a pool an operator
 * changed through the API keeps those settings across restarts until someone edits the
 * configuration itself. A pool the configuration no longer names is left alone (deleting a pool is
 * an operator's act, through the API, and only when it is empty).
 */
import { createHash } from "node:crypto";
import type { PoolRecord, PoolWrite } from "../db/store.ts";
import { instanceTemplate, poolSettings, templateHash, type InstanceTemplate, type PoolSettingsInput } from "./template.ts";

export interface SeedWrite {
  pool: PoolWrite;
  /** Why: a new pool, or a changed configuration entry. */
  reason: "created" | "configuration changed" | "deployment environment changed";
  /** Whether what instances are made from changed (a rollout follows). */
  templateChanged: boolean;
}

/** Hash of a configuration entry as written (so any edit of it counts as a change). */
export function seedHash(entry: PoolSettingsInput): string {
  // A sizing policy is hashed whole (the key list above filters nested keys); without one, the
  // hash is what it was before sizing existed, so upgrading re-applies no pool's configuration.
  const base = JSON.stringify(entry, Object.keys(entry).sort());
  return createHash("sha256")
    .update(entry.sizing ? `${base}\u0000${JSON.stringify(entry.sizing)}` : base)
    .digest("hex")
    .slice(0, 12);
}

/**
 * The hash instances of a pool are compared with: the pool's template and the environment every
 * instance of the deployment gets (INSTANCE_ENV_*), which is part of what an instance is made from.
 */
export function effectiveHash(t: InstanceTemplate, deploymentEnv: Record<string, string>): string {
  return templateHash({ ...t, env: { ...deploymentEnv, ...t.env } });
}

export function planSeed(config: readonly PoolSettingsInput[], existing: readonly PoolRecord[], deploymentEnv: Record<string, string>): SeedWrite[] {
  const byId = new Map(existing.map((p) => [p.id, p]));
  const writes: SeedWrite[] = [];
  const written = new Set<string>();
  for (const entry of config) {
    const settings = poolSettings(entry);
    const hash = effectiveHash(settings, deploymentEnv);
    const sh = seedHash(entry);
    const have = byId.get(entry.id);
    if (!have || have.retiredAt !== null) {
      written.add(entry.id);
      writes.push({ pool: { ...settings, templateHash: hash, previousTemplate: null, seedHash: sh }, reason: "created", templateChanged: false });
      continue;
    }
    if (have.seedHash !== sh) {
      written.add(entry.id);
      const changed = have.templateHash !== hash;
      writes.push({
        pool: { ...settings, templateHash: hash, previousTemplate: changed ? instanceTemplate(have) : have.previousTemplate, seedHash: sh },
        reason: "configuration changed",
        templateChanged: changed,
      });
    }
  }
  // INSTANCE_ENV_* changed: every pool's instances are now of an old template (config-seeded or
  // not), so each pool's hash moves and a rollout follows.
  for (const have of existing) {
    if (written.has(have.id) || have.retiredAt !== null) continue;
    const hash = effectiveHash(have, deploymentEnv);
    if (have.templateHash !== hash) {
      writes.push({
        pool: { ...have, templateHash: hash, previousTemplate: instanceTemplate(have) },
        reason: "deployment environment changed",
        templateChanged: true,
      });
    }
  }
  return writes;
}
