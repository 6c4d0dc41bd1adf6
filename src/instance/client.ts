/**
 * The pool's side of the instance protocol (seed-system §4): health, status, provision, reset.
 * Every call has its own timeout and authenticates with the instance's own gateway token, never
 * the pool's API key (the earlier system gave every agent the admin key, seed §8).
 */
import { Agent, request } from "undici";
import type { HealthObservation } from "./derive.ts";

export interface InstanceTarget {
  url: string;
  gatewayToken: string;
}

export interface RuntimeStatus {
  conversationId: string | null;
  inboxId: string | null;
  pending: boolean;
  clean: boolean;
  /** Extra to the protocol's four fields: the room's invite URL while bound. */
  inviteUrl: string | null;
}

export interface ProvisionRequest {
  agentName: string;
  instructions: string;
  joinUrl?: string | undefined;
  profileImage?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
}

export interface ProvisionResult {
  inviteUrl: string | null;
  conversationId: string | null;
  joined: boolean;
  status: "created" | "joined" | "pending_acceptance";
}

/** A failed call: `status` is the HTTP status when the instance answered, else null. */
export class InstanceCallError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number | null,
    message: string,
  ) {
    super(`${operation}: ${message}`);
    this.name = "InstanceCallError";
  }
}

export interface HealthChecker {
  /** Health and binding of one instance; null with a reason when it could not tell. */
  check(target: InstanceTarget, timeoutMs: number): Promise<{ health: HealthObservation | null; error?: string }>;
}

const MAX_BODY = 256 * 1024;

export class InstanceClient implements HealthChecker {
  readonly #agent: Agent;

  constructor() {
    // One keep-alive agent for every instance: health checks every tick reuse connections.
    this.#agent = new Agent({ keepAliveTimeout: 10_000, connections: 8 });
  }

  async #call(
    operation: string,
    target: InstanceTarget,
    method: "GET" | "POST",
    path: string,
    timeoutMs: number,
    body?: unknown,
    auth = true,
  ): Promise<{ status: number; json: unknown }> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (auth) headers.authorization = `Bearer ${target.gatewayToken}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(new URL(path, target.url), {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        dispatcher: this.#agent,
        signal: AbortSignal.timeout(timeoutMs),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      const msg = (err as Error).name === "TimeoutError" || (err as Error).name === "AbortError" ? `timed out after ${timeoutMs} ms` : (err as Error).message;
      throw new InstanceCallError(operation, null, msg);
    }
    const text = await readLimited(res.body, MAX_BODY).catch(() => "");
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    return { status: res.statusCode, json };
  }

  async check(target: InstanceTarget, timeoutMs: number): Promise<{ health: HealthObservation | null; error?: string }> {
    try {
      // The gateway token goes along: a runtime that knows it may answer with its binding too.
      const h = await this.#call("health", target, "GET", "/pool/health", timeoutMs);
      const hb = (h.json ?? {}) as Record<string, unknown>;
      if (h.status !== 200 || hb.ready !== true) {
        // Booting runtimes answer 503 {ready:false}: reachable, not ready.
        if (h.status === 503 || hb.ready === false) {
          return { health: { ready: false, conversationId: null, pending: false, clean: false, version: str(hb.version), runtime: str(hb.runtime) } };
        }
        return { health: null, error: `health answered ${h.status}` };
      }
      // One request per check where the runtime allows it: a runtime that says its binding on
      // /pool/health (`clean`, `pending`, `conversationId`: this project's reference runtime does)
      // saves the /convos/status call, half the health traffic. Others get the second request.
      if (typeof hb.clean === "boolean" && typeof hb.pending === "boolean" && (hb.conversationId === null || typeof hb.conversationId === "string")) {
        return {
          health: {
            ready: true,
            conversationId: (hb.conversationId as string | null) || null,
            pending: hb.pending,
            clean: hb.clean,
            version: str(hb.version),
            runtime: str(hb.runtime),
          },
        };
      }
      const s = await this.status(target, timeoutMs);
      return {
        health: { ready: true, conversationId: s.conversationId, pending: s.pending, clean: s.clean, version: str(hb.version), runtime: str(hb.runtime) },
      };
    } catch (err) {
      return { health: null, error: (err as Error).message };
    }
  }

  async status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus> {
    const r = await this.#call("status", target, "GET", "/convos/status", timeoutMs);
    if (r.status !== 200 || typeof r.json !== "object" || r.json === null) {
      throw new InstanceCallError("status", r.status, `answered ${r.status}`);
    }
    const b = r.json as Record<string, unknown>;
    // Parsed leniently, as runtimes differ (OpenClaw never sent `pending`).
    return {
      conversationId: str(b.conversationId),
      inboxId: str(b.inboxId),
      pending: b.pending === true,
      clean: b.clean === true,
      inviteUrl: str(b.inviteUrl),
    };
  }

  async provision(target: InstanceTarget, req: ProvisionRequest, timeoutMs: number): Promise<ProvisionResult> {
    const r = await this.#call("provision", target, "POST", "/pool/provision", timeoutMs, req);
    const b = (r.json ?? {}) as Record<string, unknown>;
    if (r.status !== 200) throw new InstanceCallError("provision", r.status, str(b.error) ?? `answered ${r.status}`);
    const status = b.status === "pending_acceptance" ? "pending_acceptance" : b.status === "joined" ? "joined" : "created";
    return { inviteUrl: str(b.inviteUrl), conversationId: str(b.conversationId), joined: b.joined === true || status === "joined", status };
  }

  async reset(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus | null> {
    const r = await this.#call("reset", target, "POST", "/convos/reset", timeoutMs, {});
    if (r.status !== 200) throw new InstanceCallError("reset", r.status, `answered ${r.status}`);
    return null;
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

function str(v: unknown): string | null {
  return typeof v === "string" && v.length > 0 ? v : null;
}

async function readLimited(body: AsyncIterable<Buffer | Uint8Array>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new Error("body too large");
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The two calls of the instance protocol that a factory reset makes. */
export interface RuntimeResetter {
  reset(target: InstanceTarget, timeoutMs: number): Promise<unknown>;
  status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus>;
}

/**
 * Factory-resets an instance's runtime (`POST /convos/reset`, then `GET /convos/status`) and says
 * whether it came back clean: no conversation, nothing pending. Only a clean answer lets an instance
 * go back to idle; anything else (an error, a runtime that keeps its conversation, no URL) says why.
 * One place for the claim's recovery, an operator's release and an instance's own reset request.
 */
export async function factoryReset(
  runtime: RuntimeResetter,
  inst: { url: string | null; gatewayToken: string },
  timeoutMs: number,
): Promise<{ clean: boolean; why: string }> {
  if (!inst.url) return { clean: false, why: "no URL to reach the runtime" };
  const target = { url: inst.url, gatewayToken: inst.gatewayToken };
  try {
    await runtime.reset(target, timeoutMs);
    const s = await runtime.status(target, timeoutMs);
    const clean = s.clean && !s.conversationId && !s.pending;
    return { clean, why: clean ? "runtime clean" : "runtime not clean after the reset" };
  } catch (err) {
    return { clean: false, why: `reset failed: ${(err as Error).message.slice(0, 200)}` };
  }
}
