"""How the Redis store reaches Redis: one URL, or the primary that Redis Sentinel names.

Kept apart from :mod:`gateway.store.redis` (the store's operations) so that file stays about
the data. Two ways in, the same client either way:

* ``url`` (``redis://`` or ``rediss://``): one endpoint, e.g. a managed Redis's primary
  endpoint, whose provider moves the address on failover.
* ``sentinels`` + ``service``: redis-py's Sentinel support. Every new connection asks the
  sentinels for the current primary first, so after a failover the gateway follows the
  promoted replica without a restart. A connection still open to a demoted primary gets
  ``READONLY`` and is dropped (redis-py's SentinelManagedConnection). While no primary is
  known (between the old one's death and the promotion) every command fails, which the store
  turns into StoreUnavailable: fail closed, and recovered by itself once the sentinels agree.

TLS is verified always (certificate chain and host name; no switch turns that off). The
trusted CAs are the system's (OpenSSL's default paths, so ``SSL_CERT_FILE`` counts) plus
``tls_ca_file`` when set: redis-py builds its context with ``ssl.create_default_context()``
and adds the file to it. ``username`` + ``password`` are a Redis 6
ACL user's (managed services give one); client certificates are optional.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.errors import ConfigError


class _PrimaryConnection(SentinelManagedConnection):
    """A connection to whatever the sentinels call the primary *now*, also on a reconnect.

    redis-py (8.1, asyncio) asks the sentinels only in ``connect()``; a reconnect after an
    error (``send_packed_command``, the health check, the retry) calls
    ``connect_check_health()`` with the last address instead (redis/redis-py#3874). After a
    failover that address is the old primary, and once it is restarted, empty and briefly a
    primary of its own, it would take our writes until Sentinel demotes it, and they would be
    lost: a replay-cache entry among them. So every connect asks the sentinels first.
    """

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )

    async def _connect_retry(self) -> None:
        if self._reader:
            return  # already connected
        await self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )


class _PrimaryTlsConnection(_PrimaryConnection, SSLConnection):
    pass


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (ask the sentinels for the primary on every new connection) with the
    blocking pool's bounded wait for a free connection: redis-py's SentinelConnectionPool
    alone raises "Too many connections" on a burst instead of queueing it."""


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError when it is neither."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    if any(c in host for c in "/@ ") or ("[" in host or "]" in host):
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


class RedisConnection:
    """The client the store talks through, and where it currently points (for readiness)."""

    def __init__(
        self,
        url: str | None,
        *,
        password: str | None,
        username: str | None,
        tls_ca_file: str | None,
        tls_cert_file: str | None,
        tls_key_file: str | None,
        sentinels: Sequence[str],
        sentinel_service: str,
        sentinel_username: str | None,
        sentinel_password: str | None,
        sentinel_tls: bool,
        socket_timeout: float,
        connect_timeout: float,
        max_connections: int,
        pool_timeout: float,
        health_check_interval: int,
    ) -> None:
        """No I/O here: connections are opened on first use."""
        if bool(url) == bool(sentinels):
            raise ConfigError(["store: set either store.url or store.sentinels"])
        if url:
            scheme = url.split("://", 1)[0].lower()
            if scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(["store.url must start with redis://, rediss:// or unix://"])
            tls = scheme == "rediss"
        else:
            tls = sentinel_tls
        tls_files = {"tls_ca_file": tls_ca_file, "tls_cert_file": tls_cert_file,
                     "tls_key_file": tls_key_file}  # fmt: skip
        for name, value in tls_files.items():
            if value and not tls:
                # The operator asked for TLS but the URL says plain text: refuse, don't guess.
                raise ConfigError([f"store.{name} is set but TLS is off (rediss:// URL or "
                                   "store.sentinel_tls = true)"])  # fmt: skip
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ConfigError(["store.tls_cert_file and store.tls_key_file go together"])
        timeouts: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
        }
        tls_options: dict[str, Any] = {}
        if tls:
            tls_options = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if tls_ca_file:
                tls_options["ssl_ca_certs"] = tls_ca_file
            if tls_cert_file:
                tls_options["ssl_certfile"] = tls_cert_file
                tls_options["ssl_keyfile"] = tls_key_file
        options: dict[str, Any] = {
            **timeouts,
            **tls_options,
            "health_check_interval": health_check_interval,
            # One retry, on connection errors only: a pooled connection may have died with a
            # Redis restart (or a failover) and a fresh one will do. A timeout is not retried:
            # the command may have run, and the caller should hear about a slow Redis quickly.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "max_connections": max_connections,
            # A burst waits this long for one of the pooled connections (bounded, so a stuck
            # Redis still ends in StoreUnavailable) instead of opening thousands of them.
            "timeout": pool_timeout,
        }
        if password is not None:
            options["password"] = password
        if username is not None:
            options["username"] = username
        self._service = sentinel_service
        self._sentinel: Sentinel | None = None
        self._where = ""
        if url:
            parts = urlsplit(url)
            # Never the URL itself: it may carry credentials.
            self._where = (
                f"redis unix socket {parts.path}"
                if scheme == "unix"
                else f"redis {parts.hostname}:{parts.port or 6379}" + (" (TLS)" if tls else "")
            )
            self.pool: ConnectionPool = BlockingConnectionPool.from_url(url, **options)
            self.redis = Redis(connection_pool=self.pool)
            return
        sentinel_options: dict[str, Any] = {
            **timeouts,
            # discover_master() already tries each sentinel in turn: no retries on one.
            "retry": Retry(NoBackoff(), 0),
        }
        if sentinel_tls:
            sentinel_options.update(ssl=True, **tls_options)
        if sentinel_password is not None:
            sentinel_options["password"] = sentinel_password
        if sentinel_username is not None:
            sentinel_options["username"] = sentinel_username
        addresses = []
        for text in sentinels:
            try:
                addresses.append(parse_address(text))
            except ValueError as exc:
                raise ConfigError([f"store.sentinels: {exc}"]) from None
        self._sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
        options["connection_class"] = _PrimaryTlsConnection if sentinel_tls else _PrimaryConnection
        self.redis = self._sentinel.master_for(
            sentinel_service, connection_pool_class=_BlockingSentinelPool, **options
        )
        self.pool = self.redis.connection_pool

    async def describe(self) -> str:
        """Where the store is right now, for detailed readiness: ``redis host:port``, or the
        primary the sentinels name. Never a credential; never raises."""
        if self._sentinel is None:
            return self._where
        try:
            host, port = await self._sentinel.discover_master(self._service)
        except (RedisError, OSError, TimeoutError) as exc:
            return (
                f"redis via sentinels, service {self._service!r}: no primary known "
                f"({type(exc).__name__})"
            )
        return f"redis primary {host}:{port} (sentinel service {self._service!r})"

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.pool.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()
