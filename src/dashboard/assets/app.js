// agent-pool dashboard: live updates and small conveniences. Served from our origin (the CSP allows
// no inline script); reads no server data from the page except what htmx fetches.
(() => {
  var live = document.getElementById("live");

  function setLive(state, text) {
    if (!live) return;
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  // Live updates: the server says "the pool changed"; htmx re-fetches the fragments that listen for
  // `pool-changed` (hx-trigger="pool-changed from:body"). Only this server is ever asked.
  if (live && window.EventSource && window.htmx) {
    // The page's pool's changes (data-events names it; default: the default pool's).
    const source = new EventSource(live.getAttribute("data-events") || "/dashboard/events");
    source.addEventListener("open", () => {
      setLive("on", "Live");
    });
    source.addEventListener("changed", () => {
      setLive("on", "Live");
      htmx.trigger(document.body, "pool-changed");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) setLive("off", "Live updates stopped. Reload the page (your session may have ended).");
      else setLive("connecting", "Reconnecting…");
    });
  }

  // Keep open <details> (event history, QR codes) open across live refreshes of their fragment.
  // Kept per swapped fragment: one "pool changed" refreshes several fragments at once, and a single
  // shared list let the agents list's swap forget what the instances table had open.
  var reopen = new Map();
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    var target = e.detail.target;
    if (!target?.querySelectorAll) return;
    var open = Array.prototype.map.call(target.querySelectorAll("details[open][id]"), (d) => d.id);
    if (open.length) reopen.set(target, open);
  });
  document.body.addEventListener("htmx:afterSettle", (e) => {
    // After settle, htmx has processed the new nodes, so opening fires their "toggle once" load.
    var target = e.detail.target;
    var ids = reopen.get(target);
    if (!ids) return;
    reopen.delete(target);
    ids.forEach((id) => {
      var d = document.getElementById(id);
      if (d && !d.open) d.open = true;
    });
  });

  // Copy buttons: data-copy names the input holding the text.
  document.addEventListener("click", (e) => {
    var button = e.target.closest?.("button[data-copy]");
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) return;
    function done(ok) {
      button.textContent = ok ? "Copied" : "Select and copy";
      setTimeout(() => {
        button.textContent = "Copy";
      }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        () => {
          done(true);
        },
        () => {
          done(false);
        },
      );
    } else {
      input.focus();
      input.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch {
        ok = false;
      }
      done(ok);
    }
  });
})();
