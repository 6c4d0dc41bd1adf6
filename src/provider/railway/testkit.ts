/**
 * A tiny in-process Railway fake for the provider's unit tests: it answers the provider's own
 * operations (routed on the operation name in the document, which only our documents carry),
 * records every request, and lets a test inject faults and a per-second limit. The schema-checked
 * stand-in (`test/railway/standin.ts`) is what the integration test runs against.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeInstance {
  environmentId: string;
  domain: string | null;
  image: string | null;
  /** Latest deployment status in this environment; null = no deployment. */
  status: string | null;
}

export interface FakeService {
  id: string;
  name: string;
  projectId: string;
  createdAt: string;
  instances: FakeInstance[];
  variables: Record<string, string>;
}

export interface FakeProject {
  id: string;
  name: string;
  environments: Array<{ id: string; name: string }>;
  services: FakeService[];
}

export interface FakeRequest {
  operation: string;
  variables: Record<string, unknown>;
  headers: IncomingHttpHeaders;
  query: string;
  at: number;
}

export interface FakeReply {
  status?: number;
  headers?: Record<string, string>;
  body: string | object;
  /** Wait this long before answering (timeouts). */
  delayMs?: number;
}

export class FakeRailway {
  readonly projects = new Map<string, FakeProject>();
  readonly requests: FakeRequest[] = [];
  /** Returns a reply to short-circuit normal handling (fault injection). */
  hook: ((req: FakeRequest) => FakeReply | undefined) | null = null;
  /** Headers added to every answer (e.g. `x-ratelimit-remaining`). */
  headers: Record<string, string> = {};
  /** Services per page the fake serves (the real page size is unverified). */
  pageSize = 100;
  /** Requests allowed per sliding second; beyond → 429 with Retry-After. */
  perSecondLimit: number | null = null;
  /** 429s sent. */
  throttled = 0;
  #server: Server | null = null;
  #nextId = 1;
  url = "";

  addProject(id: string, envs: Array<{ id: string; name: string }> = [{ id: `${id}-env-prod`, name: "production" }]): FakeProject {
    const p: FakeProject = { id, name: id, environments: envs, services: [] };
    this.projects.set(id, p);
    return p;
  }

