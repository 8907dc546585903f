"""A small, careful HTTP client for Flowise's credentials API.

What a production operator needs from a client to a server it does not control:
- every request ends within `request_timeout` seconds, whatever the server does (a watchdog
  closes the socket when time is up, so a server trickling bytes cannot hold a worker);
- responses are read up to `max_response_bytes` and no further (a 5 MiB answer costs at most
  that much memory, then fails);
- TLS is verified, against the system trust store or a CA bundle given by the caller;
- failures are typed (`Unreachable`, `TlsFailure`, `Unauthorized`, `Forbidden`, `NotFound`,
  `ServerError`, `BadResponse`) and their messages name the server, the action and Flowise's
  own explanation with every value of the request removed: request bodies carry credential
  values, so no error quotes one.

One connection per client is kept alive and used by one request at a time.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import http.client
import json
import socket
import ssl
import threading
import typing
import urllib.parse

from credbridge.core import redaction

Json = dict[str, typing.Any]

API_PREFIX = "/api/v1"


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Limits of every request to a Flowise server."""

    connect_timeout: float = 5.0
    """Seconds to open the TCP (and TLS) connection."""
    request_timeout: float = 30.0
    """Seconds one request may take from sending to the last byte of the answer."""
    max_response_bytes: int = 4 * 1024 * 1024
    """Largest answer read (4 MiB); a larger one fails with BadResponse instead of filling memory."""


class FlowiseError(Exception):
    """A request to Flowise failed. `reason` is a condition reason; the message names the server,
    the action and the fix, never a value."""

    reason = "FlowiseError"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        """Keeps `status` (the HTTP status, when there was an answer) next to the message."""
        super().__init__(message)
        self.status = status


class Unreachable(FlowiseError):
    """No answer: connection refused, name not resolved, or the request timed out."""

    reason = "Unreachable"


class TlsFailure(Unreachable):
    """The TLS handshake failed (certificate not trusted, wrong host name, not TLS)."""

    reason = "TLSError"


class Unauthorized(FlowiseError):
    """HTTP 401: the API key is wrong, deleted, or not a Flowise API key."""

    reason = "Unauthorized"


class Forbidden(FlowiseError):
    """HTTP 403: the API key lacks the permission the action needs (`permission`)."""

    reason = "Forbidden"

    def __init__(self, message: str, *, status: int | None = None, permission: str = "") -> None:
        """Records the Flowise permission that was missing."""
        super().__init__(message, status=status)
        self.permission = permission


class NotFound(FlowiseError):
    """HTTP 404 or a non-API answer: the endpoint does not exist there (an older Flowise?)."""

    reason = "NotFound"


class ServerError(FlowiseError):
    """HTTP 5xx or another unexpected status."""

    reason = "ServerError"


class BadResponse(FlowiseError):
    """The answer was too large or not the JSON Flowise sends."""

    reason = "BadResponse"


@dataclasses.dataclass(frozen=True)
class RemoteCredential:
    """A credential as `GET /api/v1/credentials` lists it: metadata only."""

    id: str
    name: str
    credential_name: str
    created_date: str
    updated_date: str


