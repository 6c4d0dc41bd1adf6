/**
 * Bearer authentication with a constant-time comparison (the earlier system used `===`, seed §8).
 * Both sides are hashed first so the comparison also hides the key's length.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { PoolError } from "../errors.ts";

export function sameSecret(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearerFrom(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}

/**
 * Rejects requests without the API key. Used as an `onRequest` hook, so it runs before the body is
 * parsed and the schemas validate: without the key, every request is a 401 whatever it carries
 * (as a preHandler it ran after validation, and a bad body answered 400 to anyone, issue 8).
 */
export function requireApiKey(apiKey: string) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => {
    const token = bearerFrom(req.headers.authorization);
    if (token === null || !sameSecret(token, apiKey)) throw new PoolError("UNAUTHORIZED");
  };
}
