"""Redis store: the state every replica must share (redis-py asyncio).

Every method is one round trip: ``SET NX PX`` for set-if-absent, ``GETDEL`` for pop (Redis
>= 6.2), and a Lua script for the token bucket and its pause. The scripts read the clock with
Redis ``TIME``, so all replicas share one clock whatever their own clocks say; the bucket's
arithmetic is exactly that of :class:`gateway.store.memory.MemoryStore`.

Failure handling: short socket timeouts, a health check on connections idle for a few
seconds, one immediate retry on a fresh connection for a connection error (the pooled one may
have died with a Redis restart), never a retry on a timeout (the command may have run).
Anything that goes wrong talking to Redis becomes :class:`gateway.errors.StoreUnavailable`,
carrying the error's type only (redis-py messages can quote host names; never a password).
The pool reconnects by itself when Redis returns; nothing has to be rebuilt.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import TypeVar

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.store.redis_connect import RedisConnection

T = TypeVar("T")

# KEYS[1] bucket; ARGV: seconds. Empty the bucket and hold it empty (never shorten a pause).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused')) or 0
paused = math.max(paused, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'tokens', '0', 'last', string.format('%.17g', now),
  'paused', string.format('%.17g', paused))
-- Kept well past the pause so the refill after it starts from an empty bucket.
redis.call('PEXPIRE', KEYS[1], math.ceil((paused - now) * 1000) + 3600000)
return 1
"""

# KEYS[1] counter; ARGV: amount, ttl in ms. INCRBY, floored at 0; the TTL is set when the
# counter is created and never extended (a fixed window, as in MemoryStore.incr_with_ttl).
_INCR = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v < 0 then
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
  v = 0
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""

# KEYS[1] bucket; ARGV: per_minute, capacity, count, max_wait, floor ('' for none). Returns
# {wait, tokens left, taken} as strings (Lua numbers become integers in Redis replies). Same
# arithmetic as MemoryStore.take_tokens: ``count`` tokens at once, reserved (the bucket goes
# below zero, so waiters are served in the order they reached Redis) when the last one matures
# within max_wait; with a floor only taken when there now with ``floor`` left over. Once the
# bucket would be full again its state is the same as no state: it is left to expire.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local per_minute = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4]) or 0
local floor = tonumber(ARGV[5])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'paused')
local tokens = tonumber(h[1]) or capacity
local last = tonumber(h[2]) or now
local paused = tonumber(h[3]) or 0
if now < paused then
  return {string.format('%.17g', paused - now), '0', '0'}
end
local rate = per_minute / 60
tokens = math.min(capacity, tokens + (now - math.max(last, paused)) * rate)
local need = count + (floor or 0)
local wait = 0
if tokens < need then
  if rate > 0 then wait = (need - tokens) / rate else wait = 60 end
end
local taken = '0'
if wait == 0 or (floor == nil and wait <= max_wait) then
  tokens = tokens - count
  taken = '1'
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'last', string.format('%.17g', now), 'paused', string.format('%.17g', paused))
local full_in = 3600
if rate > 0 then full_in = (capacity - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in * 1000) + 1000)
return {string.format('%.17g', wait), string.format('%.17g', tokens), taken}
"""

# KEYS[1] bucket; ARGV: per_minute, capacity, count. Unused tokens back (capped; nothing while
# paused or when the bucket has expired, i.e. is full anyway).
_GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'paused')
if not h[1] then return 0 end
local capacity = tonumber(ARGV[2])
local paused = tonumber(h[3]) or 0
if now < paused then return 0 end
local rate = tonumber(ARGV[1]) / 60
local tokens = math.min(capacity, tonumber(h[1]) + (now - math.max(tonumber(h[2]), paused)) * rate)
tokens = math.min(capacity, tokens + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'last', string.format('%.17g', now))
local full_in = 3600
if rate > 0 then full_in = (capacity - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in * 1000) + 1000)
return 1
"""

