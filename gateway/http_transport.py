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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp connection pool; built lazily inside the running event loop."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 100) -> None:
        self._ssl: ssl.SSLContext | bool = verify if isinstance(verify, ssl.SSLContext) else (
            ssl.create_default_context() if verify else False
        )
        self._limit = max_connections
        self._session: aiohttp.ClientSession | None = None

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
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout.get("pool"),
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),
        )
        body = await request.aread()
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
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
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(type(exc).__name__, request=request) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(type(exc).__name__, request=request) from None
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(type(exc).__name__, request=request) from None
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # aiohttp's documented grace period for SSL transports to finish closing.
            await asyncio.sleep(0)
