"""API failures as one exception type that the rest of credbridge can catch without the client library.

The operator and the CLI must tell a missing object from a conflict, a refusal and an unreachable
server, and name what they tried — but they do not import `kubernetes` (an import-linter
contract), and the client library's own exception prints the response body, which for Secrets
holds their data. Every kube function the operator or the CLI calls runs its requests inside
`translated(action)`, which raises `ApiError`: the action, the HTTP status when there is one, and
the API server's own explanation for statuses whose message never echoes what was sent.

`ApiError` subclasses the client library's `ApiException`, so code that already catches that (the
test helpers) keeps working, but its text is ours: no body, no headers.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json

import urllib3
from kubernetes import client, config

# Statuses whose server message explains the refusal without echoing what was sent. A 422 may
# quote the invalid value, so it is reduced to its status and reason.
_EXPLAINED_STATUSES = frozenset({401, 403, 404, 409})


class ApiError(client.ApiException):  # type: ignore[misc]
    """A request failed: `action` says what was attempted, `status` is the HTTP status or None."""

    def __init__(self, action: str, status: int | None, explanation: str, reason: str = "") -> None:
        """Builds the one-line message `cannot <action>: <explanation>`."""
        super().__init__(status=status, reason=reason or explanation)
        self.action = action
        self.explanation = explanation
        self.body = None
        self.headers = None

    def __str__(self) -> str:
        return f"cannot {self.action}: {self.explanation}"

    @property
    def forbidden(self) -> bool:
        """True when the API server refused the request (HTTP 403: RBAC or an admission webhook)."""
        return bool(self.status == 403)

    @property
    def not_found(self) -> bool:
        return bool(self.status == 404)

    @property
    def conflict(self) -> bool:
        """True for 409: the object exists already, or changed since it was read."""
        return bool(self.status == 409)

    @property
    def namespace_terminating(self) -> bool:
        """True for the refusal to create objects in a namespace that is being deleted."""
        return bool(self.status == 403) and "being terminated" in self.explanation


def _server_message(error: client.ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message) if message else ""


@contextlib.contextmanager
def translated(action: str) -> collections.abc.Iterator[None]:
    """Runs requests for `action`; any failure leaves as ApiError, never quoting a request or response body."""
    try:
        yield
    except ApiError:
        raise
    except client.ApiException as error:
        status = int(error.status) if error.status else None
        reason = str(error.reason or "")
        explanation = f"{error.status} {reason}".strip()
        if status in _EXPLAINED_STATUSES:
            message = _server_message(error)
            if message:
                explanation = f"{explanation}: {message}"
        raise ApiError(action, status, explanation, reason) from None
    except urllib3.exceptions.HTTPError as error:
        raise ApiError(
            action, None, f"the API server did not answer ({type(error).__name__}): check KUBECONFIG and the cluster"
        ) from None
    except config.ConfigException as error:
        raise ApiError(action, None, f"no usable kubeconfig ({error}): check KUBECONFIG") from None
