/**
 * The resource reconciler: collects per-instance resources that no live instance owns. One replica
 * acts at a time (the `resources` lease); `runOnce()` is one pass, `start()` only a timer around it.
 *
 *   release → rows with a ref that must go (their instance is dead, deleted or pruned, or they were
 *             released): deleted at the vendor by ref, then marked deleted
 *   sweep   → per kind, ONE listing; `planSweep` judges it against the rows: orphans of ours past
 *             the grace period are deleted (never on a failed or partial listing), stranded rows
 *             (the create's answer lost) are resolved, spend is recorded for the dashboard
 *   prune   → deleted rows past retention
 *
 * Every resource judged an orphan is judged again against the database right before its delete (a
 * create may have recorded it since the pass read the rows), and deletes are capped per pass. Only
 * names carrying this deployment's owner id are ever judged. Instances whose row is marked dead lose
 * their resources here even if nothing deleted them on the way (a kill, a pass, a failed create).
 */
import { hostname } from "node:os";
import { randomId, type Clock } from "../clock.ts";
import type { ResourceOwnership, Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";
import { Elector } from "../pool/elector.ts";
import { parseResourceName, type ResourceKind, type ResourceListing } from "./kind.ts";
import { isOwned, planSweep, type SweepDelete } from "./sweep.ts";

export interface ResourceReconcilerOptions {
  store: Store;
  kinds: readonly ResourceKind[];
  ownerId: string;
  clock: Clock;
  logger: Logger;
  /** A resource of ours that no live instance owns is deleted once this old (vendor's creation time). */
  orphanGraceMs: number;
  /** Vendor deletes per pass at most (releases and orphans together). */
  maxDeletesPerPass: number;
  intervalMs: number;
  /** Deleted rows are pruned after this long (default 7 days). */
  retentionMs?: number;
  holder?: string;
  leaseTtlMs?: number;
  /** Called after every pass (metrics). */
  onPass?: (result: ResourcePassResult) => void;
}

export interface ResourcePassResult {
  leader: boolean;
  /** Per kind: the listing's state this pass. */
  listings: Record<string, "complete" | "partial" | "failed">;
  released: Array<{ kind: string; ref: string; instanceId: string }>;
  orphansDeleted: Array<SweepDelete & { kind: string }>;
  /** Orphans spared because a row knew them by the time of the delete. */
  spared: string[];
  resolved: string[];
  usageRecorded: number;
  waiting: number;
  foreign: number;
  pruned: number;
  notes: string[];
  errors: string[];
}

export class ResourceReconciler {
  readonly #o: ResourceReconcilerOptions;
  readonly #elector: Elector;
  readonly #kinds: ReadonlyMap<string, ResourceKind>;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #stopped = true;
  #lastPruneAt = Number.NEGATIVE_INFINITY;
  #last: ResourcePassResult | null = null;

  constructor(opts: ResourceReconcilerOptions) {
    this.#o = opts;
    this.#kinds = new Map(opts.kinds.map((k) => [k.kind, k]));
    this.#elector = new Elector({
      store: opts.store,
      name: "resources",
      holder: opts.holder ?? `${hostname()}:${process.pid}:${randomId(6)}`,
      ttlMs: opts.leaseTtlMs ?? Math.max(15_000, opts.intervalMs * 3),
    });
  }

  get lastResult(): ResourcePassResult | null {
    return this.#last;
  }

  /** One pass; calls never overlap (a call during a pass runs after it). */
  runOnce(): Promise<ResourcePassResult> {
    const run = this.#chain.then(() => this.#pass());
    this.#chain = run.catch(() => undefined);
    return run;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Run a pass soon (an instance was killed: its resources can go now rather than at the next interval). */
  wake(): void {
    if (!this.#stopped) this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#chain;
    await this.#elector.release().catch(() => undefined);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.runOnce()
        .catch((err) => this.#o.logger.error({ err }, "resource pass failed"))
        .finally(() => this.#schedule(this.#o.intervalMs));
    }, delayMs);
  }

  async #pass(): Promise<ResourcePassResult> {
    const o = this.#o;
    const res: ResourcePassResult = {
      leader: false,
      listings: {},
      released: [],
      orphansDeleted: [],
      spared: [],
      resolved: [],
      usageRecorded: 0,
      waiting: 0,
      foreign: 0,
      pruned: 0,
      notes: [],
      errors: [],
    };
    try {
      const { lease } = await this.#elector.runOnce();
      res.leader = lease !== null;
      if (lease) await this.#reconcile(res);
    } catch (err) {
      res.errors.push(`pass: ${(err as Error).message}`);
    }
    if (res.errors.length) o.logger.warn({ errors: res.errors.slice(0, 20) }, "resource pass: some operations failed");
    if (res.released.length || res.orphansDeleted.length || res.resolved.length) {
      o.logger.info(
        {
          released: res.released.length,
          orphans: res.orphansDeleted.map((d) => ({ kind: d.kind, ref: d.ref, instanceId: d.instanceId, reason: d.reason })),
          resolved: res.resolved.length,
        },
        `resources: ${res.released.length} released, ${res.orphansDeleted.length} orphans deleted`,
      );
    }
    this.#last = res;
    try {
      o.onPass?.(res);
    } catch (err) {
      o.logger.warn({ err }, "onPass hook failed");
    }
    return res;
  }

  async #reconcile(res: ResourcePassResult): Promise<void> {
    const o = this.#o;
    let budget = o.maxDeletesPerPass;

    // 1. Release: rows that name their resource and must go.
    const toRelease = await o.store.resourcesToRelease(budget);
    if (toRelease.length > 0 && !(await this.#elector.renew())) return this.#lost(res);
    for (const r of toRelease) {
      const kind = this.#kinds.get(r.kind);
      if (!kind || !r.ref) {
        res.notes.push(`resource ${r.id}: kind ${r.kind} is not configured; left alone`);
        continue;
      }
      budget--;
      try {
        await kind.delete(r.ref);
        await o.store.markResourceDeleted(r.id);
        res.released.push({ kind: r.kind, ref: r.ref, instanceId: r.instanceId });
      } catch (err) {
        res.errors.push(`release ${r.kind} ${r.ref}: ${(err as Error).message}`);
      }
    }

    // 2. Sweep each kind against one listing.
    for (const kind of o.kinds) {
      let listing: ResourceListing;
      try {
        listing = await kind.list();
      } catch (err) {
        res.listings[kind.kind] = "failed";
        res.errors.push(`list ${kind.kind}: ${(err as Error).message}`);
        continue;
      }
      res.listings[kind.kind] = listing.complete ? "complete" : "partial";
      const stranded = await o.store.strandedResources(kind.kind, o.orphanGraceMs, 500);
      const ids = new Set<string>(stranded.map((r) => r.instanceId));
      for (const e of listing.resources) {
        const n = parseResourceName(e.name);
        if (n && n.ownerId === o.ownerId) ids.add(n.instanceId);
      }
      const ownership = new Map<string, ResourceOwnership>((await o.store.resourceOwnership(kind.kind, [...ids])).map((x) => [x.instanceId, x]));
      const plan = planSweep({
        ownerId: o.ownerId,
        listing,
        ownership,
        stranded,
        now: o.clock.now(),
        graceMs: o.orphanGraceMs,
        maxDeletes: Math.max(0, budget),
      });
      res.waiting += plan.waiting;
      res.foreign += plan.foreign;
      res.notes.push(...plan.notes.map((n) => `${kind.kind}: ${n}`));
      if (plan.usage.length > 0) res.usageRecorded += await o.store.recordResourceUsage(plan.usage);

      if (plan.deletes.length > 0 && !(await this.#elector.renew())) return this.#lost(res);
      for (const d of plan.deletes) {
        // Judged again right before the call: a create may have recorded it since the rows were read.
        const [now] = await o.store.resourceOwnership(kind.kind, [d.instanceId]);
        if (isOwned(now, d.ref) || now?.resources.some((r) => r.ref === d.ref)) {
          res.spared.push(d.ref);
          continue;
        }
        budget--;
        try {
          await kind.delete(d.ref);
          res.orphansDeleted.push({ ...d, kind: kind.kind });
        } catch (err) {
          res.errors.push(`delete orphan ${kind.kind} ${d.ref}: ${(err as Error).message}`);
        }
      }
      for (const id of plan.resolved) if (await o.store.markResourceDeleted(id)) res.resolved.push(id);
    }

    // 3. Retention, every ten minutes.
    if (performance.now() - this.#lastPruneAt >= 600_000) {
      this.#lastPruneAt = performance.now();
      try {
        res.pruned = await o.store.pruneDeletedResources(o.retentionMs ?? 7 * 86_400_000, 1000);
      } catch (err) {
        res.errors.push(`prune: ${(err as Error).message}`);
      }
    }
  }

  #lost(res: ResourcePassResult): void {
    res.errors.push("lease lost: this pass acts no further");
  }
}
