import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { startRuntime, type RunningRuntime } from "../runtime/server.ts";
import { InstanceClient } from "./client.ts";

/** A runtime stand-in that records the paths it was asked for. */
async function stub(health: (authed: boolean) => Record<string, unknown>): Promise<{ url: string; paths: string[]; server: Server }> {
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? "");
    const authed = req.headers.authorization === "Bearer tok";
    res.writeHead(200, { "content-type": "application/json" });
    if (req.url === "/pool/health") return res.end(JSON.stringify(health(authed)));
    if (req.url === "/convos/status") return res.end(JSON.stringify({ conversationId: "c-2", inboxId: null, pending: false, clean: false }));
    res.end("{}");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`, paths, server };
}

describe("InstanceClient.check: one request per check where the runtime allows it", () => {
  const client = new InstanceClient();
  const servers: Server[] = [];
  let runtime: RunningRuntime | null = null;
  after(async () => {
    await client.close();
    for (const s of servers) s.close();
    await runtime?.close();
  });

  it("a runtime that says its binding on /pool/health is asked once", async () => {
    const s = await stub((authed) => ({
      ready: true,
      version: "1",
      runtime: "hermes",
      ...(authed ? { conversationId: "c-1", pending: false, clean: false } : {}),
    }));
    servers.push(s.server);
    const r = await client.check({ url: s.url, gatewayToken: "tok" }, 2_000);
    assert.deepEqual(s.paths, ["/pool/health"]);
    assert.deepEqual(r.health, { ready: true, conversationId: "c-1", pending: false, clean: false, version: "1", runtime: "hermes" });
  });

  it("one that does not (the earlier system's runtimes) is asked twice, as before", async () => {
    const s = await stub(() => ({ ready: true, version: "1", runtime: "openclaw" }));
    servers.push(s.server);
    const r = await client.check({ url: s.url, gatewayToken: "tok" }, 2_000);
    assert.deepEqual(s.paths, ["/pool/health", "/convos/status"]);
    assert.equal(r.health?.conversationId, "c-2");
  });

  it("the reference runtime answers its binding to its pool only: a stranger learns nothing", async () => {
    runtime = await startRuntime({ port: 0, gatewayToken: "secret-token", bootDelayMs: 0, log: () => undefined });
    const target = { url: runtime.url, gatewayToken: "secret-token" };
    const before = await client.check(target, 2_000);
    assert.deepEqual([before.health?.clean, before.health?.conversationId], [true, null]);
    await client.provision(target, { agentName: "Ada", instructions: "x" }, 5_000);
    const after = await client.check(target, 2_000);
    assert.ok(after.health?.conversationId, "bound, from the one health answer");
    const anonymous = (await (await fetch(`${runtime.url}/pool/health`)).json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(anonymous).sort(), ["ready", "runtime", "version"]);
    const wrong = (await (await fetch(`${runtime.url}/pool/health`, { headers: { authorization: "Bearer nope" } })).json()) as Record<string, unknown>;
    assert.equal("conversationId" in wrong, false);
  });
});
