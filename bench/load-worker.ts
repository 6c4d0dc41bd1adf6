/**
 * Runs in a worker thread: the instantly-answering runtimes and the claiming clients live on
 * their own event loop, so the pool manager's measured share is not queueing behind them.
 */
import { parentPort } from "node:worker_threads";
import { startInstantRuntimes } from "./instant-runtimes.ts";

const runtimes = await startInstantRuntimes();
parentPort!.postMessage({ type: "ready", url: runtimes.url });

parentPort!.on("message", async (m: { type: string; poolUrl: string; apiKey: string; clients: number; perClient: number }) => {
  if (m.type === "close") {
    await runtimes.close();
    parentPort!.close();
    return;
  }
  const lat: number[] = [];
  let error: string | null = null;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: m.clients }, async () => {
      for (let i = 0; i < m.perClient && !error; i++) {
        const t = performance.now();
        const res = await fetch(`${m.poolUrl}/api/pool/claim`, {
          method: "POST",
          headers: { authorization: `Bearer ${m.apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({ agentName: "bench", instructions: "answer fast" }),
        });
        const body = await res.text();
        if (res.status !== 200) error = `claim answered ${res.status}: ${body}`;
        lat.push(performance.now() - t);
      }
    }),
  );
  parentPort!.postMessage({ type: "done", lat, wallMs: performance.now() - t0, error });
});
