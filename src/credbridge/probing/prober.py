"""The check itself: policy first, one lookup, a pinned connection, a bounded exchange, a typed outcome.

HTTP is spoken by hand over the pinned socket rather than through an HTTP library: a check
needs one request and the status line and headers of one answer, and writing it out keeps every
limit visible — the address connected to is the one the policy chose, the TLS name checked is
the host the type named, nothing is ever redirected, at most `max_answer_bytes` are read and the
body is never looked at, and the whole exchange ends by `total_timeout` however slowly the
server trickles bytes.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import socket
import ssl
import threading
import time

from credbridge.core import egress, verification
from credbridge.probing import databases, network

Outcome = verification.Outcome
ProbeResult = verification.ProbeResult

USER_AGENT = "credbridge-verify/1"


@dataclasses.dataclass(frozen=True)
class ProbeLimits:
    """Bounds of one check."""

    connect_timeout: float = 5.0
    """Seconds to open the TCP connection and finish the TLS handshake."""
    total_timeout: float = 15.0
    """Seconds the whole check may take, from lookup to the last byte read."""
    max_answer_bytes: int = 64 * 1024
    """Most bytes read from a service (an HTTP answer's status line and headers); the rest is never read."""


def _unreachable(message: str) -> ProbeResult:
    return ProbeResult(Outcome.UNREACHABLE, message)


def probe(
    request: verification.Probe,
    policy: egress.EgressPolicy,
    *,
    limits: ProbeLimits = ProbeLimits(),
    net: network.Network = network.SYSTEM_NETWORK,
    tls: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Runs one check and says what it found; never raises for anything the service or network does.

    Order: the egress policy on the host (before any lookup), one lookup, the policy on every
    address, then a connection to the pinned address only. A refusal returns a
    `VerificationBlocked` result and sends nothing. `tls` verifies certificates (default: the
    system trust store with host-name checking).
    """
    refusal = egress.check_destination(
        scheme=request.scheme,
        host=request.host,
        host_from_field=request.host_from_field,
        type_name=request.type_name,
        policy=policy,
    )
    if refusal is not None:
        return ProbeResult(Outcome.BLOCKED, refusal.message)
    deadline = time.monotonic() + limits.total_timeout
    try:
        addresses = net.resolve(request.host, request.port)
    except (OSError, UnicodeError):
        return _unreachable(f"{request.host} could not be resolved")
    pinned = egress.pin_address(request.host, addresses, policy)
    if isinstance(pinned, egress.Refusal):
        return ProbeResult(Outcome.BLOCKED, pinned.message)
    context = tls or network.system_tls_context()
    where = f"{request.host} ({pinned.address}) port {request.port}"
    try:
        sock = net.connect(pinned.address, request.port, limits.connect_timeout)
    except TimeoutError:
        return _unreachable(f"{where} did not accept a connection within {limits.connect_timeout:g} seconds")
    except OSError as error:
        return _unreachable(f"could not connect to {where}: {error.strerror or type(error).__name__}")
    with _closing_at(sock, deadline):
        if isinstance(request, verification.HttpProbe):
            return _http(request, sock, context, deadline, limits, where)
        return databases.login(request, sock, pinned.address, context, deadline, where)


@contextlib.contextmanager
def _closing_at(sock: socket.socket, deadline: float) -> collections.abc.Iterator[None]:
    """Shuts the connection down at `deadline` whatever the code using it waits for, and closes it after.

    The watchdog holds a duplicate of the socket: TLS wrapping (here or in a database driver)
    detaches the original object, while a shutdown through the duplicate still ends the connection.
    """
    twin = sock.dup()

    def shut() -> None:
        with contextlib.suppress(OSError):
            twin.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), shut)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        for end in (sock, twin):
            with contextlib.suppress(OSError):
                end.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _request_bytes(request: verification.HttpProbe) -> bytes:
    default_port = 443 if request.scheme == "https" else 80
    host = f"[{request.host}]" if ":" in request.host else request.host
    host_header = host if request.port == default_port else f"{host}:{request.port}"
    lines = [
        f"{request.method} {request.target.reveal()} HTTP/1.1",
        f"Host: {host_header}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
        "Accept-Encoding: identity",
        "Connection: close",
    ]
    lines.extend(f"{name}: {value.reveal()}" for name, value in request.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _read_head(sock: socket.socket, deadline: float, limit: int) -> bytes | None:
    """The answer's status line and headers; None when they do not fit in `limit` bytes."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        if len(received) >= limit:
            return None
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(min(16 * 1024, limit - len(received)))
        if not chunk:
            if time.monotonic() >= deadline:
                raise TimeoutError  # the watchdog ended the connection at the deadline, not the server
            break
        received.extend(chunk)
    return bytes(received.split(b"\r\n\r\n", 1)[0])


def _http(
    request: verification.HttpProbe,
    sock: socket.socket,
    context: ssl.SSLContext,
    deadline: float,
    limits: ProbeLimits,
    where: str,
) -> ProbeResult:
    try:
        if request.scheme == "https":
            sock.settimeout(min(limits.connect_timeout, _remaining(deadline)))
            sock = context.wrap_socket(sock, server_hostname=request.host)
        sock.settimeout(_remaining(deadline))
        sock.sendall(_request_bytes(request))
        head = _read_head(sock, deadline, limits.max_answer_bytes)
    except ssl.SSLCertVerificationError as error:
        return _unreachable(
            f"{where} presented a TLS certificate that is not valid for {request.host} or not trusted "
            f"({error.verify_message}): nothing was sent"
        )
    except ssl.SSLError as error:
        return _unreachable(f"TLS with {where} failed ({error.reason or type(error).__name__})")
    except TimeoutError:
        return _unreachable(f"{where} did not answer within {limits.total_timeout:g} seconds")
    except OSError as error:
        return _unreachable(f"{where} broke the connection ({error.strerror or type(error).__name__})")
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    if head is None:
        return _unreachable(f"{where} answered with more than {limits.max_answer_bytes} bytes of headers")
    return _judge_answer(request, head, where)


def _judge_answer(request: verification.HttpProbe, head: bytes, where: str) -> ProbeResult:
    lines = head.decode("iso-8859-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        return _unreachable(f"{where} did not answer with HTTP")
    status = int(status_line[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    expires_at = None
    if request.expiry_header is not None and request.expiry_header.lower() in headers:
        expires_at = verification.parse_expiry_header(headers[request.expiry_header.lower()])
    outcome = verification.outcome_of_status(status, request.statuses)
    if outcome is not None:
        return ProbeResult(outcome, f"{request.host} answered HTTP {status}", expires_at)
    if 300 <= status < 400:
        return ProbeResult(
            Outcome.NOT_VERIFIABLE,
            f"{request.host} answered with a redirect (HTTP {status}), which checks never follow: "
            "the check's URL may be out of date",
        )
    if status >= 500:
        return _unreachable(f"{request.host} answered HTTP {status} (a server error)")
    return ProbeResult(
        Outcome.NOT_VERIFIABLE,
        f"{request.host} answered HTTP {status}, which the check of type {request.type_name} does not map to an "
        "outcome: the check may be out of date",
    )
