/**
 * A stand-in for OpenRouter's key-management API on loopback, written from its API reference
 * (https://openrouter.ai/docs/api/api-reference/api-keys): the same paths, request and response
 * shapes and status codes, and the same ways of failing.
 *
 *   GET    /api/v1/keys?offset=N&include_disabled=true → 200 {data: [key…]}, newest first, 100 a page
 *   POST   /api/v1/keys {name, limit?, limit_reset?, include_byok_in_limit?} → 201 {data: key, key: "sk-or-v1-…"}
 *   GET    /api/v1/keys/{hash}                          → 200 {data: key} | 404
 *   PATCH  /api/v1/keys/{hash} {name?, disabled?, limit?} → 200 {data: key} | 404
 *   DELETE /api/v1/keys/{hash}                          → 200 {deleted: true} | 404 (already deleted)
 *
 * Every call needs `Authorization: Bearer <provisioning key>` (else 401). Errors are
 * `{error: {code, message}}`; 429 carries Retry-After. Fault knobs: the next calls of an operation
 * fail with a status, every call fails at a seeded random rate (5xx and 429), or a create makes the
 * key and then answers 500 (the answer lost on the way), the case that leaked keys before.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { systemClock, type Clock } from "../../src/clock.ts";

export type StandinOperation = "list" | "create" | "get" | "update" | "delete";

export interface StandinKey {
  hash: string;
  name: string;
  /** The secret, as OpenRouter shows it once at creation. */
  key: string;
  disabled: boolean;
  limit: number | null;
  usage: number;
  createdAt: Date;
  updatedAt: Date | null;
}

export interface StandinRequest {
  method: string;
  path: string;
  operation: StandinOperation | null;
  authorized: boolean;
  body: unknown;
  status: number;
}

export interface OpenRouterStandinOptions {
  provisioningKey: string;
  clock?: Clock;
  pageSize?: number;
}

export class OpenRouterStandin {
  readonly provisioningKey: string;
  readonly keys = new Map<string, StandinKey>();
  readonly requests: StandinRequest[] = [];
  /** Keys deleted so far (hash → name), to tell "deleted" from "never made". */
  readonly deleted = new Map<string, string>();
  /** Every secret key ever made (deleted ones included): what leak tests look for. */
  readonly issued: string[] = [];
  /** Random faults: each call fails with this probability (5xx or 429), drawn from `rng`. */
  chaos: { rate: number; rng: () => number } | null = null;
  /** Next creates make the key, then answer 500. */
  createThenFail = 0;
  readonly #failures: Array<{ op: StandinOperation | "*"; status: number; times: number }> = [];
  readonly #clock: Clock;
  readonly #pageSize: number;
  #server: Server | null = null;
  #url = "";

  constructor(o: OpenRouterStandinOptions) {
    this.provisioningKey = o.provisioningKey;
    this.#clock = o.clock ?? systemClock;
    this.#pageSize = o.pageSize ?? 100;
  }

  /** Base URL of the API, as OPENROUTER_API_URL takes it (`http://127.0.0.1:<port>/api/v1`). */
  get apiUrl(): string {
    return `${this.#url}/api/v1`;
  }

