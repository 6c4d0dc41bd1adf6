/**
 * Stateless operator sessions: a signed, expiring cookie and a per-session CSRF token.
 *
 * The signing key is derived from the admin password (HKDF-SHA256), never the password itself, so
 * the cookie cannot be used to recover it, and changing the password invalidates every session.
 * Nothing is kept server-side, so sessions work across replicas and restarts (the earlier system's
 * cookie had the same property, but was HMAC'd with the API key directly, seed §2.12).
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { sameSecret } from "../http/auth.ts";

export interface Session {
  /** Random id; the CSRF token is derived from it. */
  sid: string;
  /** Expiry, ms since the epoch. */
  exp: number;
}

export class SessionKeys {
  readonly #key: Buffer;
  readonly #password: string;

  constructor(password: string) {
    this.#password = password;
    this.#key = Buffer.from(hkdfSync("sha256", password, "agent-pool", "dashboard-session-v1", 32));
  }

  checkPassword(given: string): boolean {
    return sameSecret(given, this.#password);
  }

  /** A new session and its cookie value `v1.<exp>.<sid>.<mac>`. */
  issue(now: number, ttlMs: number): { session: Session; value: string } {
    const session = { sid: randomBytes(18).toString("base64url"), exp: now + ttlMs };
    const body = `v1.${session.exp.toString(36)}.${session.sid}`;
    return { session, value: `${body}.${this.#mac(`session.${body}`)}` };
  }

  /** The session a cookie value carries, or null when it is malformed, forged or expired. */
  verify(value: string | undefined, now: number): Session | null {
    if (!value) return null;
    const m = /^v1\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$/.exec(value);
    if (!m) return null;
    const body = `v1.${m[1]}.${m[2]}`;
    if (!equal(m[3]!, this.#mac(`session.${body}`))) return null;
    const exp = parseInt(m[1]!, 36);
    if (!Number.isFinite(exp) || exp <= now) return null;
    return { sid: m[2]!, exp };
  }

  /** The CSRF token of a session: derived, so nothing needs storing. */
  csrfToken(session: Session): string {
    return this.#mac(`csrf.${session.sid}`);
  }

  checkCsrf(session: Session, given: unknown): boolean {
    return typeof given === "string" && equal(given, this.csrfToken(session));
  }

  #mac(data: string): string {
    return createHmac("sha256", this.#key).update(data).digest("base64url");
  }
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Reads one cookie from a `Cookie` header. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export interface CookieOptions {
  secure: boolean;
  maxAgeSeconds: number;
}

export function serializeCookie(name: string, value: string, o: CookieOptions): string {
  return [`${name}=${value}`, "Path=/", `Max-Age=${o.maxAgeSeconds}`, "HttpOnly", "SameSite=Strict", ...(o.secure ? ["Secure"] : [])].join("; ");
}
