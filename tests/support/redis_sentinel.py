"""Redis Sentinel for tests: a primary, a replica and three sentinels, all on 127.0.0.1.

The sentinels run the Debian ``redis-sentinel`` binary when installed, else
``redis-server --sentinel`` (the same program: Debian's ``redis-sentinel`` package only adds a
symlink and a system service). Each has its own config file in a temporary directory (Sentinel
rewrites it as it learns the topology) and no persistence.

Timings are tuned down for tests: a primary is *subjectively down* after ``down_after_ms``
(1 s) without answers, the quorum is 2 of 3, and a failover that stalls is retried after
``failover_timeout_ms``. A SIGKILLed primary is replaced in about 2 to 4 s here.

Use::

    with SentinelCluster(password="pw") as cluster:
        store = RedisStore(sentinels=cluster.sentinel_addresses, sentinel_service=..., ...)
        cluster.kill_primary()
        cluster.wait_for_new_primary()

Everything is killed and every directory removed on exit, also on failure.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis

from tests.support.redis_server import REDIS_SERVER, RedisServer, free_port, write_tls_files

SERVICE = "mymaster"


def _client(port: int, password: str | None, ca_file: Path | str | None) -> redis.Redis:
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(ca_file)} if ca_file else {}
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=1,
        decode_responses=True, **tls,
    )  # fmt: skip


class SentinelProcess:
    """One sentinel on 127.0.0.1, monitoring ``service`` at the given primary."""

    def __init__(
        self,
        primary_port: int,
        *,
        service: str,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        auth_pass: str | None,
        password: str | None,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.password = password
        self.ca_file = tls_files[0] if tls_files else None
        self.dir = Path(tempfile.mkdtemp(prefix="gw-sentinel-"))
        if tls_files:
            ca, cert, key = tls_files
            # TLS only, to clients, to the data nodes and to the other sentinels.
            listen = ["port 0", f"tls-port {self.port}", f"tls-cert-file {cert}",
                      f"tls-key-file {key}", f"tls-ca-cert-file {ca}", "tls-auth-clients no",
                      "tls-replication yes"]  # fmt: skip
        else:
            listen = [f"port {self.port}"]
        lines = [
            *listen,
            "bind 127.0.0.1",
            "daemonize no",
            f"dir {self.dir}",
            f"logfile {self.dir / 'sentinel.log'}",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_timeout_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if auth_pass:
            lines.append(f"sentinel auth-pass {service} {auth_pass}")
        if password:
            # The sentinels' own password: clients need it, and so do the other sentinels.
            lines += [f"requirepass {password}", f"sentinel sentinel-pass {password}"]
        self.config = self.dir / "sentinel.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-sentinel")
        args = [binary, str(self.config)] if binary else [REDIS_SERVER, str(self.config)]
        args.append("--sentinel")  # harmless for redis-sentinel, required for redis-server
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def client(self) -> redis.Redis:
        return _client(self.port, self.password, self.ca_file)

    def master_state(self, service: str) -> dict[str, Any] | None:
        """``SENTINEL MASTER <service>`` as this sentinel sees it, or None if unreachable."""
        with contextlib.suppress(redis.RedisError, OSError):
            with self.client() as client:
                state: dict[str, Any] = client.sentinel_master(service)
                return state
        return None

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "sentinel.log").read_text(errors="replace")[-chars:]
        return ""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                proc.kill()
                proc.wait(timeout=5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A primary, one replica and three sentinels (quorum 2) for service :data:`SERVICE`.

    ``password`` protects the data nodes (the replica and the sentinels use it too);
    ``sentinel_password`` protects the sentinels themselves.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        service: str = SERVICE,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        tls: bool = False,
    ) -> None:
        """``tls``: every node speaks only TLS (one throw-away CA: :attr:`ca_file`)."""
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        self.dir = Path(tempfile.mkdtemp(prefix="gw-sentinel-ca-"))
        tls_files = write_tls_files(self.dir) if tls else None
        self.ca_file = str(tls_files[0]) if tls_files else None
        auth = ["--masterauth", password] if password else []
        # A replica's first sync waits 5 s by default (to batch replicas): not here.
        auth += ["--repl-diskless-sync-delay", "0"]
        if tls:
            auth += ["--tls-replication", "yes"]
        # Replicas answer reads only; the gateway must never be sent to one for writes.
        self.primary = RedisServer(password, extra_args=auth, tls=tls, tls_files=tls_files)
        self.replica = RedisServer(
            password,
            extra_args=[*auth, "--replicaof", "127.0.0.1", str(self.primary.port)],
            tls=tls,
            tls_files=tls_files,
        )
        self.servers = {self.primary.port: self.primary, self.replica.port: self.replica}
        self.sentinels = [
            SentinelProcess(
                self.primary.port,
                service=service,
                quorum=2,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                auth_pass=password,
                password=sentinel_password,
                tls_files=tls_files,
            )
            for _ in range(3)
        ]

    @property
    def sentinel_addresses(self) -> list[str]:
        """``host:port`` of each sentinel, as ``[store] sentinels`` takes them."""
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self, timeout: float = 30.0) -> None:
        """Start everything and wait until replication is up and every sentinel knows the
        primary, the replica and the two other sentinels."""
        self.primary.start()
        self.replica.start()
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._replica_in_sync, "replica never came in sync")
        for sentinel in self.sentinels:
            sentinel.start()
        self._wait(deadline, self._sentinels_agree, "sentinels never saw each other")

    def _wait(self, deadline: float, ready: Any, what: str) -> None:
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what}:\n" + "\n".join(s.log_tail() for s in self.sentinels))

    def _replica_in_sync(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            with self._data_client(self.replica.port) as client:
                return bool(client.info("replication").get("master_link_status") == "up")
        return False

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.master_state(self.service)
            if not state or state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return True

    def _data_client(self, port: int) -> redis.Redis:
        return _client(port, self.password, self.ca_file)

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels' majority sees it (None: no agreement)."""
        seen: dict[int, int] = {}
        for sentinel in self.sentinels:
            state = sentinel.master_state(self.service)
            if state and not state.get("is_sdown") and not state.get("is_odown"):
                port = int(state["port"])
                seen[port] = seen.get(port, 0) + 1
        if not seen:
            return None
        port, votes = max(seen.items(), key=lambda item: item[1])
        return port if votes >= 2 else None

    def current_primary(self) -> RedisServer:
        port = self.primary_port()
        assert port is not None, "the sentinels do not agree on a primary"
        return self.servers[port]

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Wait until the replica has acknowledged every write the primary has taken so far
        (replication is asynchronous: without this a crash may lose the last writes)."""
        primary = self.current_primary()
        deadline = time.monotonic() + timeout
        with self._data_client(primary.port) as client:
            while time.monotonic() < deadline:
                info = client.info("replication")
                replicas = [v for k, v in info.items() if k.startswith("slave")
                            and isinstance(v, dict)]  # fmt: skip
                if replicas and all(r["offset"] >= info["master_repl_offset"] for r in replicas):
                    return
                time.sleep(0.02)
        raise RuntimeError("the replica did not catch up")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary (no goodbye); returns the server killed."""
        server = self.current_primary()
        server.kill()
        return server

    def wait_for_new_primary(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Wait until a majority of sentinels names another primary, and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old.port and self._is_writable_primary(port):
                return self.servers[port]
            time.sleep(0.05)
        raise RuntimeError("no failover:\n" + "\n".join(s.log_tail() for s in self.sentinels))

    def wait_until_replica(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Wait until ``server`` (a demoted primary) has been made a replica by Sentinel."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                with self._data_client(server.port) as client:
                    if client.info("replication").get("role") == "slave":
                        return
            time.sleep(0.05)
        raise RuntimeError(f"{server.port} never became a replica")

    def _is_writable_primary(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            with self._data_client(port) as client:
                return bool(client.info("replication").get("role") == "master")
        return False

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers.values():
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@pytest.fixture
def sentinel_cluster() -> Iterator[SentinelCluster]:
    """A password-protected primary + replica + 3 sentinels of this test's own."""
    with SentinelCluster(password="data-pw", sentinel_password="sentinel-pw") as cluster:
        yield cluster
