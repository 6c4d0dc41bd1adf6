#!/usr/bin/env node
// A minimal runtime for the fill benchmark on the Railway stand-in: the instance protocol on PORT,
// ready at once, in plain JavaScript (no TypeScript loader), so 100 of them start in a blink and
// the figure measures the pool manager's pacing, not runtime boots on a 2-core machine.
import { createServer } from "node:http";

const port = Number(process.env.PORT);
const token = process.env.GATEWAY_TOKEN ?? "";
let conversation = null;
const server = createServer((req, res) => {
  const json = (code, v) => {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify(v));
  };
  req.resume();
  req.on("end", () => {
    if (req.url === "/pool/health") return json(200, { ready: true, version: "tiny", runtime: "bench" });
    if (req.headers.authorization !== `Bearer ${token}`) return json(401, { error: "unauthorized" });
    if (req.url === "/convos/status")
      return json(200, { conversationId: conversation, inboxId: null, pending: false, clean: conversation === null, inviteUrl: null });
    if (req.url === "/pool/provision") {
      conversation = `conv-${token.slice(-8)}`;
      return json(200, { ok: true, inviteUrl: `http://bench.invalid/i/${conversation}`, conversationId: conversation, joined: false, status: "created" });
    }
    if (req.url === "/convos/reset") {
      conversation = null;
      return json(200, { ok: true, reset: true });
    }
    json(404, { error: "not found" });
  });
});
server.listen(port, "127.0.0.1", () => process.stdout.write(`listening on http://127.0.0.1:${port}\n`));
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
