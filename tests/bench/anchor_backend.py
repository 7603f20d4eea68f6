"""The anchors benchmark's minimal backend: what an IT admin puts behind Apache httpd with
mod_auth_openidc or mod_auth_mellon to send an employee on to SkyPrep.

    SKYPREP_API_KEY=... python -m tests.bench.anchor_backend --fd N --skyprep URL --acct ACCT

Apache authenticates the employee and proxies ``GET /login/skyprep`` here (mod_proxy_http,
kept-alive connections) with the identity in request headers it sets itself (any copy the
browser sent is overwritten): ``X-Remote-User`` (e-mail), ``X-Given-Name``,
``X-Family-Name``, ``X-Groups`` (``,`` or ``;`` separated). The backend makes the one SkyPrep
call a returning employee needs, ``get_login_key`` (daily key, autocreate, names and mapped
groups: the same request the gateway sends), and answers ``303`` to the sign-in link.

Chosen to be as cheap as a competent script can be, so the comparison flatters the anchor
rather than the gateway: one process, uvloop, asyncio streams, HTTP/1.1 written and parsed by
hand (requests come only from Apache; they are still bounded and checked), and a small pool
of kept-alive connections to SkyPrep. No framework, no logging per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from urllib.parse import quote, urlencode, urlsplit

import uvloop

MAX_HEAD = 16_384
GROUP_MAP = {"Staff": "All staff", "Safety": "Safety team", "Managers": "Managers"}


class SkyPrepClient:
    """``get_login_key`` over a pool of kept-alive HTTP/1.1 connections."""

    def __init__(self, base: str, api_key: str, acct_key: str) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path.rstrip("/") + "/admin/api/get_login_key"
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
        ).encode()
        self.keys = {"api_key": api_key, "acct_key": acct_key}
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def login_url(self, email: str, first: str, last: str, groups: list[str]) -> str:
        form = {
            **self.keys,
            "user_email": email,
            "key_type": "daily",
            "autocreate": "true",
            "first_name": first,
            "last_name": last,
        }
        mapped = [GROUP_MAP[g] for g in groups if g in GROUP_MAP]
        if mapped:
            form["user_groups"] = ";".join(mapped)
        body = urlencode(form).encode()
        request = self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        try:
            status, answer = await self._exchange(request, reuse=True)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            # A kept-alive connection SkyPrep closed meanwhile: once more on a new one.
            status, answer = await self._exchange(request, reuse=False)
        if status != 200:
            raise ValueError(f"get_login_key answered {status}")
        data = json.loads(answer)
        url = data.get("url")
        if not isinstance(url, str) or str(data.get("email", "")).lower() != email.lower():
            raise ValueError("get_login_key answer is not for this user")
        return url

    async def _exchange(self, request: bytes, *, reuse: bool) -> tuple[int, bytes]:
        if reuse and self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, body


def _response(status: int, reason: str, headers: str = "", body: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\n{headers}Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Backend:
    """The HTTP server side: one kept-alive connection per Apache proxy connection."""

    def __init__(self, skyprep: SkyPrepClient) -> None:
        self.skyprep = skyprep

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    writer.write(_response(431, "Request Header Fields Too Large"))
                    return
                writer.write(await self.handle(head))
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def handle(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0]
        if method == "GET" and path == "/healthz":  # for the harness: up and accepting
            return _response(200, "OK")
        if method != "GET" or path.partition("?")[0] != "/login/skyprep":
            return _response(404, "Not Found")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        email = fields.get("x-remote-user", "")
        if "@" not in email or len(email) > 254:
            return _response(403, "Forbidden")
        groups = [g.strip() for g in fields.get("x-groups", "").replace(";", ",").split(",")]
        try:
            url = await self.skyprep.login_url(
                email, fields.get("x-given-name", ""), fields.get("x-family-name", ""), groups
            )
        except (OSError, ValueError, asyncio.IncompleteReadError):
            return _response(502, "Bad Gateway")
        return _response(303, "See Other", f"Location: {quote(url, safe=':/?&=%+~.-_')}\r\n")


async def _main(sock: socket.socket, skyprep: str, acct: str) -> None:
    backend = Backend(SkyPrepClient(skyprep, os.environ["SKYPREP_API_KEY"], acct))
    server = await asyncio.start_server(backend.serve, sock=sock, limit=MAX_HEAD, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--skyprep", required=True)
    parser.add_argument("--acct", required=True)
    args = parser.parse_args()
    uvloop.run(_main(socket.socket(fileno=args.fd), args.skyprep, args.acct))


if __name__ == "__main__":
    main()
