/**
 * Text Postgres cannot store is refused at the door, wherever it comes from: body values and
 * object keys (nested), path parameters, query strings and headers.
 *
 * Postgres refuses NUL (U+0000) in `text` ("invalid byte sequence for encoding UTF8: 0x00") and
 * in `jsonb` (`\u0000` "cannot be converted to text"), and refuses an unpaired surrogate escape in
 * `jsonb`; in `text` an unpaired surrogate is silently replaced by U+FFFD by the driver's UTF-8
 * encoding, so what is stored is not what was sent. Before this check `GET
 * /api/pool/instances/%00`, `DELETE /api/pool/crashed/%00` and a claim whose agentName held a NUL
 * reached the database and answered 500 INTERNAL (issue 8). Refusing both at validation makes them
 * a 400 VALIDATION_FAILED, and no later code needs to think about it.
 *
 * Nesting is bounded too: the body limit allows a 30,000-deep array, which the recursive code
 * after this (zod, JSON.stringify, jsonb) would meet with a stack overflow. The walk itself is
 * iterative, so it never overflows.
 */
import type { FastifyRequest } from "fastify";
import { PoolError } from "../errors.ts";

/** NUL, or a surrogate code unit that is not half of a pair. */
const UNSTORABLE = /\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Deepest nesting of objects and arrays accepted in a request (a claim's metadata needs a few). */
export const MAX_DEPTH = 32;

export function isStorable(s: string): boolean {
  return !UNSTORABLE.test(s);
}

export interface Unstorable {
  /** Where: `body.metadata.a`, `params.id`, `query.q`, `headers.x-foo` (never the value). */
  path: string;
  problem: "character" | "depth";
}

/**
 * The first place in `value` holding text Postgres cannot store, or nested deeper than
 * `maxDepth`; null when there is none. Keys are checked as well as values.
 */
export function findUnstorable(value: unknown, root: string, maxDepth = MAX_DEPTH): Unstorable | null {
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: root, depth: 0 }];
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!;
    if (typeof v === "string") {
      if (!isStorable(v)) return { path, problem: "character" };
      continue;
    }
    if (v === null || typeof v !== "object") continue;
    if (depth >= maxDepth) return { path, problem: "depth" };
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: `${path}.${i}`, depth: depth + 1 });
      continue;
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i]!;
      // The key itself is not echoed when it is the problem: it may be the very bytes refused.
      if (!isStorable(k)) return { path: `${path}.<key>`, problem: "character" };
      stack.push({ v: (v as Record<string, unknown>)[k], path: `${path}.${k}`, depth: depth + 1 });
    }
  }
  return null;
}

/**
 * preValidation hook for every route: after the route's authentication (onRequest), before its
 * schema. Throws 400 VALIDATION_FAILED naming the place, never echoing the bytes.
 */
export async function refuseUnstorableInput(req: FastifyRequest): Promise<void> {
  const found =
    findUnstorable(req.params, "params") ?? findUnstorable(req.query, "query") ?? findUnstorable(req.headers, "headers") ?? findUnstorable(req.body, "body");
  if (!found) return;
  const where = found.path.replace(/[^\x20-\x7e]/g, "?").slice(0, 120);
  throw new PoolError(
    "VALIDATION_FAILED",
    found.problem === "depth"
      ? `Invalid request at ${where}: nested deeper than ${MAX_DEPTH} levels.`
      : `Invalid request at ${where}: contains a character that cannot be stored (NUL or an unpaired surrogate).`,
  );
}