class FlowiseClient:
    """Talks to one Flowise server with one API key. Thread-safe: requests take turns."""

    def __init__(
        self,
        url: str,
        api_key: redaction.Redacted | None,
        *,
        settings: ClientSettings = ClientSettings(),
        ca_pem: str | None = None,
    ) -> None:
        """`url` is the server's base URL (`https://flowise.example.com`); `ca_pem` a CA bundle in
        PEM to trust instead of the system store. Raises ValueError for a URL that is not http(s)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Flowise URL {url!r} is not an http:// or https:// URL with a host")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._api_key = api_key
        self.settings = settings
        self._tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self._tls = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
            except (ssl.SSLError, ValueError):
                raise ValueError("the CA bundle for Flowise is not valid PEM certificates") from None
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FlowiseClient(url={self.url!r})"

    def close(self) -> None:
        """Closes the kept-alive connection."""
        with self._lock:
            self._drop()

    # ---- the API -------------------------------------------------------------------------

    def version(self) -> str:
        """Flowise's version (`GET /api/v1/version`, no permission needed)."""
        answer = self._call("GET", "/version", "read the Flowise version")
        return str(answer.get("version", "")) if isinstance(answer, dict) else ""

    def list_credentials(self) -> list[RemoteCredential]:
        """Every credential of the API key's workspace, without data (`credentials:view`)."""
        answer = self._call("GET", "/credentials", "list credentials", permission="credentials:view")
        if not isinstance(answer, list):
            raise BadResponse(f"Flowise at {self.url} answered the credential list with something that is not a list")
        found = []
        for item in answer:
            if isinstance(item, dict) and item.get("id"):
                found.append(
                    RemoteCredential(
                        id=str(item["id"]),
                        name=str(item.get("name", "")),
                        credential_name=str(item.get("credentialName", "")),
                        created_date=str(item.get("createdDate", "")),
                        updated_date=str(item.get("updatedDate", "")),
                    )
                )
        return found

    def credential_types(self) -> set[str]:
        """Names of the credential types this Flowise knows (`GET /api/v1/components-credentials`)."""
        answer = self._call("GET", "/components-credentials", "list credential types")
        if not isinstance(answer, list):
            raise BadResponse(
                f"Flowise at {self.url} answered the credential type list with something that is not a list"
            )
        return {str(item["name"]) for item in answer if isinstance(item, dict) and item.get("name")}

    def credential_field_names(self, credential_id: str) -> list[str]:
        """The field names of one credential (`GET /api/v1/credentials/<id>`, which needs
        `credentials:create` or `credentials:update`); its values are dropped unread."""
        quoted = urllib.parse.quote(credential_id, safe="")
        answer = self._call(
            "GET", f"/credentials/{quoted}", f"read credential {credential_id}", permission="credentials:update"
        )
        fields = answer.get("plainDataObj") if isinstance(answer, dict) else None
        return sorted(str(name) for name in fields) if isinstance(fields, dict) else []

    def put_credential(self, body: collections.abc.Mapping[str, typing.Any]) -> RemoteCredential:
        """Creates the credential `body["id"]`, or overwrites it when it exists (`credentials:create`).

        Flowise's POST takes a caller-chosen id and replaces an existing credential with that id
        silently; the caller must have looked first. Returns what Flowise stored (no data).
        """
        values = [str(value) for value in (body.get("plainDataObj") or {}).values()]
        answer = self._call(
            "POST",
            "/credentials",
            f"push credential {body.get('id')}",
            permission="credentials:create",
            body=body,
            secrets=values,
        )
        if not isinstance(answer, dict) or not answer.get("id"):
            raise BadResponse(f"Flowise at {self.url} did not answer the push of credential {body.get('id')} with it")
        return RemoteCredential(
            id=str(answer["id"]),
            name=str(answer.get("name", "")),
            credential_name=str(answer.get("credentialName", "")),
            created_date=str(answer.get("createdDate", "")),
            updated_date=str(answer.get("updatedDate", "")),
        )

    def delete_credential(self, credential_id: str) -> bool:
        """Deletes a credential (`credentials:delete`); False when Flowise had no such credential."""
        quoted = urllib.parse.quote(credential_id, safe="")
        answer = self._call(
            "DELETE", f"/credentials/{quoted}", f"delete credential {credential_id}", permission="credentials:delete"
        )
        return not (isinstance(answer, dict) and answer.get("affected") == 0)

    # ---- plumbing ------------------------------------------------------------------------

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            timeout = self.settings.connect_timeout
            if self._tls is not None:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._tls
                )
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._connection

    def _call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        permission: str = "",
        body: collections.abc.Mapping[str, typing.Any] | None = None,
        secrets: collections.abc.Sequence[str] = (),
    ) -> typing.Any:
        with self._lock:
            try:
                status, data = self._exchange(method, path, action, body)
            except FlowiseError:
                self._drop()
                raise
        return _decode(self.url, action, status, data, permission, secrets)

    def _exchange(
        self, method: str, path: str, action: str, body: collections.abc.Mapping[str, typing.Any] | None
    ) -> tuple[int, bytes]:
        where = f"Flowise at {self.url}"
        headers = {"Accept": "application/json", "Connection": "keep-alive"}
        if self._api_key is not None:
            headers["Authorization"] = "Bearer " + self._api_key.reveal()
        encoded = None
        if body is not None:
            encoded = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            reused = self._connection is not None and self._connection.sock is not None
            connection = self._connect()
            # `expired` is set before the socket is shut, so whichever error the cut read raises
            # (a reset, an IncompleteRead, a timeout) is known to be the watchdog's doing. The
            # Timer's own `finished` flag is set only after `_shut` returns: on a busy machine the
            # failed read is seen before it, and a timeout was reported as "not reachable".
            expired = threading.Event()
            watchdog = threading.Timer(self.settings.request_timeout, _shut, (connection, expired))
            watchdog.daemon = True
            try:
                if connection.sock is None:
                    connection.connect()  # bounded by connect_timeout
                # From here the watchdog bounds the whole request, however slowly bytes arrive.
                connection.sock.settimeout(self.settings.request_timeout)
                watchdog.start()
                connection.request(method, self._prefix + API_PREFIX + path, body=encoded, headers=headers)
                response = connection.getresponse()
                data = _read_bounded(response, self.settings.max_response_bytes)
                if expired.is_set():
                    raise TimeoutError  # the watchdog cut the answer short
                if data is not None and response.length:
                    raise http.client.IncompleteRead(data, response.length)
                if data is None:
                    raise BadResponse(
                        f"{where} answered `{action}` with more than {self.settings.max_response_bytes} bytes; "
                        "credbridge stops reading there (operator setting --flowise-max-response-bytes)"
                    )
                if response.will_close:
                    self._drop()
                return response.status, data
            except ssl.SSLError as error:
                raise TlsFailure(
                    f"cannot {action}: TLS with {where} failed ({error.reason or type(error).__name__}): check the "
                    "URL and spec.tls.caSecretRef (the CA that signs Flowise's certificate)"
                ) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self._drop()
                if expired.is_set():
                    raise Unreachable(
                        f"cannot {action}: {where} did not answer within {self.settings.request_timeout:g}s"
                    ) from None
                if reused and attempt == 1 and not expired.is_set():
                    continue  # the kept-alive connection was closed by the server: one fresh try
                raise Unreachable(f"cannot {action}: {where} closed the connection ({type(error).__name__})") from None
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                if expired.is_set() or isinstance(error, TimeoutError):
                    raise Unreachable(
                        f"cannot {action}: {where} did not answer within {self.settings.request_timeout:g}s"
                    ) from None
                raise Unreachable(
                    f"cannot {action}: {where} is not reachable ({type(error).__name__}: {_os_reason(error)}): "
                    "check spec.url and that Flowise is running"
                ) from None
            finally:
                watchdog.cancel()
        raise Unreachable(f"cannot {action}: {where} closed the connection")  # pragma: no cover


