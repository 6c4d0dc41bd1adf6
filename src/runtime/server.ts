/**
 * The reference agent runtime: one HTTP server per instance speaking the pool's instance protocol
 * (/pool/*, /convos/*) and serving the chat room it hosts (/i/<slug>...). Node built-ins only, so a
 * warm instance starts in well under a second.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { renderNotFoundPage, renderRoomPage, pageCsp } from "./page.ts";
import { respond } from "./responder.ts";
// The `/convos/status` answer has one definition, the one the pool's instance client reads.
import type { RuntimeStatus } from "../instance/client.ts";
import type { AgentPersona } from "./responder.ts";
import { Membership, Room, isSlug, newId, parseInviteUrl } from "./room.ts";
import type { RoomMember, RoomMessage } from "./room.ts";

export const RUNTIME_NAME = "agent-pool-reference";
export const MAX_MESSAGE_CHARS = 2000;
const MAX_BODY_BYTES = 256 * 1024;
const MAX_NAME_CHARS = 200;
const MAX_INSTRUCTIONS_CHARS = 50_000;
const MAX_REPLY_CHARS = 4000;

export interface RuntimeOptions {
  gatewayToken: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  host?: string;
  instanceId?: string | null;
  /** /pool/health answers 503 until this long after listen. Default 500. */
  bootDelayMs?: number;
  version?: string;
  /** What `/pool/health` says the runtime is (`runtime`); default agent-pool-reference. */
  runtimeName?: string;
  /** Base for invite and deliver URLs. Default `http://127.0.0.1:<port>`. */
  publicUrl?: string;
  /** Fault knobs. */
  failProvision?: boolean;
  provisionDelayMs?: number;
  resetDirty?: boolean;
  /** How long the host waits for a joined agent's reply. Default 3000. */
  deliverTimeoutMs?: number;
  /** How often a pending member asks the host whether it was approved. Default 500. */
  pendingPollMs?: number;
  /** Timeout for this runtime's calls to a room host (join, poll, leave). Default 5000. */
  hostTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface RunningRuntime {
  /** Where the server listens. */
  url: string;
  port: number;
  publicUrl: string;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** package.json's version from the repo root, or "0.0.0" when it cannot be read. */
export function readPackageVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    const version = (pkg as { version?: unknown } | null)?.version;
    return typeof version === "string" && version ? version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}

function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number | undefined): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^\d+$/.test(raw)) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return Number(raw);
}

function envFlag(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name]?.trim().toLowerCase();
  return raw === "1" || raw === "true" || raw === "yes";
}

/** Runtime options from the process environment (see main.ts). Throws on a missing or bad value. */
export function optionsFromEnv(env: NodeJS.ProcessEnv): RuntimeOptions & { exitAfterMs?: number } {
  const port = envInt(env, "PORT", undefined);
  if (port === undefined) throw new Error("PORT is required");
  if (port > 65535) throw new Error(`PORT out of range: ${port}`);
  const gatewayToken = env.GATEWAY_TOKEN ?? "";
  if (!gatewayToken) throw new Error("GATEWAY_TOKEN is required");
  const opts: RuntimeOptions & { exitAfterMs?: number } = {
    port,
    gatewayToken,
    host: env.HOST?.trim() || "127.0.0.1",
    instanceId: env.INSTANCE_ID?.trim() || null,
    bootDelayMs: envInt(env, "RUNTIME_BOOT_DELAY_MS", 500),
    version: env.RUNTIME_VERSION?.trim() || readPackageVersion(),
    // RUNTIME_TYPE: the earlier system's instance variable naming the runtime (openclaw, hermes).
    runtimeName: env.RUNTIME_TYPE?.trim() || RUNTIME_NAME,
    failProvision: envFlag(env, "RUNTIME_FAIL_PROVISION"),
    provisionDelayMs: envInt(env, "RUNTIME_PROVISION_DELAY_MS", 0),
    resetDirty: envFlag(env, "RUNTIME_RESET_DIRTY"),
  };
  const publicUrl = env.PUBLIC_URL?.trim();
  if (publicUrl) opts.publicUrl = publicUrl;
  const exitAfterMs = envInt(env, "RUNTIME_EXIT_AFTER_MS", undefined);
  if (exitAfterMs !== undefined) opts.exitAfterMs = exitAfterMs;
  return opts;
}

