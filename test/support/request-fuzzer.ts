/**
 * Random HTTP requests from a seeded PRNG, for the fuzz test of every route: real routes with
 * random parameters, random methods, query strings, headers and bodies (JSON of every type, deep
 * and large values, NUL and lone surrogates, malformed JSON, wrong content types, forms), with and
 * without credentials. The same seed gives the same requests, given the same state.
 */

/** mulberry32: small, fast, good enough to pick test inputs. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
  remoteAddress: string;
}

/** What the generator may use: the routes, and credentials and ids that are valid right now. */
export interface FuzzContext {
  routes: ReadonlyArray<{ method: string; url: string }>;
  apiKey: string;
  /** `name=value` of a signed-in dashboard session, and its CSRF token. */
  sessionCookie: string;
  csrf: string;
  instanceIds: readonly string[];
  inviteUrls: readonly string[];
  bodyLimit: number;
}

const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const ADDRESSES = ["127.0.0.1", "10.0.0.7", "192.0.2.1", "192.0.2.2", "198.51.100.9", "203.0.113.5", "::1", "2001:db8::7"];
const SPECIAL_TEXT = [
  "\u0000",
  "a\u0000b",
  "\ud800",
  "x\udc00y",
  "\udbff\udfff",
  "😀",
  "ünïcødé",
  "\u202eevil",
  "<script>alert(1)</script>",
  "'; DROP TABLE instances; --",
  "../../etc/passwd",
  "\r\n",
  " ",
  "",
  "null",
  "%00",
  "\\u0000",
  "\ufeff",
  "\u00a0",
];
const SPECIAL_SEGMENTS = [
  "%00",
  "a%00b",
  "%C3%BC",
  "%F0%9F%98%80",
  "..%2F..%2Fetc%2Fpasswd",
  "%2e%2e",
  "..",
  "%ED%A0%80",
  "%FF",
  "%",
  "%2",
  "%20",
  "%0A",
  "i-",
  "null",
  "-1",
  "0",
  "%27%3B%20DROP%20TABLE%20instances%3B--",
  "%E2%80%AE",
  "%5C",
];

export class RequestFuzzer {
  readonly #r: () => number;
  constructor(seed: number) {
    this.#r = prng(seed);
  }

