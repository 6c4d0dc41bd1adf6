/**
 * The claim under contention, on real Postgres: three pool-manager replicas (each with its own
 * pg pool and claim service) share 60 idle instances and take 200 concurrent claims. Exactly 60
 * succeed, on 60 distinct instances, each provisioned once; the rest get POOL_EMPTY; no row is
 * left in `claiming`.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { ClaimService } from "../src/claim/claim.ts";
import { systemClock } from "../src/clock.ts";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { PoolError } from "../src/errors.ts";
import { InstanceClient } from "../src/instance/client.ts";
import { silentLogger } from "../src/logger.ts";
import { startTestPostgres } from "./support/postgres.ts";

describe("200 concurrent claims across 3 replicas on Postgres", () => {
  let pg: { url: string; stop(): Promise<void> };
  const stores: Store[] = [];
  let runtimes: Server;
  let runtimesUrl = "";
  // One HTTP server answers for all 60 instances (told apart by their gateway token); it counts
  // provisions per instance so a double claim would show.
  const provisions = new Map<string, number>();

  before(async () => {
    pg = await startTestPostgres();
    for (let i = 0; i < 3; i++) stores.push(await openStore({ databaseUrl: pg.url, postgres: { poolMax: 6 } }));
    runtimes = createServer((req, res) => {
      const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => {
        if (req.url === "/pool/provision") {
          provisions.set(token, (provisions.get(token) ?? 0) + 1);
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ ok: true, inviteUrl: `http://x/i/${token}`, conversationId: `conv-${token}`, joined: false, status: "created" }));
        } else {
          res.writeHead(404);
          res.end();
        }
      });
    });
    await new Promise<void>((r) => runtimes.listen(0, "127.0.0.1", r));
    const addr = runtimes.address();
    runtimesUrl = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;

    const s = stores[0]!;
    await s.upsertPool({ id: "default", minIdle: 0, maxTotal: 100 });
    for (let i = 0; i < 60; i++) {
      const id = `i-${String(i).padStart(3, "0")}`;
      await s.insertInstance({ id, poolId: "default", provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "seed" });
      await s.setProviderRef(id, `ref-${id}`, runtimesUrl, "SUCCESS");
      await s.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "seed" });
    }
  });

  after(async () => {
    for (const s of stores) await s.close();
    runtimes?.close();
    await pg?.stop();
  });

  it("gives exactly 60 distinct instances and 140 POOL_EMPTY", async () => {
    const clients = stores.map(() => new InstanceClient());
    const services = stores.map(
      (store, i) =>
        new ClaimService({
          store,
          client: clients[i]!,
          clock: systemClock,
          logger: silentLogger,
          defaultPool: "default",
          owner: `replica-${i}`,
          provisionTimeoutMs: 10_000,
        }),
    );
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, n) => services[n % 3]!.claim({ agentName: `agent-${n}`, instructions: "be brief" })),
    );
    const ok = results.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<{ instanceId: string }>).value);
    const failed = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as unknown);
    assert.equal(ok.length, 60, "exactly 60 claims succeed");
    assert.equal(new Set(ok.map((r) => r.instanceId)).size, 60, "on 60 distinct instances");
    assert.equal(failed.length, 140);
    for (const err of failed) {
      assert.ok(err instanceof PoolError, String(err));
      assert.equal(err.code, "POOL_EMPTY");
    }
    assert.equal(provisions.size, 60, "every instance provisioned");
    assert.ok(
      [...provisions.values()].every((n) => n === 1),
      "none provisioned twice",
    );
    const counts = await stores[0]!.countByStatus("default");
    assert.equal(counts.claiming, 0, "no row left in claiming");
    assert.equal(counts.claimed, 60);
    assert.equal(counts.idle, 0);
    await Promise.all(clients.map((c) => c.close()));
  });
});
