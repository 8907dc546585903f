"""A local TLS stand-in for the vendors' APIs, and a test network that can only reach local servers.

Verification checks go to real vendors' hosts (`api.openai.com`, `api.github.com`, ...). Tests
must never send anything there, yet should run the real built-in declarations. So:

- `VendorStandIn` is a TLS server on 127.0.0.1 whose certificate (from a test CA) names every
  vendor host the built-ins use. It answers the vendors' check paths by the key it is shown:
  `VALID_KEY` → 200, `REVOKED_KEY` → 401, `WEAK_KEY` → 403, `BUSY_KEY` → 429 (GitHub's 200 also
  carries an expiry header). Special paths misbehave on purpose: `/slow` never answers,
  `/huge` sends 100 MiB, `/redirect` sends a 302 to another host. It records the host, method
  and path of every request (never headers, which hold keys).
- `Listener` is a plain TCP listener that counts connections and bytes: an attacker's host that
  must receive nothing.
- `test_network` resolves names from a table and connects only to routes in another table
  (a public address and port → a local port); anything else fails as if refused. A check run
  with it cannot reach the internet, whatever it was told.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import ipaddress
import pathlib
import socket
import ssl
import tempfile
import threading
import time

from credbridge import tls
from credbridge.core import egress
from credbridge.probing import network

VALID_KEY = "standin-valid-key-0123456789"
REVOKED_KEY = "standin-revoked-key-0123456789"
WEAK_KEY = "standin-weak-key-0123456789"
BUSY_KEY = "standin-busy-key-0123456789"
GITHUB_EXPIRY = "2031-02-03 04:05:06 UTC"
"""What the stand-in sends as GitHub-Authentication-Token-Expiration with a valid token."""
HUGE_BYTES = 100 * 1024 * 1024

VENDOR_HOSTS = (
    "api.openai.com",
    "api.anthropic.com",
    "api.cohere.com",
    "huggingface.co",
    "api.pinecone.io",
    "api.github.com",
    "api.notion.com",
    "serpapi.com",
    "api.mistral.ai",
    "api.groq.com",
    "vendor.test",
)
"""Host names on the stand-in's certificate."""
PUBLIC_ADDRESS = ipaddress.ip_address("203.0.113.10")
"""The address the test network resolves vendor hosts to (TEST-NET-3: never routed anywhere)."""


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One request the stand-in received, without its headers."""

    host: str
    method: str
    path: str
    at: float = 0.0
    """When the request's head was read (time.monotonic), for tests of the global rate."""


def _status_for(head: str) -> int:
    for key, status in ((VALID_KEY, 200), (REVOKED_KEY, 401), (WEAK_KEY, 403), (BUSY_KEY, 429)):
        if key in head:
            return status
    return 401


def _accepted(listener: socket.socket, stop: threading.Event) -> collections.abc.Iterator[socket.socket]:
    """Connections accepted on `listener` (which has a short timeout) until `stop` is set."""
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except (TimeoutError, OSError):
            continue
        yield connection


class VendorStandIn:
    """A threaded TLS server playing the vendors; start with `start()`, end with `stop()`."""

    def __init__(
        self, ca: tls.Issued, hosts: collections.abc.Sequence[str] = VENDOR_HOSTS, *, address: str = "127.0.0.1"
    ) -> None:
        """Serves a certificate for `hosts` signed by `ca` (tests trust `ca`), on `address` (any 127.x.y.z)."""
        self.requests: list[Recorded] = []
        self._stop = threading.Event()
        leaf = tls.issue(ca, hosts[0], hosts=hosts)
        directory = pathlib.Path(tempfile.mkdtemp(prefix="credbridge-standin-"))
        cert, key = leaf.write(directory, "standin")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server((address, 0))
        self._listener.settimeout(0.2)
        self.address = address
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> VendorStandIn:
        thread = threading.Thread(target=self._serve, name="vendor-standin", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=10)
        self._listener.close()

    def _serve(self) -> None:
        for connection in _accepted(self._listener, self._stop):
            worker = threading.Thread(target=self._handle, args=(connection,), daemon=True)
            worker.start()
            with self._lock:
                self._threads.append(worker)

    def _handle(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), raw:
            raw.settimeout(10)
            connection = self._context.wrap_socket(raw, server_side=True)
            received = b""
            while b"\r\n\r\n" not in received and len(received) < 128 * 1024:
                chunk = connection.recv(16 * 1024)
                if not chunk:
                    return
                received += chunk
            head = received.split(b"\r\n\r\n", 1)[0].decode("iso-8859-1")
            request_line, *header_lines = head.split("\r\n")
            method, path = request_line.split(" ")[:2]
            hosts = [line.split(":", 1)[1].strip() for line in header_lines if line.lower().startswith("host:")]
            host = hosts[0] if hosts else ""
            with self._lock:
                self.requests.append(Recorded(host, method, path.split("?", 1)[0], time.monotonic()))
            self._answer(connection, method, path, head)

    def _answer(self, connection: ssl.SSLSocket, method: str, path: str, head: str) -> None:
        bare = path.split("?", 1)[0]
        if bare == "/slow":
            self._stop.wait(120)
            return
        if bare == "/huge":
            connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE_BYTES}\r\n\r\n".encode())
            block = b"x" * (1024 * 1024)
            for _ in range(HUGE_BYTES // len(block)):
                if self._stop.is_set():
                    return
                connection.sendall(block)
            return
        if bare == "/redirect":
            connection.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: https://attacker.test/collect\r\nContent-Length: 0\r\n\r\n"
            )
            return
        if bare == "/huge-headers":
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            for index in range(20000):
                connection.sendall(f"X-Filler-{index}: {'y' * 64}\r\n".encode())
            return
        status = _status_for(head)
        extra = ""
        if bare == "/user" and status == 200:
            extra = f"GitHub-Authentication-Token-Expiration: {GITHUB_EXPIRY}\r\n"
        body = b"{}" if method != "HEAD" else b""
        connection.sendall(
            f"HTTP/1.1 {status} Stand-in\r\nContent-Type: application/json\r\n{extra}Content-Length: 2\r\n\r\n".encode()
            + body
        )


