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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.errors import ConfigError, StoreUnavailable

T = TypeVar("T")

# KEYS[1] bucket; ARGV: per_minute, capacity, max_wait. Returns {wait, tokens left, taken} as
# strings (Lua numbers become integers in Redis replies). Same arithmetic as
# MemoryStore.take_token: a token that matures within max_wait is reserved (the bucket goes
# below zero), so waiters are served in the order they reached Redis.
_TAKE_TOKEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local per_minute = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3]) or 0
local h = redis.call('HMGET', KEYS[1], 'tokens', 'last', 'paused')
local tokens = tonumber(h[1]) or capacity
local last = tonumber(h[2]) or now
local paused = tonumber(h[3]) or 0
if now < paused then
  return {string.format('%.17g', paused - now), '0', '0'}
end
local rate = per_minute / 60
tokens = math.min(capacity, tokens + (now - math.max(last, paused)) * rate)
local wait = 0
local taken = '1'
if tokens >= 1 then
  tokens = tokens - 1
else
  if rate > 0 then wait = (1 - tokens) / rate else wait = 60 end
  if wait <= max_wait then tokens = tokens - 1 else taken = '0' end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'last', string.format('%.17g', now), 'paused', string.format('%.17g', paused))
-- Once the bucket would be full again its state is the same as no state: let it expire.
local full_in = 3600
if rate > 0 then full_in = (capacity - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil(full_in * 1000) + 1000)
return {string.format('%.17g', wait), string.format('%.17g', tokens), taken}
"""

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
        url: str,
        password: str | None = None,
        key_prefix: str = "gateway:",
        tls_ca_file: str | None = None,
        *,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        health_check_interval: int = 5,
    ) -> None:
        """Connections are opened lazily, so building the store never blocks or fails on I/O.

        ``rediss://`` URLs turn TLS on (certificate and host name always verified);
        ``tls_ca_file`` names the CA bundle to trust instead of the system's.
        """
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("redis", "rediss"):
            raise ConfigError(["store.url must start with redis:// or rediss://"])
        if tls_ca_file and scheme != "rediss":
            # The operator asked for TLS but the URL says plain text: refuse, don't guess.
            raise ConfigError(["store.tls_ca_file is set but store.url is not rediss://"])
        self._prefix = key_prefix
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": health_check_interval,
            # One retry, on connection errors only: a pooled connection may have died with a
            # Redis restart and a fresh one will do. A timeout is not retried: the command may
            # have run, and the caller should hear about a slow Redis quickly.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "max_connections": max_connections,
            # A burst waits this long for one of the pooled connections (bounded, so a stuck
            # Redis still ends in StoreUnavailable) instead of opening thousands of them.
            "timeout": pool_timeout,
        }
        if password is not None:
            options["password"] = password
        if scheme == "rediss":
            options["ssl_cert_reqs"] = "required"
            options["ssl_check_hostname"] = True
            if tls_ca_file:
                options["ssl_ca_certs"] = tls_ca_file
        self._pool = BlockingConnectionPool.from_url(url, **options)
        self._redis = Redis(connection_pool=self._pool)
        self._take = self._redis.register_script(_TAKE_TOKEN)
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

    async def delete(self, key: str) -> None:
        await self._run("delete", lambda: self._redis.delete(self._k(key)))

    async def take_token(
        self, key: str, per_minute: float, capacity: float, max_wait: float = 0.0
    ) -> tuple[float, float, bool]:
        args = [repr(per_minute), repr(capacity), repr(max_wait)]
        answer = await self._run(
            "take_token", lambda: self._take(keys=[self._k(key)], args=args)
        )
        wait, tokens, taken = answer
        return float(wait), float(tokens), str(taken) in ("1", "b'1'")

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

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._pool.disconnect()
