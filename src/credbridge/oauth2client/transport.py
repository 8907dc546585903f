"""One HTTPS POST with hard limits: the one function every request to an OAuth2 provider goes through.

A token endpoint is a server credbridge does not control, reached with a client secret and a
refresh token in the body. So the request:
- ends within `request_timeout` seconds whatever the server does (a watchdog shuts the socket,
  so a server trickling bytes cannot hold a worker), after a connect bounded by `connect_timeout`;
- reads at most `max_response_bytes` of the answer (a token answer is a few KB);
- never follows a redirect (a 3xx is handed back as it is: a token request must not be replayed
  to another host with its secrets);
- verifies TLS against the system trust store or the CA bundle given;
- raises `TransportError` with the host and what failed, never the body.

The connection itself can be opened by the caller (`connect`): the operator passes one that applies
its egress policy (`oauth2client.egress`: the host allowed, the name resolved once, every address
judged, the connection pinned to one), and TLS is then verified against the URL's host name.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import http.client
import socket
import ssl
import threading
import urllib.parse

Connect = collections.abc.Callable[[str, int, float], socket.socket]
"""(host, port, connect timeout in seconds) → a connected TCP socket; raises TransportError to refuse."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds of one request."""

    connect_timeout: float = 5.0
    """Seconds to open the TCP and TLS connection."""
    request_timeout: float = 15.0
    """Seconds from sending the request to the last byte of the answer."""
    max_response_bytes: int = 64 * 1024
    """Largest answer read; a larger one fails (a token answer with an ID token is a few KB)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the server answered. The body is kept out of the repr: it holds tokens."""

    status: int
    body: bytes = dataclasses.field(repr=False)
    content_type: str = ""
    retry_after: str | None = None
    """The raw Retry-After header, when there was one."""


class TransportError(Exception):
    """No usable answer; the message names the host and what failed, never a body."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        """`transient`: waiting may help (timeouts, refused connections, TLS failures)."""
        super().__init__(message)
        self.transient = transient


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Connection(http.client.HTTPConnection):
    """An HTTP(S) connection whose TCP socket comes from `connect`; TLS (when `tls`) checks the URL's host name."""

    def __init__(
        self, host: str, port: int | None, *, timeout: float, tls: ssl.SSLContext | None, connect: Connect
    ) -> None:
        self.default_port = http.client.HTTPS_PORT if tls is not None else http.client.HTTP_PORT
        super().__init__(host, port or self.default_port, timeout=timeout)
        self._tls = tls
        self._open = connect

    def connect(self) -> None:
        sock = self._open(self.host, self.port, float(self.timeout or 0) or 5.0)
        self.sock = sock if self._tls is None else self._tls.wrap_socket(sock, server_hostname=self.host)


def _system_connect(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def post_form(
    url: str,
    body: bytes,
    headers: collections.abc.Mapping[str, str],
    *,
    limits: Limits,
    tls: ssl.SSLContext | None,
    connect: Connect | None = None,
) -> Answer:
    """POSTs `body` to `url` (https, or http when `tls` is None) and returns the answer, redirects included.

    `connect` opens the TCP connection (default: the system's lookup and connect). Raises
    TransportError when there is no complete answer within the limits, or when `connect` refuses.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    where = f"{host}:{parts.port}" if parts.port else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = _Connection(
        host,
        parts.port,
        timeout=limits.connect_timeout,
        tls=tls if parts.scheme == "https" else None,
        connect=connect or _system_connect,
    )
    watchdog = threading.Timer(limits.request_timeout, _shut, (connection,))
    watchdog.daemon = True
    try:
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(limits.request_timeout)
        watchdog.start()
        connection.request("POST", path, body=body, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        data = response.read(limits.max_response_bytes + 1)
        if watchdog.finished.is_set():
            raise TimeoutError
        if len(data) > limits.max_response_bytes:
            raise TransportError(
                f"{where} answered with more than {limits.max_response_bytes} bytes; credbridge stops reading there",
                transient=False,
            )
        return Answer(
            status=response.status,
            body=data,
            content_type=response.getheader("Content-Type") or "",
            retry_after=response.getheader("Retry-After"),
        )
    except ssl.SSLError as error:
        raise TransportError(
            f"TLS with {where} failed ({error.reason or type(error).__name__}): check the URL and the CA that "
            "signs the provider's certificate"
        ) from None
    except TimeoutError:
        raise TransportError(f"{where} did not answer within {limits.request_timeout:g}s") from None
    except (OSError, http.client.HTTPException) as error:
        if watchdog.finished.is_set():
            raise TransportError(f"{where} did not answer within {limits.request_timeout:g}s") from None
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise TransportError(f"{where} is not reachable ({reason})") from None
    finally:
        watchdog.cancel()
        connection.close()
