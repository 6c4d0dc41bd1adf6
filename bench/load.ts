/**
 * The claim benchmark's load generator, in a child process of its own (so neither its CPU nor its
 * event loop is counted as the pool manager's): `clients` concurrent clients each claim
 * `perClient` times back to back through the HTTP API, and it reports every latency.
 */
import { Agent, request } from "undici";

const agent = new Agent({ connections: 128, keepAliveTimeout: 30_000 });

type Message = { type: "load"; poolUrl: string; apiKey: string; clients: number; perClient: number } | { type: "close" };

process.on("message", async (m: Message) => {
  if (m.type === "close") {
    await agent.close();
    process.disconnect();
    return;
  }
  const lat: number[] = [];
  let error: string | null = null;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: m.clients }, async () => {
      for (let i = 0; i < m.perClient && !error; i++) {
        const t = performance.now();
        const res = await request(`${m.poolUrl}/api/pool/claim`, {
          method: "POST",
          dispatcher: agent,
          headers: { authorization: `Bearer ${m.apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({ agentName: "bench", instructions: "answer fast" }),
        });
        const body = await res.body.text();
        if (res.statusCode !== 200) error = `claim answered ${res.statusCode}: ${body}`;
        lat.push(performance.now() - t);
      }
    }),
  );
  process.send!({ type: "done", lat, wallMs: performance.now() - t0, error });
});
process.send!({ type: "spawned" });
