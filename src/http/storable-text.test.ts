import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MAX_DEPTH, findUnstorable, isStorable } from "./storable-text.ts";

describe("isStorable", () => {
  const cases: Array<[string, string, boolean]> = [
    ["plain", "Ada", true],
    ["empty", "", true],
    ["accents and emoji (a surrogate pair)", "Zoë 😀", true],
    ["the replacement character", "\ufffd", true],
    ["a BOM, a right-to-left override", "\ufeff\u202e", true],
    ["an escaped NUL, as text", "\\u0000", true],
    ["NUL", "\u0000", false],
    ["NUL inside", "a\u0000b", false],
    ["a lone high surrogate", "\ud800", false],
    ["a lone low surrogate", "x\udc00", false],
    ["a high surrogate at the end", "ok\ud83d", false],
    ["two high surrogates", "\ud83d\ud83d\ude00", false],
    ["a reversed pair", "\ude00\ud83d", false],
  ];
  for (const [name, s, ok] of cases) it(`${name}: ${ok ? "storable" : "refused"}`, () => assert.equal(isStorable(s), ok));
});

describe("findUnstorable", () => {
  it("passes clean values of every JSON type", () => {
    assert.equal(findUnstorable({ a: [1, true, null, "x", { b: "😀" }], c: 1.5 }, "body"), null);
    assert.equal(findUnstorable(undefined, "body"), null);
    assert.equal(findUnstorable("plain", "body"), null);
  });

  it("names the place of a refused value, nested in objects and arrays", () => {
    assert.deepEqual(findUnstorable({ agentName: "a\u0000" }, "body"), { path: "body.agentName", problem: "character" });
    assert.deepEqual(findUnstorable({ metadata: { list: ["ok", "\ud800"] } }, "body"), { path: "body.metadata.list.1", problem: "character" });
    assert.deepEqual(findUnstorable("\u0000", "params"), { path: "params", problem: "character" });
  });

  it("checks keys too, without echoing the key", () => {
    assert.deepEqual(findUnstorable({ metadata: { "k\u0000": 1 } }, "body"), { path: "body.metadata.<key>", problem: "character" });
    assert.deepEqual(findUnstorable({ "\udfff": "v" }, "query"), { path: "query.<key>", problem: "character" });
  });

  it("refuses nesting deeper than MAX_DEPTH, without recursing (no stack overflow on 100,000 levels)", () => {
    let ok: unknown = 1;
    for (let i = 0; i < MAX_DEPTH; i++) ok = [ok];
    assert.equal(findUnstorable(ok, "body"), null);
    assert.equal(findUnstorable([ok], "body")?.problem, "depth");
    let deep: unknown = "x";
    for (let i = 0; i < 100_000; i++) deep = { a: deep };
    assert.equal(findUnstorable(deep, "body")?.problem, "depth");
  });

  it("finds the first problem in document order", () => {
    assert.equal(findUnstorable({ a: "ok", b: "\u0000", c: "\ud800" }, "body")?.path, "body.b");
  });
});
