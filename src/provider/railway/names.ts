/**
 * Railway service names: the one place the single listing can read back which pool, instance and
 * deployment a service belongs to, within Railway's 32 characters.
 *
 *   <prefix>-<pool tag>-<instance id>-<owner id>[--<label>]    since owner ids (ap-default-i-3k9x0q2m1b7a-k2f9q)
 *   <prefix>-<pool tag>-<instance id>[--<label>]               before them ("legacy": no owner)
 *
 * Why the owner id is in the name: two deployments with the same pool name on one project and
 * environment (a laptop pointed at production, staging beside production) each took the other's
 * services for orphans and deleted them, claimed agents included. The listing is ONE GraphQL
 * request per pass for every project (seed §5.4: the earlier 1+N calls used 82% of the hourly
 * budget), and neither `Service` nor `ServiceInstance` exposes variables in it; the name is the only
 * field that can carry the owner without a request per service. (`AGENT_POOL_OWNER` is set as a
 * variable too, for people reading the Railway console; nothing reads it back.)
 *
 * The price is room: 6 of the 32 characters go to `-<owner id>`, so the pool tag gets less and a
 * claim label (`--ada`) fits only with short pool ids; the label is what is cut, never the identity.
 */
import { createHash } from "node:crypto";
import { PoolError } from "../../errors.ts";

/** Owner ids are 5 characters of [a-z0-9] (src/serve.ts, recorded once per database). */
export const OWNER_ID_RE = /^[a-z0-9]{5}$/;
export const OWNER_ID_LENGTH = 5;

/**
 * `<prefix>-<poolTag>-` in at most `room` characters. The tag is the pool id when it fits, else its
 * start + 4 characters of its hash: stable across restarts, and distinct pools stay distinct.
 */
export function ownPrefixFor(prefix: string, poolId: string, room: number): string {
  const full = `${prefix}-${poolId}-`;
  if (full.length <= room) return full;
  const tagRoom = room - prefix.length - 2;
  if (tagRoom < 5) {
    throw new PoolError("CONFIG_INVALID", `railway: service prefix ${JSON.stringify(prefix)} leaves no room for the pool id in a ${room}-character name part`);
  }
  const hash = BigInt(`0x${createHash("sha256").update(poolId).digest("hex").slice(0, 12)}`)
    .toString(36)
    .padStart(4, "0")
    .slice(0, 4);
  const head = poolId.slice(0, tagRoom - 4).replace(/-+$/, "");
  return `${prefix}-${head}${hash}-`;
}

export interface ParsedServiceName {
  instanceId: string;
  /** The owner id the name carries; null for the form before owner ids. */
  owner: string | null;
  /** What follows `--` (set by a rename after a claim), or null. */
  label: string | null;
}

export interface ServiceNamesOptions {
  prefix: string;
  poolId: string;
  /** This deployment's owner id: part of every name it gives. */
  ownerId: string;
  /** Railway's service name limit (32). */
  maxName: number;
  /** Longest instance id a name must hold (14: `i-` + 12). */
  maxInstanceIdLength: number;
  /** What an instance id looks like (default: exactly one `-`). */
  idPattern: RegExp;
}

export class ServiceNames {
  /** `<prefix>-<pool tag>-` of names with an owner id (the tag fitted to leave room for it). */
  readonly ownPrefix: string;
  /**
   * `<prefix>-<pool tag>-` of names made before owner ids: the tag then had 6 more characters, so
   * for longer pool ids it differs from `ownPrefix`. Kept so an upgraded deployment still sees (and,
   * through its rows, adopts) the services it made before; also the base of project names, which
   * must not change either (a restarted pool finds the projects it created by that name).
   */
  readonly legacyPrefix: string;
  readonly #o: ServiceNamesOptions;

  constructor(o: ServiceNamesOptions) {
    if (!OWNER_ID_RE.test(o.ownerId)) throw new PoolError("CONFIG_INVALID", `railway: owner id ${JSON.stringify(o.ownerId)} is not 5 characters of [a-z0-9]`);
    this.#o = o;
    this.ownPrefix = ownPrefixFor(o.prefix, o.poolId, o.maxName - o.maxInstanceIdLength - 1 - OWNER_ID_LENGTH);
    this.legacyPrefix = ownPrefixFor(o.prefix, o.poolId, o.maxName - o.maxInstanceIdLength);
  }

