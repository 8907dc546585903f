"""What a token request ended in, and the classification of a provider's refusal.

Three outcomes, because each asks for a different reaction:
- `Refreshed`: new tokens, to be stored before anything else (a rotated refresh token is the
  only copy);
- `ReauthorizationRequired`: the provider refused the grant itself (`invalid_grant`: revoked,
  expired, or already used) — retrying cannot help, a person must run
  `credbridge oauth2 authorize` again;
- `RefreshFailed`: anything else (5xx, 429, timeouts, an unreachable host, a refused client).
  `transient` says whether waiting may help (then back off, honouring `Retry-After`); a refused
  client (`invalid_client`, `unauthorized_client`, ...) is a configuration problem that waits for
  the Credential to change.

Messages name the HTTP status and the OAuth error code (a short identifier from RFC 6749 §5.2),
never `error_description` or any other part of the body, which a provider may fill with anything.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import email.utils
import re
import typing

from credbridge.core import redaction
from credbridge.core.oauth2 import tokens

REAUTHORIZATION_ERRORS = frozenset({"invalid_grant", "invalid_refresh_token", "token_revoked"})
"""Error codes that mean the grant is gone: RFC 6749's `invalid_grant`, and Slack's names for it."""
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down", "ratelimited"})
"""Error codes that mean "try again later" (RFC 6749 §4.1.2.1, Slack's `ratelimited`)."""
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Refreshed:
    """The token request succeeded."""

    tokens: tokens.TokenSet


@dataclasses.dataclass(frozen=True)
class ReauthorizationRequired:
    """The provider refused the grant: only a new authorization helps."""

    error: str
    """The OAuth error code (e.g. `invalid_grant`)."""
    detail: str
    """A sentence for the condition message: status and error code, no value."""


@dataclasses.dataclass(frozen=True)
class RefreshFailed:
    """The token request failed for another reason."""

    detail: str
    """A sentence for the condition message: what failed (status, error code, timeout), no value."""
    transient: bool = True
    """Waiting may help (5xx, 429, timeouts, unreachable); False for a refused client or a bad answer."""
    retry_after: float | None = None
    """Seconds the provider asked to wait (Retry-After), when it did."""


Outcome = Refreshed | ReauthorizationRequired | RefreshFailed


def error_code(body: collections.abc.Mapping[str, typing.Any] | None) -> str | None:
    """The `error` of an OAuth error answer when it is a plain identifier, else None."""
    if body is None:
        return None
    raw = body.get("error")
    if isinstance(raw, str) and _ERROR_CODE.fullmatch(raw):
        return raw
    return None


def parse_retry_after(value: str | None, now: datetime.datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def classify_error(
    status: int,
    body: collections.abc.Mapping[str, typing.Any] | None,
    *,
    retry_after: str | None,
    now: datetime.datetime,
    endpoint: str,
) -> ReauthorizationRequired | RefreshFailed:
    """The outcome of a token request the provider refused or failed.

    `body` is the decoded JSON answer (None when it was not JSON), `retry_after` the raw header,
    `endpoint` names the token endpoint for messages (its host, not a URL with a query).
    """
    code = error_code(body)
    said = f" ({code})" if code else ""
    wait = parse_retry_after(retry_after, now)
    if code in REAUTHORIZATION_ERRORS:
        return ReauthorizationRequired(
            code or "invalid_grant",
            f"{endpoint} refused the refresh token with HTTP {status}{said}: it was revoked, has expired or was "
            "already used",
        )
    if status == 429 or status >= 500 or code in TRANSIENT_ERRORS:
        return RefreshFailed(f"{endpoint} answered HTTP {status}{said}", transient=True, retry_after=wait)
    if code is not None:
        return RefreshFailed(
            f"{endpoint} refused the request with HTTP {status}{said}: check the client id, client secret, scope "
            "and token URL of the Credential",
            transient=False,
            retry_after=wait,
        )
    return RefreshFailed(
        f"{endpoint} answered HTTP {status} without an OAuth error: check the Credential's token URL",
        transient=status not in (400, 401, 403, 404),
        retry_after=wait,
    )


def classify_answer(
    status: int,
    body: collections.abc.Mapping[str, typing.Any] | None,
    *,
    retry_after: str | None,
    now: datetime.datetime,
    endpoint: str,
    previous_refresh_token: redaction.Redacted | None,
) -> Outcome:
    """The outcome of any answer of a token endpoint: tokens on success, else `classify_error`.

    A 200 whose JSON carries an `error` and no access token is a refusal too (Slack answers
    `{"ok": false, "error": ...}` with status 200).
    """
    if 200 <= status < 300 and body is not None and not (body.get("error") and not body.get("access_token")):
        try:
            return Refreshed(
                tokens.parse_token_response(body, received_at=now, previous_refresh_token=previous_refresh_token)
            )
        except tokens.TokenResponseError as error:
            return RefreshFailed(f"{endpoint}: {error}", transient=False)
    if 200 <= status < 300 and body is None:
        return RefreshFailed(f"{endpoint} answered HTTP {status} with something that is not JSON", transient=False)
    refused = 400 if 200 <= status < 300 else status
    return classify_error(refused, body, retry_after=retry_after, now=now, endpoint=endpoint)


def transport_failure(endpoint: str, what: str, *, transient: bool = True) -> RefreshFailed:
    """A request that got no usable answer: a timeout, a refused connection, a TLS failure (transient),
    or an answer credbridge does not read: too large, a redirect (`transient=False`)."""
    return RefreshFailed(f"{endpoint}: {what}", transient=transient)
