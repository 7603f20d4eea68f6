"""The aiohttp-backed httpx transport every IdP and LMS client uses: real sockets on
127.0.0.1, real TLS, and the httpx contract the error mapping relies on."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import http_transport
from gateway.connectors._http import build_client
from gateway.http_transport import AiohttpTransport
from gateway.sandbox._common import Served, serve_in_thread
from gateway.settings import HttpSettings
from tests.support.redis_server import write_tls_files


async def slow(_: Request) -> Response:
    await asyncio.sleep(2)
    return PlainTextResponse("late")


async def big(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    return StreamingResponse(chunks())


async def zipped(_: Request) -> Response:
    return Response(
        gzip.compress(b'{"ok": true}'),
        headers={"Content-Encoding": "gzip"},
        media_type="application/json",
    )


async def echo(request: Request) -> Response:
    body = await request.body()
    headers = {"Set-Cookie": "tracker=1; Path=/"}
    seen = f"{request.method} {body.decode()} cookie={request.headers.get('cookie')}"
    return PlainTextResponse(seen + f" ua={request.headers.get('user-agent')}", headers=headers)


async def moved(_: Request) -> Response:
    return RedirectResponse("https://elsewhere.example/", status_code=302)


APP = Starlette(
    routes=[
        Route("/slow", slow),
        Route("/big", big),
        Route("/zipped", zipped),
        Route("/echo", echo, methods=["GET", "POST"]),
        Route("/moved", moved),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    served = serve_in_thread(APP)
    yield served
    served.stop()


def client(**timeouts: float) -> httpx.AsyncClient:
    return build_client(HttpSettings(**timeouts))


async def test_post_body_headers_and_no_cookie_jar(server: Served) -> None:
    async with client() as http:
        first = await http.post(f"{server.url}/echo", data={"a": "b c"})
        second = await http.get(f"{server.url}/echo")
    assert first.status_code == 200
    assert first.text.startswith("POST a=b+c cookie=None ua=gateway/")
    assert "cookie=None" in second.text  # a Set-Cookie from an LMS is never sent back


async def test_gzip_is_decoded_and_redirects_are_not_followed(server: Served) -> None:
    async with client() as http:
        assert (await http.get(f"{server.url}/zipped")).json() == {"ok": True}
        moved_response = await http.get(f"{server.url}/moved")
    assert moved_response.status_code == 302
    assert moved_response.headers["location"] == "https://elsewhere.example/"


async def test_read_timeout(server: Served) -> None:
    async with client(read_timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{server.url}/slow")


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")


async def test_streamed_reads_are_bounded(server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_transport, "MAX_RESPONSE_BYTES", 16 * 1024)
    async with client() as http:
        with pytest.raises(httpx.ReadError):
            await http.get(f"{server.url}/big")
        async with http.stream("GET", f"{server.url}/big") as response:
            with pytest.raises(httpx.ReadError):
                await response.aread()


async def test_tls_is_verified(tmp_path: Path) -> None:
    ca, cert, key = write_tls_files(tmp_path)
    served = serve_in_thread_tls(cert, key)
    url = f"https://127.0.0.1:{served.port}/echo"
    try:
        async with build_client(HttpSettings()) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(url)
        trusting = ssl.create_default_context(cafile=str(ca))
        async with build_client(HttpSettings(), verify=trusting) as http:
            assert (await http.get(url)).status_code == 200
    finally:
        served.stop()


def serve_in_thread_tls(cert: Path, key: Path) -> Served:
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(APP, log_level="warning", ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return Served(
        f"https://127.0.0.1:{sock.getsockname()[1]}", sock.getsockname()[1], server, _thread=thread
    )


async def test_transport_closes_its_pool() -> None:
    transport = AiohttpTransport()
    session = transport._get_session()
    await transport.aclose()
    assert session.closed
