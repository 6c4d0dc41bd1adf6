/**
 * Rate limits on the store's shared fixed-window counters, so every replica on one Postgres sees
 * the same counts: mutating API routes per client (address + key), and dashboard sign-ins per
 * address. Before, both were in-memory per replica: with N replicas behind a balancer a client got
 * N times its budget, and a password guesser N × 5 tries a minute.
 *
 * "Address" is `req.ip`, which honours TRUST_PROXY: behind a proxy with TRUST_PROXY=0 every client
 * has the proxy's address and shares one bucket (the server warns when it sees X-Forwarded-For).
 * Counter keys are hashes: an address comes from a header, so it may hold any bytes (even a NUL,
 * which the database would refuse) and is never stored or logged as such.
 */
import { createHash } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";

export type RateLimitStore = Pick<Store, "hitRateLimit" | "clearRateLimit">;

/** `<scope>:<hash of the parts>`: fixed length, plain ASCII, whatever the parts hold. */
export function counterKey(scope: string, ...parts: string[]): string {
  return `${scope}:${createHash("sha256").update(parts.join("\n")).digest("base64url").slice(0, 32)}`;
}

/**
 * Whole seconds until a window resets, at least 1 and at most the window. The reset time comes
 * from the database clock; the bounds keep a skewed process clock from giving absurd answers.
 */
export function secondsUntil(resetAt: Date, now: number, windowMs: number): number {
  const s = Math.ceil((resetAt.getTime() - now) / 1000);
  return Math.min(Math.max(s, 1), Math.ceil(windowMs / 1000));
}

/** Counts one hit; a store failure is a 503 (the request is refused rather than let through unlimited). */
async function hit(store: RateLimitStore, key: string, windowMs: number, logger: Logger): Promise<{ hits: number; resetAt: Date }> {
  try {
    return await store.hitRateLimit(key, windowMs);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "rate-limit counter unavailable");
    throw new PoolError("NOT_READY", "The pool manager cannot count requests right now; try again shortly.");
  }
}

export interface MutationLimitOptions {
  store: RateLimitStore;
  /** Requests per window per client. */
  max: number;
  windowMs: number;
  /** Which client a request is from (address + key tag); hashed before use. */
  clientOf: (req: FastifyRequest) => string;
  logger: Logger;
  now?: () => number;
}

/**
 * onRequest hook for mutating routes, placed after authentication: unauthenticated requests are
 * refused before they count. Over the limit: 429 RATE_LIMITED with Retry-After. Every answer
 * carries X-RateLimit-Limit/-Remaining/-Reset, as @fastify/rate-limit did.
 */
export function mutationLimit(o: MutationLimitOptions) {
  const now = o.now ?? Date.now;
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const { hits, resetAt } = await hit(o.store, counterKey("api", o.clientOf(req)), o.windowMs, o.logger);
    const wait = secondsUntil(resetAt, now(), o.windowMs);
    reply.header("x-ratelimit-limit", String(o.max));
    reply.header("x-ratelimit-remaining", String(Math.max(0, o.max - hits)));
    reply.header("x-ratelimit-reset", String(wait));
    if (hits > o.max) {
      reply.header("retry-after", String(wait));
      throw new PoolError("RATE_LIMITED", `Too many requests; retry in ${wait} s.`, { retryAfter: wait });
    }
  };
}

/**
 * Sign-in attempts per address per window. An attempt is counted BEFORE the password is checked,
 * so parallel guesses cannot all slip through on a stale count; a successful sign-in clears the
 * address's window, so in effect only failures accumulate.
 */
export class LoginThrottle {
  constructor(readonly o: { store: RateLimitStore; max: number; windowMs: number; logger: Logger; now?: () => number }) {}

  /** Counts an attempt from `address`: 0 when it may go ahead, else the seconds to wait. */
  async attempt(address: string): Promise<number> {
    const { hits, resetAt } = await hit(this.o.store, counterKey("login", address), this.o.windowMs, this.o.logger);
    return hits > this.o.max ? secondsUntil(resetAt, (this.o.now ?? Date.now)(), this.o.windowMs) : 0;
  }

  /** A successful sign-in forgets the address's failures. */
  async succeeded(address: string): Promise<void> {
    await this.o.store.clearRateLimit(counterKey("login", address)).catch((err: unknown) => {
      // Not fatal: the window expires on its own.
      this.o.logger.warn({ err: (err as Error).message }, "could not clear sign-in failures");
    });
  }
}