  /** The name this deployment gives an instance. */
  serviceName(instanceId: string): string {
    return `${this.ownPrefix}${instanceId}-${this.#o.ownerId}`;
  }

  /**
   * This pool's instance id, owner and label from a service name, or null when the name is not one
   * of this pool's (another pool, a database, the pool manager itself). Both forms parse: with an
   * owner id (any owner: the caller decides what another deployment's service means) and without.
   *
   * The instance id must match the id pattern exactly (one `-` by default): that keeps pools whose
   * ids prefix each other apart (`default` never takes `default-2`'s `ap-default-2-i-x-k2f9q`,
   * whose id part `2-i-x` has two). Two overlaps remain, both harmless because a service of another
   * owner, or of none that no row matches, is only reported, never deleted or adopted:
   * - pool `<p>-i` reads pool `<p>`'s `ap-<p>-i-3k9x0q2m1b7a-k2f9q` as its own of the old form (id
   *   `3k9x0q2m1b7a-k2f9q`, no owner);
   * - pool `<p>` reads an old-form name of pool `<p>-<x>` whose instance id ends in 5 characters
   *   (`ap-<p>-<x>-i-abcde`) as its own with owner `abcde`. The default ids end in 12.
   */
  parse(name: string): ParsedServiceName | null {
    const current = split(name, this.ownPrefix);
    if (current) {
      const id = this.#coreId(current.core);
      if (id) return { ...id, label: current.label };
    }
    const legacy = split(name, this.legacyPrefix);
    if (legacy && this.#o.idPattern.test(legacy.core)) return { instanceId: legacy.core, owner: null, label: legacy.label };
    return null;
  }

  /**
   * The name a rename to `requested` gives: label separator fixed, fitted to `maxName` by cutting
   * the label (never the prefix, the instance id or the owner id). Throws PROVIDER_ERROR for a name
   * that would stop being this deployment's: no longer this pool's, or without our owner id (a
   * rename must not hand a service to another deployment, nor strip the owner it carries).
   */
  nameFor(requested: string): string {
    let name = this.#withLabelSeparator(requested);
    const parsed = this.parse(name);
    if (parsed === null) {
      throw new PoolError("PROVIDER_ERROR", `railway: rename to ${JSON.stringify(name)} would drop the pool's name prefix ${this.ownPrefix}`);
    }
    if (parsed.owner !== this.#o.ownerId) {
      throw new PoolError("PROVIDER_ERROR", `railway: rename to ${JSON.stringify(name)} would not carry this deployment's owner id ${this.#o.ownerId}`);
    }
    if (name.length > this.#o.maxName) {
      const base = this.serviceName(parsed.instanceId);
      name = name.slice(0, this.#o.maxName).replace(/-+$/, ""); // no dangling separator after the cut
      if (name.length < base.length + 3) name = base; // not even `--x` left: no label
    }
    return name;
  }

  /** `<id>-<owner>` → the id and owner, or null. */
  #coreId(core: string): { instanceId: string; owner: string } | null {
    const dash = core.lastIndexOf("-");
    if (dash <= 0) return null;
    const instanceId = core.slice(0, dash);
    const owner = core.slice(dash + 1);
    return OWNER_ID_RE.test(owner) && this.#o.idPattern.test(instanceId) ? { instanceId, owner } : null;
  }

  /**
   * `<prefix><id>-<owner>-<label>` → `<prefix><id>-<owner>--<label>`; any other name is returned
   * as it is. With a single `-` the name does not parse back to the instance id, so such a rename
   * was refused and no claimed service was ever renamed.
   */
  #withLabelSeparator(name: string): string {
    if (!name.startsWith(this.ownPrefix) || this.parse(name) !== null) return name;
    const rest = name.slice(this.ownPrefix.length);
    for (let i = rest.indexOf("-"); i > 0; i = rest.indexOf("-", i + 1)) {
      const label = rest.slice(i + 1).replace(/^-+/, "");
      if (label && this.#coreId(rest.slice(0, i))) return `${this.ownPrefix}${rest.slice(0, i)}--${label}`;
    }
    return name;
  }
}

/** `<prefix><core>[--<label>]` → core and label, or null without the prefix. */
function split(name: string, prefix: string): { core: string; label: string | null } | null {
  if (!name.startsWith(prefix)) return null;
  const rest = name.slice(prefix.length);
  const cut = rest.indexOf("--");
  return cut < 0 ? { core: rest, label: null } : { core: rest.slice(0, cut), label: rest.slice(cut + 2) };
}