  addService(projectId: string, name: string, instances: Array<Partial<FakeInstance> & { environmentId: string }>): FakeService {
    const p = this.projects.get(projectId)!;
    const s: FakeService = {
      id: `svc-${this.#nextId++}`,
      name,
      projectId,
      createdAt: new Date(Date.UTC(2026, 0, 1) + this.#nextId * 1000).toISOString(),
      instances: instances.map((i) => ({ domain: null, image: null, status: null, ...i })),
      variables: {},
    };
    p.services.push(s);
    return s;
  }

  findService(id: string): FakeService | undefined {
    for (const p of this.projects.values()) {
      const s = p.services.find((x) => x.id === id);
      if (s) return s;
    }
    return undefined;
  }

  count(operation: string): number {
    return this.requests.filter((r) => r.operation === operation).length;
  }

  async start(): Promise<string> {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let parsed: { query?: string; variables?: Record<string, unknown> } = {};
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          /* answered below */
        }
        const query = parsed.query ?? "";
        const operation = /^\s*(?:query|mutation)\s+(\w+)/.exec(query)?.[1] ?? "anonymous";
        const r: FakeRequest = { operation, variables: parsed.variables ?? {}, headers: req.headers, query, at: Date.now() };
        this.requests.push(r);
        const reply = this.#limit(r) ?? this.hook?.(r) ?? this.#handle(r);
        const send = () => {
          if (res.destroyed) return;
          const body = typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
          res.writeHead(reply.status ?? 200, {
            "content-type": typeof reply.body === "string" ? "text/html" : "application/json",
            ...this.headers,
            ...(reply.headers ?? {}),
          });
          res.end(body);
        };
        if (reply.delayMs) setTimeout(send, reply.delayMs);
        else send();
      });
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/graphql/v2`;
    return this.url;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  #limit(r: FakeRequest): FakeReply | undefined {
    if (this.perSecondLimit === null) return undefined;
    const recent = this.requests.filter((x) => x !== r && x.at > r.at - 1000 && x.operation !== "__throttled__");
    if (recent.length < this.perSecondLimit) return undefined;
    r.operation = "__throttled__";
    this.throttled++;
    return { status: 429, headers: { "retry-after": "1" }, body: { data: null, errors: [{ message: "Too many requests" }] } };
  }

  #handle(r: FakeRequest): FakeReply {
    const v = r.variables;
    const notAuthorized = (path: string) => ({ body: { data: null, errors: [{ message: "Not Authorized", path: [path] }] } });
    switch (r.operation) {
      case "ResolveEnvironments": {
        const data: Record<string, unknown> = {};
        for (const [k, id] of Object.entries(v)) {
          if (!/^p\d+$/.test(k)) continue;
          const p = this.projects.get(String(id));
          if (!p) return notAuthorized(k);
          data[k] = { id: p.id, name: p.name, environments: { edges: p.environments.map((e) => ({ node: e })) } };
        }
        if (v.w !== undefined) {
          data.w = {
            edges: [...this.projects.values()].map((p) => ({
              node: { id: p.id, name: p.name, environments: { edges: p.environments.map((e) => ({ node: e })) } },
            })),
            pageInfo: { hasNextPage: false },
          };
        }
        return { body: { data } };
      }
      case "PoolList":
      case "PoolListPage": {
        const data: Record<string, unknown> = {};
        for (const [k, id] of Object.entries(v)) {
          if (!/^p\d+$/.test(k)) continue;
          const p = this.projects.get(String(id));
          if (!p) return notAuthorized(k);
          const after = v[`a${k.slice(1)}`];
          const start = typeof after === "string" ? Number(after) : 0;
          const page = p.services.slice(start, start + this.pageSize);
          const end = start + page.length;
          data[k] = {
            id: p.id,
            services: {
              edges: page.map((s) => ({ node: serviceNode(s) })),
              pageInfo: { hasNextPage: end < p.services.length, endCursor: String(end) },
            },
          };
        }
        return { body: { data } };
      }
      case "ServiceCreate": {
        const input = v.input as { projectId: string; environmentId: string; name: string; source?: { image?: string }; variables?: Record<string, string> };
        const p = this.projects.get(input.projectId);
        if (!p) return notAuthorized("serviceCreate");
        if (p.services.length >= 100)
          return { body: { data: null, errors: [{ message: "Project has reached the maximum number of services", path: ["serviceCreate"] }] } };
        const s = this.addService(p.id, input.name, [{ environmentId: input.environmentId, image: input.source?.image ?? null, status: "QUEUED" }]);
        s.variables = { ...(input.variables ?? {}) };
        return { body: { data: { serviceCreate: { id: s.id, name: s.name, createdAt: s.createdAt } } } };
      }
      case "ServiceDomainCreate": {
        const input = v.input as { serviceId: string; environmentId: string };
        const s = this.findService(input.serviceId);
        const inst = s?.instances.find((i) => i.environmentId === input.environmentId);
        if (!s || !inst) return { body: { data: null, errors: [{ message: "Service not found", path: ["serviceDomainCreate"] }] } };
        inst.domain = `${s.name}.up.railway.test`;
        return { body: { data: { serviceDomainCreate: { id: `dom-${s.id}`, domain: inst.domain } } } };
      }
      case "ServiceDelete":
      case "ServiceDeleteInEnvironment": {
        const s = this.findService(String(v.id));
        if (!s) return { body: { data: null, errors: [{ message: "Service not found", path: ["serviceDelete"] }] } };
        const p = this.projects.get(s.projectId)!;
        if (v.environmentId) {
          s.instances = s.instances.filter((i) => i.environmentId !== v.environmentId);
          if (s.instances.length === 0) p.services.splice(p.services.indexOf(s), 1);
        } else {
          p.services.splice(p.services.indexOf(s), 1);
        }
        return { body: { data: { serviceDelete: true } } };
      }
      case "ServiceRename": {
        const s = this.findService(String(v.id));
        if (!s) return { body: { data: null, errors: [{ message: "Service not found", path: ["serviceUpdate"] }] } };
        s.name = (v.input as { name: string }).name;
        return { body: { data: { serviceUpdate: { id: s.id, name: s.name } } } };
      }
      case "ProjectCreate": {
        const input = v.input as { name: string; defaultEnvironmentName?: string };
        const id = `proj-new-${this.#nextId++}`;
        const p = this.addProject(id, [{ id: `${id}-env`, name: input.defaultEnvironmentName ?? "production" }]);
        p.name = input.name;
        return { body: { data: { projectCreate: { id: p.id, name: p.name, environments: { edges: p.environments.map((e) => ({ node: e })) } } } } };
      }
      case "ProjectServiceNames": {
        const p = this.projects.get(String(v.id));
        if (!p) return notAuthorized("project");
        return { body: { data: { project: { services: { edges: p.services.map((s) => ({ node: { id: s.id, name: s.name } })) } } } } };
      }
      case "TokenCheck": {
        const p = this.projects.get(String(v.id));
        return p ? { body: { data: { project: { id: p.id } } } } : notAuthorized("project");
      }
      case "ProjectTokenScope": {
        const p = [...this.projects.values()][0]!;
        return { body: { data: { projectToken: { projectId: p.id, environmentId: p.environments[0]!.id } } } };
      }
      default:
        return { status: 400, body: { errors: [{ message: `unknown operation ${r.operation}`, extensions: { code: "GRAPHQL_VALIDATION_FAILED" } }] } };
    }
  }
}

function serviceNode(s: FakeService): object {
  return {
    id: s.id,
    name: s.name,
    createdAt: s.createdAt,
    serviceInstances: {
      edges: s.instances.map((i) => ({
        node: {
          environmentId: i.environmentId,
          source: { image: i.image },
          domains: { serviceDomains: i.domain ? [{ domain: i.domain }] : [] },
          latestDeployment: i.status ? { id: `dep-${s.id}-${i.environmentId}`, status: i.status, createdAt: s.createdAt } : null,
        },
      })),
      pageInfo: { hasNextPage: false },
    },
    deployments: { edges: [] },
  };
}
