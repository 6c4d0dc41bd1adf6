// A minimal agent runtime for the fault run: plain Node, no imports beyond built-ins, so dozens of
// them start in ~50 ms each on a 2-core machine (the reference runtime through tsx costs a second
// of CPU per start). It speaks the instance protocol (GET /pool/health, POST /pool/provision,
// GET /convos/status, POST /convos/reset, Bearer GATEWAY_TOKEN, PORT) and, before it answers,
// appends every provision and reset it receives to CHAOS_RECORD_DIR/<INSTANCE_ID>.jsonl: the
// runtimes' own record, which the run counts provisions from (a process killed right after it
// bound itself has still recorded it).
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";

const port = Number(process.env.PORT ?? "0");
const token = process.env.GATEWAY_TOKEN ?? "";
const instanceId = process.env.INSTANCE_ID ?? "unknown";
const recordDir = process.env.CHAOS_RECORD_DIR ?? "";
// Time between binding and answering: widens the window in which a pool manager can die mid-provision.
const provisionDelayMs = Number(process.env.CHAOS_PROVISION_DELAY_MS ?? "0");

let binding = null; // { conversationId, inviteUrl, agentName }
let generation = 0;

function record(entry) {
  if (!recordDir) return;
  appendFileSync(join(recordDir, `${instanceId}.jsonl`), `${JSON.stringify({ at: Date.now(), pid: process.pid, ...entry })}\n`);
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (data += c));
    req.on("end", () => {
      try {
        resolve(data ? JSON.parse(data) : {});
      } catch {
        resolve(null);
      }
    });
    req.on("error", () => resolve(null));
  });
}

function status() {
  return {
    conversationId: binding?.conversationId ?? null,
    inboxId: binding ? `inbox-${instanceId}-${generation}` : null,
    pending: false,
    clean: binding === null,
    inviteUrl: binding?.inviteUrl ?? null,
  };
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url ?? "/", "http://runtime.invalid").pathname;
  if (path === "/pool/health" && req.method === "GET") return send(res, 200, { ready: true, version: "chaos-runtime-1" });
  if (req.headers.authorization !== `Bearer ${token}`) return send(res, 401, { error: "Unauthorized" });
  if (path === "/convos/status" && req.method === "GET") return send(res, 200, status());
  if (path === "/convos/reset" && req.method === "POST") {
    await readBody(req);
    record({ event: "reset", conversationId: binding?.conversationId ?? null });
    binding = null;
    generation++;
    return send(res, 200, { ok: true, reset: true, status: status() });
  }
  if (path === "/pool/provision" && req.method === "POST") {
    const body = await readBody(req);
    const agentName = typeof body?.agentName === "string" ? body.agentName : null;
    if (binding !== null) {
      record({ event: "provision", accepted: false, agentName, conversationId: null });
      return send(res, 409, { error: "Already bound to a conversation; reset first" });
    }
    generation++;
    const conversationId = `conv-${instanceId}-${generation}`;
    binding = { conversationId, inviteUrl: `http://127.0.0.1:${port}/i/${conversationId}`, agentName };
    record({ event: "provision", accepted: true, agentName, conversationId });
    const mine = generation;
    if (provisionDelayMs > 0) await new Promise((r) => setTimeout(r, provisionDelayMs));
    if (generation !== mine) return send(res, 409, { error: "Runtime was reset while provisioning" });
    return send(res, 200, { ok: true, inviteUrl: binding.inviteUrl, conversationId, joined: false, status: "created" });
  }
  return send(res, 404, { error: "Not found" });
});
server.keepAliveTimeout = 5000;
server.listen(port, "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
