/**
 * The elector: one replica at a time holds a pool's reconciler lease (River's leader table: holder +
 * term + expiry, judged by the database clock). `runOnce()` takes or renews it; the term it returns
 * is the fence of every write the pass makes, so a pass that lost its lease (a pause longer than
 * the TTL, another replica taking over) writes nothing more: its writes are conditional on the term
 * in their own statements.
 */
import type { Lease, Store } from "../db/store.ts";

export interface ElectorOptions {
  store: Store;
  /** e.g. `reconciler:<pool>`. */
  name: string;
  holder: string;
  ttlMs: number;
}

export interface ElectionResult {
  leader: boolean;
  lease: Lease | null;
  /** True when this call started a new term (took the lease, or took it back after it lapsed). */
  newTerm: boolean;
}

export class Elector {
  readonly #o: ElectorOptions;
  #lease: Lease | null = null;

  constructor(opts: ElectorOptions) {
    this.#o = opts;
  }

  /** The lease this replica believes it holds (null: not the leader, as far as it knows). */
  get lease(): Lease | null {
    return this.#lease;
  }

  get holder(): string {
    return this.#o.holder;
  }

  async runOnce(): Promise<ElectionResult> {
    const before = this.#lease;
    this.#lease = await this.#o.store.acquireLease(this.#o.name, this.#o.holder, this.#o.ttlMs);
    const newTerm = this.#lease !== null && (before === null || before.term !== this.#lease.term);
    return { leader: this.#lease !== null, lease: this.#lease, newTerm };
  }

  /**
   * Extends the lease in the same term; false (and no lease) when it was lost. A pass renews between
   * its phases so that a long one notices early; its writes are fenced whether it renews or not.
   */
  async renew(): Promise<boolean> {
    const lease = this.#lease;
    if (!lease) return false;
    const ok = await this.#o.store.renewLease(lease, this.#o.ttlMs).catch(() => false);
    if (!ok && this.#lease === lease) this.#lease = null;
    return ok;
  }

  /** Lets the lease lapse now so another replica can take over without waiting for the TTL. */
  async release(): Promise<void> {
    const lease = this.#lease;
    this.#lease = null;
    if (lease) await this.#o.store.releaseLease(lease);
  }
}
