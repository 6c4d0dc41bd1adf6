import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { inMemoryPglite, type TestDatabase } from "../../test/support/databases.ts";
import type { Store } from "../db/store.ts";
import { emptyCounts } from "./history.ts";
import { Cleaner } from "./cleaner.ts";

describe("Cleaner: pool history retention (issue 13)", () => {
  let db: TestDatabase;
  let store: Store;
  before(async () => {
    db = await inMemoryPglite();
    store = await db.open();
  });
  after(async () => {
    await store?.close();
    await db?.stop();
  });

  it("prunes minutes past the history retention and keeps the rest", async () => {
    await store.upsertPool({ id: "p", minIdle: 0, maxTotal: 1 });
    const at = (ageMs: number) => ({ ...emptyCounts(), poolId: "p", ageMs, claimsWarm: 1, snapshot: null });
    await store.addPoolHistory([at(9 * 86_400_000)]);
    await store.addPoolHistory([at(86_400_000)]);
    await store.addPoolHistory([at(0)]);
    const r = await new Cleaner({ store, eventRetentionMs: 86_400_000, claimRecordRetentionMs: 86_400_000 }).runOnce();
    assert.equal(r.history, 1);
    assert.equal((await store.poolHistory("p", 30 * 86_400_000)).rows.length, 2);
    const short = await new Cleaner({ store, eventRetentionMs: 86_400_000, claimRecordRetentionMs: 86_400_000, historyRetentionMs: 3_600_000 }).runOnce();
    assert.equal(short.history, 1);
    assert.equal((await store.poolHistory("p", 30 * 86_400_000)).rows.length, 1);
  });
});