/** Constant-time compare; hashing first gives timingSafeEqual equal-length inputs and hides the length. */
function secretEquals(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

function bearerToken(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (typeof header !== "string") return null;
  const m = /^Bearer[ \t]+(\S+)\s*$/i.exec(header.trim());
  return m?.[1] ?? null;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(payload),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...headers,
  });
  res.end(payload);
}

function sendHtml(res: ServerResponse, status: number, html: string, nonce: string): void {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": Buffer.byteLength(html),
    "cache-control": "no-store",
    "content-security-policy": pageCsp(nonce),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    // The slug in the URL is the room's only secret; never leak it in a Referer.
    "referrer-policy": "no-referrer",
  });
  res.end(html);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `Request body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const raw = Buffer.concat(chunks).toString("utf8");
  if (raw.trim() === "") return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    throw new HttpError(400, "Malformed JSON body");
  }
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function bodyObject(body: unknown, allowEmpty = false): Json {
  if (body === undefined && allowEmpty) return {};
  if (!isObject(body)) throw new HttpError(400, "Body must be a JSON object");
  return body;
}

function requiredString(body: Json, field: string, max: number, allowEmpty = false): string {
  const value = body[field];
  if (typeof value !== "string") throw new HttpError(400, `${field} must be a string`);
  if (!allowEmpty && value.trim() === "") throw new HttpError(400, `${field} must not be empty`);
  if (value.length > max) throw new HttpError(400, `${field} is longer than ${max} characters`);
  return allowEmpty ? value : value.trim();
}

/** Optional fields accept a missing key or null (JSON clients often send null for "none"). */
function optionalString(body: Json, field: string, max: number): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new HttpError(400, `${field} must be a string`);
  if (value.length > max) throw new HttpError(400, `${field} is longer than ${max} characters`);
  return value;
}

function optionalObject(body: Json, field: string): Json | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw new HttpError(400, `${field} must be a JSON object`);
  return value;
}

function optionalBoolean(body: Json, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw new HttpError(400, `${field} must be a boolean`);
  return value;
}

function inviteOf(raw: string, field: string): { origin: string; slug: string } {
  const invite = parseInviteUrl(raw);
  if (!invite) throw new HttpError(400, `${field} is not an invite URL (expected http(s)://host/i/<slug>)`);
  return invite;
}

function messageText(body: Json, field: string): string {
  const text = requiredString(body, field, Number.MAX_SAFE_INTEGER);
  if (text.length > MAX_MESSAGE_CHARS) throw new HttpError(400, `${field} is longer than ${MAX_MESSAGE_CHARS} characters`);
  return text;
}

interface BindInput {
  agentName: string;
  instructions: string;
  title: string;
  joinUrl?: string;
  profileImage?: string;
  metadata?: Json;
}

type BindResult = { kind: "created"; room: Room; inviteUrl: string } | { kind: "joined" | "pending"; membership: Membership };

type Binding = { kind: "host"; room: Room } | { kind: "member"; membership: Membership };

interface FetchResult {
  status: number;
  body: unknown;
}

