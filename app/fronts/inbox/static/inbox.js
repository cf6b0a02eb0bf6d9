// Keeps a page's live part (<main id="live" data-poll="ms">) current: every few seconds it asks the
// page's own URL for that part (header X-UI-Live: 1) and swaps it in when it changed. The server renders
// and escapes it, exactly as on a reload; without this script the pages work the same, reloaded by hand.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.poll || !window.fetch) return;
  var every = Math.max(500, parseInt(live.dataset.poll, 10) || 2000);
  var state = document.getElementById("live-state");
  var last = live.innerHTML.trim();
  var busy = false;

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(window.location.href, {
      headers: { "X-UI-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual"
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
        window.location.reload(); // signed out: the reload shows the sign-in form
        return null;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      if (html === null) return;
      html = html.trim();
      if (html !== last) {
        var doc = new DOMParser().parseFromString("<main>" + html + "</main>", "text/html");
        live.replaceChildren.apply(live, Array.prototype.slice.call(doc.body.firstChild.childNodes));
        last = live.innerHTML.trim();
        live.dispatchEvent(new CustomEvent("live:updated"));
      }
      if (state) state.classList.remove("stale");
    }).catch(function () {
      if (state) state.classList.add("stale");
    }).then(function () {
      busy = false;
    });
  }

  window.setInterval(poll, every);
  document.addEventListener("visibilitychange", poll);
})();
