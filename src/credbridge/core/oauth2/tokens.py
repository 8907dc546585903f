"""Tokens as Flowise stores them, and a token endpoint's answer read into them.

Flowise 3.1.x keeps an OAuth2 credential's tokens inside its encrypted data, next to the client
configuration, under the names its OAuth2 routes write and its nodes read (see docs/oauth2.md for
the source): `access_token`, `refresh_token`, `expires_at` (JavaScript's `Date.toISOString()`:
UTC, milliseconds, `Z`), `token_type`, `expires_in`, `token_received_at`, and `granted_scope`.
credbridge uses exactly these names, so a Credential pushed to Flowise carries what its nodes read
and a credential imported from Flowise keeps its tokens.

Every token value is held in `redaction.Redacted`: nothing here formats one.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import math
import typing

from credbridge.core import redaction

ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"
EXPIRES_AT = "expires_at"
"""When the access token expires: ISO 8601 in UTC with milliseconds, `2026-05-01T12:00:00.000Z`."""
TOKEN_TYPE = "token_type"
EXPIRES_IN = "expires_in"
"""The lifetime the provider gave, in seconds, as a decimal string."""
TOKEN_RECEIVED_AT = "token_received_at"
"""When the access token was received, in the format of `expires_at`: the refresh schedule needs it."""
GRANTED_SCOPE = "granted_scope"
"""The scope the provider granted, when its answer says (it may be narrower than the one asked for)."""
ID_TOKEN = "id_token"
"""An OpenID Connect ID token, when the provider sends one. Flowise keeps it; credbridge accepts it
on import but does not write it."""

TOKEN_FIELDS: tuple[str, ...] = (
    ACCESS_TOKEN,
    REFRESH_TOKEN,
    EXPIRES_AT,
    TOKEN_TYPE,
    EXPIRES_IN,
    TOKEN_RECEIVED_AT,
    GRANTED_SCOPE,
    ID_TOKEN,
)
"""Every token field an OAuth2 CredentialType accepts besides its declared inputs, in Flowise's names."""
SECRET_TOKEN_FIELDS = frozenset({ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN})
"""Token fields whose values are secrets (field type `password`)."""
WRITTEN_FIELDS: tuple[str, ...] = tuple(field for field in TOKEN_FIELDS if field != ID_TOKEN)
"""The fields credbridge writes after a token request (never `id_token`)."""


class TokenResponseError(ValueError):
    """A token endpoint's answer is not a usable token response; the message never holds a value."""


def format_time(moment: datetime.datetime) -> str:
    """`moment` as Flowise writes times: UTC, milliseconds, `Z` (`2026-05-01T12:00:00.000Z`)."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(value: str | None) -> datetime.datetime | None:
    """A stored time (ISO 8601, with `Z` or an offset; a naive time counts as UTC), or None when it is
    absent or unreadable — an unreadable expiry means "refresh now", never a crash."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class TokenSet:
    """What one successful token request gave: the tokens to store from now on."""

    access_token: redaction.Redacted
    token_type: str
    received_at: datetime.datetime
    expires_at: datetime.datetime | None
    """None when the provider gave no lifetime (the token lives until revoked)."""
    refresh_token: redaction.Redacted | None
    """The refresh token to keep: the new one when the answer had one, else the previous one."""
    refresh_token_rotated: bool
    """The answer carried a refresh token different from the previous one: it must be stored, the old one
    may stop working at once."""
    expires_in: int | None = None
    granted_scope: str | None = None

    def field_values(self) -> dict[str, redaction.Redacted]:
        """The token fields to store, by Flowise's names (`WRITTEN_FIELDS`); absent ones are left out.

        Every value is wrapped, including the times: what is written to a Secret is one kind of thing.
        """
        values = {
            ACCESS_TOKEN: self.access_token,
            TOKEN_TYPE: redaction.Redacted(self.token_type),
            TOKEN_RECEIVED_AT: redaction.Redacted(format_time(self.received_at)),
        }
        if self.expires_at is not None:
            values[EXPIRES_AT] = redaction.Redacted(format_time(self.expires_at))
        if self.expires_in is not None:
            values[EXPIRES_IN] = redaction.Redacted(str(self.expires_in))
        if self.refresh_token is not None:
            values[REFRESH_TOKEN] = self.refresh_token
        if self.granted_scope:
            values[GRANTED_SCOPE] = redaction.Redacted(self.granted_scope)
        return values


def _lifetime(raw: object) -> int | None:
    """`expires_in` as whole seconds: a JSON number or a numeric string (some providers send one)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, int | float) and math.isfinite(raw):
        return max(0, int(raw))
    return None


def parse_token_response(
    body: collections.abc.Mapping[str, typing.Any],
    *,
    received_at: datetime.datetime,
    previous_refresh_token: redaction.Redacted | None,
) -> TokenSet:
    """Reads a successful token answer (RFC 6749 §5.1) into a TokenSet.

    `expires_in` becomes an absolute `expires_at` from `received_at`. An answer without a refresh
    token keeps `previous_refresh_token` (Google and others send it only once); one with a refresh
    token replaces it. Raises TokenResponseError when there is no access token.
    """
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenResponseError("the token endpoint's answer has no access_token")
    token_type = body.get("token_type")
    refresh = body.get("refresh_token")
    new_refresh = redaction.Redacted(refresh) if isinstance(refresh, str) and refresh else None
    lifetime = _lifetime(body.get("expires_in"))
    scope = body.get("scope")
    return TokenSet(
        access_token=redaction.Redacted(access),
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        received_at=received_at,
        expires_at=None if lifetime is None else received_at + datetime.timedelta(seconds=lifetime),
        refresh_token=new_refresh or previous_refresh_token,
        refresh_token_rotated=new_refresh is not None and new_refresh != previous_refresh_token,
        expires_in=lifetime,
        granted_scope=scope if isinstance(scope, str) and scope else None,
    )


@dataclasses.dataclass(frozen=True)
class StoredTokens:
    """The tokens a Credential holds now, read from its fields (decrypted, or from its token Secret)."""

    access_token: redaction.Redacted | None
    refresh_token: redaction.Redacted | None
    expires_at: datetime.datetime | None
    """None when absent or unreadable."""
    received_at: datetime.datetime | None
    expires_at_given: bool = False
    """An `expires_at` value was there (readable or not): without one, a present access token never expires."""

    @classmethod
    def from_fields(cls, fields: collections.abc.Mapping[str, str]) -> StoredTokens:
        """Reads the token fields of a Credential's values (Flowise's names); empty values count as absent."""
        access = fields.get(ACCESS_TOKEN) or ""
        refresh = fields.get(REFRESH_TOKEN) or ""
        expires = fields.get(EXPIRES_AT) or ""
        return cls(
            access_token=redaction.Redacted(access) if access else None,
            refresh_token=redaction.Redacted(refresh) if refresh else None,
            expires_at=parse_time(expires),
            received_at=parse_time(fields.get(TOKEN_RECEIVED_AT)),
            expires_at_given=bool(expires),
        )

    def access_token_valid(self, now: datetime.datetime) -> bool:
        """There is an access token and it has not expired (one without an expiry never does)."""
        if self.access_token is None:
            return False
        if not self.expires_at_given:
            return True
        return self.expires_at is not None and now < self.expires_at
