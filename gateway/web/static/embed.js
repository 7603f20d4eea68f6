/* The portal iframe's sign-in (design: gateway/embed_grants.py). No inline script: the
   page's CSP allows scripts, fetches and forms of the gateway's own origin only.

   Inside a frame: "Sign in" opens a popup (IdPs refuse to be framed), starts a hand-over
   (the answer sets this frame's partitioned binding cookie), posts the handle into the popup
   and polls until the popup has signed in; then this frame holds its own embed grant and
   reloads the lesson. Outside a frame (a new tab): the links sign in right here. */
(function () {
  "use strict";
  var root = document.getElementById("gw-embed");
  var links = document.getElementById("gw-embed-links");
  var button = document.getElementById("gw-embed-sign-in");
  if (!root || !links || !button) {
    return;
  }
  var anchors = links.getElementsByTagName("a");
  var i;
  if (window.top === window.self) {
    for (i = 0; i < anchors.length; i += 1) {
      anchors[i].removeAttribute("target");
    }
    return;
  }
  var WINDOW = "gw-embed-sign-in";
  var timeoutMs = (parseInt(root.getAttribute("data-timeout"), 10) || 600) * 1000;
  var handle = null;
  var popup = null;
  var timer = null;
  var deadline = 0;
  var asking = false;

  function show(name) {
    var notes = root.querySelectorAll("[data-note]");
    for (var n = 0; n < notes.length; n += 1) {
      notes[n].hidden = notes[n].getAttribute("data-note") !== name;
    }
  }
  function stop() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }
  /* Something went wrong: say what, and offer the new-tab links and the button again. */
  function fallback(name) {
    stop();
    handle = null;
    show(name);
    links.hidden = false;
    button.disabled = false;
  }
  /* The portal page's origin: the top frame's (cookies are partitioned by it). */
  function portalOrigin() {
    var ancestors = window.location.ancestorOrigins;
    if (ancestors && ancestors.length) {
      return ancestors[ancestors.length - 1];
    }
    try {
      return document.referrer ? new URL(document.referrer).origin : "";
    } catch (ignored) {
      return "";
    }
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    });
  }
  function errorOf(response) {
    return response.json().then(
      function (body) { return (body && body.error) || "failed"; },
      function () { return "failed"; }
    );
  }
  function later(ms) {
    stop();
    timer = setTimeout(poll, ms);
  }
  function poll() {
    stop();
    if (handle === null || asking) {
      return;
    }
    if (Date.now() > deadline) {
      fallback("expired");
      return;
    }
    asking = true;
    post(root.getAttribute("data-finish"), { handle: handle }).then(function (response) {
      asking = false;
      if (response.status === 202) {
        /* A closed popup may only mean an IdP cut the opener link: keep asking, slower. */
        later(popup && !popup.closed ? 1500 : 4000);
        return;
      }
      if (response.ok) {
        handle = null;
        show("opening");
        if (popup && !popup.closed) {
          popup.close();
        }
        window.location.replace(root.getAttribute("data-lesson") + "?after_sign_in=1");
        return;
      }
      errorOf(response).then(function (code) {
        fallback(code === "embed_cookie_blocked" ? "blocked-cookie" : "expired");
      });
    }, function () {
      asking = false;
      later(4000);
    });
  }

  links.hidden = true;
  button.hidden = false;
  if (!root.querySelector("[data-note='blocked-cookie']").hidden) {
    links.hidden = false;
  }
  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin || popup === null || event.source !== popup) {
      return;
    }
    if (event.data && event.data.type === "gateway:embed-signed-in") {
      poll();
    }
  });
  button.addEventListener("click", function () {
    /* Opened at once, while the click still counts as the person's: popup blockers. */
    popup = window.open("", WINDOW, "popup,width=520,height=700");
    if (!popup) {
      fallback("blocked-popup");
      return;
    }
    button.disabled = true;
    stop();
    show("waiting");
    post(root.getAttribute("data-start"), { portal: portalOrigin() }).then(function (response) {
      if (!response.ok) {
        return errorOf(response).then(function (code) { throw code; });
      }
      return response.json();
    }).then(function (body) {
      handle = body.handle;
      deadline = Date.now() + timeoutMs;
      /* A POST, so the handle is in no URL (logs, Referer, history). */
      var form = document.createElement("form");
      form.method = "post";
      form.action = root.getAttribute("data-popup");
      form.target = WINDOW;
      var field = document.createElement("input");
      field.type = "hidden";
      field.name = "handle";
      field.value = handle;
      form.appendChild(field);
      document.body.appendChild(form);
      form.submit();
      document.body.removeChild(form);
      later(1500);
    }).catch(function (code) {
      if (popup && !popup.closed) {
        popup.close();
      }
      fallback(code === "forbidden" ? "portal" : "failed");
    });
  });
})();
