import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ClaimBody } from "./api.ts";
import { joinUrlHostAllowed } from "../claim/join-url.ts";

describe("joinUrlHostAllowed", () => {
  const hosts = ["convos.org", "popup.convos.org", "127.0.0.1"];
  const cases: Array<[string, readonly string[] | undefined, boolean]> = [
    ["https://dev.convos.org/v2?i=x", undefined, true], // unset: any host
    ["https://convos.org/v2?i=x", hosts, true],
    ["https://CONVOS.org./v2?i=x", hosts, true], // case and a trailing dot do not matter
    ["https://popup.convos.org:8443/v2?i=x", hosts, true], // the port does not matter
    ["http://127.0.0.1:4000/i/abc", hosts, true],
    ["https://dev.convos.org/v2?i=x", hosts, false], // exact names: no subdomain by implication
    ["https://convos.org.evil.example/v2", hosts, false],
    ["https://user@evil.example/?convos.org", hosts, false],
  ];
  for (const [url, list, want] of cases) {
    it(`${url} with ${list ? list.join(",") : "no list"} → ${want}`, () => assert.equal(joinUrlHostAllowed(url, list), want));
  }
});

describe("ClaimBody", () => {
  it("accepts today's bodies: {joinUrl} alone, {} and unknown fields (dropped)", () => {
    assert.deepEqual(ClaimBody.parse({ joinUrl: "https://convos.org/v2?i=x" }), { joinUrl: "https://convos.org/v2?i=x" });
    assert.deepEqual(ClaimBody.parse({}), {});
    assert.deepEqual(ClaimBody.parse({ agentName: " Ada ", source: "landing", model: "claude", x: { y: 1 } }), { agentName: "Ada", source: "landing" });
  });

  it("still refuses bad values of known fields", () => {
    for (const body of [
      { agentName: "" },
      { agentName: 1 },
      { instructions: null },
      { source: "" },
      { source: "x".repeat(65) },
      { joinUrl: "javascript:alert(1)" },
      { waitMs: -1 },
      null,
      [],
    ]) {
      assert.equal(ClaimBody.safeParse(body).success, false, JSON.stringify(body));
    }
  });
});
