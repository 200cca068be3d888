// Ordo console: the page's only script (served from /console/assets, no inline script).
// 1. Times: each <time datetime> is written in UTC by the server; show it in the browser's
//    time zone, keeping UTC in the title (on hover).
// 2. Live parts: an element with data-poll="URL" is replaced every data-poll-ms by the HTML
//    fragment at URL (same origin, the session cookie), without reloading the page.
// 3. The replay form posts to its chosen worker's URL.
(function () {
  "use strict";

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime()) && !el.dataset.local) {
        el.textContent = d.toLocaleString();
        el.dataset.local = "1";
      }
    });
  }

  function poll(el) {
    var url = el.dataset.poll;
    var every = parseInt(el.dataset.pollMs, 10) || 3000;
    function tick() {
      // Not while a form inside has focus: a refresh would throw away what is being typed.
      if (el.contains(document.activeElement) && document.activeElement.tagName !== "BODY") {
        return setTimeout(tick, every);
      }
      fetch(url, { credentials: "same-origin", redirect: "manual" })
        .then(function (r) {
          if (r.status === 200) {
            return r.text().then(function (html) {
              el.innerHTML = html;
              localTimes(el);
              el.dataset.refreshed = String(Date.now());
            });
          }
          if (r.type === "opaqueredirect" || r.status === 401 || r.status === 403) {
            window.location.reload();
          }
        })
        .catch(function () {})
        .then(function () {
          setTimeout(tick, every);
        });
    }
    setTimeout(tick, every);
  }

  function replayForms() {
    document.querySelectorAll("form[data-worker-action]").forEach(function (form) {
      var select = form.querySelector("select[name=worker]");
      if (!select) return;
      function update() {
        form.action = "/console/workers/" + encodeURIComponent(select.value) + "/replay";
      }
      select.addEventListener("change", update);
      update();
    });
  }

  function start() {
    localTimes(document);
    document.querySelectorAll("[data-poll]").forEach(poll);
    replayForms();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
