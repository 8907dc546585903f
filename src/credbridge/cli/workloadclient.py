"""The client side of the workload read endpoint, shared by `credbridge env` and `credbridge fetch`.

These commands run inside application Pods (as PID 1's predecessor, or as an init container), so
they start fast and carry little: the standard library's HTTPS client, no kubernetes client, no
kopf (an import-linter contract keeps it so). They find what they need from flags or from the
places a Pod has them:

| What | Flag | Else | Else |
|---|---|---|---|
| endpoint URL | `--endpoint` | `$CREDBRIDGE_ENDPOINT` (set by injection) | — |
| CA bundle | `--ca-file` | `$CREDBRIDGE_CA_FILE`, `$CREDBRIDGE_CA_DATA` (PEM, set by injection) | system trust |
| token | `--token-file` | `$CREDBRIDGE_TOKEN_FILE` | /var/run/secrets/credbridge.io/serviceaccount/token |
| namespace | `-n/--namespace` | `$CREDBRIDGE_NAMESPACE` | the token's own namespace |

The token file is read again for every request: the kubelet replaces projected tokens before
they expire. Every failure becomes a `ClientError`: one line naming the fix, and an exit code
(documented in docs/cli.md).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import http.client
import json
import os
import pathlib
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping

from credbridge.core import names, redaction, workload

EXIT_CONFIG = 2
"""Usage or configuration: a flag, the endpoint, the token file, a field or key that is not there."""
EXIT_REFUSED = 3
"""The endpoint refused the read: no valid token (401), no permission (403), not plaintext-readable."""
EXIT_UNAVAILABLE = 4
"""The endpoint could not be reached or kept answering 429/503 until --timeout."""
EXIT_WRITE = 5
"""`credbridge fetch` could not write its directory."""

EXIT_CODES_HELP = (
    "exit codes: 0 success; "
    f"{EXIT_CONFIG} usage or configuration (a flag, the endpoint, the token file, a missing field or key); "
    f"{EXIT_REFUSED} refused (no valid token, no `use` permission, not releasable as plaintext); "
    f"{EXIT_UNAVAILABLE} the endpoint was unreachable or busy until --timeout; "
    f"{EXIT_WRITE} the directory could not be written (fetch)"
)
"""The exit codes, as `credbridge env --help` and `credbridge fetch --help` list them."""

DEFAULT_TIMEOUT = 60.0
"""Seconds to keep retrying an unreachable or busy endpoint before giving up."""
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ClientError(Exception):
    """A failure of a client command: one line for stderr, and the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where and how to read: the endpoint, the CA to trust, the token file and the namespace."""

    endpoint: str
    token_file: pathlib.Path
    namespace: str
    ca_file: str | None = None
    ca_data: str | None = dataclasses.field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT


@dataclasses.dataclass(frozen=True)
class Values:
    """What one read returned: the object read, the Credential behind it, and the values (redacted repr)."""

    kind: str
    namespace: str
    name: str
    credential: str
    data: redaction.SecretFields


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where the endpoint, the CA, the token and the namespace are."""
    group = parser.add_argument_group("connection (defaults suit an injected Pod)")
    group.add_argument("--endpoint", help=f"base URL of the read endpoint (default: ${workload.ENDPOINT_ENV})")
    group.add_argument(
        "--ca-file",
        help=f"CA bundle of the endpoint's certificate (default: ${workload.CA_ENV}, ${workload.CA_DATA_ENV}, "
        "else the system trust store)",
    )
    group.add_argument(
        "--token-file",
        help=f"ServiceAccount token with audience {names.TOKEN_AUDIENCE} (default: ${workload.TOKEN_ENV}, else "
        f"{workload.TOKEN_PATH})",
    )
    group.add_argument(
        "-n",
        "--namespace",
        help=f"namespace to read from (default: ${workload.NAMESPACE_ENV}, else the token's namespace)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="keep retrying an unreachable or busy endpoint this long (default: %(default)s)",
    )


def connection_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    """The connection the flags and the environment describe; raises ClientError naming what is missing."""
    endpoint = (args.endpoint or environ.get(workload.ENDPOINT_ENV) or "").rstrip("/")
    if not endpoint:
        raise ClientError(
            f"no endpoint: pass --endpoint https://HOST:PORT or set {workload.ENDPOINT_ENV} "
            "(the credbridge.io/inject annotation sets it)",
            EXIT_CONFIG,
        )
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ClientError(
            f"the endpoint must be an https:// URL, e.g. https://credbridge.credbridge-system.svc:8443; "
            f"got {endpoint[:100]!r}",
            EXIT_CONFIG,
        )
    token_file = pathlib.Path(args.token_file or environ.get(workload.TOKEN_ENV) or workload.TOKEN_PATH)
    token = read_token(token_file)
    namespace = args.namespace or environ.get(workload.NAMESPACE_ENV) or token_namespace(token)
    if not namespace:
        try:
            namespace = pathlib.Path(SERVICE_ACCOUNT_NAMESPACE_FILE).read_text().strip()
        except OSError:
            namespace = ""
    if not namespace:
        raise ClientError(
            f"no namespace: pass -n NAMESPACE or set {workload.NAMESPACE_ENV} (the token does not name one)",
            EXIT_CONFIG,
        )
    ca_file = args.ca_file or environ.get(workload.CA_ENV) or None
    ca_data = None if ca_file else environ.get(workload.CA_DATA_ENV) or None
    return Connection(
        endpoint=endpoint,
        token_file=token_file,
        namespace=namespace,
        ca_file=ca_file,
        ca_data=ca_data,
        timeout=float(args.timeout),
    )