class Listener:
    """A TCP listener on 127.0.0.1 that accepts, reads and counts, answering nothing."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self._socket = socket.create_server((address, 0))
        self.address = address
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for connection in _accepted(self._socket, self._stop):
            self.connections += 1
            with contextlib.suppress(OSError), connection:
                connection.settimeout(2)
                while chunk := connection.recv(65536):
                    self.bytes_received += len(chunk)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._socket.close()


def trust(ca: tls.Issued) -> ssl.SSLContext:
    """A verifying client context that trusts only `ca`."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode("ascii"))
    context.check_hostname = True
    return context


@dataclasses.dataclass
class TestNetwork:
    """Name and route tables for checks; counts lookups so tests can see a name was resolved once."""

    names: dict[str, list[list[egress.IPAddress]]]
    """host -> the answers of successive lookups (the last one repeats)."""
    routes: dict[tuple[egress.IPAddress, int], int]
    """(address, port) the check connects to -> the local port that really answers."""
    lookups: list[str] = dataclasses.field(default_factory=list)
    connected: list[tuple[egress.IPAddress, int]] = dataclasses.field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[egress.IPAddress]:
        answers = self.names.get(host)
        if answers is None:
            try:
                return [ipaddress.ip_address(host)]
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "unknown host") from None
        self.lookups.append(host)
        return answers[min(self.lookups.count(host) - 1, len(answers) - 1)]

    def connect(self, address: egress.IPAddress, port: int, timeout: float) -> socket.socket:
        self.connected.append((address, port))
        local = self.routes.get((address, port))
        if local is None:
            raise ConnectionRefusedError(111, "Connection refused (no route in the test network)")
        return socket.create_connection(("127.0.0.1", local), timeout=timeout)

    def as_network(self) -> network.Network:
        return network.Network(resolve=self.resolve, connect=self.connect)


def vendor_network(standin: VendorStandIn, **extra_names: list[list[egress.IPAddress]]) -> TestNetwork:
    """Every vendor host resolves to PUBLIC_ADDRESS, whose port 443 leads to the stand-in."""
    names: dict[str, list[list[egress.IPAddress]]] = {host: [[PUBLIC_ADDRESS]] for host in VENDOR_HOSTS}
    names.update(extra_names)
    return TestNetwork(names=names, routes={(PUBLIC_ADDRESS, 443): standin.port})


def resolve_args(standin: VendorStandIn, hosts: collections.abc.Iterable[str] = VENDOR_HOSTS) -> list[str]:
    """`credbridge run` flags that send checks of `hosts` (port 443) to the stand-in, as DNS and routing would."""
    args: list[str] = []
    for host in hosts:
        args += ["--verification-resolve", f"{host}:443={standin.address}:{standin.port}"]
    return args


def write_ca(ca: tls.Issued, directory: pathlib.Path) -> pathlib.Path:
    """The stand-in's CA as a PEM file, for --verification-ca-file."""
    path = directory / "standin-ca.pem"
    path.write_bytes(ca.cert_pem)
    return path
