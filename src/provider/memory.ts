/**
 * An in-memory provider: a stand-in for a cloud we cannot reach from tests and benchmarks. It keeps
 * its fleet in a Map, counts every call, and can be told to fail, to list partially, or to move
 * instances through deploy states.
 */
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing, UpgradeInstanceSpec } from "./provider.ts";

export interface MemoryProviderOptions {
  clock?: Clock;
  /** Deploy status new instances report (default SUCCESS: instantly up). */
  initialStatus?: string;
  /** Base URL given to instances (`<base>/<id>`). */
  urlBase?: string;
  /** Owner id new instances carry (the deployment's). Default `own01`. */
  ownerId?: string;
}

export class MemoryProvider implements Provider {
  readonly kind = "memory";
  readonly fleet = new Map<string, ProviderInstance>();
  readonly calls = { list: 0, create: 0, delete: 0, rename: 0, upgrade: 0 };
  /** Every upgrade asked (ref and spec), in order. */
  readonly upgrades: Array<{ ref: string; spec: UpgradeInstanceSpec }> = [];
  /** Next `upgrade()` throws this many times. */
  failUpgrades = 0;
  /** Next `list()` throws this many times. */
  failLists = 0;
  /** Next `create()` throws this many times. */
  failCreates = 0;
  /** `list()` reports `complete: false` and omits this many instances. */
  partialOmit = 0;
  /** Test knob: a provider that rewrites requested names (Railway fits them to 32 characters). */
  nameFor?: (requested: string) => string;
  readonly #clock: Clock;
  readonly #initial: string;
  readonly #urlBase: string;
  readonly ownerId: string;

  constructor(opts: MemoryProviderOptions = {}) {
    this.#clock = opts.clock ?? systemClock;
    this.#initial = opts.initialStatus ?? "SUCCESS";
    this.#urlBase = opts.urlBase ?? "http://memory.invalid";
    this.ownerId = opts.ownerId ?? "own01";
  }

  async list(): Promise<ProviderListing> {
    this.calls.list++;
    if (this.failLists > 0) {
      this.failLists--;
      throw new Error("simulated listing failure");
    }
    const all = [...this.fleet.values()].map((i) => ({ ...i }));
    if (this.partialOmit > 0) return { instances: all.slice(this.partialOmit), complete: false };
    return { instances: all, complete: true };
  }

  async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    this.calls.create++;
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new Error("simulated create failure");
    }
    const ref = `mem-${spec.instanceId}`;
    const inst: ProviderInstance = {
      ref,
      instanceId: spec.instanceId,
      name: spec.name,
      deployStatus: this.#initial,
      url: `${this.#urlBase}/${spec.instanceId}`,
      image: "memory:1",
      createdAt: this.#clock.now(),
      owner: spec.ownerId,
    };
    this.fleet.set(ref, inst);
    return { ...inst };
  }

  async delete(ref: string): Promise<void> {
    this.calls.delete++;
    this.fleet.delete(ref);
  }

  /** Upgrades in place: the instance keeps its ref and URL, and reports the new image. */
  async upgrade(ref: string, spec: UpgradeInstanceSpec): Promise<void> {
    this.calls.upgrade++;
    if (this.failUpgrades > 0) {
      this.failUpgrades--;
      throw new Error("simulated upgrade failure");
    }
    const inst = this.fleet.get(ref);
    if (!inst) throw new Error(`no instance ${ref}`);
    this.upgrades.push({ ref, spec });
    inst.image = spec.image ?? spec.command?.join(" ") ?? "memory:1";
  }

  async rename(ref: string, name: string): Promise<void> {
    this.calls.rename++;
    const inst = this.fleet.get(ref);
    if (inst) inst.name = this.nameFor ? this.nameFor(name) : name;
  }

  /** Sets the deploy status of one instance (test knob). */
  setStatus(ref: string, deployStatus: string | null): void {
    const inst = this.fleet.get(ref);
    if (inst) inst.deployStatus = deployStatus;
  }

  /**
   * Adds a resource no row knows about: an orphan of ours (default), one of another deployment
   * (`owner` another id) or one made before owner ids (`owner` null).
   */
  addForeign(ref: string, createdAt: Date, instanceId: string | null = null, owner: string | null = this.ownerId): void {
    this.fleet.set(ref, { ref, instanceId, name: ref, deployStatus: "SUCCESS", url: null, image: null, createdAt, owner });
  }

  async close(): Promise<void> {}
}
