/**
 * The pools of the deployment: seeded from configuration at start-up, then managed through the
 * API, the CLI and the dashboard (create, update, delete when empty), stored in Postgres.
 *
 * Every write goes through here, so the template hash is always the one of the settings written
 * (the pool's template plus INSTANCE_ENV_*), the previous template is kept for a rollback, and an
 * update is conditional on the template it was decided from (two operators changing one pool at
 * once: the second is told, nothing is lost).
 */
import type { PoolRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { effectiveHash, planSeed, type SeedWrite } from "./seed.ts";
import { instanceTemplate, maskedEnv, MASK, poolSettings, PoolSettingsInput, type InstanceTemplate } from "./template.ts";

export interface PoolRegistryOptions {
  store: Store;
  logger: Logger;
  /** INSTANCE_ENV_*: part of what every instance is made from. */
  deploymentEnv: Record<string, string>;
  /** Providers this process runs: a pool may only name one of them. */
  providers: readonly string[];
  /** Called after any change (claim caches, the reconciler). */
  onChange?: (pool: PoolRecord) => void;
}

/** A pool's settings as shown to people: secret-looking env values masked. */
export function poolView(p: PoolRecord) {
  return {
    id: p.id,
    runtime: p.runtime,
    provider: p.provider,
    image: p.image,
    command: p.command,
    env: maskedEnv(p.env),
    minIdle: p.minIdle,
    maxTotal: p.maxTotal,
    claimAgentName: p.claimAgentName,
    claimInstructions: p.claimInstructions,
    joinUrlHosts: p.joinUrlHosts,
    maxSurge: p.maxSurge,
    sizing: p.sizing,
    templateHash: p.templateHash,
    canRollBack: p.previousTemplate !== null,
    createdAt: p.createdAt.toISOString(),
    updatedAt: p.updatedAt.toISOString(),
  };
}

export class PoolRegistry {
  readonly #o: PoolRegistryOptions;

  constructor(opts: PoolRegistryOptions) {
    this.#o = opts;
  }

  list(): Promise<PoolRecord[]> {
    return this.#o.store.listPools();
  }

  async get(id: string): Promise<PoolRecord> {
    const p = await this.#o.store.getPool(id);
    if (!p || p.retiredAt !== null) throw new PoolError("POOL_NOT_FOUND", `No pool named "${id}".`, { pool: id });
    return p;
  }

  /** Applies the configuration's pools (see seed.ts for what changes and what is kept). */
  async seed(config: readonly PoolSettingsInput[]): Promise<SeedWrite[]> {
    for (const entry of config) this.#checkProvider(entry.provider ?? null);
    const existing = [...(await this.#o.store.listPools())];
    for (const entry of config) {
      if (!existing.some((p) => p.id === entry.id)) {
        const retired = await this.#o.store.getPool(entry.id);
        if (retired) existing.push(retired);
      }
    }
    const writes = planSeed(config, existing, this.#o.deploymentEnv);
    for (const w of writes) {
      const saved = await this.#o.store.savePool(w.pool);
      if (saved) this.#o.onChange?.(saved);
      this.#o.logger.info({ pool: w.pool.id, reason: w.reason, templateChanged: w.templateChanged }, `pool ${w.pool.id}: ${w.reason}`);
    }
    return writes;
  }

  async create(input: unknown): Promise<PoolRecord> {
    const parsed = this.#parse(input);
    const existing = await this.#o.store.getPool(parsed.id);
    if (existing && existing.retiredAt === null)
      throw new PoolError("POOL_EXISTS", `A pool named "${parsed.id}" exists; change it with PATCH.`, { pool: parsed.id });
    const settings = this.#settings(parsed);
    const saved = await this.#o.store.savePool(
      { ...settings, templateHash: effectiveHash(settings, this.#o.deploymentEnv), previousTemplate: null, seedHash: null },
      existing ? { expectHash: existing.templateHash } : {},
    );
    if (!saved) throw new PoolError("CONFLICT", `Pool "${parsed.id}" changed meanwhile; look again.`);
    this.#o.onChange?.(saved);
    return saved;
  }

  /**
   * Changes some settings. The environment, when given, replaces the pool's; a value sent back as
   * the mask people are shown (`••••••`) keeps the stored secret. A change of what instances are
   * made from starts a rollout (the old template is kept for a rollback).
   */
  async update(id: string, patch: unknown): Promise<{ pool: PoolRecord; templateChanged: boolean }> {
    const current = await this.get(id);
    const parsed = this.#parse({ ...(isObject(patch) ? patch : {}), id });
    if (parsed.env) {
      parsed.env = Object.fromEntries(Object.entries(parsed.env).map(([k, v]) => [k, v === MASK && k in current.env ? current.env[k]! : v]));
    }
    const settings = this.#settings(parsed, current);
    const hash = effectiveHash(settings, this.#o.deploymentEnv);
    const templateChanged = hash !== current.templateHash;
    const saved = await this.#o.store.savePool(
      { ...settings, templateHash: hash, previousTemplate: templateChanged ? instanceTemplate(current) : current.previousTemplate },
      { expectHash: current.templateHash },
    );
    if (!saved) throw new PoolError("CONFLICT", `Pool "${id}" changed meanwhile; look again.`);
    this.#o.onChange?.(saved);
    return { pool: saved, templateChanged };
  }

  /** Goes back to the template before the last change (a rollout of the old one follows). */
  async rollBack(id: string): Promise<PoolRecord> {
    const current = await this.get(id);
    const prev: InstanceTemplate | null = current.previousTemplate;
    if (!prev) throw new PoolError("INVALID_TRANSITION", `Pool "${id}" has no earlier template to go back to.`);
    const settings = { ...current, ...prev };
    const saved = await this.#o.store.savePool(
      { ...settings, templateHash: effectiveHash(settings, this.#o.deploymentEnv), previousTemplate: instanceTemplate(current) },
      { expectHash: current.templateHash },
    );
    if (!saved) throw new PoolError("CONFLICT", `Pool "${id}" changed meanwhile; look again.`);
    this.#o.onChange?.(saved);
    return saved;
  }

  /** Deletes a pool, only when it holds no instance (drain it first). */
  async delete(id: string): Promise<void> {
    const current = await this.get(id);
    if (!(await this.#o.store.retirePool(id))) {
      throw new PoolError("POOL_NOT_EMPTY", `Pool "${id}" still holds instances: drain it (min idle 0, then drain) before deleting it.`, { pool: id });
    }
    this.#o.onChange?.({ ...current, retiredAt: new Date() });
  }

  #parse(input: unknown): PoolSettingsInput {
    const r = PoolSettingsInput.safeParse(input);
    if (!r.success) {
      const issue = r.error.issues[0];
      const where = issue?.path.length ? ` at ${issue.path.join(".")}` : "";
      throw new PoolError("VALIDATION_FAILED", `Invalid pool${where}: ${issue?.message ?? "bad input"}`);
    }
    this.#checkProvider(r.data.provider ?? null);
    return r.data;
  }

  #settings(parsed: PoolSettingsInput, base?: PoolRecord) {
    try {
      return poolSettings(parsed, base);
    } catch (err) {
      throw new PoolError("VALIDATION_FAILED", (err as Error).message);
    }
  }

  #checkProvider(kind: string | null): void {
    if (kind !== null && !this.#o.providers.includes(kind)) {
      throw new PoolError("VALIDATION_FAILED", `Provider "${kind}" is not configured in this deployment (configured: ${this.#o.providers.join(", ")}).`);
    }
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
