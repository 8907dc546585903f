"""Verification as pure steps: the request a check makes, the outcomes it can have, and the `Verified` condition.

`Ready` says a Credential's Secret opens; it cannot say whether the key still works at the
vendor. Verification answers that, and it only informs: nothing else waits for it. It is split
the way every consumer is:

1. `build_probe` turns a type's `verify` declaration and a Credential's plaintext into one
   concrete request (`HttpProbe` or `DatabaseProbe`), values wrapped in `core.redaction` types.
   A declaration that cannot be filled from these values gives a `NotVerifiable` result instead.
2. The prober (`credbridge.probing`, the only code that talks to vendors) applies the egress
   policy (`core.egress`), sends the request and returns a `ProbeResult`.
3. `plan_verification` turns (previous status, result, now) into the `Verified` condition,
   `status.lastVerifiedTime`, the expiry the check discovered, and an Event when the outcome
   changed.

Outcomes and their condition (status/reason):

| outcome        | condition                     | meaning                                         |
|----------------|-------------------------------|-------------------------------------------------|
| Valid          | True/Valid                    | the service accepted the credential             |
| Invalid        | False/Invalid                 | refused it (HTTP 401, wrong password)           |
| Forbidden      | False/Forbidden               | accepted it but it lacks a permission (403)     |
| RateLimited    | False/RateLimited             | over a rate or quota limit (429)                |
| Unreachable    | Unknown/Unreachable           | no answer, a TLS failure, a server error        |
| NotVerifiable  | Unknown/NotVerifiable         | the type has no check or the values do not fit  |
| Blocked        | Unknown/VerificationBlocked   | the egress policy refused: nothing was sent     |
| NotReleased    | Unknown/NotReleased           | the release rule keeps the values in: no check  |

A blocked check is Unknown, not False: nothing was asked, so nothing is known about the
credential; the reason and a Warning Event tell the admin what to allow. The same holds for a
Credential whose values may not leave the operator at all (`<<ENV>>` values not granted to its
namespace): a check is an output like any other.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime
import email.utils
import enum
import typing
import urllib.parse

from credbridge.core import conditions, names, planning, redaction, registry, templating, verifyspec

Json = dict[str, typing.Any]
Status = collections.abc.Mapping[str, typing.Any]

VERIFIED = "Verified"
"""Condition type written by verification."""
VERIFY_REQUESTED_ANNOTATION = f"{names.GROUP}/verify-requested"
"""Set (to a timestamp) by `credbridge verify` to ask for a check now; the operator acts once per value."""


class Outcome(enum.Enum):
    """What a check found; the value is the condition reason."""

    VALID = "Valid"
    INVALID = "Invalid"
    FORBIDDEN = "Forbidden"
    RATE_LIMITED = "RateLimited"
    UNREACHABLE = "Unreachable"
    NOT_VERIFIABLE = "NotVerifiable"
    BLOCKED = "VerificationBlocked"
    NOT_RELEASED = "NotReleased"


CONDITION_STATUS: collections.abc.Mapping[Outcome, str] = {
    Outcome.VALID: "True",
    Outcome.INVALID: "False",
    Outcome.FORBIDDEN: "False",
    Outcome.RATE_LIMITED: "False",
    Outcome.UNREACHABLE: "Unknown",
    Outcome.NOT_VERIFIABLE: "Unknown",
    Outcome.BLOCKED: "Unknown",
    Outcome.NOT_RELEASED: "Unknown",
}
"""The `Verified` condition status of each outcome."""


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What one check found. `message` names the host, the status or the cause, never a value."""

    outcome: Outcome
    message: str
    expires_at: datetime.datetime | None = None
    """When the credential expires, if the service said so (GitHub's expiry header)."""


@dataclasses.dataclass(frozen=True)
class HttpProbe:
    """One read-only HTTP request, ready to send."""

    type_name: str
    method: str
    scheme: str
    """`https` or `http`."""
    host: str
    """Host name (or IP literal) to resolve, to send as SNI and `Host`, and to check the certificate against."""
    port: int
    target: redaction.Redacted
    """Path and query: the query may carry the key, so it is wrapped."""
    headers: tuple[tuple[str, redaction.Redacted], ...]
    statuses: verifyspec.StatusMap
    expiry_header: str | None
    host_from_field: bool
    """True when a Credential's field chose the host (the admin's allow-list then decides)."""


