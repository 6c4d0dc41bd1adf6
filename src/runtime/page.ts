/**
 * The chat-room page served at an invite URL. Self-contained (inline CSS/JS, no external requests)
 * so it works offline and under a strict CSP; every user-provided value is HTML-escaped here and the
 * script only ever writes user text with `textContent`.
 */

export function escapeHtml(value: string): string {
  return value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** CSP for both pages: only our own nonce'd inline code, and fetches back to this origin. */
export function pageCsp(nonce: string): string {
  return [
    "default-src 'none'",
    `style-src 'nonce-${nonce}'`,
    `script-src 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

const STYLE = `
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;background:#f4f4f6;color:#1c1c21}
main{max-width:720px;margin:0 auto;min-height:100vh;display:flex;flex-direction:column;padding:16px}
header h1{margin:0;font-size:20px}
header p{margin:2px 0 0;color:#6b6b76;font-size:12px;word-break:break-all}
#members{margin:12px 0 0;padding:8px 12px;background:#fff;border:1px solid #e2e2e8;border-radius:8px;font-size:13px}
#members ul{margin:4px 0 0;padding-left:18px}
#members button{margin-left:8px;font-size:12px}
#log{list-style:none;margin:12px 0;padding:0;flex:1;display:flex;flex-direction:column;gap:8px}
.msg{max-width:85%;padding:8px 12px;border-radius:12px;background:#fff;border:1px solid #e2e2e8;white-space:pre-wrap;word-wrap:break-word}
.msg p{margin:0}
.msg .who{display:block;font-size:12px;font-weight:600;color:#55556a;margin-bottom:2px}
.msg.human{align-self:flex-end;background:#2f5bea;border-color:#2f5bea;color:#fff}
.msg.human .who{color:#dfe6ff}
.msg.system{align-self:center;background:none;border:none;color:#6b6b76;font-size:12px;padding:0}
.msg.system .who{display:none}
form{display:flex;gap:8px;position:sticky;bottom:0;background:#f4f4f6;padding:8px 0}
textarea{flex:1;resize:vertical;min-height:44px;padding:8px;border:1px solid #c9c9d3;border-radius:8px;font:inherit}
button{border:0;border-radius:8px;background:#2f5bea;color:#fff;padding:0 16px;font:inherit;cursor:pointer}
button:disabled{opacity:.5;cursor:default}
#status{min-height:1.2em;margin:0;color:#b3261e;font-size:13px}
`;

// Static: contains no server data, so nothing user-provided can reach script context.
const SCRIPT = `
(function () {
  var base = location.pathname.replace(/\\/+$/, "");
  var log = document.getElementById("log");
  var form = document.getElementById("send");
  var input = document.getElementById("text");
  var button = document.getElementById("btn");
  var status = document.getElementById("status");
  var membersBox = document.getElementById("members");
  var membersList = document.getElementById("member-list");
  var after = 0, stopped = false, timer = null, polling = false;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function render(m) {
    if (m.seq <= after) return;
    var li = el("li", "msg " + (m.role === "human" || m.role === "system" ? m.role : "agent"));
    li.appendChild(el("span", "who", m.role === "human" ? "You" : m.from));
    li.appendChild(el("p", null, m.text));
    log.appendChild(li);
    after = m.seq;
  }
  function renderMembers(list) {
    membersList.textContent = "";
    membersBox.hidden = !list || list.length === 0;
    (list || []).forEach(function (m) {
      var li = el("li", null, m.name + (m.status === "pending" ? " (waiting for approval)" : ""));
      if (m.status === "pending") {
        var b = el("button", null, "Approve");
        b.type = "button";
        b.addEventListener("click", function () {
          b.disabled = true;
          fetch(base + "/members/" + encodeURIComponent(m.id) + "/approve", { method: "POST" })
            .then(function () { poll(); }, function () { b.disabled = false; });
        });
        li.appendChild(b);
      }
      membersList.appendChild(li);
    });
  }
  function ended() {
    stopped = true;
    status.textContent = "This conversation has ended.";
    input.disabled = true;
    button.disabled = true;
  }
  function poll() {
    if (stopped || polling) return;
    polling = true;
    clearTimeout(timer);
    fetch(base + "/messages?after=" + after, { cache: "no-store" })
      .then(function (r) {
        if (r.status === 404) { ended(); return null; }
        return r.json();
      })
      .then(function (d) {
        if (!d) return;
        var nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
        (d.messages || []).forEach(render);
        renderMembers(d.members);
        if (nearBottom) window.scrollTo(0, document.body.scrollHeight);
      })
      .catch(function () {})
      .then(function () {
        polling = false;
        if (!stopped) timer = setTimeout(poll, 1000);
      });
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    button.disabled = true;
    status.textContent = "";
    fetch(base + "/messages", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: text })
    })
      .then(function (r) {
        if (r.status === 404) { ended(); return; }
        if (!r.ok) return r.json().then(function (d) { status.textContent = d.error || "Could not send."; });
        input.value = "";
      })
      .catch(function () { status.textContent = "Could not send."; })
      .then(function () { if (!stopped) { button.disabled = false; poll(); } });
    setTimeout(poll, 150); // show the message and the host's reply while joined agents still answer
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
  });
  poll();
})();
`;

export interface RoomPageInput {
  title: string;
  agentName: string;
  conversationId: string;
  maxMessageChars: number;
  nonce: string;
}

export function renderRoomPage(p: RoomPageInput): string {
  const title = escapeHtml(p.title);
  const agent = escapeHtml(p.agentName);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Chat with ${agent}</title>
<style nonce="${p.nonce}">${STYLE}</style>
</head>
<body>
<main>
<header>
<h1>${title}</h1>
<p>Chatting with ${agent} · ${escapeHtml(p.conversationId)}</p>
</header>
<section id="members" hidden><strong>Other agents in this room</strong><ul id="member-list"></ul></section>
<ol id="log" aria-live="polite"></ol>
<p id="status" role="alert"></p>
<form id="send">
<textarea id="text" maxlength="${p.maxMessageChars}" placeholder="Write a message… (Enter to send)" aria-label="Message" autofocus></textarea>
<button id="btn" type="submit">Send</button>
</form>
</main>
<script nonce="${p.nonce}">${SCRIPT}</script>
</body>
</html>
`;
}

export function renderNotFoundPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conversation not found</title>
<style nonce="${nonce}">body{font:15px/1.45 system-ui,sans-serif;max-width:560px;margin:48px auto;padding:0 16px;color:#1c1c21}</style>
</head>
<body>
<h1>Conversation not found</h1>
<p>This invite link is not valid, or the conversation has ended.</p>
</body>
</html>
`;
}
