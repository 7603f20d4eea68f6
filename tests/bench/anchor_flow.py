"""The load generator's browser flow adapted to Apache's URLs (anchors benchmark).

Same client as the gateway's batches (:class:`tests.bench.loadgen.Driver`: httpcore, a cookie
dict per virtual employee, fresh browser per sign-in), only the hops differ:

* mod_auth_openidc: ``GET /login/skyprep`` (302 to the IdP) -> IdP page -> ``POST`` choice
  (303 to ``/oidc/callback``) -> ``GET /oidc/callback`` (302 back to ``/login/skyprep``) ->
  ``GET /login/skyprep`` with the session cookie (the backend's 303 to SkyPrep).
* mod_auth_mellon: ``GET /login/skyprep`` (303 to ``/mellon/login``, 303 to the IdP) ->
  IdP page -> ``POST`` choice (auto-post page) -> ``POST /mellon/postResponse`` (303 back
  to ``/login/skyprep``) -> ``GET /login/skyprep`` (the backend's 303 to SkyPrep).

Every request carries a browser's ``Accept`` header. Apache needs a hop or two more than
the gateway (the return to the protected URL, mellon's own login URL): that is how these
modules work, and it is part of what the comparison measures.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

import httpcore

from tests.bench.loadgen import _FORM, _RELAY, _SAML, _TXN, Driver, Failed, Job, _Vu

_REDIRECTS = (302, 303)
_ACCEPT = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class ApacheDriver(Driver):
    """``urls["gateway"]`` is the Apache instance; ``oidc``/``saml`` its IdP."""

    async def _send(
        self,
        pool: httpcore.AsyncConnectionPool,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        vu: _Vu | None = None,
    ) -> httpcore.Response:
        # mod_auth_openidc answers 401 instead of redirecting to the IdP unless the request
        # looks like a browser's navigation (Accept: text/html), as every browser's does.
        headers = [*(headers or []), (b"accept", _ACCEPT)]
        return await super()._send(pool, method, url, headers, body, vu)

    async def _through_idp(self, pool: httpcore.AsyncConnectionPool, vu: _Vu, job: Job) -> None:
        login = f"{self.gw}/login/{job.app}"
        idp_url = self.urls["oidc" if job.kind == "oidc" else "saml"]
        status, location = await self._gateway(pool, vu, "GET", login)
        # mod_auth_mellon first sends the browser to its own /mellon/login, then to the IdP.
        for _ in range(3):
            if status not in _REDIRECTS or not location.startswith((self.gw + "/", "/")):
                break
            location = self.gw + location if location.startswith("/") else location
            status, location = await self._gateway(pool, vu, "GET", location)
        if status not in _REDIRECTS or not location.startswith(idp_url + "/"):
            raise Failed(f"login:{status}")
        page = await self._send(pool, "GET", location, vu=vu)
        txn = _TXN.search(page.content)
        if page.status != 200 or txn is None:
            raise Failed(f"idp-page:{page.status}")
        choice = urlencode({"txn": html.unescape(txn.group(1).decode()), "sub": job.sub}).encode()
        if job.kind == "oidc":
            answer = await self._send(pool, "POST", f"{idp_url}/authorize", _FORM, choice, vu)
            callback = dict(answer.headers).get(b"location", b"").decode()
            if answer.status != 303 or not callback.startswith(self.gw + "/"):
                raise Failed(f"idp-choose:{answer.status}")
            status, location = await self._gateway(pool, vu, "GET", callback)
        else:
            answer = await self._send(pool, "POST", f"{idp_url}/sso", _FORM, choice, vu)
            saml, relay = _SAML.search(answer.content), _RELAY.search(answer.content)
            if answer.status != 200 or saml is None:
                raise Failed(f"idp-choose:{answer.status}")
            form = {"SAMLResponse": html.unescape(saml.group(1).decode())}
            if relay is not None:
                form["RelayState"] = html.unescape(relay.group(1).decode())
            acs = f"{self.gw}/mellon/postResponse"
            status, location = await self._gateway(pool, vu, "POST", acs, urlencode(form).encode())
        if location.startswith("/"):
            location = self.gw + location
        if status not in _REDIRECTS or location.partition("?")[0] != login:
            raise Failed(f"return:{status}")
        status, location = await self._gateway(pool, vu, "GET", location)
        self._expect_lms(status, location, job, "backend")
