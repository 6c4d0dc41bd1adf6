/**
 * An in-memory resource kind: the stand-in for a vendor in unit tests, as MemoryProvider is for a
 * cloud. It keeps its resources in a Map, counts every call, and can be told to fail creates (before
 * or after making the resource), listings, deletes, or to list partially.
 */
import { randomBytes } from "node:crypto";
import { systemClock, type Clock } from "../clock.ts";
import type { CreatedResource, ExternalResource, ResourceKind, ResourceListing, ResourceTarget, ResourceUsage } from "./kind.ts";

export interface MemoryKindOptions {
  kind?: string;
  required?: boolean;
  when?: "boot" | "on-demand";
  clock?: Clock;
  limit?: number;
  maxLimit?: number;
  envName?: string;
}

export class MemoryKind implements ResourceKind {
  readonly kind: string;
  readonly required: boolean;
  readonly when: "boot" | "on-demand";
  readonly maxLimit: number;
  readonly held = new Map<string, ExternalResource & { secret: string }>();
  readonly calls = { create: 0, delete: 0, list: 0, usage: 0, setLimit: 0 };
  /** Next creates throw before making anything. */
  failCreates = 0;
  /** Next creates make the resource, then throw (the answer was lost). */
  failCreatesAfterMaking = 0;
  failLists = 0;
  failDeletes = 0;
  /** Listings omit this many resources and say they are incomplete. */
  partialOmit = 0;
  readonly #clock: Clock;
  readonly #limit: number;
  readonly #envName: string;
  #n = 0;

  constructor(o: MemoryKindOptions = {}) {
    this.kind = o.kind ?? "memory";
    this.required = o.required ?? true;
    this.when = o.when ?? "boot";
    this.maxLimit = o.maxLimit ?? 100;
    this.#clock = o.clock ?? systemClock;
    this.#limit = o.limit ?? 20;
    this.#envName = o.envName ?? "MEMORY_RESOURCE_KEY";
  }

  async create(target: ResourceTarget): Promise<CreatedResource> {
    this.calls.create++;
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new Error("simulated create failure");
    }
    const ref = `mem-${++this.#n}`;
    const secret = `secret-${randomBytes(12).toString("hex")}`;
    this.held.set(ref, { ref, name: target.name, createdAt: this.#clock.now(), limit: this.#limit, usage: 0, secret });
    if (this.failCreatesAfterMaking > 0) {
      this.failCreatesAfterMaking--;
      throw new Error("simulated failure after the resource was made");
    }
    return { ref, env: { [this.#envName]: secret }, limit: this.#limit, usage: 0 };
  }

  async delete(ref: string): Promise<void> {
    this.calls.delete++;
    if (this.failDeletes > 0) {
      this.failDeletes--;
      throw new Error("simulated delete failure");
    }
    this.held.delete(ref);
  }

  async list(): Promise<ResourceListing> {
    this.calls.list++;
    if (this.failLists > 0) {
      this.failLists--;
      throw new Error("simulated listing failure");
    }
    const all = [...this.held.values()].map(({ secret: _secret, ...r }) => ({ ...r }));
    if (this.partialOmit > 0) return { resources: all.slice(this.partialOmit), complete: false };
    return { resources: all, complete: true };
  }

  async usage(ref: string): Promise<ResourceUsage> {
    this.calls.usage++;
    const r = this.held.get(ref);
    if (!r) throw new Error(`no resource ${ref}`);
    return { limit: r.limit, usage: r.usage ?? 0, remaining: r.limit === null ? null : Math.max(0, r.limit - (r.usage ?? 0)) };
  }

  async setLimit(ref: string, limit: number): Promise<ResourceUsage> {
    this.calls.setLimit++;
    const r = this.held.get(ref);
    if (!r) throw new Error(`no resource ${ref}`);
    r.limit = limit;
    return this.usage(ref);
  }

  /** Adds a resource nobody recorded (a leak, or another deployment's), made `createdAt`. */
  add(name: string, createdAt: Date): string {
    const ref = `mem-${++this.#n}`;
    this.held.set(ref, { ref, name, createdAt, limit: this.#limit, usage: 0, secret: "x" });
    return ref;
  }

  /** Spends on a resource (test knob). */
  spend(ref: string, usd: number): void {
    const r = this.held.get(ref);
    if (r) r.usage = (r.usage ?? 0) + usd;
  }

  secretOf(ref: string): string | undefined {
    return this.held.get(ref)?.secret;
  }
}
