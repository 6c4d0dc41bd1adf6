/**
 * Chat-room state for the reference runtime: the room a runtime hosts (`Room`) and the seat a
 * runtime holds in someone else's room (`Membership`). Plain in-memory state; the HTTP side lives
 * in server.ts.
 */
import { randomBytes } from "node:crypto";
import type { AgentPersona, HistoryEntry } from "./responder.ts";

export type MessageRole = "human" | "agent" | "system";

export interface RoomMessage {
  seq: number;
  role: MessageRole;
  from: string;
  text: string;
  at: string;
  /** Set on replies from a joined agent. */
  memberId?: string;
}

export type MemberStatus = "pending" | "active";

export interface RoomMember {
  id: string;
  name: string;
  /** Never shown to anyone: the host POSTs human messages here with `secret`. */
  deliverUrl: string;
  secret: string;
  status: MemberStatus;
  joinedAt: string;
}

export interface PublicMember {
  id: string;
  name: string;
  status: MemberStatus;
}

/** Kept per room so a chatty test cannot grow memory without bound; `seq` keeps counting. */
export const MAX_ROOM_MESSAGES = 1000;
export const MAX_MEMBERS = 20;

export function newId(prefix: string, bytes = 16): string {
  return `${prefix}_${randomBytes(bytes).toString("hex")}`;
}

/** 144 random bits: the slug is the only thing guarding the room, so it must be unguessable. */
export function newSlug(): string {
  return randomBytes(18).toString("base64url");
}

const SLUG_RE = /^[A-Za-z0-9_-]{16,128}$/;

export function isSlug(value: string): boolean {
  return SLUG_RE.test(value);
}

/** Splits `http://host:port/i/<slug>` into its origin and slug, or null when it is not one. */
export function parseInviteUrl(raw: string): { origin: string; slug: string } | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  const m = /^\/i\/([^/]+)\/?$/.exec(url.pathname);
  const slug = m?.[1];
  if (!slug || !isSlug(slug)) return null;
  return { origin: url.origin, slug };
}

export class Room {
  readonly conversationId = newId("conv");
  readonly slug = newSlug();
  readonly createdAt = new Date().toISOString();
  #messages: RoomMessage[] = [];
  #seq = 0;
  #members = new Map<string, RoomMember>();
  #closed = false;

  constructor(
    readonly agent: AgentPersona,
    readonly title: string,
    readonly requireApproval: boolean,
  ) {}

  get closed(): boolean {
    return this.#closed;
  }

  get lastSeq(): number {
    return this.#seq;
  }

  /** Appends a message; a closed room takes none (a late member reply after reset is dropped). */
  append(role: MessageRole, from: string, text: string, memberId?: string): RoomMessage | null {
    if (this.#closed) return null;
    const msg: RoomMessage = { seq: ++this.#seq, role, from, text, at: new Date().toISOString() };
    if (memberId) msg.memberId = memberId;
    this.#messages.push(msg);
    if (this.#messages.length > MAX_ROOM_MESSAGES) this.#messages.shift();
    return msg;
  }

  messagesAfter(after: number): RoomMessage[] {
    return this.#messages.filter((m) => m.seq > after);
  }

  /** What the responder sees: every message before `beforeSeq`. */
  history(beforeSeq: number): HistoryEntry[] {
    return this.#messages.filter((m) => m.seq < beforeSeq).map(({ role, from, text }) => ({ role, from, text }));
  }

  addMember(input: { name: string; deliverUrl: string; secret: string }): RoomMember | null {
    if (this.#closed || this.#members.size >= MAX_MEMBERS) return null;
    const member: RoomMember = {
      id: newId("mem", 8),
      ...input,
      status: this.requireApproval ? "pending" : "active",
      joinedAt: new Date().toISOString(),
    };
    this.#members.set(member.id, member);
    this.append("system", "room", `${member.name} ${member.status === "active" ? "joined" : "asked to join"}.`);
    return member;
  }

  getMember(id: string): RoomMember | undefined {
    return this.#closed ? undefined : this.#members.get(id);
  }

  approve(id: string): RoomMember | undefined {
    const member = this.getMember(id);
    if (member && member.status === "pending") {
      member.status = "active";
      this.append("system", "room", `${member.name} joined.`);
    }
    return member;
  }

  removeMember(id: string): boolean {
    const member = this.getMember(id);
    if (!member) return false;
    this.#members.delete(id);
    this.append("system", "room", `${member.name} left.`);
    return true;
  }

  activeMembers(): RoomMember[] {
    return [...this.#members.values()].filter((m) => m.status === "active");
  }

  publicMembers(): PublicMember[] {
    return [...this.#members.values()].map(({ id, name, status }) => ({ id, name, status }));
  }

  close(): void {
    this.#closed = true;
    this.#members.clear();
  }
}

export type MembershipStatus = "pending" | "active" | "gone";

/** This runtime's seat in a room another runtime hosts. */
export class Membership {
  status: MembershipStatus;
  conversationId: string | null;
  /** What this agent has seen of the room (only what was delivered to it), for the responder. */
  readonly history: HistoryEntry[] = [];
  pollTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly inviteUrl: string,
    readonly origin: string,
    readonly slug: string,
    readonly memberId: string,
    readonly secret: string,
    status: "pending" | "active",
    conversationId: string | null,
  ) {
    this.status = status;
    this.conversationId = conversationId;
  }

  get memberUrl(): string {
    return `${this.origin}/i/${this.slug}/members/${encodeURIComponent(this.memberId)}`;
  }

  remember(entry: HistoryEntry): void {
    this.history.push(entry);
    if (this.history.length > 200) this.history.shift();
  }

  stopPolling(): void {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }
}
