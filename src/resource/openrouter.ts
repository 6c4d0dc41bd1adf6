/**
 * OpenRouter API keys, the first resource kind: one key per instance, made through OpenRouter's
 * key-management API with a provisioning (management) key, each with its own spending limit, given
 * to the instance as `OPENROUTER_API_KEY`.
 *
 * The API (https://openrouter.ai/docs/api/api-reference/api-keys), all under `/api/v1/keys` with
 * `Authorization: Bearer <provisioning key>`:
 *   GET    /keys?offset=N&include_disabled=true → 200 {data: [key…]}  (the most recent 100 per page)
 *   POST   /keys {name, limit}                   → 201 {data: key, key: "sk-or-v1-…"}  (the secret, shown once)
 *   GET    /keys/{hash}                          → 200 {data: key}
 *   PATCH  /keys/{hash} {limit}                  → 200 {data: key}
 *   DELETE /keys/{hash}                          → 200 {deleted: true}; 404 when it is already gone
 * where a key is {hash, name, label, disabled, limit, limit_remaining, usage, created_at, …} and an
 * error is {error: {code, message}} with 400, 401, 404, 429 (Retry-After) or 5xx.
 *
 * Only the hash is ever recorded; the key itself leaves this module once, in the create's `env`.
 * The provisioning key is held in a private field and never appears in an error message.
 */
import type { CreatedResource, ExternalResource, ResourceKind, ResourceListing, ResourceTarget, ResourceUsage } from "./kind.ts";

export interface OpenRouterKindOptions {
  /** e.g. `https://openrouter.ai/api/v1` (no trailing slash needed). */
  apiUrl: string;
  provisioningKey: string;
  /** Spending limit of a new key (USD). */
  keyLimit: number;
  /** The largest limit a top-up may set (USD). */
  maxLimit: number;
  requestTimeoutMs?: number;
  /** Pages of 100 keys one listing reads at most; a longer listing is reported incomplete. */
  maxPages?: number;
  /** The environment variable the key is given in. */
  envName?: string;
  fetch?: typeof fetch;
}

/** A failed call to OpenRouter: `status` is the HTTP status when it answered. */
export class OpenRouterError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number | null,
    message: string,
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(`openrouter ${operation}: ${message}`);
    this.name = "OpenRouterError";
  }
}

/** Keys per page of the listing (OpenRouter's fixed page size). */
export const OPENROUTER_PAGE_SIZE = 100;

interface KeyData {
  hash: string;
  name: string;
  createdAt: Date;
  limit: number | null;
  usage: number | null;
  remaining: number | null;
}

export class OpenRouterKind implements ResourceKind {
  readonly kind = "openrouter";
  readonly required = true;
  readonly when = "boot";
  readonly maxLimit: number;
  readonly #base: string;
  readonly #key: string;
  readonly #keyLimit: number;
  readonly #timeoutMs: number;
  readonly #maxPages: number;
  readonly #envName: string;
  readonly #fetch: typeof fetch;

  constructor(o: OpenRouterKindOptions) {
    this.#base = o.apiUrl.replace(/\/+$/, "");
    this.#key = o.provisioningKey;
    this.#keyLimit = o.keyLimit;
    this.maxLimit = o.maxLimit;
    this.#timeoutMs = o.requestTimeoutMs ?? 15_000;
    this.#maxPages = o.maxPages ?? 200;
    this.#envName = o.envName ?? "OPENROUTER_API_KEY";
    this.#fetch = o.fetch ?? fetch;
  }

