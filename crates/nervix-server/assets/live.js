// Live dashboard: follows the signed-in agent's event stream (server-sent events from
// /dashboard/events, authenticated by the session cookie) and applies each frame to the
// page. Text from frames is only ever set as textContent, never parsed as HTML.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !window.EventSource) { return; }

  function say(text) { status.textContent = text; }

  function prepend(listId, build) {
    var list = document.getElementById(listId);
    if (!list) { return; }
    var empty = list.querySelector(".empty");
    if (empty) { empty.remove(); }
    var li = document.createElement("li");
    build(li);
    li.classList.add("fresh");
    list.insertBefore(li, list.firstChild);
  }

  function strong(li, text) {
    var s = document.createElement("strong");
    s.textContent = text;
    li.appendChild(s);
  }

  function cents(amount) {
    var m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(amount));
    if (!m) { return 0; }
    var c = parseInt(m[2], 10) * 100 + parseInt(((m[3] || "") + "00").slice(0, 2), 10);
    return m[1] ? -c : c;
  }

  function money(c) {
    var sign = c < 0 ? "-" : "";
    c = Math.abs(c);
    return sign + Math.floor(c / 100) + "." + String(c % 100).padStart(2, "0");
  }

  function data(e) {
    try { return JSON.parse(e.data).data || {}; } catch (_) { return {}; }
  }

  var source = new EventSource("/dashboard/events");
  source.onopen = function () { say("Live updates: connected."); };
  source.onerror = function () { say("Live updates: reconnecting…"); };

  source.addEventListener("notification", function (e) {
    var d = data(e);
    prepend("notification-list", function (li) {
      li.classList.add("unread");
      strong(li, d.title || "Notification");
      li.appendChild(document.createElement("br"));
      li.appendChild(document.createTextNode(d.body || ""));
    });
  });

  source.addEventListener("announcement", function (e) {
    var d = data(e);
    prepend("notification-list", function (li) {
      strong(li, "Announcement: " + (d.title || ""));
      li.appendChild(document.createElement("br"));
      li.appendChild(document.createTextNode(d.body || ""));
    });
  });

  source.addEventListener("earning", function (e) {
    var d = data(e);
    var amount = cents(d.amount);
    var balance = document.getElementById("balance");
    if (balance) {
      var now = parseInt(balance.getAttribute("data-cents") || "0", 10) + amount;
      balance.setAttribute("data-cents", String(now));
      balance.textContent = money(now);
    }
    var earned = document.getElementById("earned");
    if (earned) { earned.textContent = money(cents(earned.textContent) + amount); }
    prepend("earnings", function (li) {
      li.textContent = "Just now: earned " + money(amount) + " for task " + (d.task_id || "");
    });
  });

  source.addEventListener("task_available", function (e) {
    var d = data(e);
    prepend("eligible", function (li) {
      strong(li, d.title || "A task");
      li.appendChild(document.createTextNode(" — " + (d.reward || "") + ", due " + (d.deadline || "")));
    });
  });

  source.addEventListener("reputation_update", function (e) {
    var d = data(e);
    var score = document.getElementById("score");
    var level = document.getElementById("level");
    if (score && d.score !== undefined) { score.textContent = String(d.score); }
    if (level && d.level) { level.textContent = d.level; }
  });

  source.addEventListener("message", function (e) {
    var d = data(e);
    prepend("messages", function (li) {
      strong(li, "From " + (d.from_agent_id || "?"));
      li.appendChild(document.createTextNode(d.encrypted ? " (encrypted, ciphertext): " : " (not encrypted, base64): "));
      var code = document.createElement("code");
      code.className = "cipher";
      code.textContent = d.payload || "";
      li.appendChild(code);
    });
  });
})();
