/**
 * One HTTP server that answers the instance protocol instantly for any number of instances (told
 * apart by their gateway token), so benchmarks measure the pool manager, not a runtime.
 */
import { createServer, type Server } from "node:http";

export async function startInstantRuntimes(): Promise<{ url: string; close(): Promise<void> }> {
  const bound = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const json = (code: number, v: unknown) => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(v));
      };
      if (req.url === "/pool/health") return json(200, { ready: true, version: "bench", runtime: "instant" });
      if (req.url === "/convos/status") {
        const conv = bound.get(token) ?? null;
        return json(200, { conversationId: conv, inboxId: null, pending: false, clean: conv === null, inviteUrl: null });
      }
      if (req.url === "/pool/provision") {
        const conv = `conv-${token.slice(-12)}`;
        bound.set(token, conv);
        return json(200, { ok: true, inviteUrl: `http://bench.invalid/i/${conv}`, conversationId: conv, joined: false, status: "created" });
      }
      if (req.url === "/convos/reset") {
        bound.delete(token);
        return json(200, { ok: true, reset: true });
      }
      json(404, { error: "not found" });
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}