  async start(): Promise<this> {
    this.#server = createServer((req, res) => void this.#handle(req, res));
    await new Promise<void>((resolve) => this.#server!.listen(0, "127.0.0.1", resolve));
    this.#url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    const s = this.#server;
    this.#server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** The next `times` calls of `op` ("*": any) answer `status`. */
  failNext(op: StandinOperation | "*", status: number, times = 1): void {
    this.#failures.push({ op, status, times });
  }

  /** Spends on a key, as calls through it would. */
  spend(hash: string, usd: number): void {
    const k = this.keys.get(hash);
    if (k) k.usage = Math.round((k.usage + usd) * 1e6) / 1e6;
  }

  /** Adds a key as if made elsewhere (by hand, by another deployment), made at `createdAt`. */
  add(name: string, createdAt: Date = this.#clock.now(), limit: number | null = 20): StandinKey {
    return this.#make(name, limit, createdAt);
  }

  /** The key whose name ends with `:<instanceId>` (ours carry the instance id last). */
  keyOfInstance(instanceId: string): StandinKey | undefined {
    return [...this.keys.values()].find((k) => k.name.endsWith(`:${instanceId}`));
  }

  #make(name: string, limit: number | null, createdAt: Date): StandinKey {
    const key = `sk-or-v1-${randomBytes(32).toString("hex")}`;
    const hash = createHash("sha256").update(key).digest("hex");
    const k: StandinKey = { hash, name, key, disabled: false, limit, usage: 0, createdAt, updatedAt: null };
    this.keys.set(hash, k);
    this.issued.push(key);
    return k;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const raw = await readBody(req);
    let body: unknown = null;
    if (raw !== "") {
      try {
        body = JSON.parse(raw);
      } catch {
        body = Symbol.for("malformed");
      }
    }
    const m = /^\/api\/v1\/keys\/?(?:([^/]+))?$/.exec(url.pathname);
    const hash = m?.[1] ? decodeURIComponent(m[1]) : null;
    const op: StandinOperation | null = !m
      ? null
      : hash === null
        ? req.method === "GET"
          ? "list"
          : req.method === "POST"
            ? "create"
            : null
        : req.method === "GET"
          ? "get"
          : req.method === "PATCH"
            ? "update"
            : req.method === "DELETE"
              ? "delete"
              : null;
    const authorized = req.headers.authorization === `Bearer ${this.provisioningKey}`;
    const answer = (status: number, json: unknown, headers: Record<string, string> = {}) => {
      this.requests.push({
        method: req.method ?? "",
        path: url.pathname + url.search,
        operation: op,
        authorized,
        body: typeof body === "symbol" ? "<malformed>" : body,
        status,
      });
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(json));
    };
    const error = (status: number, message: string) => answer(status, { error: { code: status, message } }, status === 429 ? { "retry-after": "1" } : {});

    if (!m || op === null) return error(404, "Not Found");
    if (!authorized) return error(401, "Missing or invalid authentication");
    const forced = this.#failures.find((f) => f.op === op || f.op === "*");
    if (forced) {
      if (--forced.times <= 0) this.#failures.splice(this.#failures.indexOf(forced), 1);
      return error(forced.status, forced.status === 429 ? "Rate limit exceeded" : forced.status >= 500 ? "Internal Server Error" : "Request failed");
    }
    if (this.chaos && this.chaos.rng() < this.chaos.rate) {
      const statuses = [500, 502, 503, 429];
      const status = statuses[Math.floor(this.chaos.rng() * statuses.length)]!;
      // A create that fails at random may still have made its key, as a real 5xx can.
      if (op === "create" && status >= 500 && this.chaos.rng() < 0.5 && isCreateBody(body)) this.#make(body.name, body.limit ?? null, this.#clock.now());
      return error(status, status === 429 ? "Rate limit exceeded" : "Internal Server Error");
    }
    if (typeof body === "symbol") return error(400, "Invalid JSON body");

    switch (op) {
      case "list": {
        const offset = Number(url.searchParams.get("offset") ?? "0");
        if (!Number.isInteger(offset) || offset < 0) return error(400, "offset must be a non-negative integer");
        const includeDisabled = url.searchParams.get("include_disabled") === "true";
        const all = [...this.keys.values()]
          .filter((k) => includeDisabled || !k.disabled)
          .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.hash < b.hash ? -1 : 1));
        return answer(200, { data: all.slice(offset, offset + this.#pageSize).map(view) });
      }
      case "create": {
        if (!isCreateBody(body)) return error(400, "name is required and limit must be a non-negative number");
        const k = this.#make(body.name, body.limit ?? null, this.#clock.now());
        if (this.createThenFail > 0) {
          this.createThenFail--;
          return error(500, "Internal Server Error");
        }
        return answer(201, { data: view(k), key: k.key });
      }
      case "get": {
        const k = this.keys.get(hash!);
        return k ? answer(200, { data: view(k) }) : error(404, "API key not found");
      }
      case "update": {
        const k = this.keys.get(hash!);
        if (!k) return error(404, "API key not found");
        const b = (body ?? {}) as Record<string, unknown>;
        if (b.limit !== undefined && b.limit !== null && (typeof b.limit !== "number" || b.limit < 0)) return error(400, "limit must be a non-negative number");
        if (b.limit !== undefined) k.limit = b.limit as number | null;
        if (typeof b.name === "string") k.name = b.name;
        if (typeof b.disabled === "boolean") k.disabled = b.disabled;
        k.updatedAt = this.#clock.now();
        return answer(200, { data: view(k) });
      }
      case "delete": {
        const k = this.keys.get(hash!);
        if (!k) return error(404, "API key not found");
        this.keys.delete(hash!);
        this.deleted.set(hash!, k.name);
        return answer(200, { deleted: true });
      }
    }
  }
}

function isCreateBody(b: unknown): b is { name: string; limit?: number | null } {
  if (typeof b !== "object" || b === null) return false;
  const o = b as Record<string, unknown>;
  return typeof o.name === "string" && o.name.trim() !== "" && (o.limit === undefined || o.limit === null || (typeof o.limit === "number" && o.limit >= 0));
}

/** A key as the API shows it (never the secret: only its label, as OpenRouter masks it). */
function view(k: StandinKey): Record<string, unknown> {
  return {
    hash: k.hash,
    name: k.name,
    label: `${k.key.slice(0, 11)}...${k.key.slice(-4)}`,
    disabled: k.disabled,
    limit: k.limit,
    limit_remaining: k.limit === null ? null : Math.max(0, Math.round((k.limit - k.usage) * 1e6) / 1e6),
    limit_reset: null,
    include_byok_in_limit: false,
    usage: k.usage,
    usage_daily: k.usage,
    usage_weekly: k.usage,
    usage_monthly: k.usage,
    byok_usage: 0,
    byok_usage_daily: 0,
    byok_usage_weekly: 0,
    byok_usage_monthly: 0,
    created_at: k.createdAt.toISOString(),
    updated_at: k.updatedAt?.toISOString() ?? null,
    expires_at: null,
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
