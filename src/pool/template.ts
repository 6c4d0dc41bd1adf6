/**
 * A pool is a template: what its instances run (provider, image or command, environment) and how
 * the pool behaves (runtime label, sizes, claim defaults, allowed invite hosts). Pure: validation,
 * the template hash, and what a change of settings means (a rollout or not).
 *
 * The hash covers only what an instance is made from (provider, image, command, environment): an
 * instance records the hash it was created from, so an instance of an old template is told apart
 * from a current one without asking the provider. Sizes, labels and claim defaults change no
 * instance and start no rollout.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { FIXED_POLICY, SizingPolicyInput, type SizingPolicy } from "./sizing.ts";

/** Pool ids appear in URLs, Railway service names and metric labels. */
export const POOL_ID_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;

/** What instances are made from: a change of any of these starts a rollout. */
export interface InstanceTemplate {
  /** Provider kind (`local`, `railway`); null = the deployment's default provider. */
  provider: string | null;
  /** Image instances run (Railway); null = the deployment's default (INSTANCE_IMAGE). */
  image: string | null;
  /** argv an instance runs (local provider); null = the deployment's default. */
  command: string[] | null;
  /** Environment passed to every instance of the pool (on top of INSTANCE_ENV_*). */
  env: Record<string, string>;
}

/** A pool's settings: the template plus how the pool behaves. */
export interface PoolSettings extends InstanceTemplate {
  id: string;
  /** Label clients select the pool by (`runtime: "hermes"`); several pools may share one. */
  runtime: string;
  minIdle: number;
  maxTotal: number;
  /** Claim defaults when a body has no agent name / instructions (null: the deployment's). */
  claimAgentName: string | null;
  claimInstructions: string | null;
  /** Host names a claim's joinUrl may have (null: any). */
  joinUrlHosts: string[] | null;
  /** A rollout creates at most this many new instances at once, above max total if need be. */
  maxSurge: number;
  /** How many idle instances the pool keeps: `fixed` (min idle) or `demand` (issue 13, sizing.ts). */
  sizing: SizingPolicy;
}

const envName = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const noNul = (s: string) => !s.includes("\u0000");

/** The settings an operator (config file or API) gives for a pool; defaults filled in. */
export const PoolSettingsInput = z
  .object({
    id: z.string().regex(POOL_ID_RE, "lowercase letters, digits and '-', at most 32 characters, starting with a letter or digit"),
    runtime: z
      .string()
      .trim()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' or '-'")
      .optional(),
    provider: z.enum(["local", "railway"]).nullable().optional(),
    image: z.string().trim().min(1).max(500).refine(noNul).nullable().optional(),
    command: z.array(z.string().min(1).max(4_000).refine(noNul)).min(1).max(64).nullable().optional(),
    env: z
      .record(z.string().regex(envName, "an environment variable name"), z.string().max(32_768).refine(noNul, "no NUL characters"))
      .refine((e) => Object.keys(e).length <= 200, "at most 200 variables")
      .optional(),
    minIdle: z.number().int().min(0).max(1_000).optional(),
    maxTotal: z.number().int().min(0).max(10_000).optional(),
    claimAgentName: z.string().trim().min(1).max(200).refine(noNul).nullable().optional(),
    claimInstructions: z.string().max(50_000).refine(noNul).nullable().optional(),
    joinUrlHosts: z
      .array(
        z
          .string()
          .trim()
          .toLowerCase()
          .min(1)
          .max(253)
          .regex(/^[a-z0-9.-]+$/, "a host name"),
      )
      .max(50)
      .nullable()
      .optional(),
    maxSurge: z.number().int().min(1).max(100).optional(),
    sizing: SizingPolicyInput.optional(),
  })
  .strict();
export type PoolSettingsInput = z.infer<typeof PoolSettingsInput>;

/** Fills in defaults and checks min idle ≤ max total. Throws a message naming what is wrong. */
export function poolSettings(input: PoolSettingsInput, base?: PoolSettings): PoolSettings {
  const s: PoolSettings = {
    id: input.id,
    runtime: input.runtime ?? base?.runtime ?? input.id,
    provider: input.provider !== undefined ? input.provider : (base?.provider ?? null),
    image: input.image !== undefined ? input.image : (base?.image ?? null),
    command: input.command !== undefined ? input.command : (base?.command ?? null),
    env: input.env ?? base?.env ?? {},
    minIdle: input.minIdle ?? base?.minIdle ?? 3,
    maxTotal: input.maxTotal ?? base?.maxTotal ?? 10,
    claimAgentName: input.claimAgentName !== undefined ? input.claimAgentName : (base?.claimAgentName ?? null),
    claimInstructions: input.claimInstructions !== undefined ? input.claimInstructions : (base?.claimInstructions ?? null),
    joinUrlHosts: input.joinUrlHosts !== undefined ? input.joinUrlHosts : (base?.joinUrlHosts ?? null),
    maxSurge: input.maxSurge ?? base?.maxSurge ?? 2,
    sizing: (input.sizing as SizingPolicy | undefined) ?? base?.sizing ?? FIXED_POLICY,
  };
  if (s.minIdle > s.maxTotal) throw new RangeError(`pool ${s.id}: min idle (${s.minIdle}) is larger than max total (${s.maxTotal})`);
  return s;
}

/** The instance part of a pool's settings. */
export function instanceTemplate(s: InstanceTemplate): InstanceTemplate {
  return { provider: s.provider, image: s.image, command: s.command, env: s.env };
}

/**
 * Hash of what instances are made from: canonical JSON (keys sorted, env sorted), sha-256, the
 * first 12 hex characters. Equal templates hash equally whatever the order they were written in.
 */
export function templateHash(t: InstanceTemplate): string {
  const env = Object.fromEntries(Object.entries(t.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const canonical = JSON.stringify({ provider: t.provider, image: t.image, command: t.command, env });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 12);
}

/** True when going from `before` to `after` changes what instances are made from (a rollout). */
export function templateChanged(before: InstanceTemplate, after: InstanceTemplate): boolean {
  return templateHash(before) !== templateHash(after);
}

/** Environment variable names whose values are secrets: never shown in API answers, pages or logs. */
const SECRET_NAME = /KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|AUTH/i;

/** What a secret-looking value is shown as; sent back in an update, it keeps the stored value. */
export const MASK = "••••••";

/** The env as people may see it: secret-looking values replaced by a fixed mask. */
export function maskedEnv(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, SECRET_NAME.test(k) ? MASK : v]));
}