def _shut(connection: http.client.HTTPConnection, expired: threading.Event) -> None:
    """Ends a request that ran out of time: marks it expired, then makes any blocked read fail at once."""
    expired.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _os_reason(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or error.__class__.__name__)


def _read_bounded(response: http.client.HTTPResponse, limit: int) -> bytes | None:
    """Reads the body, or returns None as soon as it exceeds `limit` bytes."""
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(65536)
        if not chunk:
            response.close()  # fully read: the kept-alive connection can take the next request
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _scrub(text: str, secrets: collections.abc.Sequence[str]) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= 3:
            text = text.replace(value, redaction.REDACTED)
    return text


def _decode(
    url: str,
    action: str,
    status: int,
    data: bytes,
    permission: str,
    secrets: collections.abc.Sequence[str],
) -> typing.Any:
    where = f"Flowise at {url}"
    try:
        answer = json.loads(data) if data else None
    except ValueError:
        answer = _NOT_JSON
    said = ""
    if isinstance(answer, dict):
        message = answer.get("message") or answer.get("error")
        if isinstance(message, str) and message:
            said = " (Flowise said: " + _scrub(message, secrets)[:300] + ")"
    if status == 401:
        raise Unauthorized(
            f"cannot {action}: {where} refused the API key (HTTP 401){said}: check the Secret in "
            "spec.apiKeySecretRef and that the key still exists in Flowise (Settings → API Keys)",
            status=status,
        )
    if status == 403:
        needed = permission or "a permission this action needs"
        raise Forbidden(
            f"cannot {action}: {where} says the API key lacks the permission {needed} (HTTP 403): "
            f"give the key {needed} in Flowise (API Keys → edit)",
            status=status,
            permission=permission,
        )
    if status == 404 or (200 <= status < 300 and answer is _NOT_JSON):
        raise NotFound(
            f"cannot {action}: {where} has no such API endpoint (HTTP {status}"
            f"{', answered with a web page' if answer is _NOT_JSON else ''}): check spec.url (the server's base URL, "
            "without /api/v1) and that Flowise is version 2 or later",
            status=status,
        )
    if not 200 <= status < 300:
        raise ServerError(f"cannot {action}: {where} failed with HTTP {status}{said}", status=status)
    return answer


_NOT_JSON = object()