def read_token(path: pathlib.Path) -> str:
    """The token in `path`; raises ClientError saying how to provide one."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise ClientError(
            f"cannot read the token file {path} ({error.strerror or type(error).__name__}): mount a projected "
            f"serviceAccountToken with audience {names.TOKEN_AUDIENCE} there, or pass --token-file",
            EXIT_CONFIG,
        ) from None
    if not token:
        raise ClientError(f"the token file {path} is empty: the kubelet writes it; check the volume", EXIT_CONFIG)
    return token


def token_namespace(token: str) -> str:
    """The namespace a ServiceAccount token names (claim `kubernetes.io.namespace`), or "".

    Read without checking the signature: it only says where to send the request; the endpoint checks the token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return ""
    scope = claims.get("kubernetes.io") if isinstance(claims, dict) else None
    return str(scope.get("namespace") or "") if isinstance(scope, dict) else ""


def ssl_context(connection: Connection) -> ssl.SSLContext:
    """A verifying TLS context: the CA given, else the system trust store."""
    try:
        if connection.ca_file:
            return ssl.create_default_context(cafile=connection.ca_file)
        if connection.ca_data:
            return ssl.create_default_context(cadata=connection.ca_data)
    except (OSError, ssl.SSLError) as error:
        where = connection.ca_file or f"${workload.CA_DATA_ENV}"
        raise ClientError(f"cannot load the CA bundle from {where}: {error}", EXIT_CONFIG) from None
    return ssl.create_default_context()


class Reader:
    """Reads values from the endpoint over one kept-alive HTTPS connection (re-opened when it drops)."""

    def __init__(
        self,
        connection: Connection,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection = connection
        self._context = ssl_context(connection)
        parsed = urllib.parse.urlsplit(connection.endpoint)
        self._host = parsed.hostname or ""
        self._port = parsed.port or 443
        self._prefix = parsed.path.rstrip("/")
        self._http: http.client.HTTPSConnection | None = None
        self._clock = clock
        self._sleep = sleep

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def read(self, plural: str, name: str) -> Values:
        """Values of the Credential or binding `name`; retries 429, 503 and connection failures until the timeout."""
        deadline = self._clock() + self.connection.timeout
        path = f"{self._prefix}/v1/namespaces/{self.connection.namespace}/{plural}/{name}"
        kind = workload.KINDS[plural]
        while True:
            token = read_token(self.connection.token_file)
            try:
                status, retry_after, body = self._get(path, token)
            except ssl.SSLCertVerificationError as error:
                raise ClientError(
                    f"the endpoint {self.connection.endpoint} presented a certificate this client does not trust "
                    f"({error.verify_message}): pass --ca-file with the operator's CA, or set {workload.CA_DATA_ENV}",
                    EXIT_UNAVAILABLE,
                ) from None
            except (OSError, http.client.HTTPException) as error:
                problem = f"cannot reach the endpoint {self.connection.endpoint} ({_describe(error)})"
                self.close()
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise ClientError(
                        f"{problem} (still after {self.connection.timeout:g}s): check that the operator runs and "
                        "that --endpoint is right, or raise --timeout",
                        EXIT_UNAVAILABLE,
                    ) from None
                self._sleep(min(1.0, remaining))
                continue
            if status == 200:
                return _values(body, kind)
            message = _message(body) or f"HTTP {status}"
            if status in (429, 502, 503, 504):
                # Retry-After is honoured, but never past the deadline: the last try is at the deadline,
                # so `--timeout N` waits N seconds, as it says.
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise ClientError(
                        f"{kind} {self.connection.namespace}/{name}: {message} (still after "
                        f"{self.connection.timeout:g}s; raise --timeout to wait longer)",
                        EXIT_UNAVAILABLE,
                    )
                self._sleep(min(max(retry_after, 1.0), 30.0, remaining))
                continue
            if status in (401, 403, 404):
                raise ClientError(f"{kind} {self.connection.namespace}/{name}: {message}", EXIT_REFUSED)
            raise ClientError(f"{kind} {self.connection.namespace}/{name}: {message}", EXIT_UNAVAILABLE)

    def _get(self, path: str, token: str) -> tuple[int, float, bytes]:
        for attempt in (1, 2):
            if self._http is None:
                self._http = http.client.HTTPSConnection(
                    self._host, self._port, context=self._context, timeout=min(self.connection.timeout, 30.0)
                )
            try:
                self._http.request(
                    "GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
                )
                response = self._http.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed a kept-alive connection between two reads: open a new one once.
                self.close()
                if attempt == 2:
                    raise
                continue
            retry_after = response.getheader("Retry-After") or "1"
            return response.status, float(retry_after) if retry_after.isdigit() else 1.0, body
        raise AssertionError("unreachable")


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def _message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    return str(document.get("message") or "") if isinstance(document, dict) else ""


def _values(body: bytes, kind: str) -> Values:
    try:
        document = json.loads(body)
        data = document["data"]
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ClientError(
            "the endpoint's answer is not what this client expects: use the same credbridge version as the operator",
            EXIT_UNAVAILABLE,
        ) from None
    return Values(
        kind=kind,
        namespace=str(document.get("namespace", "")),
        name=str(document.get("name", "")),
        credential=str(document.get("credential", "")),
        data=redaction.SecretFields({str(k): v for k, v in data.items()}),
    )


def fail(command: str, error: ClientError) -> int:
    """Print the one-line error and return its exit code."""
    print(f"credbridge {command}: {error}", file=sys.stderr)
    return error.exit_code


def environ() -> Mapping[str, str]:
    """The process environment (a function, so callers never hold os.environ itself)."""
    return dict(os.environ)
