/**
 * `agent-pool/client`: the package's client entry point (package.json "exports"). It exports the
 * TypeScript source: the project has no build step and runs through tsx, so a consumer needs a
 * TypeScript-aware loader or bundler (tsx, esbuild, Vite) until the package gains a build.
 */
export { PoolClient, parseRetryAfter, type ClaimOptions, type PoolClientOptions } from "./client.ts";
export { PoolApiError, PoolUnreachableError, isPoolApiError, type ApiErrorCode } from "./errors.ts";
export * from "./contract.ts";