# KEYS[1]; ARGV: value. Compare-and-delete (a lock released by its owner only).
_DELETE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]; ARGV: value, ttl in ms. Compare-and-renew (an owner extends its lock).
_RENEW_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1]. GET, PTTL and DEL in one step: {value, ms left} or nil (a queue ticket claimed).
_POP_WITH_TTL = """
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local ms = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
return {v, ms}
"""

# Every policy but noeviction may drop keys under memory pressure; the volatile-* ones too,
# since every key here has a TTL. Dropping a replay-cache or revocation entry would silently
# turn that check off, so anything else is flagged (README: "Redis: maxmemory-policy").
SAFE_EVICTION_POLICY = "noeviction"


def _px(ttl: float) -> int:
    # Redis refuses PX 0; a TTL under a millisecond is as good as expired.
    return max(1, math.ceil(ttl * 1000))


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # decode_responses is off, so redis-py hands back bytes; the union is its typing's.
    return value.encode() if isinstance(value, str) else value


class RedisStore:
    """The :class:`gateway.store.base.Store` on Redis, shared by every replica."""

    def __init__(
        self,
        url: str | None = None,
        password: str | None = None,
        key_prefix: str = "gateway:",
        tls_ca_file: str | None = None,
        *,
        username: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        sentinels: Sequence[str] = (),
        sentinel_service: str = "mymaster",
        sentinel_username: str | None = None,
        sentinel_password: str | None = None,
        sentinel_tls: bool = False,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        health_check_interval: int = 5,
    ) -> None:
        """Connections are opened lazily, so building the store never blocks or fails on I/O.

        Either ``url`` (``rediss://`` turns TLS on) or ``sentinels`` (``host:port`` each) and
        ``sentinel_service``: see :mod:`gateway.store.redis_connect`. TLS always verifies the
        certificate and host name; ``tls_ca_file`` names a CA bundle trusted besides the
        system's, ``tls_cert_file``/``tls_key_file`` a client certificate. ``username``
        and ``password`` are the (ACL) user's; ``sentinel_*`` are the sentinels' own.
        """
        self._prefix = key_prefix
        self._connection = RedisConnection(
            url,
            password=password,
            username=username,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            sentinels=sentinels,
            sentinel_service=sentinel_service,
            sentinel_username=sentinel_username,
            sentinel_password=sentinel_password,
            sentinel_tls=sentinel_tls,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            health_check_interval=health_check_interval,
        )
        self._redis = self._connection.redis
        self._pause = self._redis.register_script(_PAUSE)
        self._incr = self._redis.register_script(_INCR)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def _run(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis {op} failed: {type(exc).__name__}") from None

    async def get(self, key: str) -> bytes | None:
        return _as_bytes(await self._run("get", lambda: self._redis.get(self._k(key))))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._run("set", lambda: self._redis.set(self._k(key), value, px=_px(ttl)))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        stored = await self._run(
            "set_if_absent", lambda: self._redis.set(self._k(key), value, px=_px(ttl), nx=True)
        )
        return bool(stored)

    async def pop(self, key: str) -> bytes | None:
        return _as_bytes(await self._run("pop", lambda: self._redis.getdel(self._k(key))))

    @cached_property
    def _pop_ttl(self) -> AsyncScript:
        return self._redis.register_script(_POP_WITH_TTL)

    async def pop_with_ttl(self, key: str) -> tuple[bytes, float] | None:
        answer = await self._run(
            "pop_with_ttl", lambda: self._pop_ttl(keys=[self._k(key)], args=[])
        )
        if not answer:
            return None
        value, ms = answer
        # PTTL is -1 for a key without a TTL (never written by us): treat it as expiring now.
        return _as_bytes(value) or b"", max(0.0, int(ms) / 1000.0)

    async def delete(self, key: str) -> None:
        await self._run("delete", lambda: self._redis.delete(self._k(key)))

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        # One token is take_tokens' case count=1 without a floor (one script, one arithmetic).
        return await self.take_tokens(key, per_minute, capacity, 1, max_wait)

    @cached_property
    def _take_n(self) -> AsyncScript:
        # Registered on first use (the constructor stays connection setup only).
        return self._redis.register_script(_TAKE_TOKENS)

    @cached_property
    def _give_back(self) -> AsyncScript:
        return self._redis.register_script(_GIVE_BACK)

    @cached_property
    def _cad(self) -> AsyncScript:
        return self._redis.register_script(_DELETE_IF_EQUALS)

    @cached_property
    def _renew(self) -> AsyncScript:
        return self._redis.register_script(_RENEW_IF_EQUALS)

    async def take_tokens(
        self, key: str, per_minute: float, capacity: float, count: int, max_wait: float = 0.0,
        *, floor: float | None = None,
    ) -> tuple[float, float, bool]:
        args = [repr(per_minute), repr(capacity), str(int(count)), repr(max_wait),
                "" if floor is None else repr(floor)]
        answer = await self._run(
            "take_tokens", lambda: self._take_n(keys=[self._k(key)], args=args)
        )
        wait, tokens, taken = answer
        return float(wait), float(tokens), str(taken) in ("1", "b'1'")

    async def give_back_tokens(
        self, key: str, per_minute: float, capacity: float, count: int
    ) -> None:
        args = [repr(per_minute), repr(capacity), str(int(count))]
        await self._run(
            "give_back_tokens", lambda: self._give_back(keys=[self._k(key)], args=args)
        )

    async def delete_if_equals(self, key: str, value: bytes) -> bool:
        deleted = await self._run(
            "delete_if_equals", lambda: self._cad(keys=[self._k(key)], args=[value])
        )
        return int(deleted) == 1

    async def renew_if_equals(self, key: str, value: bytes, ttl: float) -> bool:
        renewed = await self._run(
            "renew_if_equals", lambda: self._renew(keys=[self._k(key)], args=[value, _px(ttl)])
        )
        return int(renewed) == 1

    async def pause_bucket(self, key: str, seconds: float) -> None:
        await self._run(
            "pause_bucket", lambda: self._pause(keys=[self._k(key)], args=[repr(seconds)])
        )

    async def incr_with_ttl(
        self, key: str, ttl: float, amount: int = 1, *, anonymous: bool = False
    ) -> int:
        # ``anonymous`` needs nothing here: Redis's size is bounded by maxmemory, and with the
        # noeviction policy a full Redis refuses writes (StoreUnavailable) instead of evicting.
        value = await self._run(
            "incr_with_ttl",
            lambda: self._incr(keys=[self._k(key)], args=[int(amount), _px(ttl)]),
        )
        return int(value)

    async def eviction_policy(self) -> str:
        """Redis's ``maxmemory-policy``, or ``"unknown"`` when CONFIG is not permitted (managed
        Redis often disables it) or Redis cannot be asked right now."""
        try:
            answer = await self._redis.config_get("maxmemory-policy")
        except (RedisError, OSError, TimeoutError):
            return "unknown"
        for name, value in answer.items():
            name_ = name.decode() if isinstance(name, bytes) else str(name)
            if name_ == "maxmemory-policy":
                return value.decode() if isinstance(value, bytes) else str(value)
        return "unknown"

    async def health_problems(self) -> list[str]:
        policy = await self.eviction_policy()
        if policy == SAFE_EVICTION_POLICY:
            return []
        if policy == "unknown":
            return [
                "store: redis maxmemory-policy unknown (CONFIG GET not permitted or failed); "
                "make sure it is noeviction"
            ]
        return [
            f"store: redis maxmemory-policy is {policy[:40]}, not noeviction: under memory "
            "pressure Redis may evict replay-cache and session entries"
        ]

    async def ping(self) -> None:
        await self._run("ping", self._redis.ping)

    async def describe(self) -> str:
        """Where the store is right now (the primary in use, with Sentinel), for operators'
        readiness details. Never a credential; never raises."""
        return await self._connection.describe()

    async def aclose(self) -> None:
        await self._connection.aclose()