@dataclasses.dataclass(frozen=True)
class DatabaseProbe:
    """One native database login."""

    type_name: str
    kind: str
    """One of verifyspec.NATIVE_KINDS."""
    host: str
    port: int
    user: redaction.Redacted
    password: redaction.Redacted
    database: str | None
    tls: bool
    host_from_field: bool
    auth_source: str | None = None
    """MongoDB: the database holding the user (`authSource`), default `admin`."""

    @property
    def scheme(self) -> str:
        """The kind, in the place an HTTP probe has its scheme (the egress policy reads it)."""
        return self.kind


Probe = HttpProbe | DatabaseProbe


def not_verifiable(message: str) -> ProbeResult:
    """A result for a check that cannot be made with what the Credential holds."""
    return ProbeResult(Outcome.NOT_VERIFIABLE, message)


def _render(template: templating.Template, fields: collections.abc.Mapping[str, str], where: str) -> str:
    rendered = templating.render(templating.Templates({template.key: template}), fields, where=where)
    return rendered[template.key]


def _unsafe_for_header(text: str) -> bool:
    return any(character in text for character in "\r\n\0")


def _host_and_port(parts: urllib.parse.SplitResult, default_port: int) -> tuple[str, int] | None:
    try:
        port = parts.port or default_port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    try:
        host.encode("idna")
    except UnicodeError:
        return None
    return host.lower(), port


def _build_http(
    spec: registry.CredentialTypeSpec, check: verifyspec.HttpCheck, fields: collections.abc.Mapping[str, str]
) -> Probe | ProbeResult:
    where = f"type {spec.name}"
    url = _render(check.url, fields, where)
    if check.path:
        url = url.rstrip("/") + check.path
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    origin = f"field {sorted(check.url.fields)[0]!r}" if check.url.fields else "the type's URL"
    if scheme not in ("https", "http"):
        return not_verifiable(f"the check of type {spec.name} needs an http(s) URL, and {origin} does not hold one")
    if "@" in parts.netloc:
        return not_verifiable(
            f"the URL from {origin} carries a user name or password before its host: remove it; credentials go in "
            "the type's headers or basicAuth"
        )
    located = _host_and_port(parts, 443 if scheme == "https" else 80)
    if located is None:
        return not_verifiable(f"the URL from {origin} has no valid host or port")
    host, port = located
    if check.fixed_host is not None and host != check.fixed_host:
        return not_verifiable(f"the check of type {spec.name} must go to {check.fixed_host}")
    query = [(name, _render(template, fields, where)) for name, template in check.query]
    query_text = "&".join(filter(None, [parts.query, urllib.parse.urlencode(query)]))
    target = (parts.path or "/") + (f"?{query_text}" if query_text else "")
    if any(ord(character) <= 32 or ord(character) == 127 for character in target):
        return not_verifiable(
            f"the request of type {spec.name} would carry a space or control character in its path or query: "
            "check the values of the fields it reads for stray whitespace"
        )
    headers: list[tuple[str, redaction.Redacted]] = []
    for name, template in check.headers:
        value = _render(template, fields, where)
        if _unsafe_for_header(value):
            return not_verifiable(
                f"header {name} of the check is built from field(s) {', '.join(sorted(template.fields))}, whose value "
                "holds a line break: remove it (a line break cannot go in an HTTP header)"
            )
        headers.append((name, redaction.Redacted(value)))
    if check.basic_auth is not None:
        user, password = (_render(template, fields, where) for template in check.basic_auth)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers.append(("Authorization", redaction.Redacted(f"Basic {token}")))
    return HttpProbe(
        type_name=spec.name,
        method=check.method,
        scheme=scheme,
        host=host,
        port=port,
        target=redaction.Redacted(target),
        headers=tuple(headers),
        statuses=check.statuses,
        expiry_header=check.expiry_header,
        host_from_field=check.fixed_host is None,
    )


_URL_SCHEMES = {
    "postgres": ("postgres", "postgresql"),
    "mysql": ("mysql", "mariadb"),
    "redis": ("redis", "rediss"),
    "mongodb": ("mongodb",),
}
_TRUE = ("true", "1", "yes", "on")


