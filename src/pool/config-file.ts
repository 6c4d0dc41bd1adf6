/**
 * Pools from configuration: a JSON file (POOLS_FILE), or, without one, the single pool the
 * environment variables describe (POOL_ID, POOL_MIN_IDLE, POOL_MAX_TOTAL, INSTANCE_IMAGE or
 * LOCAL_RUNTIME_COMMAND, POOL_RUNTIME), as before pools were templates.
 *
 *   {
 *     "globalMaxTotal": 40,
 *     "pools": [
 *       { "id": "hermes", "runtime": "hermes", "image": "ghcr.io/org/hermes:1.4", "minIdle": 3, "maxTotal": 20,
 *         "env": { "XMTP_ENV": "production" }, "joinUrlHosts": ["convos.org"] },
 *       { "id": "openclaw", "runtime": "openclaw", "image": "ghcr.io/org/openclaw:2.0", "minIdle": 1 }
 *     ]
 *   }
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import type { Config } from "../config.ts";
import { ConfigError } from "../config.ts";
import { SizingPolicyInput, type SizingPolicy } from "./sizing.ts";
import { PoolSettingsInput } from "./template.ts";

const PoolsFile = z
  .object({
    globalMaxTotal: z.number().int().min(1).max(100_000).optional(),
    pools: z.array(PoolSettingsInput).min(1, "at least one pool"),
  })
  .strict();

export interface PoolsConfig {
  pools: PoolSettingsInput[];
  globalMaxTotal: number | undefined;
}

/** POOL_SIZING: a sizing policy as JSON (pool/sizing.ts). */
function sizingFromEnv(text: string): SizingPolicy {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([`POOL_SIZING: not valid JSON (${(err as Error).message})`]);
  }
  const r = SizingPolicyInput.safeParse(json);
  if (!r.success) throw new ConfigError(r.error.issues.map((i) => `POOL_SIZING: ${i.path.join(".") || "(top)"}: ${i.message}`));
  return r.data;
}

/** The pools the configuration describes. Throws ConfigError naming the file and the bad field. */
export function poolsFromConfig(config: Config): PoolsConfig {
  if (config.POOLS_FILE === undefined) {
    return {
      globalMaxTotal: config.GLOBAL_MAX_TOTAL,
      pools: [
        {
          id: config.POOL_ID,
          runtime: config.POOL_RUNTIME ?? config.POOL_ID,
          minIdle: config.POOL_MIN_IDLE,
          maxTotal: config.POOL_MAX_TOTAL,
          // What instances are made from: a change of INSTANCE_IMAGE or LOCAL_RUNTIME_COMMAND is a
          // change of the pool's template, and starts a rollout.
          ...(config.PROVIDER === "railway" && config.INSTANCE_IMAGE ? { image: config.INSTANCE_IMAGE } : {}),
          ...(config.PROVIDER === "local" && config.localRuntimeCommand ? { command: config.localRuntimeCommand } : {}),
          ...(config.POOL_SIZING !== undefined ? { sizing: sizingFromEnv(config.POOL_SIZING) } : {}),
        },
      ],
    };
  }
  let text: string;
  try {
    text = readFileSync(config.POOLS_FILE, "utf8");
  } catch (err) {
    throw new ConfigError([`POOLS_FILE: cannot read ${config.POOLS_FILE} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([`POOLS_FILE: ${config.POOLS_FILE} is not valid JSON (${(err as Error).message})`]);
  }
  const parsed = PoolsFile.safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `POOLS_FILE: ${config.POOLS_FILE}: ${i.path.join(".") || "(top)"}: ${i.message}`));
  }
  const ids = parsed.data.pools.map((p) => p.id);
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup) throw new ConfigError([`POOLS_FILE: ${config.POOLS_FILE}: pool "${dup}" appears twice`]);
  for (const p of parsed.data.pools) {
    if ((p.minIdle ?? 3) > (p.maxTotal ?? 10)) throw new ConfigError([`POOLS_FILE: ${config.POOLS_FILE}: pool "${p.id}": minIdle is larger than maxTotal`]);
  }
  return { pools: parsed.data.pools, globalMaxTotal: config.GLOBAL_MAX_TOTAL ?? parsed.data.globalMaxTotal };
}
