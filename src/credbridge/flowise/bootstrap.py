"""First steps on a fresh Flowise, through its own API: the first admin account, a login, and an
API key with chosen permissions.

Flowise creates API keys only for a logged-in user (its UI calls `POST /api/v1/apikey` with the
session's JWT cookie and the header `x-request-from: internal`); the first admin comes from
`POST /api/v1/account/register`, which an empty Flowise accepts without authentication. The local
test Flowise uses this, and so can a platform engineer scripting a new instance.
"""

from __future__ import annotations

import collections.abc
import http.cookiejar
import json
import typing
import urllib.error
import urllib.request

from credbridge.core import redaction
from credbridge.flowise import client

CREDENTIAL_PERMISSIONS = ("credentials:view", "credentials:create", "credentials:update", "credentials:delete")
"""What a FlowiseTarget's API key needs: list, push, and delete credentials."""


class BootstrapError(client.FlowiseError):
    """A bootstrap step failed; the message names the step and Flowise's HTTP status, never a password."""


class AdminSession:
    """A logged-in Flowise admin (cookies from `POST /api/v1/auth/login`)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        """Prepares a session against the Flowise at `url`; nothing is sent yet."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def __repr__(self) -> str:
        return f"AdminSession(url={self.url!r})"

    def call(self, method: str, path: str, body: typing.Any = None, step: str = "") -> typing.Any:
        """Sends one request as the logged-in admin (what Flowise's UI does) and returns the JSON answer."""
        step = step or f"{method} {path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 -- http(s) URL checked by the caller
            self.url + client.API_PREFIX + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "x-request-from": "internal", "Accept": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                payload = response.read(client.ClientSettings().max_response_bytes)
        except urllib.error.HTTPError as error:
            raise BootstrapError(f"cannot {step} at Flowise {self.url}: HTTP {error.code}", status=error.code) from None
        except (urllib.error.URLError, OSError) as error:
            raise client.Unreachable(f"cannot {step}: Flowise at {self.url} is not reachable ({error})") from None
        return json.loads(payload) if payload else None

    def register(self, name: str, email: str, password: redaction.Redacted) -> None:
        """Creates the first admin account (only a Flowise without users accepts this)."""
        self.call(
            "POST",
            "/account/register",
            {"user": {"name": name, "email": email, "credential": password.reveal()}},
            "register the first admin",
        )

    def login(self, email: str, password: redaction.Redacted) -> None:
        """Logs in; the session cookies authorize the next calls."""
        self.call("POST", "/auth/login", {"email": email, "password": password.reveal()}, "log in")

    def create_api_key(
        self, key_name: str, permissions: collections.abc.Sequence[str] = CREDENTIAL_PERMISSIONS
    ) -> redaction.Redacted:
        """Creates an API key of the admin's workspace with `permissions` and returns the key."""
        keys = self.call(
            "POST", "/apikey", {"keyName": key_name, "permissions": list(permissions)}, f"create API key {key_name}"
        )
        for key in keys if isinstance(keys, list) else []:
            if isinstance(key, dict) and key.get("keyName") == key_name and key.get("apiKey"):
                return redaction.Redacted(str(key["apiKey"]))
        raise BootstrapError(f"Flowise at {self.url} did not return the API key {key_name} it created")


def first_admin_with_key(
    url: str,
    *,
    email: str,
    password: redaction.Redacted,
    key_name: str = "credbridge",
    permissions: collections.abc.Sequence[str] = CREDENTIAL_PERMISSIONS,
) -> tuple[AdminSession, redaction.Redacted]:
    """Registers the first admin of a fresh Flowise, logs in and creates an API key."""
    session = AdminSession(url)
    session.register("credbridge admin", email, password)
    session.login(email, password)
    return session, session.create_api_key(key_name, permissions)
