/**
 * The one registry of errors with stable codes. Code throws `PoolError`s; the HTTP layer maps the
 * code to a status and a body `{error, code}` and never shows a driver error or a stack.
 */

export const ERROR_CODES = {
  VALIDATION_FAILED: { status: 400, message: "The request is not valid." },
  JOIN_URL_NOT_ALLOWED: { status: 400, message: "This pool does not accept invite links of that host." },
  UNAUTHORIZED: { status: 401, message: "Missing or invalid API key." },
  NOT_FOUND: { status: 404, message: "Not found." },
  POOL_NOT_FOUND: { status: 404, message: "No such pool." },
  INSTANCE_NOT_FOUND: { status: 404, message: "No such instance." },
  RESOURCE_NOT_FOUND: { status: 404, message: "This instance has no such resource." },
  UPGRADE_NOT_FOUND: { status: 404, message: "No such upgrade job." },
  INVALID_TRANSITION: { status: 409, message: "The instance is not in a state that allows this." },
  POOL_EXISTS: { status: 409, message: "A pool with that id exists." },
  POOL_NOT_EMPTY: { status: 409, message: "The pool still holds instances." },
  CONFLICT: { status: 409, message: "It changed meanwhile; look again." },
  INSTANCE_PROTECTED: { status: 409, message: "The instance is protected; unprotect it first." },
  OPERATION_IN_PROGRESS: { status: 409, message: "Another operation (a release or an upgrade) is under way on this instance." },
  CLAIM_IN_PROGRESS: { status: 409, message: "A claim with this idempotency key is still running." },
  TOP_UP_OVER_MAX: { status: 409, message: "The spending limit would pass the configured maximum." },
  ALREADY_JOINED: { status: 409, message: "An agent of this pool has already joined (or is joining) that conversation." },
  PAYLOAD_TOO_LARGE: { status: 413, message: "The request body is too large." },
  RATE_LIMITED: { status: 429, message: "Too many requests; slow down." },
  POOL_EMPTY: { status: 503, message: "No idle instance is available. Try again shortly." },
  QUEUE_FULL: { status: 503, message: "Too many claims are already waiting for this pool. Try again shortly." },
  PROVISION_FAILED: { status: 502, message: "Every instance tried failed to provision." },
  PROVIDER_ERROR: { status: 502, message: "The compute provider failed." },
  RESOURCE_ERROR: { status: 502, message: "The resource vendor failed." },
  NOT_READY: { status: 503, message: "The pool manager is not ready yet." },
  DATA_DIR_LOCKED: { status: 500, message: "The data directory is in use by another process." },
  CONFIG_INVALID: { status: 500, message: "The configuration is not valid." },
  INTERNAL: { status: 500, message: "Internal error." },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class PoolError extends Error {
  readonly code: ErrorCode;
  /** Extra fields safe to show to the client (never secrets). */
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message ?? ERROR_CODES[code].message, options);
    this.name = "PoolError";
    this.code = code;
    this.details = details;
  }
  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}

export function isPoolError(err: unknown): err is PoolError {
  return err instanceof PoolError;
}
