"""An httpx transport that sends requests with aiohttp's connection pool.

Why: the benchmarks (README) showed the outgoing HTTP client as the largest cost of a sign-in;
per request, httpx over its default httpcore/anyio transport spent ~2.6 ms of CPU against
~1.5 ms with this transport, on loopback. Code keeps the httpx API (``AsyncClient``,
``Response``, the exception tree that ``connectors/_http.py`` and ``auth/jwks.py`` map), and
only the wire work moves to aiohttp.

Contract kept from httpx: bodies are streamed (``client.stream`` still bounds what it reads;
every body is also capped here), content-encoding is left to httpx (aiohttp does not
decompress), redirects are never followed here, timeouts come from the request's httpx
``Timeout``, and failures are raised as httpx exceptions (``ConnectTimeout``, ``ReadTimeout``,
``ConnectError``, ``ReadError``, ``RemoteProtocolError``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import yarl

# Defence in depth: no IdP or LMS answer we read is anywhere near this.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as httpx asks for it, capped, then released."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        try:
            async for chunk in self._response.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise httpx.ReadError("response body too large")
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(type(exc).__name__) from None

    async def aclose(self) -> None:
        self._response.release()


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps and sends nothing: one client serves every employee, so a
    cookie an LMS or IdP sets for one call must never ride along on another's call.

    Skipping the work matters too: httpx wraps every response in urllib's cookie machinery to
    offer it to the jar (~0.05 ms of CPU per call, measured), even when the jar refuses all."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        return None


_NO_COOKIES = _NoCookies()
# httpx internals the direct send path uses; without them (another httpx) it is not taken.
_FAST_SEND = all(
    hasattr(httpx.AsyncClient, name)
    for name in ("_set_timeout", "_send_single_request", "_build_redirect_request")
)


class GatewayClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` as every IdP and LMS call uses it: no cookies, and for the
    common request (no auth, no event hooks, redirects not followed) a direct send.

    Same API and same answers as the plain client; what goes is per-call work whose result
    is fixed by how the gateway builds its clients: the auth flow generator, the redirect and
    hook loops (``response.next_request`` is still set for a redirect) and the cookie jar."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("the gateway's IdP and LMS clients never keep cookies")

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        direct = (
            _FAST_SEND
            and auth is httpx.USE_CLIENT_DEFAULT
            and self.auth is None
            and follow_redirects in (httpx.USE_CLIENT_DEFAULT, False)
            and not self.follow_redirects
            and not self.event_hooks["request"]
            and not self.event_hooks["response"]
            and not self.is_closed
        )
        if not direct:
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        self._set_timeout(request)
        response = await self._send_single_request(request)
        try:
            if response.has_redirect_location:
                response.next_request = self._build_redirect_request(request, response)
            if not stream:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp connection pool; built lazily inside the running event loop."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 100) -> None:
        self._ssl: ssl.SSLContext | bool = verify if isinstance(verify, ssl.SSLContext) else (
            ssl.create_default_context() if verify else False
        )
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None
        # aiohttp timeouts by (pool, connect, read): built once, not on every call.
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes content-encoding itself
                cookie_jar=aiohttp.DummyCookieJar(),  # no cookies between LMS/IdP calls
                trust_env=False,  # httpx mounts env proxies itself
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        limits = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        client_timeout = self._timeouts.get(limits)
        if client_timeout is None:
            client_timeout = aiohttp.ClientTimeout(
                total=None, connect=limits[0], sock_connect=limits[1], sock_read=limits[2]
            )
            if len(self._timeouts) < 64:  # a few per client; bounded whatever callers pass
                self._timeouts[limits] = client_timeout
        body = await request.aread()
        try:
            response = await self._get_session().request(
                request.method,
                # httpx has already percent-encoded the URL: yarl need not parse it again.
                yarl.URL(str(request.url), encoded=True),
                # aiohttp frames the body itself (Content-Length from ``data``).
                headers=[
                    (k, v) for k, v in request.headers.multi_items()
                    if k.lower() not in ("content-length", "transfer-encoding")
                ],
                data=body or None,
                allow_redirects=False,
                timeout=client_timeout,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(type(exc).__name__, request=request) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise httpx.ReadTimeout(type(exc).__name__, request=request) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            # Said plainly (it reaches readiness and logs): the fix is a ca_file.
            reason = getattr(exc.certificate_error, "verify_message", None) or "verify failed"
            raise httpx.ConnectError(
                f"TLS certificate not trusted: {reason}", request=request
            ) from None
        except aiohttp.ClientConnectorSSLError as exc:
            reason = getattr(exc.os_error, "reason", None) or type(exc.os_error).__name__
            raise httpx.ConnectError(f"TLS handshake failed: {reason}", request=request) from None
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(type(exc).__name__, request=request) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from None
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(type(exc).__name__, request=request) from None
        return httpx.Response(
            response.status,
            # The raw bytes, as httpx's own transport hands them over: httpx works out their
            # encoding. (Decoding them here first was slower, and a non-ASCII byte in any
            # header then failed httpx's re-encoding with an unmapped UnicodeEncodeError.)
            headers=list(response.raw_headers),
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # aiohttp's documented grace period for SSL transports to finish closing.
            await asyncio.sleep(0)
