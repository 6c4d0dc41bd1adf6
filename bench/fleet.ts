/**
 * Loopback runtimes for the benchmarks, in a child process of their own (so the pool manager's CPU
 * counters do not include them): real HTTP servers that speak the instance protocol
 * (`/pool/health`, `/convos/status`, `/pool/provision`, `/convos/reset`) for any number of
 * instances.
 *
 * - `endpoints: N` opens N listeners, one per loopback address (`127.a.b.c`, all on one port):
 *   each instance gets its own origin, as on Railway, and a killed instance refuses connections.
 *   Each endpoint answers after its own latency, spread evenly over `latencyMs` (e.g. 20–80 ms);
 *   `hangRate` of the health requests (chosen at random per request) never get an answer, so the
 *   client waits for its timeout (a wedged runtime; per request rather than per instance, so the
 *   fleet stays stable instead of slowly replacing its hung instances).
 * - `endpoints: 0` opens one listener for every instance (told apart by their gateway token): the
 *   claim benchmark's instances, answering at once or after `provisionMs`.
 *
 * Driven over IPC by bench/run.ts: `start`, `kill` (close one endpoint and its connections),
 * `stats` (requests served by kind, this process's CPU).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export interface FleetStart {
  type: "start";
  /** One listener per instance (0: one shared listener). */
  endpoints: number;
  latencyMs: [number, number];
  hangRate: number;
  /** Extra delay of a provision (the claim benchmark's slow instances). */
  provisionMs: number;
}

export type FleetMessage = FleetStart | { type: "kill"; index: number } | { type: "stats" } | { type: "close" };

export interface FleetStats {
  type: "stats";
  requests: { health: number; status: number; provision: number; reset: number; hung: number };
  cpu: NodeJS.CpuUsage;
}

/** Loopback address of endpoint `i` (every 127/8 address is local on Linux). */
export function endpointAddress(i: number): string {
  return `127.${1 + Math.floor(i / 62_500)}.${1 + (Math.floor(i / 250) % 250)}.${1 + (i % 250)}`;
}

const requests = { health: 0, status: 0, provision: 0, reset: 0, hung: 0 };
const bound = new Map<string, string>();
const servers: Array<{ server: Server; sockets: Set<Socket> } | null> = [];
let config: FleetStart;

function handler(latency: number) {
  return (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      const json = (code: number, v: unknown, delay = latency) => {
        const send = () => {
          if (res.destroyed) return;
          res.writeHead(code, { "content-type": "application/json" });
          res.end(JSON.stringify(v));
        };
        if (delay > 0) setTimeout(send, delay);
        else send();
      };
      switch (req.url) {
        case "/pool/health":
          requests.health++;
          if (config.hangRate > 0 && Math.random() < config.hangRate) {
            requests.hung++;
            return; // never answered: the client times out
          }
          return json(200, { ready: true, version: "bench", runtime: "fleet" });
        case "/convos/status": {
          requests.status++;
          const conv = bound.get(token) ?? null;
          return json(200, { conversationId: conv, inboxId: null, pending: false, clean: conv === null, inviteUrl: null });
        }
        case "/pool/provision": {
          requests.provision++;
          const conv = `conv-${token.slice(-12)}`;
          bound.set(token, conv);
          return json(
            200,
            { ok: true, inviteUrl: `http://bench.invalid/i/${conv}`, conversationId: conv, joined: false, status: "created" },
            latency + config.provisionMs,
          );
        }
        case "/convos/reset":
          requests.reset++;
          bound.delete(token);
          return json(200, { ok: true, reset: true });
        default:
          return json(404, { error: "not found" });
      }
    });
  };
}

async function listen(host: string, port: number, latency: number): Promise<{ server: Server; sockets: Set<Socket>; port: number }> {
  const server = createServer(handler(latency));
  // Short keep-alive: 10,000 endpoints must not hold 10,000 idle sockets each side.
  server.keepAliveTimeout = 2_000;
  const sockets = new Set<Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return { server, sockets, port: typeof addr === "object" && addr ? addr.port : port };
}

async function start(m: FleetStart): Promise<string[]> {
  config = m;
  const [lo, hi] = m.latencyMs;
  if (m.endpoints === 0) {
    const s = await listen("127.0.0.1", 0, lo);
    servers.push(s);
    return [`http://127.0.0.1:${s.port}`];
  }
  // One port for every address: the first listener picks it.
  const first = await listen(endpointAddress(0), 0, lo);
  servers.push(first);
  const urls = [`http://${endpointAddress(0)}:${first.port}`];
  for (let i = 1; i < m.endpoints; i++) {
    // Latencies spread evenly over [lo, hi] (a fixed permutation, so neighbours differ).
    const latency = Math.round(lo + (((i * 7919) % m.endpoints) / Math.max(1, m.endpoints - 1)) * (hi - lo));
    servers.push(await listen(endpointAddress(i), first.port, latency));
    urls.push(`http://${endpointAddress(i)}:${first.port}`);
  }
  return urls;
}

process.on("message", async (m: FleetMessage) => {
  switch (m.type) {
    case "start":
      process.send!({ type: "ready", urls: await start(m) });
      return;
    case "kill": {
      const s = servers[m.index];
      servers[m.index] = null;
      if (s) {
        s.server.close();
        for (const sock of s.sockets) sock.destroy();
      }
      process.send!({ type: "killed", index: m.index });
      return;
    }
    case "stats":
      process.send!({ type: "stats", requests: { ...requests }, cpu: process.cpuUsage() } satisfies FleetStats);
      return;
    case "close":
      for (const s of servers) {
        s?.server.close();
        for (const sock of s?.sockets ?? []) sock.destroy();
      }
      process.disconnect();
      return;
  }
});
process.send!({ type: "spawned" });
