/**
 * The renamer: claimed instances' provider resources are renamed to show their agent
 * (`<service name>--<agent slug>`), so the console shows who the agent is.
 *
 * `renameSoon()` renames one instance right after its claim (the lease holder reacts to the
 * claim's hint). `runOnce()` converges: it renames claimed instances whose rename never landed
 * (lost with a restart or a kill -9, or given up after too many failures: the earlier system lost
 * 40 of 90 renames to 429s and never noticed). Only claims older than a minute (the claim's own
 * rename may still be under way), none the provider is still retrying, at most 5 per run so a
 * backlog cannot eat the API budget. A rename that fails here backs off (2, 4, 8, 16 min) and is
 * given up after 5 failures, logged once: a name the provider rejects must not cost a call every
 * pass, nor hold the 5 slots that other instances need.
 */
import type { Clock } from "../clock.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider, ProviderInstance } from "../provider/provider.ts";
import { mapLimit } from "./map-limit.ts";

export interface RenamerOptions {
  store: Store;
  /** Providers by kind: an instance is renamed at the provider it lives at. */
  providers: ReadonlyMap<string, Provider>;
  clock: Clock;
  logger: Logger;
  /** Renames per run at most. Default 5. */
  perRun?: number;
}

/**
 * The provider resource name of a claimed instance: `<base>--<agent slug>`, so the console shows
 * who the agent is while the provider still reads the instance id back from the name. A name with
 * no ASCII letter or digit ("李雷") still marks it claimed, as `--agent`.
 */
export function agentServiceName(base: string, agentName: string): string {
  const slug =
    agentName
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-|-$/g, "")
      .slice(0, 24) || "agent";
  return `${base}--${slug}`;
}

export class Renamer {
  readonly #o: RenamerOptions;
  /** Renames this replica tried and that failed: when to try again (Infinity: given up). */
  readonly #backoff = new Map<string, { failures: number; retryAt: number }>();

  constructor(opts: RenamerOptions) {
    this.#o = opts;
  }

  /** Renames one just-claimed instance, off the claim path; failures are left to runOnce(). */
  async renameSoon(instanceId: string): Promise<boolean> {
    const o = this.#o;
    const inst = await o.store.getInstance(instanceId);
    if (!inst?.providerRef || !inst.agentName || (inst.status !== "claimed" && inst.status !== "pending_acceptance")) return false;
    const provider = o.providers.get(inst.provider);
    if (!provider) return false;
    await provider.rename(inst.providerRef, agentServiceName(provider.serviceName?.(inst.id, inst.poolId) ?? inst.name, inst.agentName));
    return true;
  }

  /** Renames claimed instances whose resource name does not show their agent yet. */
  async runOnce(
    pairs: ReadonlyArray<[InstanceRecord, ProviderInstance | undefined]>,
    status: ReadonlyMap<string, InstanceStatus>,
  ): Promise<{ renamed: string[]; errors: string[] }> {
    const o = this.#o;
    const now = o.clock.now().getTime();
    const out = { renamed: [] as string[], errors: [] as string[] };
    const due: Array<[string, string, string, Provider]> = [];
    for (const [r, p] of pairs) {
      if (due.length >= (o.perRun ?? 5)) break;
      const s = status.get(r.id);
      const provider = o.providers.get(r.provider);
      if (!p || !provider || (s !== "claimed" && s !== "pending_acceptance") || !r.agentName || !r.claimedAt) continue;
      if (now - r.claimedAt.getTime() < 60_000 || provider.renamePending?.(p.ref)) continue;
      if ((this.#backoff.get(p.ref)?.retryAt ?? 0) > now) continue;
      let want = agentServiceName(provider.serviceName?.(r.id, r.poolId) ?? r.name, r.agentName);
      try {
        want = provider.nameFor?.(want) ?? want; // compare with what the provider would really set
      } catch {
        continue; // a name the provider refuses: nothing to converge to
      }
      if (p.name !== want) due.push([r.id, p.ref, want, provider]);
    }
    await mapLimit(due, 2, async ([id, ref, name, provider]) => {
      try {
        await provider.rename(ref, name);
        this.#backoff.delete(ref);
        out.renamed.push(id);
      } catch (err) {
        const failures = (this.#backoff.get(ref)?.failures ?? 0) + 1;
        const giveUp = failures >= 5;
        this.#backoff.set(ref, { failures, retryAt: giveUp ? Number.POSITIVE_INFINITY : now + 60_000 * 2 ** failures });
        out.errors.push(`provider rename ${ref}: ${(err as Error).message}`);
        if (giveUp) o.logger.error({ instanceId: id, ref, name, err: (err as Error).message }, "rename to show the agent failed 5 times; given up");
      }
    });
    return out;
  }
}