  #chance(p: number): boolean {
    return this.#r() < p;
  }
  #int(min: number, max: number): number {
    return min + Math.floor(this.#r() * (max - min + 1));
  }
  #pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.#r() * xs.length)]!;
  }

  /** A string mixing plain characters with the awkward ones. */
  text(maxLen = 24): string {
    if (this.#chance(0.25)) return this.#pick(SPECIAL_TEXT);
    const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_ .:/?#=&%\"'<>{}[]\\";
    let s = "";
    const n = this.#int(0, maxLen);
    for (let i = 0; i < n; i++) s += this.#chance(0.08) ? this.#pick(SPECIAL_TEXT) : alphabet[this.#int(0, alphabet.length - 1)];
    return s;
  }

  /** Any JSON value, nested up to `depth`. */
  json(depth = 3): unknown {
    const k = this.#int(0, depth > 0 ? 7 : 4);
    switch (k) {
      case 0:
        return null;
      case 1:
        return this.#chance(0.5);
      case 2:
        return this.#pick([0, -1, 1, 1.5, 20, 21, 2 ** 31, -(2 ** 53), 1e308, -1e-308, this.#int(-100, 100)]);
      case 3:
      case 4:
        return this.text();
      case 5:
        return Array.from({ length: this.#int(0, 4) }, () => this.json(depth - 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = this.#int(0, 4); i > 0; i--) o[this.text(10)] = this.json(depth - 1);
        return o;
      }
    }
  }

  /** A claim body that is valid, or nearly: one field replaced, dropped, added or poisoned. */
  claimBody(ctx: FuzzContext): Record<string, unknown> {
    const b: Record<string, unknown> = { agentName: `Agent ${this.#int(1, 999)}`, instructions: this.#chance(0.5) ? "Be brief." : "" };
    if (this.#chance(0.2)) b.joinUrl = ctx.inviteUrls.length && this.#chance(0.7) ? this.#pick(ctx.inviteUrls) : `https://example.com/i/${this.#int(1, 99)}`;
    if (this.#chance(0.2)) b.profileImage = "https://example.com/a.png";
    if (this.#chance(0.3)) b.metadata = { team: this.text(8), n: this.#int(0, 9), nested: { deep: [this.text(6)] } };
    if (this.#chance(0.1)) b.pool = this.#pick(["default", "other", "Not A Pool"]);
    if (this.#chance(0.1)) b.waitMs = this.#pick([0, 10, 50, -1, 1.5, 10_000_000]);
    if (this.#chance(0.1)) b.source = this.#pick(["landing", "cli", this.text(8)]);
    const mutations = this.#chance(0.5) ? 0 : this.#int(1, 2);
    for (let i = 0; i < mutations; i++) {
      const field = this.#pick(["agentName", "instructions", "joinUrl", "profileImage", "metadata", "pool", "waitMs", "source", "extra"]);
      const m = this.#int(0, 4);
      if (m === 0) delete b[field];
      else if (m === 1) b[field] = this.json(2);
      else if (m === 2) b[field] = `${String(b[field] ?? "x")}${this.#pick(["\u0000", "\ud800", "\udfff"])}`;
      else if (m === 3) b.metadata = { [`k${this.#pick(["\u0000", "\ud83d", ""])}`]: this.json(1) };
      else b[field] = "x".repeat(this.#int(190, 60_000));
    }
    return b;
  }

  #deep(levels: number): string {
    const open = this.#chance(0.5) ? "[" : '{"a":';
    const close = open === "[" ? "]" : "}";
    return `${open.repeat(levels)}1${close.repeat(levels)}`;
  }

  #body(ctx: FuzzContext, method: string, url: string): { payload?: string | Buffer; contentType?: string } {
    // Mostly the body the route expects (so handlers run, not only the guards), else anything.
    if (this.#chance(0.6)) {
      if (url.startsWith("/api/pool/claim")) return { payload: JSON.stringify(this.claimBody(ctx)), contentType: "application/json" };
      if (/^\/api\/pool\/(replenish|drain)/.test(url))
        return { payload: JSON.stringify({ count: this.#pick([1, 2, 20, 0, 21, "1"]) }), contentType: "application/json" };
    }
    const k = this.#r();
    if (k < 0.2) return {};
    if (k < 0.4) return { payload: JSON.stringify(this.claimBody(ctx)), contentType: "application/json" };
    if (k < 0.48) return { payload: JSON.stringify({ count: this.#pick([1, 2, 0, -1, 21, 1.5, "3", null, 20]) }), contentType: "application/json" };
    if (k < 0.6) return { payload: JSON.stringify(this.json(4)), contentType: this.#pick(["application/json", "application/json; charset=utf-8"]) };
    if (k < 0.64)
      return {
        payload: this.#pick([
          "{",
          '{"a":}',
          "[1,2",
          "nul",
          '{"agentName":"a\\u0000"}',
          '{"a":"\\ud800"}',
          '"str"',
          "",
          "{}garbage",
          '{"__proto__":{"x":1}}',
          '{"constructor":{"prototype":{"x":1}}}',
        ]),
        contentType: "application/json",
      };
    if (k < 0.67) return { payload: this.#deep(this.#int(30, 8000)), contentType: "application/json" };
    if (k < 0.7)
      return {
        payload: JSON.stringify({ agentName: "big", instructions: "y".repeat(this.#int(ctx.bodyLimit - 100, ctx.bodyLimit + 100)) }),
        contentType: "application/json",
      };
    if (k < 0.72)
      return { payload: Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xed, 0xa0, 0x80, 0x22, 0x7d]), contentType: "application/json" };
    if (k < 0.9) {
      const form = new URLSearchParams();
      if (this.#chance(0.6)) form.set("_csrf", this.#chance(0.8) ? ctx.csrf : this.text(43));
      if (this.#chance(0.3)) form.set("password", this.#chance(0.3) ? ctx.apiKey : this.text(20));
      if (this.#chance(0.5)) form.set("mode", this.#pick(["new", "join", "other", ""]));
      if (this.#chance(0.6)) form.set("agentName", this.#chance(0.7) ? `Form agent ${this.#int(1, 99)}` : this.text());
      if (this.#chance(0.4)) form.set("instructions", this.text(40));
      if (this.#chance(0.3)) form.set("joinUrl", ctx.inviteUrls.length && this.#chance(0.6) ? this.#pick(ctx.inviteUrls) : this.text());
      if (this.#chance(0.4)) form.set("count", String(this.#pick([1, 2, 0, 21, -3, "x", 1.5])));
      if (this.#chance(0.2)) form.append(this.text(6), this.text(6));
      let payload = form.toString();
      if (this.#chance(0.2)) payload += this.#pick(["&x=%00", "&%00=1", "&y=%ED%A0%80", "&%", "&z=%FF", "&&&=", "&agentName=a%00"]);
      return { payload, contentType: "application/x-www-form-urlencoded" };
    }
    return {
      payload: this.#pick(["<claim/>", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--", "plain text \u0000", "\u0000\u0001\u0002"]),
      contentType: this.#pick([
        "application/xml",
        "multipart/form-data; boundary=b",
        "text/plain",
        "application/octet-stream",
        "application/json-patch+json",
        "garbage",
        method === "POST" ? "application/x-www-form-urlencoded; charset=latin1" : "text/html",
      ]),
    };
  }

  #segment(name: string, ctx: FuzzContext): string {
    const k = this.#r();
    if (name === "name" && k < 0.4) return this.#pick(["app.js", "app.css", "htmx.min.js", "nope.js"]);
    if (k < 0.45 && ctx.instanceIds.length > 0) return encodeURIComponent(this.#pick(ctx.instanceIds));
    if (k < 0.75) return this.#pick(SPECIAL_SEGMENTS);
    if (k < 0.85) return "x".repeat(this.#int(90, 400));
    return encodeURIComponent(this.text(12).replace(/[\ud800-\udfff]/g, "s"));
  }

  #query(): string {
    if (this.#chance(0.65)) return "";
    const parts: string[] = [];
    for (let i = this.#int(1, 4); i > 0; i--) {
      parts.push(
        `${this.#pick(["a", "id", "count", "%00", "x%00y", "__proto__", "q", ""])}=${this.#pick(["1", "%00", "%ED%A0%80", "%FF", "x".repeat(300), "a&a=2", "%", "true", "[]"])}`,
      );
    }
    return `?${parts.join("&")}`;
  }

  #address(): string {
    return this.#pick(ADDRESSES);
  }

  /**
   * A well-formed request to a real route, with every credential and the body it expects (a few
   * still carry one poisoned value): so that handlers succeed and change the state, and later
   * refused requests meet claimed, drained and killed instances, not only a fresh pool.
   */
  #clean(ctx: FuzzContext): FuzzRequest {
    const route = this.#pick(ctx.routes.filter((r) => r.method !== "HEAD" && !r.url.endsWith("/events")));
    const url = route.url.replace(/:([A-Za-z]+)/g, (_m, name: string) =>
      name === "name"
        ? this.#pick(["app.js", "app.css", "htmx.min.js"])
        : ctx.instanceIds.length && this.#chance(0.9)
          ? encodeURIComponent(this.#pick(ctx.instanceIds))
          : this.#pick(SPECIAL_SEGMENTS),
    );
    const headers: Record<string, string> = { authorization: `Bearer ${ctx.apiKey}`, cookie: ctx.sessionCookie, "x-csrf-token": ctx.csrf };
    if (this.#chance(0.5)) headers["hx-request"] = "true";
    let payload: string | undefined;
    if (route.url === "/api/pool/claim") payload = JSON.stringify(this.claimBody(ctx));
    else if (/^\/api\/pool\/(replenish|drain)$/.test(route.url)) payload = JSON.stringify({ count: this.#int(1, 3) });
    if (payload !== undefined) headers["content-type"] = "application/json";
    else if (route.method === "POST") {
      const form = new URLSearchParams({ _csrf: ctx.csrf });
      if (route.url === "/login") form.set("password", this.#chance(0.5) ? ctx.apiKey : this.text(12));
      if (route.url === "/dashboard/launch") {
        const join = ctx.inviteUrls.length > 0 && this.#chance(0.3);
        form.set("mode", join ? "join" : "new");
        form.set("agentName", this.#chance(0.9) ? `Launched ${this.#int(1, 999)}` : this.text());
        form.set("instructions", this.#chance(0.9) ? "Be kind." : this.text(30));
        if (join) form.set("joinUrl", this.#pick(ctx.inviteUrls));
      }
      if (/\/pool\/(add|drain)$/.test(route.url)) form.set("count", String(this.#int(1, 3)));
      payload = form.toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    return { method: route.method, url, headers, ...(payload !== undefined ? { payload } : {}), remoteAddress: this.#address() };
  }

  next(ctx: FuzzContext): FuzzRequest {
    if (this.#chance(0.25)) return this.#clean(ctx);
    let method: string;
    let url: string;
    if (this.#chance(0.9)) {
      // Claims are the richest handler: a fifth of the requests go there, the rest anywhere.
      const claim = ctx.routes.find((r) => r.method === "POST" && r.url === "/api/pool/claim");
      const route = claim && this.#chance(0.2) ? claim : this.#pick(ctx.routes);
      method = this.#chance(0.8) ? route.method : this.#pick(METHODS);
      url = route.url.replace(/:([A-Za-z]+)/g, (_m, name: string) => this.#segment(name, ctx));
      if (this.#chance(0.05)) url += this.#pick(["/", "/extra", "//", "/%00"]);
    } else {
      method = this.#pick(METHODS);
      url = this.#pick([
        "/",
        "//api/pool/status",
        "/api/pool/",
        "/api/pool/instances/",
        "/API/POOL/STATUS",
        "/dashboard/",
        "/%00",
        "/api/pool/%2e%2e/status",
        `/${"a".repeat(3000)}`,
        "/dashboard/assets/../../package.json",
      ]);
    }
    url += this.#query();

    const headers: Record<string, string> = {};
    const a = this.#r();
    if (a < 0.5) headers.authorization = `Bearer ${ctx.apiKey}`;
    else if (a < 0.62) headers.authorization = `Bearer ${this.#pick(["wrong-key-wrong-key", `${ctx.apiKey}x`, ctx.apiKey.slice(1)])}`;
    else if (a < 0.72)
      headers.authorization = this.#pick([
        "Bearer",
        "Basic dXNlcjpwYXNz",
        `bearer  ${ctx.apiKey}  `,
        `Bearer ${ctx.apiKey} extra`,
        "Bearer \u0000",
        `Token ${ctx.apiKey}`,
      ]);
    if (this.#chance(0.35))
      headers.cookie = this.#chance(0.85)
        ? ctx.sessionCookie
        : this.#pick(["ap_session=v1.garbage", "ap_session=", "a=b; ap_session=\u0000", "__Host-ap_session=x"]);
    if (this.#chance(0.25)) headers["x-csrf-token"] = this.#chance(0.7) ? ctx.csrf : this.text(43);
    if (this.#chance(0.2)) headers["hx-request"] = "true";
    if (this.#chance(0.12)) headers["idempotency-key"] = this.#pick([`key-${this.#int(1, 20)}`, "has space", "\u0000", "k".repeat(201), "é"]);
    if (this.#chance(0.08)) headers["last-event-id"] = this.#pick(["0", "1", "abc", "99999999999999999999", "\u0000", "-1"]);
    if (this.#chance(0.25))
      headers["x-forwarded-for"] = this.#pick([
        "203.0.113.9",
        "198.51.100.1, 203.0.113.10",
        "garbage",
        "\u0000",
        "::ffff:1.2.3.4",
        " , ,",
        "1.1.1.1".repeat(50),
      ]);
    if (this.#chance(0.08)) headers.origin = this.#pick(["http://localhost:80", "https://evil.example", "null", "::::", "http://a\u0000b"]);
    if (this.#chance(0.04)) headers["sec-fetch-site"] = this.#pick(["cross-site", "same-origin"]);
    if (this.#chance(0.05)) headers["x-forwarded-proto"] = this.#pick(["https", "http", "gopher"]);
    if (this.#chance(0.1)) headers[`x-fuzz-${this.#int(1, 3)}`] = this.#pick(["\u0000", "a\u0000b", "ok", "x".repeat(4000), "ÿ"]);
    if (this.#chance(0.1)) headers.accept = this.#pick(["text/event-stream", "*/*", "application/json", "text/html"]);

    const body = this.#body(ctx, method, url);
    if (body.contentType !== undefined) headers["content-type"] = this.#chance(0.95) ? body.contentType : this.#pick(["text/plain", "application/json"]);
    return { method, url, headers, ...(body.payload !== undefined ? { payload: body.payload } : {}), remoteAddress: this.#address() };
  }
}

/** A request as a line of text for a failure message (long values shortened, control characters escaped). */
export function describeRequest(r: FuzzRequest): string {
  const short = (s: string) => (s.length > 300 ? `${s.slice(0, 300)}… (${s.length} chars)` : s);
  const payload = r.payload === undefined ? undefined : Buffer.isBuffer(r.payload) ? `<bytes ${r.payload.toString("hex")}>` : short(r.payload);
  return JSON.stringify({
    method: r.method,
    url: short(r.url),
    headers: Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, short(v)])),
    payload,
    remoteAddress: r.remoteAddress,
  });
}
