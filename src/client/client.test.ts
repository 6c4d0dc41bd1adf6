import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseRetryAfter } from "./client.ts";

describe("parseRetryAfter", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  const cases: Array<[string | null, number | undefined]> = [
    [null, undefined],
    ["", undefined],
    ["7", 7],
    [" 30 ", 30],
    ["Thu, 01 Jan 2026 00:00:05 GMT", 5], // an HTTP date: seconds from now, rounded up
    ["Wed, 31 Dec 2025 23:59:00 GMT", 0], // in the past: retry now
    ["soon", undefined],
    ["-1", undefined],
  ];
  for (const [header, want] of cases) it(`${JSON.stringify(header)} → ${want}`, () => assert.equal(parseRetryAfter(header, now), want));
});
