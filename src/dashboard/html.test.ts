import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { escapeHtml, html, raw } from "./html.ts";
import { SessionKeys, readCookie } from "./session.ts";
import { ago } from "./views.ts";

describe("html template", () => {
  it("escapes every interpolated value, in text and in attributes", () => {
    const name = `<script>alert("x")</script>' onmouseover='x`;
    const out = html`<p title="${name}">${name}</p>`.toString();
    assert.equal(
      out,
      `<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&#39;x">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&#39;x</p>`,
    );
  });

  it("nests templates without double escaping, joins arrays, drops null/undefined/false", () => {
    const items = ["a&b", "<i>"].map((s) => html`<li>${s}</li>`);
    assert.equal(html`<ul>${items}</ul>${null}${undefined}${false}${0}`.toString(), "<ul><li>a&amp;b</li><li>&lt;i&gt;</li></ul>0");
  });

  it("passes raw() markup through unchanged", () => {
    assert.equal(html`<div>${raw("<svg></svg>")}</div>`.toString(), "<div><svg></svg></div>");
    assert.equal(escapeHtml("`&"), "&#96;&amp;");
  });
});

describe("sessions", () => {
  const keys = new SessionKeys("correct horse battery staple");
  const t0 = 1_700_000_000_000;

  it("issues a cookie that verifies until it expires, and never contains the password", () => {
    const { value, session } = keys.issue(t0, 1000);
    assert.ok(!value.includes("correct horse"));
    assert.deepEqual(keys.verify(value, t0 + 999), session);
    assert.equal(keys.verify(value, t0 + 1000), null);
  });

  it("rejects tampered cookies and cookies signed with another password", () => {
    const { value } = keys.issue(t0, 60_000);
    const [v, exp, sid, mac] = value.split(".");
    const later = (parseInt(exp!, 36) + 3_600_000).toString(36);
    assert.equal(keys.verify(`${v}.${later}.${sid}.${mac}`, t0), null, "extended expiry");
    assert.equal(keys.verify(`${v}.${exp}.${sid}.${mac!.slice(0, -1)}${mac!.endsWith("A") ? "B" : "A"}`, t0), null, "flipped mac");
    assert.equal(new SessionKeys("another password").verify(value, t0), null);
    assert.equal(keys.verify("garbage", t0), null);
    assert.equal(keys.verify(undefined, t0), null);
  });

  it("derives one CSRF token per session", () => {
    const a = keys.issue(t0, 60_000).session;
    const b = keys.issue(t0, 60_000).session;
    assert.ok(keys.checkCsrf(a, keys.csrfToken(a)));
    assert.ok(!keys.checkCsrf(a, keys.csrfToken(b)));
    assert.ok(!keys.checkCsrf(a, undefined));
    assert.ok(!keys.checkCsrf(a, ""));
  });

  it("reads a cookie among others", () => {
    assert.equal(readCookie("a=1; ap_session=v1.x.y.z; b=2", "ap_session"), "v1.x.y.z");
    assert.equal(readCookie("a=1", "ap_session"), undefined);
  });
});

describe("ago", () => {
  it("formats durations for humans", () => {
    const now = 10 * 86_400_000;
    const at = (ms: number) => new Date(now - ms);
    assert.equal(ago(now, at(42_000)), "42 s");
    assert.equal(ago(now, at(5 * 60_000)), "5 min");
    assert.equal(ago(now, at(3 * 3_600_000 + 12 * 60_000)), "3 h 12 min");
    assert.equal(ago(now, at(2 * 86_400_000 + 4 * 3_600_000)), "2 d 4 h");
    assert.equal(ago(now, at(-5000)), "0 s");
  });
});
