/* The sign-in popup of a portal iframe, signed in (design: gateway/embed_grants.py).
   Tell the frame that opened it to collect the sign-in now. The message carries nothing
   secret (the frame fetches its grant itself, with its own cookie) and goes only to the
   gateway's own origin. Without an opener (an IdP's Cross-Origin-Opener-Policy cut the
   link) the frame finds the sign-in by polling. */
(function () {
  "use strict";
  var opener = window.opener;
  if (!opener) {
    return;
  }
  try {
    opener.postMessage({ type: "gateway:embed-signed-in" }, window.location.origin);
  } catch (ignored) {
    /* The frame polls anyway. */
  }
})();
