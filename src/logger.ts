/**
 * Logging: pino, with every field that can carry a secret redacted, so that no API key or gateway
 * token reaches a log line whatever object a caller passes in.
 */
import { pino, type Logger as PinoLogger } from "pino";

/** The subset of pino the code uses, so tests can pass a silent or capturing logger. */
export type Logger = Pick<PinoLogger, "info" | "warn" | "error" | "debug" | "child">;

export const REDACT_PATHS = [
  "gatewayToken",
  "*.gatewayToken",
  "apiKey",
  "*.apiKey",
  "token",
  "*.token",
  "password",
  "*.password",
  "authorization",
  "*.authorization",
  "req.headers.authorization",
  // Per-instance resources (issue 12): an instance's environment carries its own keys, and the
  // provisioning key is configuration; neither is ever logged on purpose, and these catch accidents.
  "env",
  "*.env",
  "OPENROUTER_API_KEY",
  "*.OPENROUTER_API_KEY",
  "provisioningKey",
  "*.provisioningKey",
  "req.headers.cookie",
  'res.headers["set-cookie"]',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): PinoLogger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: "[redacted]" }, base: { service: "agent-pool" } }, destination as never);
}

export const silentLogger: Logger = pino({ level: "silent" });
