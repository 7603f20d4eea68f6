"""The gateway's lean IdP/LMS client (``GatewayClient``): what it skips per call must not
change what a caller sees. Real sockets on 127.0.0.1 (the aiohttp transport), fakes only
where a case needs a hook or a closed client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.connectors._http import build_client
from gateway.http_transport import GatewayClient
from gateway.sandbox._common import Served, serve_in_thread
from gateway.settings import HttpSettings


async def echo(request: Request) -> Response:
    seen = (
        f"{request.method} {(await request.body()).decode()} "
        f"cookie={request.headers.get('cookie')} ua={request.headers.get('user-agent')}"
    )
    return PlainTextResponse(seen, headers={"Set-Cookie": "session=victim; Path=/"})


async def moved(_: Request) -> Response:
    return RedirectResponse("/echo", status_code=302)


async def accented(_: Request) -> Response:
    # Starlette encodes header values as Latin-1: b"caf\xe9", neither ASCII nor UTF-8.
    return JSONResponse({"ok": True}, headers={"X-Note": "café"})


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    served = serve_in_thread(
        Starlette(routes=[
            Route("/echo", echo, methods=["GET", "POST"]),
            Route("/moved", moved),
            Route("/accented", accented),
        ])
    )
    yield served
    served.stop()


async def test_one_employees_cookie_never_rides_on_the_next_call(server: Served) -> None:
    async with build_client(HttpSettings()) as http:
        assert isinstance(http, GatewayClient)
        first = await http.post(f"{server.url}/echo", data={"who": "alice"})
        second = await http.get(f"{server.url}/echo")
        assert first.text.startswith("POST who=alice cookie=None ua=gateway/")
        assert second.text.startswith("GET  cookie=None")
        assert first.cookies.get("session") == "victim"  # the answer still shows it
        assert not http.cookies  # but the client kept nothing
        with pytest.raises(TypeError):
            http.cookies = {"session": "x"}


async def test_redirect_is_returned_not_followed_with_next_request(server: Served) -> None:
    async with build_client(HttpSettings()) as http:
        response = await http.get(f"{server.url}/moved")
        streamed = http.stream("GET", f"{server.url}/echo")
        async with streamed as body:
            text = (await body.aread()).decode()
    assert response.status_code == 302
    assert response.next_request is not None
    assert response.next_request.url.path == "/echo"
    assert text.startswith("GET  cookie=None")


async def test_hooks_auth_and_closed_client_take_httpx_own_path(server: Served) -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    http = build_client(HttpSettings())
    http.event_hooks = {"request": [hook], "response": []}
    async with http:
        response = await http.get(f"{server.url}/echo", auth=("user", "pw"))
        assert response.status_code == 200
    assert seen == ["/echo"]  # the hook ran: the full httpx path was taken
    with pytest.raises(RuntimeError):
        await http.get(f"{server.url}/echo")  # closed: httpx's own error


async def test_timeouts_come_from_each_request(server: Served) -> None:
    async with build_client(HttpSettings(read_timeout=5)) as http:
        one = await http.get(f"{server.url}/echo", timeout=1.0)
        other = await http.get(f"{server.url}/echo")
    assert one.request.extensions["timeout"]["read"] == 1.0
    assert other.request.extensions["timeout"]["read"] == 5


async def test_non_ascii_response_header_is_read_not_a_crash(server: Served) -> None:
    """An LMS answer with a Latin-1 byte in a header (seen in the wild in filenames and
    reason texts) is an ordinary answer: the transport hands httpx the raw bytes."""
    async with build_client(HttpSettings()) as http:
        response = await http.get(f"{server.url}/accented")
    assert response.status_code == 200
    assert response.headers["x-note"] == "café"
    assert response.json() == {"ok": True}
