/**
 * A provider for API tests that starts a real reference runtime in-process for each create, with
 * per-instance fault knobs (the next creates can be told to fail provisioning, or to stay dirty).
 * It stands for the compute platform; the runtimes behind it are real HTTP servers.
 */
import { startRuntime, type RunningRuntime, type RuntimeOptions } from "../../src/runtime/server.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing, UpgradeInstanceSpec } from "../../src/provider/provider.ts";

export class RuntimeProvider implements Provider {
  readonly kind = "test-runtimes";
  readonly running = new Map<string, { inst: ProviderInstance; rt: RunningRuntime }>();
  /** Options for the next creates, consumed in order. */
  readonly nextOptions: Array<Partial<RuntimeOptions>> = [];
  defaults: Partial<RuntimeOptions> = { bootDelayMs: 0, log: () => undefined };
  /** Options of every instance of a pool (by pool id), under the next-create ones. */
  readonly poolOptions = new Map<string, Partial<RuntimeOptions>>();
  /** Every upgrade asked (ref and spec), in order. */
  readonly upgrades: Array<{ ref: string; spec: UpgradeInstanceSpec }> = [];
  /** Next `upgrade()` calls throw this many times. */
  failUpgrades = 0;
  /** Awaited by each upgrade before it acts (tests hold upgrades to watch a job's progress). */
  upgradeGate: (() => Promise<void>) | null = null;

  async list(): Promise<ProviderListing> {
    return { instances: [...this.running.values()].map((x) => ({ ...x.inst })), complete: true };
  }

  async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    const rt = await startRuntime({
      ...this.defaults,
      ...this.poolOptions.get(spec.poolId),
      ...this.nextOptions.shift(),
      gatewayToken: spec.gatewayToken,
      instanceId: spec.instanceId,
    });
    const inst: ProviderInstance = {
      ref: `rt-${spec.instanceId}`,
      instanceId: spec.instanceId,
      name: spec.name,
      deployStatus: "SUCCESS",
      url: rt.url,
      image: "reference",
      createdAt: new Date(),
      owner: spec.ownerId,
    };
    this.running.set(inst.ref, { inst, rt });
    return { ...inst };
  }

  async delete(ref: string): Promise<void> {
    const x = this.running.get(ref);
    this.running.delete(ref);
    await x?.rt.close();
  }

  /**
   * Upgrade in place, as a platform does: the runtime restarts on the same port with the same token,
   * its version taken from the template (`RUNTIME_VERSION` in its env, else the image). Like the
   * reference runtime on any restart, it comes back without its conversation.
   */
  async upgrade(ref: string, spec: UpgradeInstanceSpec): Promise<void> {
    await this.upgradeGate?.();
    if (this.failUpgrades > 0) {
      this.failUpgrades--;
      throw new Error("simulated upgrade failure");
    }
    const x = this.running.get(ref);
    if (!x) throw new Error(`no instance ${ref}`);
    this.upgrades.push({ ref, spec });
    await x.rt.close();
    const version = spec.env.RUNTIME_VERSION ?? spec.image ?? undefined;
    x.rt = await startRuntime({
      ...this.defaults,
      port: x.rt.port,
      gatewayToken: spec.gatewayToken,
      instanceId: spec.instanceId,
      ...(version ? { version } : {}),
    });
    x.inst.image = spec.image ?? spec.command?.join(" ") ?? "reference";
  }

  async rename(ref: string, name: string): Promise<void> {
    const x = this.running.get(ref);
    if (x) x.inst.name = name;
  }

  /** The runtime of an instance (to crash it, or to read its room). */
  runtimeOf(instanceId: string): RunningRuntime | undefined {
    return this.running.get(`rt-${instanceId}`)?.rt;
  }

  async close(): Promise<void> {
    await Promise.all([...this.running.values()].map((x) => x.rt.close()));
    this.running.clear();
  }
}
