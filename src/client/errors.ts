/**
 * Errors of the client. The server answers every failure with `{error, code}` (src/errors.ts);
 * `PoolApiError` carries them as they came, so callers branch on the stable code, never on a
 * message. `PoolUnreachableError` is the one failure the server could not describe: no answer.
 */
import type { ErrorCode } from "../errors.ts";

/** A code of src/errors.ts, or one this client does not know yet (a newer server). */
export type ApiErrorCode = ErrorCode | (string & {});

export class PoolApiError extends Error {
  /** Stable code from the server (e.g. POOL_EMPTY, INSTANCE_NOT_FOUND). */
  readonly code: ApiErrorCode;
  /** HTTP status. */
  readonly status: number;
  /** The rest of the error body: safe details such as `instanceId` or `retryAfter`. */
  readonly details: Record<string, unknown>;
  /** Seconds from the Retry-After header (POOL_EMPTY, RATE_LIMITED), when the server sent one. */
  readonly retryAfterSeconds: number | undefined;

  constructor(init: { message: string; code: ApiErrorCode; status: number; details?: Record<string, unknown>; retryAfterSeconds?: number | undefined }) {
    super(init.message);
    this.name = "PoolApiError";
    this.code = init.code;
    this.status = init.status;
    this.details = init.details ?? {};
    this.retryAfterSeconds = init.retryAfterSeconds;
  }
}

/** No answer: connection refused or reset, or the request timed out. Safe to retry a claim (same key). */
export class PoolUnreachableError extends Error {
  readonly code = "UNREACHABLE" as const;
  readonly url: string;
  constructor(url: string, cause: unknown) {
    const why = cause instanceof Error ? ((cause as Error & { cause?: Error }).cause?.message ?? cause.message) : String(cause);
    super(`cannot reach the pool manager at ${url} (${why})`, { cause });
    this.name = "PoolUnreachableError";
    this.url = url;
  }
}

export function isPoolApiError(err: unknown, code?: ApiErrorCode): err is PoolApiError {
  return err instanceof PoolApiError && (code === undefined || err.code === code);
}
