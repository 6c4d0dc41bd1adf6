/**
 * A compute provider and its runtimes, in process, with seeded faults: the stand-in for what the
 * interleaving suite cannot reach (a cloud, runtimes' LLM/XMTP backends). It keeps the real
 * contracts and their failure modes:
 *
 * - provider: `list()` is one call that may fail or say it is partial (omitting some resources),
 *   and may be slow (a pass that outlives its lease); `create()` may fail (leaving nothing behind,
 *   as the Provider contract requires) or be slow; `delete()` may fail; resources of another owner
 *   and from before owner ids share the pool's naming.
 * - runtimes: a provision binds a conversation; a provision slower than the client's timeout is
 *   abandoned by the client but may still bind later (as a real runtime finishing late would);
 *   reset clears the binding; a runtime may die.
 *
 * It also watches the invariants only it can see: how many of our resources exist at once, and
 * whether a resource is deleted while a database row still counts it as live (checked against
 * the real database at the moment of the delete call).
 */
import type { HealthChecker, InstanceTarget, ProvisionRequest, ProvisionResult, RuntimeStatus } from "../../src/instance/client.ts";
import type { HealthObservation } from "../../src/instance/derive.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing } from "../../src/provider/provider.ts";
import type { ProvisionClient } from "../../src/claim/claim.ts";

/** mulberry32: a small seeded PRNG, so a schedule replays from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FleetFaults {
  listFail: number;
  listPartial: number;
  /** Probability that a listing takes `slowListMs` (longer than a lease). */
  listSlow: number;
  slowListMs: number;
  createFail: number;
  createSlow: number;
  deleteFail: number;
}

export const NO_FAULTS: FleetFaults = { listFail: 0, listPartial: 0, listSlow: 0, slowListMs: 0, createFail: 0, createSlow: 0, deleteFail: 0 };

interface Runtime {
  instanceId: string;
  alive: boolean;
  bound: string | null;
  provisions: number;
  /** Conversations handed out by this runtime's provisions, in order. */
  conversations: string[];
}

export interface FleetViolation {
  kind: "deleted_live" | "touched_foreign" | "over_max";
  detail: string;
}

