/**
 * Time, ids and randomness are injected into every piece of logic, so tests drive them and never
 * sleep (River's stubbable time generator; agent-sandbox's `clockNow()`).
 */
import { randomBytes } from "node:crypto";

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  #t: number;
  constructor(start: Date | number = Date.UTC(2026, 0, 1)) {
    this.#t = typeof start === "number" ? start : start.getTime();
  }
  now(): Date {
    return new Date(this.#t);
  }
  advance(ms: number): void {
    this.#t += ms;
  }
}

const ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

/** A short random id (lowercase, so it is safe in service names and URLs). */
export function randomId(length = 12): string {
  const bytes = randomBytes(length);
  let out = "";
  for (const b of bytes) out += ALPHABET[b % ALPHABET.length];
  return out;
}

/** A secret token (hex, 256 bits). */
export function randomToken(): string {
  return randomBytes(32).toString("hex");
}

export interface IdSource {
  instanceId(): string;
  token(): string;
}

export const randomIds: IdSource = {
  instanceId: () => `i-${randomId(12)}`,
  token: randomToken,
};
