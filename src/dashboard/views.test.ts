import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { emptyCounts } from "../instance/status.ts";
import { poolStats } from "./views.ts";

const summary = (foreign: Array<{ ref: string; name: string; owner: string | null }>) => ({
  pool: "default",
  runtime: "default",
  templateHash: "",
  minIdle: 3,
  maxTotal: 10,
  counts: { ...emptyCounts(), idle: 3, total: 3 },
  foreign,
});

describe("pool bar: other owners' resources", () => {
  it("says nothing when there are none", () => {
    assert.doesNotMatch(String(poolStats(summary([]))), /foreign-notice/);
  });

  it("names the owner and the resources, escaped, and says they are left alone", () => {
    const out = String(
      poolStats(
        summary([
          { ref: "s1", name: "ap-default-i-1-k2f9q", owner: "k2f9q" },
          { ref: "s2", name: "<img src=x onerror=alert(1)>", owner: "k2f9q" },
        ]),
      ),
    );
    assert.match(out, /id="foreign-notice"/);
    assert.match(out, /2 resources named like this pool's/);
    assert.match(out, /another deployment \(owner k2f9q\)/);
    assert.match(out, /left alone/);
    assert.match(out, /&lt;img src=x onerror=alert\(1\)&gt;/);
    assert.doesNotMatch(out, /<img src=x/);
  });

  it("says when resources carry no owner at all (made before owner ids)", () => {
    const out = String(poolStats(summary([{ ref: "s3", name: "ap-default-i-old", owner: null }])));
    assert.match(out, /1 resource named like this pool's\s+belongs to no deployment \(made before owner ids\)/);
  });
});
