"""Session cookie: flags, prefix, lifetime, tamper resistance, revocation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.session import SessionManager
from gateway.identity import Identity
from gateway.store.memory import MemoryStore

KEY = "s" * 40
WHO = Identity(idp="okta", subject="u1", email="a@example.com", groups=("Staff", "Secret-Project"))


def manager(
    store: MemoryStore, *, secure: bool = True, lifetime: int = 3600, now: float = 1_000_000.0
) -> SessionManager:
    return SessionManager(
        KEY,
        store,
        secure=secure,
        lifetime=lifetime,
        login_timeout=600,
        relevant_groups={"Staff"},
        clock=lambda: now,
    )


def request_with(cookie_header: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"cookie", cookie_header.encode())],
        }
    )


def cookie_pair(response: Response) -> tuple[str, str]:
    header = response.headers["set-cookie"]
    return header, header.split(";", 1)[0]


async def test_secure_cookie_flags_and_host_prefix() -> None:
    store = MemoryStore()
    response = Response()
    manager(store).issue(response, WHO)
    header, pair = cookie_pair(response)
    assert pair.startswith("__Host-gw_session=")
    lowered = header.lower()
    for flag in ("httponly", "secure", "samesite=lax", "path=/", "max-age=3600"):
        assert flag in lowered
    assert "domain=" not in lowered  # __Host- cookies may not name a domain


async def test_dev_mode_cookie_has_no_prefix_and_no_secure_flag() -> None:
    response = Response()
    manager(MemoryStore(), secure=False).issue(response, WHO)
    header, pair = cookie_pair(response)
    assert pair.startswith("gw_session=") and "secure" not in header.lower()


async def test_round_trip_keeps_only_relevant_groups_and_new_id_each_time() -> None:
    store = MemoryStore()
    sessions = manager(store)
    first, second = Response(), Response()
    s1 = sessions.issue(first, WHO)
    s2 = sessions.issue(second, WHO)
    assert s1.sid != s2.sid
    loaded = await sessions.load(request_with(cookie_pair(first)[1]))
    assert loaded is not None and loaded.identity.email == "a@example.com"
    assert loaded.identity.groups == ("Staff",)


async def test_tampered_or_expired_cookie_is_ignored() -> None:
    store = MemoryStore()
    response = Response()
    manager(store).issue(response, WHO)
    name, value = cookie_pair(response)[1].split("=", 1)
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert await manager(store).load(request_with(f"{name}={tampered}")) is None
    other_key = SessionManager("x" * 40, store, secure=True, lifetime=3600, login_timeout=600)
    assert await other_key.load(request_with(f"{name}={value}")) is None


async def test_ended_session_cannot_be_reused() -> None:
    store = MemoryStore()
    sessions = manager(store)
    response = Response()
    session = sessions.issue(response, WHO)
    pair = cookie_pair(response)[1]
    await sessions.end(Response(), session)
    assert await sessions.load(request_with(pair)) is None


async def test_csrf_token_is_bound_to_the_session() -> None:
    sessions = manager(MemoryStore())
    a = sessions.issue(Response(), WHO)
    b = sessions.issue(Response(), WHO)
    assert sessions.csrf_ok(a, sessions.csrf_token(a))
    assert not sessions.csrf_ok(a, sessions.csrf_token(b))
    assert not sessions.csrf_ok(a, None)
