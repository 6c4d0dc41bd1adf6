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
  "req.headers.cookie",
  'res.headers["set-cookie"]',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): PinoLogger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: "[redacted]" }, base: { service: "agent-pool" } }, destination as never);
}

export const silentLogger: Logger = pino({ level: "silent" });
