"""Session cookie: flags, prefix, lifetime, tamper resistance, and fail-closed validity.

A session is valid only while the store holds its ``session:<sid>`` entry: logging out,
losing the store's data (a restart without persistence) or an entry that was never written
(a cookie from the previous version) all sign the browser out; an unreachable store is a
StoreUnavailable, never "valid". The Redis cases use a real redis-server.
"""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.session import SessionManager
from gateway.errors import StoreUnavailable
from gateway.identity import Identity
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.support.redis_server import RedisServer

KEY = "s" * 40
WHO = Identity(idp="okta", subject="u1", email="a@example.com", groups=("Staff", "Secret-Project"))


def manager(
    store: Store, *, secure: bool = True, lifetime: int = 3600, now: float = 1_000_000.0
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
    await manager(store).issue(response, WHO)
    header, pair = cookie_pair(response)
    assert pair.startswith("__Host-gw_session=")
    lowered = header.lower()
    for flag in ("httponly", "secure", "samesite=lax", "path=/", "max-age=3600"):
        assert flag in lowered
    assert "domain=" not in lowered  # __Host- cookies may not name a domain


async def test_dev_mode_cookie_has_no_prefix_and_no_secure_flag() -> None:
    response = Response()
    await manager(MemoryStore(), secure=False).issue(response, WHO)
    header, pair = cookie_pair(response)
    assert pair.startswith("gw_session=") and "secure" not in header.lower()


async def test_round_trip_keeps_only_relevant_groups_and_new_id_each_time() -> None:
    store = MemoryStore()
    sessions = manager(store)
    first, second = Response(), Response()
    s1 = await sessions.issue(first, WHO)
    s2 = await sessions.issue(second, WHO)
    assert s1.sid != s2.sid
    loaded = await sessions.load(request_with(cookie_pair(first)[1]))
    assert loaded is not None and loaded.identity.email == "a@example.com"
    assert loaded.identity.groups == ("Staff",)


async def test_tampered_or_expired_cookie_is_ignored() -> None:
    store = MemoryStore()
    response = Response()
    await manager(store).issue(response, WHO)
    name, value = cookie_pair(response)[1].split("=", 1)
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert await manager(store).load(request_with(f"{name}={tampered}")) is None
    other_key = SessionManager("x" * 40, store, secure=True, lifetime=3600, login_timeout=600)
    assert await other_key.load(request_with(f"{name}={value}")) is None


async def test_ended_session_cannot_be_reused() -> None:
    store = MemoryStore()
    sessions = manager(store)
    response = Response()
    session = await sessions.issue(response, WHO)
    pair = cookie_pair(response)[1]
    await sessions.end(Response(), session)
    assert await sessions.load(request_with(pair)) is None


async def test_csrf_token_is_bound_to_the_session() -> None:
    sessions = manager(MemoryStore())
    a = await sessions.issue(Response(), WHO)
    b = await sessions.issue(Response(), WHO)
    assert sessions.csrf_ok(a, sessions.csrf_token(a))
    assert not sessions.csrf_ok(a, sessions.csrf_token(b))
    assert not sessions.csrf_ok(a, None)


async def test_a_session_the_store_no_longer_holds_is_signed_out() -> None:
    store = MemoryStore()
    sessions = manager(store)
    response = Response()
    session = await sessions.issue(response, WHO)
    pair = cookie_pair(response)[1]
    assert await sessions.load(request_with(pair)) is not None
    await store.delete(f"session:{session.sid}")
    assert await sessions.load(request_with(pair)) is None


async def test_session_entry_lives_exactly_the_session_lifetime() -> None:
    now = [1_000.0]
    store = MemoryStore(clock=lambda: now[0])
    sessions = manager(store, lifetime=3600)
    response = Response()
    session = await sessions.issue(response, WHO)
    now[0] += 3599
    assert await store.get(f"session:{session.sid}") is not None
    now[0] += 2
    assert await store.get(f"session:{session.sid}") is None


async def test_logged_out_cookie_replayed_after_a_store_restart_is_refused() -> None:
    """The old scheme remembered *revocations*: a store that lost them revived every
    signed-out cookie. Now an empty store knows no session at all."""
    sessions = manager(MemoryStore())
    response = Response()
    ended = await sessions.issue(response, WHO)
    logged_out = cookie_pair(response)[1]
    kept_response = Response()
    await sessions.issue(kept_response, WHO)
    kept = cookie_pair(kept_response)[1]
    await sessions.end(Response(), ended)
    assert await sessions.load(request_with(logged_out)) is None

    restarted = manager(MemoryStore())  # same signing key, the store's data is gone
    assert await restarted.load(request_with(logged_out)) is None
    # Fail closed: a session that was never logged out is gone too (the employee signs in
    # again; nothing else is lost).
    assert await restarted.load(request_with(kept)) is None


async def test_cookie_from_the_previous_version_without_a_store_entry_is_signed_out() -> None:
    # Signed with the right key and salt, fresh, exactly as the previous version issued it,
    # but no session: entry was ever written for it.
    legacy = URLSafeTimedSerializer(KEY, salt="gateway.session.v1").dumps(
        {
            "sid": "legacy-session-id",
            "iat": 1_000_000,
            "identity": {
                "idp": "okta",
                "subject": "u1",
                "email": "a@example.com",
                "groups": ["Staff"],
            },
        }
    )
    sessions = manager(MemoryStore())
    assert await sessions.load(request_with(f"{sessions.cookie_name}={legacy}")) is None


async def test_redis_restart_signs_everyone_out_and_unreachable_redis_is_an_error(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, key_prefix="session-test:")
    try:
        sessions = manager(store)
        response = Response()
        ended = await sessions.issue(response, WHO)
        logged_out = cookie_pair(response)[1]
        other = Response()
        await sessions.issue(other, WHO)
        still_in = cookie_pair(other)[1]
        await sessions.end(Response(), ended)
        assert await sessions.load(request_with(still_in)) is not None

        redis_server.stop()
        # Unreachable is never read as "valid" (nor as "signed out"): the caller shows 503.
        with pytest.raises(StoreUnavailable):
            await sessions.load(request_with(still_in))
        with pytest.raises(StoreUnavailable):
            await sessions.issue(Response(), WHO)

        redis_server.start()  # no persistence: everything it held is gone
        assert await sessions.load(request_with(logged_out)) is None
        assert await sessions.load(request_with(still_in)) is None
    finally:
        await store.aclose()