export class FaultyFleet implements Provider, HealthChecker, ProvisionClient {
  readonly kind = "faulty";
  readonly resources = new Map<string, ProviderInstance>();
  readonly runtimes = new Map<string, Runtime>();
  readonly violations: FleetViolation[] = [];
  readonly log: string[] = [];
  /** Most of our own resources alive at once. */
  maxOwned = 0;
  faults: FleetFaults;
  readonly #random: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(
    readonly ownerId: string,
    readonly poolId: string,
    readonly maxTotal: number,
    seed: number,
    faults: FleetFaults,
    /** Asks the database whether a row still counts the resource as live (status not dead). */
    readonly liveRowFor: (ref: string, instanceId: string | null) => Promise<string | null>,
  ) {
    this.#random = prng(seed ^ 0x5eed);
    this.faults = faults;
    this.#sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  }

  #chance(p: number): boolean {
    return p > 0 && this.#random() < p;
  }

  #owned(): number {
    let n = 0;
    for (const r of this.resources.values()) if (r.owner === this.ownerId) n++;
    return n;
  }

  #runtimeOf(url: string): Runtime {
    const id = url.slice(url.lastIndexOf("/") + 1);
    const rt = this.runtimes.get(id);
    if (!rt) throw new Error(`no runtime at ${url}`);
    return rt;
  }

  /** A resource named like the pool's that is not ours: another deployment's, or made before owner ids. */
  addForeign(instanceId: string, owner: string | null): void {
    const ref = `ref-${instanceId}`;
    this.resources.set(ref, {
      ref,
      instanceId,
      name: `pool-${instanceId}`,
      deployStatus: "SUCCESS",
      url: `http://fleet.invalid/${instanceId}`,
      image: "img",
      createdAt: new Date(0),
      owner,
    });
    this.runtimes.set(instanceId, { instanceId, alive: true, bound: null, provisions: 0, conversations: [] });
  }

  killRuntime(instanceId: string): void {
    const rt = this.runtimes.get(instanceId);
    if (rt) rt.alive = false;
  }

  // ---- Provider ----

  async list(): Promise<ProviderListing> {
    if (this.#chance(this.faults.listSlow)) await this.#sleep(this.faults.slowListMs);
    if (this.#chance(this.faults.listFail)) throw new Error("listing failed (injected)");
    const all = [...this.resources.values()].map((r) => ({ ...r }));
    if (this.#chance(this.faults.listPartial)) return { instances: all.filter(() => this.#random() < 0.5), complete: false };
    return { instances: all, complete: true };
  }

  async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    if (this.#chance(this.faults.createSlow)) await this.#sleep(40);
    if (this.#chance(this.faults.createFail)) throw new Error("create failed (injected)");
    const ref = `ref-${spec.instanceId}`;
    const inst: ProviderInstance = {
      ref,
      instanceId: spec.instanceId,
      name: spec.name,
      deployStatus: "SUCCESS",
      url: `http://fleet.invalid/${spec.instanceId}`,
      image: "img",
      createdAt: new Date(),
      owner: spec.ownerId,
    };
    this.resources.set(ref, inst);
    this.runtimes.set(spec.instanceId, { instanceId: spec.instanceId, alive: true, bound: null, provisions: 0, conversations: [] });
    this.maxOwned = Math.max(this.maxOwned, this.#owned());
    if (this.#owned() > this.maxTotal) this.violations.push({ kind: "over_max", detail: `${this.#owned()} of our resources > max total ${this.maxTotal}` });
    this.log.push(`create ${spec.instanceId}`);
    return { ...inst };
  }

  async delete(ref: string): Promise<void> {
    const r = this.resources.get(ref);
    if (r && r.owner !== this.ownerId) this.violations.push({ kind: "touched_foreign", detail: `delete of ${ref} (owner ${r.owner})` });
    const live = await this.liveRowFor(ref, r?.instanceId ?? null);
    if (live !== null) this.violations.push({ kind: "deleted_live", detail: `delete of ${ref} while its row is ${live}` });
    if (this.#chance(this.faults.deleteFail)) throw new Error("delete failed (injected)");
    this.resources.delete(ref);
    if (r?.instanceId) this.killRuntime(r.instanceId);
    this.log.push(`delete ${ref}`);
  }

  async rename(ref: string, name: string): Promise<void> {
    const r = this.resources.get(ref);
    if (r && r.owner !== this.ownerId) this.violations.push({ kind: "touched_foreign", detail: `rename of ${ref} (owner ${r.owner})` });
    if (r) r.name = name;
  }

  async close(): Promise<void> {}

  // ---- runtimes: health, provision, reset, status ----

  async check(target: InstanceTarget): Promise<{ health: HealthObservation | null; error?: string }> {
    await this.#jitter();
    const rt = this.#runtimeOf(target.url);
    if (!rt.alive) return { health: null, error: "connect ECONNREFUSED (injected)" };
    return { health: { ready: true, conversationId: rt.bound, pending: false, clean: rt.bound === null, version: "1" } };
  }

  /** Delay of the next provisions of an instance (ms), set by the schedule; default immediate. */
  readonly provisionDelay = new Map<string, number>();
  /** Instances whose next provision fails outright. */
  readonly provisionFails = new Set<string>();
  /**
   * Instances whose next provision stalls for this long, ignoring its timeout: the claiming
   * process paused (a GC pause, a stopped VM) past its attempt's deadline, then carries on.
   */
  readonly provisionStalls = new Map<string, { ms: number; succeed: boolean; endOnStatus?: boolean }>();
  /** Stalls under way: ended early by a status call when asked to (see status()). */
  readonly #activeStalls = new Map<string, () => void>();
  /** Latency of status and health answers, up to this many ms (seeded). */
  answerJitterMs = 0;
  /**
   * Runtimes that do not guard their binding: a provision while bound replaces it instead of
   * answering 409. The reference runtime guards; other runtimes (or older versions) may not, and
   * the pool's own fences must keep claims exact without that help.
   */
  laxRuntimes = false;

  async #jitter(): Promise<void> {
    if (this.answerJitterMs > 0) await this.#sleep(Math.floor(this.#random() * this.answerJitterMs));
  }

  async provision(target: InstanceTarget, _req: ProvisionRequest, timeoutMs: number): Promise<ProvisionResult> {
    const rt = this.#runtimeOf(target.url);
    if (!rt.alive) throw new Error("connect ECONNREFUSED (injected)");
    if (this.provisionFails.delete(rt.instanceId)) throw new Error("provision failed (injected): HTTP 500");
    const stall = this.provisionStalls.get(rt.instanceId);
    if (stall) {
      this.provisionStalls.delete(rt.instanceId);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, stall.ms);
        if (stall.endOnStatus) {
          this.#activeStalls.set(rt.instanceId, () => {
            clearTimeout(timer);
            resolve();
          });
        }
      });
      this.#activeStalls.delete(rt.instanceId);
      if (!stall.succeed || !rt.alive) throw new Error("provision failed after a stall (injected)");
      if (rt.bound !== null && !this.laxRuntimes) throw new Error("provision refused: HTTP 409 already bound");
      const conv = `conv-${rt.instanceId}-${++rt.provisions}`;
      rt.bound = conv;
      rt.conversations.push(conv);
      return { inviteUrl: `https://invite.invalid/${conv}`, conversationId: conv, joined: false, status: "created" };
    }
    if (rt.bound !== null && !this.laxRuntimes) throw new Error("provision refused: HTTP 409 already bound");
    if (this.laxRuntimes) rt.bound = null;
    const delay = this.provisionDelay.get(rt.instanceId) ?? 0;
    const conv = `conv-${rt.instanceId}-${rt.provisions + 1}`;
    rt.provisions++;
    const bind = () => {
      // A runtime that finishes late binds even though its client gave up (real runtimes do).
      if (rt.alive && rt.bound === null) {
        rt.bound = conv;
        rt.conversations.push(conv);
      }
    };
    if (delay === 0) {
      bind();
      if (rt.bound !== conv) throw new Error("provision raced another");
      return { inviteUrl: `https://invite.invalid/${conv}`, conversationId: conv, joined: false, status: "created" };
    }
    if (delay >= timeoutMs) {
      setTimeout(bind, delay).unref();
      await this.#sleep(timeoutMs);
      throw new Error(`provision timed out after ${timeoutMs} ms`);
    }
    await this.#sleep(delay);
    bind();
    if (rt.bound !== conv) throw new Error("provision raced another");
    return { inviteUrl: `https://invite.invalid/${conv}`, conversationId: conv, joined: false, status: "created" };
  }

  async reset(target: InstanceTarget): Promise<unknown> {
    const rt = this.#runtimeOf(target.url);
    if (!rt.alive) throw new Error("connect ECONNREFUSED (injected)");
    rt.bound = null;
    return { ok: true };
  }

  async status(target: InstanceTarget): Promise<RuntimeStatus> {
    await this.#jitter();
    const rt = this.#runtimeOf(target.url);
    const stalled = this.#activeStalls.get(rt.instanceId);
    if (stalled) {
      // The sweeper asks about a claim whose process is paused: the process wakes up right now
      // (its provision fails, it recovers the instance), while this answer is slow to come. The
      // sweeper then writes on what it read before: the race of issue 8.
      this.#activeStalls.delete(rt.instanceId);
      const answer: RuntimeStatus = { conversationId: rt.bound, inboxId: null, pending: false, clean: rt.bound === null, inviteUrl: null };
      stalled();
      await this.#sleep(80);
      return answer;
    }
    if (!rt.alive) throw new Error("connect ECONNREFUSED (injected)");
    return {
      conversationId: rt.bound,
      inboxId: null,
      pending: false,
      clean: rt.bound === null,
      inviteUrl: rt.bound ? `https://invite.invalid/${rt.bound}` : null,
    };
  }
}
