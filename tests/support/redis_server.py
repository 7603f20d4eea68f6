"""A real ``redis-server`` for tests: free 127.0.0.1 port, no persistence, temp dir.

Use the fixtures by importing them into a test module (or a conftest)::

    from tests.support.redis_server import redis_server, redis_url  # noqa: F401

* ``redis_url`` (module scope): one server shared by a module's tests; give each test its own
  key prefix (``RedisStore(..., key_prefix=...)``) when they must not see each other's keys.
* ``redis_server`` (function scope): a server of the test's own, with :meth:`RedisServer.stop`,
  :meth:`RedisServer.start` (same port), :meth:`RedisServer.freeze` / :meth:`RedisServer.thaw`
  (SIGSTOP/SIGCONT: a server that accepts connections but never answers) for outage tests.

Every server is killed and its directory removed at teardown.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_tls_files(directory: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it.

    Returns (ca.pem, server.pem, server-key.pem) in ``directory``.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The CA's key too, so :func:`write_client_cert` can issue client certificates.
    _write_key(directory / f"{name}-key.pem", ca_key)
    paths = (directory / f"{name}.pem", directory / "server.pem", directory / "server-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[2], key)
    return paths


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def write_client_cert(directory: Path, ca_name: str = "ca") -> tuple[Path, Path]:
    """A client certificate signed by the CA :func:`write_tls_files` wrote as ``ca_name`` in
    ``directory``. Returns (client.pem, client-key.pem)."""
    ca = x509.load_pem_x509_certificate((directory / f"{ca_name}.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (directory / f"{ca_name}-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway client")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "client.pem", directory / "client-key.pem")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[1], key)
    return paths


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1 on a fixed port.

    With ``tls=True`` it speaks only TLS, with a certificate for 127.0.0.1 signed by a
    throw-away CA whose bundle is :attr:`ca_file`.
    """

    def __init__(
        self,
        password: str | None = None,
        *,
        tls: bool = False,
        extra_args: Sequence[str] = (),
        username: str | None = None,
        acl_rules: str = "~* &* +@all",
        tls_client_certs: bool = False,
        tls_files: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``extra_args`` are more redis-server options, e.g. ``("--maxmemory-policy",
        "allkeys-lru")``.

        ``username`` (with ``password``) makes ``password`` that ACL user's, with the
        permissions ``acl_rules``, and turns the ``default`` user off (as managed Redis
        services do). ``tls_client_certs`` makes a TLS server require a client certificate
        from its CA (:attr:`client_cert`, :attr:`client_key`). ``tls_files`` (ca, cert, key
        from :func:`write_tls_files`) share one CA between servers; by default each TLS server
        gets a CA of its own."""
        self.password = password
        self.username = username
        self._extra_args = list(extra_args)
        if username is not None:
            assert password, "an ACL user needs a password here"
            self._extra_args += [
                "--user", "default", "off",
                "--user", username, "on", f">{password}", *acl_rules.split(),
            ]  # fmt: skip
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self.ca_file: Path | None = None
        self.client_cert: Path | None = None
        self.client_key: Path | None = None
        self._tls_args: list[str] = []
        if tls:
            ca, cert, key = tls_files or write_tls_files(self.dir)
            self.ca_file = ca
            self.client_cert, self.client_key = write_client_cert(ca.parent, ca.stem)
            self._tls_args = [
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "yes" if tls_client_certs else "no",
            ]  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False

    @property
    def url(self) -> str:
        """``redis[s]://127.0.0.1:<port>/0`` (any password is passed separately)."""
        scheme = "rediss" if self.ca_file else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) the server on :attr:`port` and wait until it answers PING."""
        if self._proc is not None and self._proc.poll() is None:
            return
        port_args = ["--port", "0", "--tls-port", str(self.port)] if self.ca_file else [
            "--port", str(self.port)
        ]  # fmt: skip
        args = [
            REDIS_SERVER, *port_args, *self._tls_args,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self._extra_args
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {log}")
            if self._answers_ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                sock: socket.socket = raw
                if self.ca_file:
                    context = ssl.create_default_context(cafile=str(self.ca_file))
                    assert self.client_cert and self.client_key
                    context.load_cert_chain(self.client_cert, self.client_key)
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                if self.password:
                    user = f"{self.username} " if self.username else ""
                    sock.sendall(f"AUTH {user}{self.password}\r\n".encode())
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (the port stays reserved for :meth:`start`)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._frozen:
            self.thaw_pid(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a crashed host or a pulled cable: no goodbye to clients or replicas."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is ever answered."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        assert self._proc is not None
        self.thaw_pid(self._proc.pid)

    def thaw_pid(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)
        self._frozen = False

    def close(self) -> None:
        """Kill the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """URL of a password-less redis-server shared by the tests of one module."""
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own (stop/start/freeze it freely)."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