  async create(target: ResourceTarget): Promise<CreatedResource> {
    const r = await this.#call("create", "POST", "/keys", { name: target.name, limit: this.#keyLimit });
    if (r.status !== 201 && r.status !== 200) throw this.#failure("create", r);
    const body = obj(r.json);
    const data = keyData(body?.data);
    const secret = typeof body?.key === "string" && body.key.length > 0 ? body.key : null;
    // A key may have been made even so; it carries our name, and the reconciler finds it in a listing.
    if (!data || !secret) throw new OpenRouterError("create", r.status, "the answer has no key hash or no key");
    return { ref: data.hash, env: { [this.#envName]: secret }, limit: data.limit, usage: data.usage };
  }

  async delete(ref: string): Promise<void> {
    const r = await this.#call("delete", "DELETE", `/keys/${encodeURIComponent(ref)}`);
    // Already deleted (by us before a crash, or by hand): what we wanted.
    if (r.status === 404) return;
    if (r.status !== 200 && r.status !== 204) throw this.#failure("delete", r);
  }

  async list(): Promise<ResourceListing> {
    // Pages are read by offset, newest first: a key made while paging shifts the rest down, so one
    // may be seen twice (kept once); one deleted meanwhile may shift another past us, which only
    // delays its judgment to the next listing (nothing is deleted for not being seen).
    const byRef = new Map<string, ExternalResource>();
    let complete = true;
    for (let page = 0; ; page++) {
      if (page >= this.#maxPages) {
        complete = false;
        break;
      }
      const r = await this.#call("list", "GET", `/keys?include_disabled=true&offset=${page * OPENROUTER_PAGE_SIZE}`);
      if (r.status !== 200) throw this.#failure("list", r);
      const data = obj(r.json)?.data;
      if (!Array.isArray(data)) throw new OpenRouterError("list", r.status, "the answer has no key list");
      for (const item of data) {
        const k = keyData(item);
        // An entry we cannot read might be ours: the listing cannot vouch for it, so it is incomplete.
        if (!k) complete = false;
        else byRef.set(k.hash, { ref: k.hash, name: k.name, createdAt: k.createdAt, limit: k.limit, usage: k.usage });
      }
      if (data.length < OPENROUTER_PAGE_SIZE) break;
    }
    return { resources: [...byRef.values()], complete };
  }

  async usage(ref: string): Promise<ResourceUsage> {
    const r = await this.#call("usage", "GET", `/keys/${encodeURIComponent(ref)}`);
    if (r.status !== 200) throw this.#failure("usage", r);
    return toUsage("usage", r.status, obj(r.json)?.data);
  }

  async setLimit(ref: string, limit: number): Promise<ResourceUsage> {
    if (!Number.isFinite(limit) || limit < 0 || limit > this.maxLimit) throw new RangeError(`limit must be from 0 to ${this.maxLimit}, got ${limit}`);
    const r = await this.#call("setLimit", "PATCH", `/keys/${encodeURIComponent(ref)}`, { limit });
    if (r.status !== 200) throw this.#failure("setLimit", r);
    return toUsage("setLimit", r.status, obj(r.json)?.data);
  }

  async #call(operation: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown; retryAfter: string | null }> {
    let res: Response;
    try {
      res = await this.#fetch(`${this.#base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.#key}`,
          accept: "application/json",
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const e = err as Error;
      const msg = e.name === "TimeoutError" || e.name === "AbortError" ? `timed out after ${this.#timeoutMs} ms` : `unreachable (${e.message})`;
      throw new OpenRouterError(operation, null, msg);
    }
    const text = await res.text().catch(() => "");
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.status, json, retryAfter: res.headers.get("retry-after") };
  }

  /** An error that says what OpenRouter said (its message, never a body that could hold a key). */
  #failure(operation: string, r: { status: number; json: unknown; retryAfter: string | null }): OpenRouterError {
    const said = obj(obj(r.json)?.error)?.message;
    const what = r.status === 401 ? "the provisioning key was refused (401)" : r.status === 429 ? "rate limited (429)" : `answered ${r.status}`;
    const detail = typeof said === "string" && said !== "" ? `: ${said.slice(0, 200)}` : "";
    const retry = r.retryAfter !== null && /^\d+$/.test(r.retryAfter) ? Number(r.retryAfter) : null;
    return new OpenRouterError(operation, r.status, `${what}${detail}`, retry);
  }
}

function obj(v: unknown): Record<string, unknown> | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function num(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

function keyData(v: unknown): KeyData | null {
  const o = obj(v);
  if (!o || typeof o.hash !== "string" || o.hash === "" || typeof o.name !== "string") return null;
  const created = typeof o.created_at === "string" ? new Date(o.created_at) : null;
  if (!created || Number.isNaN(created.getTime())) return null;
  return { hash: o.hash, name: o.name, createdAt: created, limit: num(o.limit), usage: num(o.usage), remaining: num(o.limit_remaining) };
}

function toUsage(operation: string, status: number, v: unknown): ResourceUsage {
  const k = keyData(v);
  if (!k) throw new OpenRouterError(operation, status, "the answer has no key");
  const usage = k.usage ?? 0;
  const remaining = k.limit === null ? null : (k.remaining ?? Math.max(0, k.limit - usage));
  return { limit: k.limit, usage, remaining };
}