def _database_from_url(
    spec: registry.CredentialTypeSpec, check: verifyspec.NativeCheck, url: str, field: str
) -> DatabaseProbe | ProbeResult:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if check.kind == "mongodb" and scheme == "mongodb+srv":
        return not_verifiable(
            f"field {field!r} holds a mongodb+srv:// URL, whose hosts come from DNS SRV records: credbridge does not "
            "verify those yet (a mongodb:// URL naming the host can be verified)"
        )
    if scheme not in _URL_SCHEMES[check.kind]:
        expected = " or ".join(f"{name}://" for name in _URL_SCHEMES[check.kind])
        return not_verifiable(f"field {field!r} must hold a {expected} URL for the {check.kind} check")
    netloc = parts.netloc.rpartition("@")[2]
    if "," in netloc:
        # Several hosts (a MongoDB replica set): the first one is checked, directly.
        first = netloc.split(",")[0]
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[0] + "@" + first if "@" in parts.netloc else first)
    located = _host_and_port(parts, verifyspec.DEFAULT_PORTS[check.kind])
    if located is None:
        return not_verifiable(f"field {field!r} holds a URL without a valid host or port")
    options = dict(urllib.parse.parse_qsl(parts.query))
    path = urllib.parse.unquote(parts.path.lstrip("/"))
    if check.kind == "postgres":
        tls = options.get("sslmode", "").lower() in ("require", "verify-ca", "verify-full")
    elif check.kind == "redis":
        tls = scheme == "rediss"
    else:
        tls = any(options.get(key, "").lower() in _TRUE for key in ("ssl", "tls"))
    return DatabaseProbe(
        type_name=spec.name,
        kind=check.kind,
        host=located[0],
        port=located[1],
        user=redaction.Redacted(urllib.parse.unquote(parts.username or "")),
        password=redaction.Redacted(urllib.parse.unquote(parts.password or "")),
        database=path or None,
        tls=tls,
        host_from_field=True,
        auth_source=options.get("authSource"),
    )


def _build_database(
    spec: registry.CredentialTypeSpec, check: verifyspec.NativeCheck, fields: collections.abc.Mapping[str, str]
) -> DatabaseProbe | ProbeResult:
    where = f"type {spec.name}"
    if check.url is not None:
        field = ", ".join(sorted(check.url.fields)) or "url"
        return _database_from_url(spec, check, _render(check.url, fields, where), field)
    values = {name: _render(template, fields, where) for name, template in check.components}
    host = values.get("host", "").strip()
    if not host:
        return not_verifiable(f"the {check.kind} check of type {spec.name} needs a host, and the host field is empty")
    port_text = values.get("port", "").strip() or str(verifyspec.DEFAULT_PORTS[check.kind])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return not_verifiable(f"the {check.kind} check of type {spec.name} needs a port between 1 and 65535")
    fixed = check.fixed_host
    return DatabaseProbe(
        type_name=spec.name,
        kind=check.kind,
        host=host.strip("[]").lower(),
        port=int(port_text),
        user=redaction.Redacted(values.get("user", "")),
        password=redaction.Redacted(values.get("password", "")),
        database=values.get("database") or None,
        tls=values.get("tls", "").strip().lower() in _TRUE,
        host_from_field=fixed is None,
    )


def build_probe(spec: registry.CredentialTypeSpec, fields: collections.abc.Mapping[str, str]) -> Probe | ProbeResult:
    """The concrete check for a Credential of type `spec` holding `fields` (its plaintext).

    Returns a NotVerifiable result when the type declares no check, or the values cannot fill it
    (a field without a value, a URL of the wrong scheme, a line break in a header value).
    """
    if spec.verify is None:
        return not_verifiable(
            f"type {spec.name} declares no check: see docs/credentials.md for adding spec.verify to a CredentialType"
        )
    check = spec.verify.check
    try:
        if isinstance(check, verifyspec.HttpCheck):
            return _build_http(spec, check, fields)
        return _build_database(spec, check, fields)
    except templating.RenderError as error:
        return not_verifiable(f"the check of type {spec.name} cannot be filled: {error}")


def parse_expiry_header(text: str) -> datetime.datetime | None:
    """The time in an expiry header: GitHub's `2021-10-07 19:07:53 UTC`, RFC 3339 or an HTTP date; None if none."""
    cleaned = text.strip()
    if cleaned.endswith(" UTC"):
        cleaned = cleaned[: -len(" UTC")].replace(" ", "T") + "+00:00"
    for candidate in (cleaned, cleaned.replace("Z", "+00:00")):
        try:
            parsed = datetime.datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None