export async function startRuntime(opts: RuntimeOptions): Promise<RunningRuntime> {
  if (!opts.gatewayToken) throw new Error("gatewayToken is required");
  const gatewayToken = opts.gatewayToken;
  const host = opts.host ?? "127.0.0.1";
  const bootDelayMs = opts.bootDelayMs ?? 500;
  const version = opts.version ?? readPackageVersion();
  const deliverTimeoutMs = opts.deliverTimeoutMs ?? 3000;
  const pendingPollMs = opts.pendingPollMs ?? 500;
  const hostTimeoutMs = opts.hostTimeoutMs ?? 5000;
  const tag = opts.instanceId ? `runtime ${opts.instanceId}` : "runtime";
  const log = opts.log ?? ((line: string) => process.stderr.write(`[${tag}] ${line}\n`));
  const shutdown = new AbortController();

  // Agent state. `generation` bumps on every reset so an in-flight provision or poll that started
  // before the reset can tell its result is stale and drop it.
  let agent: (AgentPersona & { profileImage?: string; metadata?: Json }) | null = null;
  let inboxId: string | null = null;
  let binding: Binding | null = null;
  let provisioning = false;
  let dirty = false;
  let generation = 0;
  let readyAt = Number.POSITIVE_INFINITY;
  let publicUrl = "";

  const isReady = () => performance.now() >= readyAt;

  function status(): RuntimeStatus {
    let conversationId: string | null = null;
    let pending = false;
    let inviteUrl: string | null = null;
    if (binding?.kind === "host") {
      conversationId = binding.room.conversationId;
      inviteUrl = `${publicUrl}/i/${binding.room.slug}`;
    }
    if (binding?.kind === "member") {
      const active = binding.membership.status === "active";
      conversationId = active ? binding.membership.conversationId : null;
      inviteUrl = active ? binding.membership.inviteUrl : null;
      pending = binding.membership.status === "pending";
    }
    const clean = !binding && !agent && !inboxId && !provisioning && !dirty;
    return { conversationId, inboxId, pending, clean, inviteUrl };
  }

  /** JSON call to another runtime's room. Throws on network failure or timeout. */
  async function callJson(url: string, method: string, body?: unknown, secret?: string, timeoutMs = hostTimeoutMs): Promise<FetchResult> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (secret) headers.authorization = `Bearer ${secret}`;
    const init: RequestInit = {
      method,
      headers,
      redirect: "error",
      signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), shutdown.signal]),
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    const res = await fetch(url, init);
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    return { status: res.status, body: parsed };
  }

  async function leaveHost(m: Membership): Promise<void> {
    m.stopPolling();
    try {
      await callJson(m.memberUrl, "DELETE", undefined, m.secret, Math.min(hostTimeoutMs, 2000));
    } catch (err) {
      log(`leaving ${m.origin} failed (ignored): ${(err as Error).message}`);
    }
  }

  function schedulePendingPoll(m: Membership, gen: number): void {
    m.pollTimer = setTimeout(() => void pollPending(m, gen), pendingPollMs);
    m.pollTimer.unref();
  }

  async function pollPending(m: Membership, gen: number): Promise<void> {
    m.pollTimer = null;
    const current = () => gen === generation && binding?.kind === "member" && binding.membership === m && m.status === "pending";
    if (!current()) return;
    try {
      const res = await callJson(m.memberUrl, "GET");
      if (!current()) return;
      const body = isObject(res.body) ? res.body : {};
      if (res.status === 200 && body.status === "active" && typeof body.conversationId === "string") {
        m.status = "active";
        m.conversationId = body.conversationId;
        log(`approved into ${m.conversationId}`);
        return;
      }
      if (res.status === 404) {
        // The host rejected us or closed the room: we are no longer waiting for anything.
        m.status = "gone";
        log(`join request to ${m.origin} is gone (host answered 404)`);
        return;
      }
    } catch (err) {
      if (shutdown.signal.aborted) return;
      log(`polling ${m.origin} for approval failed (will retry): ${(err as Error).message}`);
    }
    if (current()) schedulePendingPoll(m, gen);
  }

  async function join(input: BindInput, gen: number): Promise<Extract<BindResult, { membership: Membership }>> {
    const joinUrl = input.joinUrl!;
    const invite = inviteOf(joinUrl, "joinUrl");
    const secret = randomBytes(32).toString("base64url");
    let res: FetchResult;
    try {
      res = await callJson(`${invite.origin}/i/${invite.slug}/members`, "POST", {
        name: input.agentName,
        deliverUrl: `${publicUrl}/convos/deliver`,
        secret,
      });
    } catch (err) {
      throw new HttpError(502, `Could not reach the invite host ${invite.origin}: ${(err as Error).message}`);
    }
    const body = isObject(res.body) ? res.body : {};
    if (res.status === 404) throw new HttpError(422, `Invite not found: ${invite.origin} has no open conversation for this invite URL`);
    const memberId = typeof body.memberId === "string" ? body.memberId : null;
    let membership: Membership;
    if ((res.status === 200 || res.status === 201) && body.status === "active" && typeof body.conversationId === "string" && memberId) {
      membership = new Membership(joinUrl, invite.origin, invite.slug, memberId, secret, "active", body.conversationId);
    } else if (res.status === 202 && body.status === "pending" && memberId) {
      membership = new Membership(joinUrl, invite.origin, invite.slug, memberId, secret, "pending", null);
    } else {
      const why = typeof body.error === "string" ? `: ${body.error}` : "";
      throw new HttpError(502, `Invite host answered ${res.status}${why}`);
    }
    if (gen !== generation || shutdown.signal.aborted) {
      void leaveHost(membership);
      throw new HttpError(409, "Runtime was reset while joining");
    }
    return { kind: membership.status === "active" ? "joined" : "pending", membership };
  }

  /** Shared by /pool/provision and the older /convos/conversation and /convos/join. */
  async function bind(input: BindInput): Promise<BindResult> {
    if (binding) throw new HttpError(409, "Already bound to a conversation; reset first");
    if (provisioning) throw new HttpError(409, "A provision is already in progress");
    provisioning = true;
    const gen = generation;
    try {
      if (opts.provisionDelayMs) await sleep(opts.provisionDelayMs, undefined, { signal: shutdown.signal });
      if (gen !== generation) throw new HttpError(409, "Runtime was reset while provisioning");
      let result: BindResult;
      if (input.joinUrl) {
        const joined = await join(input, gen);
        binding = { kind: "member", membership: joined.membership };
        if (joined.kind === "pending") schedulePendingPoll(joined.membership, gen);
        result = joined;
      } else {
        const requireApproval = input.metadata?.requireApproval === true;
        const room = new Room({ agentName: input.agentName, instructions: input.instructions }, input.title, requireApproval);
        room.append("system", "room", `${input.agentName} opened this conversation.`);
        binding = { kind: "host", room };
        result = { kind: "created", room, inviteUrl: `${publicUrl}/i/${room.slug}` };
      }
      agent = { agentName: input.agentName, instructions: input.instructions };
      if (input.profileImage !== undefined) agent.profileImage = input.profileImage;
      if (input.metadata !== undefined) agent.metadata = input.metadata;
      inboxId = newId("inbox");
      dirty = false;
      log(`provisioned ${input.agentName}: ${result.kind}`);
      return result;
    } catch (err) {
      if (err instanceof Error && err.name === "AbortError") throw new HttpError(503, "Runtime is shutting down");
      throw err;
    } finally {
      provisioning = false;
    }
  }

  async function reset(): Promise<void> {
    generation++;
    const was = binding;
    binding = null;
    agent = null;
    inboxId = null;
    if (was?.kind === "host") was.room.close();
    if (was?.kind === "member") await leaveHost(was.membership);
    dirty = opts.resetDirty === true;
    log(`reset${dirty ? " (left dirty: RUNTIME_RESET_DIRTY)" : ""}`);
  }

  function provisionInput(body: Json): BindInput {
    const agentName = requiredString(body, "agentName", MAX_NAME_CHARS);
    const instructions = requiredString(body, "instructions", MAX_INSTRUCTIONS_CHARS, true);
    const joinUrl = optionalString(body, "joinUrl", 2048);
    const profileImage = optionalString(body, "profileImage", 100_000);
    const metadata = optionalObject(body, "metadata");
    const input: BindInput = { agentName, instructions, title: agentName };
    if (joinUrl !== undefined && joinUrl.trim() !== "") {
      inviteOf(joinUrl.trim(), "joinUrl");
      input.joinUrl = joinUrl.trim();
    }
    if (profileImage !== undefined) input.profileImage = profileImage;
    if (metadata !== undefined) input.metadata = metadata;
    return input;
  }

  function requireReady(): void {
    if (!isReady()) throw new HttpError(503, "Runtime not ready yet");
  }

  async function handleProvision(req: IncomingMessage, res: ServerResponse): Promise<void> {
    requireReady();
    const input = provisionInput(bodyObject(await readJson(req)));
    if (opts.failProvision) throw new HttpError(500, "Provisioning failed (RUNTIME_FAIL_PROVISION is set)");
    const result = await bind(input);
    if (result.kind === "created") {
      sendJson(res, 200, { ok: true, inviteUrl: result.inviteUrl, conversationId: result.room.conversationId, joined: false, status: "created" });
    } else {
      const m = result.membership;
      const joined = result.kind === "joined";
      sendJson(res, 200, {
        ok: true,
        inviteUrl: m.inviteUrl,
        conversationId: joined ? m.conversationId : null,
        joined,
        status: joined ? "joined" : "pending_acceptance",
      });
    }
  }

  async function handleLegacyConversation(req: IncomingMessage, res: ServerResponse): Promise<void> {
    requireReady();
    const body = bodyObject(await readJson(req));
    const name = requiredString(body, "name", MAX_NAME_CHARS);
    const profileName = optionalString(body, "profileName", MAX_NAME_CHARS)?.trim();
    const input: BindInput = {
      agentName: profileName || name,
      instructions: optionalString(body, "instructions", MAX_INSTRUCTIONS_CHARS) ?? "",
      title: name,
    };
    const profileImage = optionalString(body, "profileImage", 100_000);
    const metadata = optionalObject(body, "metadata");
    if (profileImage !== undefined) input.profileImage = profileImage;
    if (metadata !== undefined) input.metadata = metadata;
    const result = await bind(input);
    if (result.kind !== "created") throw new HttpError(500, "unexpected join result");
    sendJson(res, 200, { conversationId: result.room.conversationId, inviteUrl: result.inviteUrl, inviteSlug: result.room.slug });
  }

  async function handleLegacyJoin(req: IncomingMessage, res: ServerResponse): Promise<void> {
    requireReady();
    const body = bodyObject(await readJson(req));
    const inviteUrl = requiredString(body, "inviteUrl", 2048);
    inviteOf(inviteUrl, "inviteUrl");
    const agentName = requiredString(body, "profileName", MAX_NAME_CHARS);
    const input: BindInput = {
      agentName,
      instructions: optionalString(body, "instructions", MAX_INSTRUCTIONS_CHARS) ?? "",
      title: agentName,
      joinUrl: inviteUrl,
    };
    const profileImage = optionalString(body, "profileImage", 100_000);
    const metadata = optionalObject(body, "metadata");
    if (profileImage !== undefined) input.profileImage = profileImage;
    if (metadata !== undefined) input.metadata = metadata;
    const result = await bind(input);
    if (result.kind === "joined") sendJson(res, 200, { status: "joined", conversationId: result.membership.conversationId });
    else sendJson(res, 200, { status: "pending_acceptance" });
  }

  /** A joined agent's reply to one human message, or null (logged) when it did not give one. */
  async function askMember(room: Room, member: RoomMember, human: RoomMessage): Promise<string | null> {
    try {
      const res = await callJson(
        member.deliverUrl,
        "POST",
        { conversationId: room.conversationId, text: human.text, from: human.from },
        member.secret,
        deliverTimeoutMs,
      );
      const reply = isObject(res.body) ? res.body.reply : undefined;
      if (res.status !== 200 || typeof reply !== "string" || reply.trim() === "") {
        log(`member ${member.id} (${member.name}) gave no reply (HTTP ${res.status}); skipped`);
        return null;
      }
      return reply.length > MAX_REPLY_CHARS ? `${reply.slice(0, MAX_REPLY_CHARS - 1)}…` : reply;
    } catch (err) {
      log(`member ${member.id} (${member.name}) unreachable: ${(err as Error).message}; skipped`);
      return null;
    }
  }

  async function postHumanMessage(room: Room, text: string): Promise<RoomMessage[]> {
    const human = room.append("human", "human", text);
    if (!human) throw new HttpError(404, "Conversation not found");
    const out: RoomMessage[] = [human];
    const own = room.append("agent", room.agent.agentName, respond(room.agent, text, room.history(human.seq)));
    if (own) out.push(own);
    const members = room.activeMembers();
    const replies = await Promise.all(members.map((m) => askMember(room, m, human)));
    replies.forEach((reply, i) => {
      const member = members[i]!;
      // Skip members that left while we waited for them.
      if (reply === null || !room.getMember(member.id)) return;
      const msg = room.append("agent", member.name, reply, member.id);
      if (msg) out.push(msg);
    });
    return out;
  }

  function hostedRoom(slug: string): Room | null {
    if (binding?.kind !== "host" || binding.room.closed) return null;
    return isSlug(slug) && secretEquals(slug, binding.room.slug) ? binding.room : null;
  }

  function publicMember(room: Room, m: RoomMember): Json {
    const out: Json = { memberId: m.id, name: m.name, status: m.status };
    if (m.status === "active") out.conversationId = room.conversationId;
    return out;
  }

  async function handleRoom(req: IncomingMessage, res: ServerResponse, url: URL, parts: string[]): Promise<void> {
    const [slug = "", ...rest] = parts;
    const method = req.method ?? "GET";
    const room = hostedRoom(slug);
    const route = rest.join("/");
    if (route === "") {
      if (method !== "GET" && method !== "HEAD") throw new HttpError(405, "Method not allowed");
      const nonce = randomBytes(16).toString("base64");
      if (!room) return sendHtml(res, 404, renderNotFoundPage(nonce), nonce);
      const html = renderRoomPage({
        title: room.title,
        agentName: room.agent.agentName,
        conversationId: room.conversationId,
        maxMessageChars: MAX_MESSAGE_CHARS,
        nonce,
      });
      return sendHtml(res, 200, html, nonce);
    }
    if (!room) throw new HttpError(404, "Conversation not found");

    if (route === "messages") {
      if (method === "GET") {
        const rawAfter = url.searchParams.get("after") ?? "0";
        if (!/^\d{1,15}$/.test(rawAfter)) throw new HttpError(400, "after must be a non-negative integer");
        return sendJson(res, 200, {
          conversationId: room.conversationId,
          title: room.title,
          agentName: room.agent.agentName,
          requireApproval: room.requireApproval,
          lastSeq: room.lastSeq,
          members: room.publicMembers(),
          messages: room.messagesAfter(Number(rawAfter)),
        });
      }
      if (method === "POST") {
        const text = messageText(bodyObject(await readJson(req)), "text");
        const messages = await postHumanMessage(room, text);
        return sendJson(res, 201, { conversationId: room.conversationId, messages });
      }
      throw new HttpError(405, "Method not allowed");
    }

    if (route === "members") {
      if (method === "GET") return sendJson(res, 200, { members: room.publicMembers() });
      if (method !== "POST") throw new HttpError(405, "Method not allowed");
      const body = bodyObject(await readJson(req));
      const name = requiredString(body, "name", MAX_NAME_CHARS);
      const deliverUrl = requiredString(body, "deliverUrl", 2048);
      const secret = requiredString(body, "secret", 512);
      if (secret.length < 16) throw new HttpError(400, "secret must be at least 16 characters");
      let parsed: URL;
      try {
        parsed = new URL(deliverUrl);
      } catch {
        throw new HttpError(400, "deliverUrl must be an absolute http(s) URL");
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new HttpError(400, "deliverUrl must be an absolute http(s) URL");
      const member = room.addMember({ name, deliverUrl: parsed.href, secret });
      if (!member) throw new HttpError(409, "This conversation is full");
      log(`${member.name} ${member.status === "active" ? "joined" : "asked to join"} ${room.conversationId} as ${member.id}`);
      return sendJson(res, member.status === "active" ? 201 : 202, publicMember(room, member));
    }

    const memberMatch = /^members\/([^/]+)(\/approve)?$/.exec(route);
    if (memberMatch) {
      let memberId: string;
      try {
        memberId = decodeURIComponent(memberMatch[1]!);
      } catch {
        throw new HttpError(404, "Member not found");
      }
      const member = room.getMember(memberId);
      if (!member) throw new HttpError(404, "Member not found");
      if (memberMatch[2]) {
        if (method !== "POST") throw new HttpError(405, "Method not allowed");
        room.approve(member.id);
        log(`approved ${member.id} (${member.name}) into ${room.conversationId}`);
        return sendJson(res, 200, publicMember(room, member));
      }
      if (method === "GET") return sendJson(res, 200, publicMember(room, member));
      if (method === "DELETE") {
        // Only the member itself may leave: it proves it with its membership secret.
        const token = bearerToken(req);
        if (!token || !secretEquals(token, member.secret)) throw new HttpError(401, "Membership secret required");
        room.removeMember(member.id);
        log(`${member.id} (${member.name}) left ${room.conversationId}`);
        return sendJson(res, 200, { ok: true, left: true });
      }
      throw new HttpError(405, "Method not allowed");
    }
    throw new HttpError(404, "Not found");
  }

  /** The host pushes a human message to us (we are a member of its room); we answer in character. */
  async function handleDeliver(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const m = binding?.kind === "member" ? binding.membership : null;
    const token = bearerToken(req);
    if (!m || m.status === "gone" || !token || !secretEquals(token, m.secret)) throw new HttpError(401, "Unauthorized");
    const body = bodyObject(await readJson(req));
    const conversationId = requiredString(body, "conversationId", 200);
    const text = messageText(body, "text");
    const from = optionalString(body, "from", MAX_NAME_CHARS) ?? "human";
    if (m.status === "pending") {
      // A delivery signed with our secret means the host approved us; don't wait for the next poll.
      m.status = "active";
      m.conversationId = conversationId;
      m.stopPolling();
    }
    if (m.conversationId !== conversationId) throw new HttpError(409, "Not a member of that conversation");
    const persona = agent ?? { agentName: "Agent", instructions: "" };
    const reply = respond(persona, text, m.history);
    m.remember({ role: "human", from, text });
    m.remember({ role: "agent", from: persona.agentName, text: reply });
    sendJson(res, 200, { reply });
  }

  const PROTECTED: Record<string, string> = {
    "/pool/provision": "POST",
    "/convos/status": "GET",
    "/convos/reset": "POST",
    "/convos/conversation": "POST",
    "/convos/join": "POST",
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://runtime.invalid");
    const path = url.pathname;
    const method = req.method ?? "GET";

    if (path === "/pool/health") {
      if (method !== "GET" && method !== "HEAD") throw new HttpError(405, "Method not allowed");
      if (!isReady()) return sendJson(res, 503, { ready: false });
      // /pool/health is public; to its pool (the gateway token) it also says what /convos/status
      // would, so a health check is one request instead of two (issue 10).
      const token = bearerToken(req);
      const own = token !== null && secretEquals(token, gatewayToken);
      if (!own) return sendJson(res, 200, { ready: true, version, runtime: opts.runtimeName ?? RUNTIME_NAME });
      const s = status();
      return sendJson(res, 200, {
        ready: true,
        version,
        runtime: opts.runtimeName ?? RUNTIME_NAME,
        conversationId: s.conversationId,
        pending: s.pending,
        clean: s.clean,
      });
    }
    if (path.startsWith("/i/")) return handleRoom(req, res, url, path.slice(3).split("/"));
    if (path === "/convos/deliver") {
      if (method !== "POST") throw new HttpError(405, "Method not allowed");
      return handleDeliver(req, res);
    }

    const allowed = PROTECTED[path];
    if (!allowed) throw new HttpError(404, "Not found");
    const token = bearerToken(req);
    if (!token || !secretEquals(token, gatewayToken)) throw new HttpError(401, "Unauthorized");
    if (method !== allowed) throw new HttpError(405, "Method not allowed");

    switch (path) {
      case "/pool/provision":
        return handleProvision(req, res);
      case "/convos/status":
        return sendJson(res, 200, status());
      case "/convos/reset": {
        const body = bodyObject(await readJson(req), true);
        optionalBoolean(body, "skipGreeting"); // accepted for compatibility; this runtime never greets
        await reset();
        return sendJson(res, 200, { ok: true, reset: true, status: status() });
      }
      case "/convos/conversation":
        return handleLegacyConversation(req, res);
      case "/convos/join":
        return handleLegacyJoin(req, res);
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (!(err instanceof HttpError)) log(`internal error on ${req.method} ${req.url?.split("?")[0]}: ${(err as Error)?.stack ?? err}`);
      const message = err instanceof HttpError ? err.message : "Internal error";
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // A 413 leaves the body unread: close the connection rather than drain it.
      sendJson(res, status, { error: message }, status === 413 ? { connection: "close" } : {});
    });
  });
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  readyAt = performance.now() + bootDelayMs;
  const port = (server.address() as AddressInfo).port;
  const wildcard = host === "0.0.0.0" || host === "::" || host === "localhost";
  const urlHost = wildcard ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  const url = `http://${urlHost}:${port}`;
  publicUrl = (opts.publicUrl ?? `http://127.0.0.1:${port}`).replace(/\/+$/, "");

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    publicUrl,
    close() {
      closing ??= new Promise<void>((resolve) => {
        shutdown.abort();
        if (binding?.kind === "member") binding.membership.stopPolling();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
