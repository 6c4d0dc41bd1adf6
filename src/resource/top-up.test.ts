import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { roundCents, topUpLimit } from "./top-up.ts";

describe("topUpLimit", () => {
  const cases: Array<[name: string, current: number | null, amount: number, max: number, expected: number | RegExp]> = [
    ["adds the amount", 20, 20, 100, 40],
    ["up to the maximum exactly", 80, 20, 100, 100],
    ["cents add up as cents", 0.1, 0.2, 100, 0.3],
    ["past the maximum is refused, saying how much is left", 90, 20, 100, /above the maximum of \$100\.00; at most \$10\.00 more/],
    ["at the maximum already", 100, 1, 100, /already \$100\.00/],
    ["a limit above the maximum (set by hand) is not raised", 150, 1, 100, /already \$150\.00/],
    ["zero", 20, 0, 100, /positive/],
    ["negative", 20, -5, 100, /positive/],
    ["not a number", 20, Number.NaN, 100, /positive/],
    ["infinite", 20, Number.POSITIVE_INFINITY, 100, /positive/],
    ["fractions of a cent", 20, 0.001, 100, /whole cents/],
    ["no limit to raise", null, 10, 100, /no spending limit/],
  ];
  for (const [name, current, amount, max, expected] of cases) {
    it(name, () => {
      const d = topUpLimit(current, amount, max);
      if (typeof expected === "number") assert.deepEqual(d, { ok: true, limit: expected });
      else {
        assert.equal(d.ok, false);
        assert.match(d.ok ? "" : d.reason, expected);
      }
    });
  }

  it("rounds to cents", () => {
    assert.equal(roundCents(0.1 + 0.2), 0.3);
    assert.equal(roundCents(19.999), 20);
  });
});