def outcome_of_status(status: int, statuses: verifyspec.StatusMap) -> Outcome | None:
    """The outcome an HTTP status means under a check's mapping; None for a status it does not map."""
    for codes, outcome in (
        (statuses.valid, Outcome.VALID),
        (statuses.invalid, Outcome.INVALID),
        (statuses.forbidden, Outcome.FORBIDDEN),
        (statuses.rate_limited, Outcome.RATE_LIMITED),
    ):
        if status in codes:
            return outcome
    return None


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second: how Kubernetes writes times."""
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: object) -> datetime.datetime | None:
    """An RFC 3339 time from a status or spec; None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


merge_conditions = conditions.merge
"""Re-exported: one merge of a Credential's conditions for every writer (core.conditions)."""


Event = planning.Event
"""Re-exported: the Events verification posts are the Credential Events planning posts."""


@dataclasses.dataclass(frozen=True)
class VerificationPlan:
    """What one finished check changes on a Credential."""

    condition: Json
    """The new `Verified` condition (merge with `merge_conditions`)."""
    status: Json
    """Status fields to set: `lastVerifiedTime`, `lastVerifyRequest` (when one was handled) and
    `discoveredExpiresAt` (the expiry the service reported, or None to clear it)."""
    event: Event | None
    """Posted when the outcome differs from the previous one (or on the first check)."""


_MESSAGES = {
    Outcome.VALID: "the service accepted the credential",
    Outcome.INVALID: "the service refused the credential (invalid, revoked or expired; for keys, HTTP 401)",
    Outcome.FORBIDDEN: "the service accepted the credential but it lacks a permission (HTTP 403)",
    Outcome.RATE_LIMITED: "the service answered that the credential is over a rate or quota limit (HTTP 429)",
    Outcome.UNREACHABLE: "the service could not be asked",
    Outcome.NOT_VERIFIABLE: "the credential cannot be checked",
    Outcome.BLOCKED: "the check was refused by the egress policy and sent nothing",
    Outcome.NOT_RELEASED: "the credential's values may not be sent to a check, so nothing was sent",
}


def describe(outcome: Outcome) -> str:
    """What an outcome means, in general terms (no host, no detail of the check)."""
    return _MESSAGES[outcome]


def plan_verification(
    previous: Status,
    result: ProbeResult,
    *,
    now: datetime.datetime,
    generation: int,
    request: str | None = None,
) -> VerificationPlan:
    """The `Verified` condition and status fields after a check that ended with `result` at `now`.

    `previous` is the Credential's status before; `request` is the value of the verify-requested
    annotation the check answered, if any, so the same request is not acted on twice.
    """
    outcome = result.outcome
    message = f"{_MESSAGES[outcome]}: {result.message}" if result.message else _MESSAGES[outcome]
    now_text = format_time(now)
    condition = conditions.condition(
        previous, VERIFIED, CONDITION_STATUS[outcome], outcome.value, message, now_text, generation
    )
    status: Json = {
        "lastVerifiedTime": now_text,
        "discoveredExpiresAt": format_time(result.expires_at) if result.expires_at else None,
    }
    if request is not None:
        status["lastVerifyRequest"] = request
    if outcome in (Outcome.NOT_VERIFIABLE, Outcome.UNREACHABLE, Outcome.BLOCKED, Outcome.NOT_RELEASED):
        # Nothing new was learnt about the expiry: keep what an earlier check found.
        status["discoveredExpiresAt"] = previous.get("discoveredExpiresAt")
    event = None
    if conditions.reason(previous, VERIFIED) != outcome.value:
        event = Event("Normal" if outcome is Outcome.VALID else "Warning", outcome.value, message)
    return VerificationPlan(condition, status, event)


def verify_requested(annotations: collections.abc.Mapping[str, str] | None, status: Status) -> str | None:
    """The pending `credbridge verify` request (the annotation's value), or None when none is pending."""
    value = (annotations or {}).get(VERIFY_REQUESTED_ANNOTATION)
    if not value or value == status.get("lastVerifyRequest"):
        return None
    return value
