"""The `verify` section of a credential type: how to ask the real service whether a credential works.

A type may declare one check, the way n8n declares a `test` request on its credential types:

- `http`: one read-only request (GET or HEAD only — refused at type-definition time otherwise),
  to a fixed URL (`url: https://api.openai.com/v1/models`) or to a path on a base URL taken from a
  field (`baseURLField: endpoint`, `path: /v1/models`), with the credential's fields placed in
  headers (`Authorization: "Bearer ${openAIApiKey}"`), query parameters or HTTP basic auth, a
  mapping of HTTP statuses to outcomes, and optionally a response header that tells when the
  credential expires (GitHub's `GitHub-Authentication-Token-Expiration`).
- `postgres`, `mysql`, `redis`, `mongodb`: a native login, from a connection URL field
  (`url: "${postgresUrl}"`) or from separate fields (`host`, `port`, `user`, `password`,
  `database`, `tls`).

Values use the template syntax of CredentialBindings (`${field}`), parsed once here, so a broken
declaration is refused with the object, the path and the fix before any Credential relies on it.
Where the request may go is not decided here: the egress policy (`core.egress`) does that.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import re
import typing

from credbridge.core import templating

READ_ONLY_METHODS = ("GET", "HEAD")
"""The only methods a check may use: a check must never change anything at the vendor."""
NATIVE_KINDS = ("postgres", "mysql", "redis", "mongodb")
"""Databases a check can log in to natively."""
NATIVE_COMPONENTS = ("host", "port", "user", "password", "database", "tls")
"""Parts of a native check given one by one instead of a URL."""
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306, "redis": 6379, "mongodb": 27017}
"""Port of each native kind when the declaration or the URL names none."""
OUTCOME_STATUS_KEYS = ("valid", "invalid", "forbidden", "rateLimited")
"""Keys of `statuses`: which HTTP statuses mean which outcome."""
DEFAULT_STATUSES: collections.abc.Mapping[str, tuple[int, ...]] = {
    "valid": (200,),
    "invalid": (401,),
    "forbidden": (403,),
    "rateLimited": (429,),
}
"""The usual meaning of statuses, used for any key a declaration leaves out."""
MAX_TEMPLATE_CHARS = 4096
"""Longest template in a check: URLs and headers, not documents."""

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY_NAME = re.compile(r"[A-Za-z0-9._~-]+")
# Headers the prober writes itself; a declaration setting them could smuggle a second request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te"})


class VerifyDefinitionError(ValueError):
    """A `verify` section is malformed; the message names the path and the fix (the registry adds the type)."""


@dataclasses.dataclass(frozen=True)
class StatusMap:
    """Which HTTP statuses mean which outcome; any other status is reported as unexpected."""

    valid: tuple[int, ...] = DEFAULT_STATUSES["valid"]
    invalid: tuple[int, ...] = DEFAULT_STATUSES["invalid"]
    forbidden: tuple[int, ...] = DEFAULT_STATUSES["forbidden"]
    rate_limited: tuple[int, ...] = DEFAULT_STATUSES["rateLimited"]


@dataclasses.dataclass(frozen=True)
class HttpCheck:
    """A read-only HTTP request whose status says whether the credential works."""

    method: str
    """GET or HEAD."""
    url: templating.Template
    """The absolute URL (`https://...`), or `${baseField}` when a field gives the base URL."""
    path: str = ""
    """Path appended to the base URL from a field (its trailing '/' dropped); empty with a fixed URL."""
    fixed_host: str | None = None
    """The host when the URL names it literally (the vendor's host); None when a field gives it."""
    headers: tuple[tuple[str, templating.Template], ...] = ()
    query: tuple[tuple[str, templating.Template], ...] = ()
    basic_auth: tuple[templating.Template, templating.Template] | None = None
    """(user, password) sent as HTTP basic authentication."""
    statuses: StatusMap = StatusMap()
    expiry_header: str | None = None
    """Response header holding the credential's expiry time, if the vendor sends one."""

    @property
    def fields(self) -> frozenset[str]:
        """Every credential field the check reads."""
        used = set(self.url.fields)
        for _, template in (*self.headers, *self.query):
            used |= template.fields
        if self.basic_auth is not None:
            used |= self.basic_auth[0].fields | self.basic_auth[1].fields
        return frozenset(used)


@dataclasses.dataclass(frozen=True)
class NativeCheck:
    """A native database login (and the cheapest read: `SELECT 1`, `PING`)."""

    kind: str
    """One of NATIVE_KINDS."""
    url: templating.Template | None = None
    """A connection URL (`postgres://user:pass@host:5432/db`), or None when given by components."""
    components: tuple[tuple[str, templating.Template], ...] = ()
    """(name, template) for each of NATIVE_COMPONENTS given; empty when `url` is set."""

    def component(self, name: str) -> templating.Template | None:
        """The template of one component, or None when the declaration leaves it out."""
        for key, template in self.components:
            if key == name:
                return template
        return None

    @property
    def fixed_host(self) -> str | None:
        """The host when the declaration writes it literally; None when a field gives it."""
        host = self.component("host")
        if host is None or host.fields:
            return None
        return "".join(part.text for part in host.parts if isinstance(part, templating.Literal)).lower()

    @property
    def fields(self) -> frozenset[str]:
        """Every credential field the check reads."""
        used: set[str] = set(self.url.fields) if self.url is not None else set()
        for _, template in self.components:
            used |= template.fields
        return frozenset(used)


Check = HttpCheck | NativeCheck


@dataclasses.dataclass(frozen=True)
class VerifySpec:
    """A type's `verify` section: the parsed check and the declaration as written (for the cluster object)."""

    check: Check
    declaration: str
    """The section as canonical JSON, so the type written back to the cluster carries it unchanged."""

    def to_object(self) -> dict[str, typing.Any]:
        """The section as it appears in `CredentialType.spec.verify`."""
        return typing.cast(dict[str, typing.Any], json.loads(self.declaration))


def _fail(where: str, problem: str) -> typing.NoReturn:
    raise VerifyDefinitionError(f"{where} {problem}")


def _template(where: str, raw: object, known_fields: collections.abc.Collection[str]) -> templating.Template:
    if isinstance(raw, bool | int | float):
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
    if not isinstance(raw, str):
        _fail(where, "must be a string: quote it in YAML")
    if len(raw) > MAX_TEMPLATE_CHARS:
        _fail(where, f"is longer than {MAX_TEMPLATE_CHARS} characters: shorten it")
    path, _, key = where.rpartition(".")
    try:
        template = templating.parse(key, raw, where=path)
    except templating.TemplateError as error:
        raise VerifyDefinitionError(str(error)) from None
    for field in sorted(template.fields - set(known_fields)):
        _fail(where, f"reads field {field!r}, which the type does not define: use one of {', '.join(known_fields)}")
    return template


def _mapping(where: str, raw: object) -> collections.abc.Mapping[str, object]:
    if not isinstance(raw, collections.abc.Mapping):
        _fail(where, "must be a mapping")
    return raw


def _literal_prefix(template: templating.Template) -> str:
    """The text before the first field reference."""
    prefix = []
    for part in template.parts:
        if not isinstance(part, templating.Literal):
            break
        prefix.append(part.text)
    return "".join(prefix)


def _fixed_host(where: str, template: templating.Template) -> str | None:
    """The URL's host when the template writes scheme and authority literally, else None."""
    prefix = _literal_prefix(template)
    scheme, separator, rest = prefix.partition("://")
    if not separator:
        if template.parts and isinstance(template.parts[0], templating.Reference):
            return None  # `${baseField}...`: a field gives the whole base URL
        _fail(where, "must be an absolute URL starting with https:// (or http://), or start with a ${field}")
    if scheme.lower() not in ("https", "http"):
        _fail(where, "must use https:// (or http://): a check speaks HTTP")
    authority_end = min((rest.find(mark) for mark in "/?#" if mark in rest), default=-1)
    if authority_end < 0 and template.fields:
        return None  # a field reference sits inside the authority
    authority = rest if authority_end < 0 else rest[:authority_end]
    if "@" in authority:
        _fail(where, "must not carry a user name or password in the URL: use basicAuth or headers")
    host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
    if not host:
        _fail(where, "names no host: write https://HOST/PATH")
    return host.strip("[]").lower()


def _statuses(where: str, raw: object) -> StatusMap:
    if raw is None:
        return StatusMap()
    given = _mapping(where, raw)
    unknown = sorted(set(given) - set(OUTCOME_STATUS_KEYS))
    if unknown:
        _fail(f"{where}.{unknown[0]}", f"is not an outcome: use {', '.join(OUTCOME_STATUS_KEYS)}")
    parsed: dict[str, tuple[int, ...]] = {}
    seen: dict[int, str] = {}
    for key in OUTCOME_STATUS_KEYS:
        codes = given.get(key)
        if codes is None:
            parsed[key] = DEFAULT_STATUSES[key]
            continue
        if not isinstance(codes, list) or not codes:
            _fail(f"{where}.{key}", "must be a non-empty list of HTTP statuses such as [200]")
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                _fail(f"{where}.{key}", "must list HTTP statuses between 100 and 599")
        parsed[key] = tuple(codes)
    for key, codes in parsed.items():
        for code in codes:
            if code in seen and seen[code] != key:
                _fail(where, f"maps status {code} to both {seen[code]} and {key}: keep it in one list")
            seen[code] = key
    if any(300 <= code < 400 for code in parsed["valid"]):
        _fail(f"{where}.valid", "must not list a redirect (3xx): redirects are never followed, so they prove nothing")
    return StatusMap(parsed["valid"], parsed["invalid"], parsed["forbidden"], parsed["rateLimited"])


def _http(raw: collections.abc.Mapping[str, object], fields: collections.abc.Collection[str]) -> HttpCheck:
    where = "spec.verify.http"
    allowed = {"method", "url", "baseURLField", "path", "headers", "query", "basicAuth", "statuses", "expiryHeader"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}", f"is not a setting of an HTTP check: use {', '.join(sorted(allowed))}")
    method = raw.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in READ_ONLY_METHODS:
        _fail(
            f"{where}.method",
            "must be GET or HEAD: a check must never change anything at the service, so other methods are refused",
        )
    url_raw, base_field, path = raw.get("url"), raw.get("baseURLField"), raw.get("path")
    if (url_raw is None) == (base_field is None):
        _fail(where, "must set exactly one of url (a fixed URL) and baseURLField (a field holding the base URL)")
    if url_raw is not None and path is not None:
        _fail(f"{where}.path", "goes with baseURLField only: put the path in url")
    if base_field is not None:
        if not isinstance(base_field, str) or base_field not in fields:
            _fail(f"{where}.baseURLField", f"must name a field of the type: one of {', '.join(fields)}")
        if path is None:
            path = ""
        if not isinstance(path, str) or (path and not path.startswith("/")):
            _fail(f"{where}.path", "must be a string starting with '/', e.g. /v1/models")
        url = _template(f"{where}.baseURLField", "${" + base_field + "}", fields)
        fixed_host = None
    else:
        url = _template(f"{where}.url", url_raw, fields)
        fixed_host = _fixed_host(f"{where}.url", url)
        path = ""
    headers = []
    for name, value in _mapping(f"{where}.headers", raw.get("headers") or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            _fail(f"{where}.headers", f"has an invalid header name {str(name)[:40]!r}: use letters, digits and '-'")
        if name.lower() in _RESERVED_HEADERS:
            _fail(f"{where}.headers.{name}", "is set by credbridge itself: remove it")
        headers.append((name, _template(f"{where}.headers.{name}", value, fields)))
    query = []
    for name, value in _mapping(f"{where}.query", raw.get("query") or {}).items():
        if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name):
            _fail(f"{where}.query", f"has an invalid parameter name {str(name)[:40]!r}: use letters, digits, '-', '_'")
        query.append((name, _template(f"{where}.query.{name}", value, fields)))
    basic_auth = None
    if raw.get("basicAuth") is not None:
        auth = _mapping(f"{where}.basicAuth", raw["basicAuth"])
        if set(auth) != {"username", "password"}:
            _fail(f"{where}.basicAuth", "must have exactly username and password")
        if any(name.lower() == "authorization" for name, _ in headers):
            _fail(f"{where}.basicAuth", "conflicts with an Authorization header: keep one")
        basic_auth = (
            _template(f"{where}.basicAuth.username", auth["username"], fields),
            _template(f"{where}.basicAuth.password", auth["password"], fields),
        )
    expiry_header = raw.get("expiryHeader")
    if expiry_header is not None and (not isinstance(expiry_header, str) or not _HEADER_NAME.fullmatch(expiry_header)):
        _fail(f"{where}.expiryHeader", "must be a header name, e.g. GitHub-Authentication-Token-Expiration")
    check = HttpCheck(
        method=method.upper(),
        url=url,
        path=path,
        fixed_host=fixed_host,
        headers=tuple(sorted(headers, key=lambda header: header[0].lower())),
        query=tuple(sorted(query)),
        basic_auth=basic_auth,
        statuses=_statuses(f"{where}.statuses", raw.get("statuses")),
        expiry_header=expiry_header,
    )
    if not check.fields:
        _fail(where, "sends none of the credential's fields: put them in headers, query or basicAuth")
    return check


def _native(
    kind: str, raw: collections.abc.Mapping[str, object], fields: collections.abc.Collection[str]
) -> NativeCheck:
    where = f"spec.verify.{kind}"
    allowed = {"url", *NATIVE_COMPONENTS}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _fail(
            f"{where}.{unknown[0]}", f"is not a setting of a {kind} check: use url, or {', '.join(NATIVE_COMPONENTS)}"
        )
    if raw.get("url") is not None:
        if len(raw) > 1:
            _fail(where, "sets url and separate parts: use one or the other")
        return NativeCheck(kind, url=_template(f"{where}.url", raw["url"], fields))
    if raw.get("host") is None:
        _fail(where, "must set url (e.g. ${postgresUrl}) or host (with user and password)")
    components = tuple(
        (name, _template(f"{where}.{name}", raw[name], fields))
        for name in NATIVE_COMPONENTS
        if raw.get(name) is not None
    )
    check = NativeCheck(kind, components=components)
    if kind != "redis" and check.component("password") is None:
        _fail(where, "must set password (and user): a login without them proves nothing")
    if not check.fields:
        _fail(where, "reads none of the credential's fields: reference them with ${field}")
    return check


def parse_verify(raw: object, fields: collections.abc.Sequence[str]) -> VerifySpec:
    """Parses a type's `verify` section against the type's field names.

    Raises VerifyDefinitionError naming the path (`spec.verify.http.method`, ...) and the fix.
    """
    section = _mapping("spec.verify", raw)
    kinds = [key for key in section if key in ("http", *NATIVE_KINDS)]
    unknown = sorted(set(section) - {"http", *NATIVE_KINDS})
    if unknown:
        _fail(f"spec.verify.{unknown[0]}", f"is not a kind of check: use one of http, {', '.join(NATIVE_KINDS)}")
    if len(kinds) != 1:
        _fail("spec.verify", f"must declare exactly one check: http or one of {', '.join(NATIVE_KINDS)}")
    kind = kinds[0]
    body = _mapping(f"spec.verify.{kind}", section[kind])
    check: Check = _http(body, fields) if kind == "http" else _native(kind, body, fields)
    return VerifySpec(check, json.dumps({kind: body}, sort_keys=True, separators=(",", ":")))
