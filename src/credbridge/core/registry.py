"""The credential type schema: what fields a type has and what values each field accepts.

Credentials are typed the way Flowise types them: a type (`openAIApi`, `PostgresApi`, ...) lists
input fields, each with a field type, an optional flag, a default and, for `options` fields, the
allowed choices. The 113 Flowise types ship as package data; cluster admins add their own as
CredentialType objects. This module turns both sources into one immutable model, checks type
definitions before anything relies on them, and converts a type back into the object the operator
applies, so the built-ins in the cluster never drift from the package.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib.resources
import json
import math
import re
import types
import typing
import urllib.parse

from credbridge.core import names, verifyspec
from credbridge.core.oauth2 import tokens

FIELD_TYPES = ("string", "password", "url", "number", "boolean", "options", "json")
"""Field types a CredentialType input may declare (Flowise's credential input types)."""

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A type name must stay a valid Kubernetes object name once lowercased (DNS-1123 subdomain).
_TYPE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BUILTIN_DATA = "builtin-types.json"
_BUILTIN_VERIFY_DATA = "builtin-verify.json"

GRANTS = ("authorization_code", "client_credentials")
"""OAuth2 grants a CredentialType may declare: a person authorizes once (`credbridge oauth2 authorize`),
or the operator gets tokens with the client's own id and secret, with no person involved."""
CLIENT_AUTHENTICATIONS = ("client_secret_post", "client_secret_basic")
"""How the client proves itself at the token endpoint (RFC 6749 §2.3.1): in the form, as Flowise
does, or in an HTTP Basic header."""
OAUTH2_INPUTS: dict[str, tuple[str, ...]] = {
    "authorization_code": ("authorizationUrl", "accessTokenUrl", "clientId", "clientSecret"),
    "client_credentials": ("accessTokenUrl", "clientId", "clientSecret"),
}
"""Inputs an OAuth2 type must declare for its grant, in Flowise's names (its OAuth2 types use them)."""
BUILTIN_OAUTH2: dict[str, dict[str, str]] = {
    name: {"grant": "authorization_code"}
    for name in (
        "gmailOAuth2",
        "googleCalendarOAuth2",
        "googleDocsOAuth2",
        "googleDriveOAuth2",
        "googleSheetsOAuth2",
        "microsoftOutlookOAuth2",
        "microsoftTeamsOAuth2",
        "slackOAuth2",
    )
}
"""The `oauth2` section of Flowise's OAuth2 types. The package data is Flowise's field inventory, kept
byte for byte as the facts; Flowise itself knows these types are OAuth2 from code (its UI shows the
Authorize button for type names containing `OAuth2`), so the declaration is added here."""


@dataclasses.dataclass(frozen=True)
class InputField:
    """One input of a credential type, as Flowise describes it."""

    name: str
    """Key of the field in `spec.data` / `spec.valueFrom` and in the decrypted plaintext."""
    label: str
    """Human-readable name, shown by `credbridge types` and UIs."""
    type: str
    """One of `FIELD_TYPES`; decides which values the field accepts."""
    optional: bool = False
    """True when a Credential may leave the field out."""
    default: str | None = None
    """Value used when a Credential leaves the field out; always a string, as in Kubernetes."""
    hidden: bool = False
    """True for fields Flowise's UI hides (usually OAuth plumbing with a default)."""
    options: tuple[str, ...] = ()
    """Allowed values of an `options` field, empty for other types."""
    description: str = ""
    """Free text for users."""

    @property
    def required(self) -> bool:
        """Tells whether a Credential must supply the field: not optional and without a default."""
        return not self.optional and self.default is None

    def accepts(self, value: str) -> bool:
        """Tells whether `value` is well-formed for this field's type.

        `number` takes plain decimal notation that is finite (`6379`, `-0.5`, `1e3`; no
        whitespace, underscores, `nan` or `inf`); `boolean` takes `true`/`false` in any case;
        `url` takes an absolute URL with a scheme and a host, any scheme (`redis://`,
        `postgres://`, `https://`); `options` takes one of the options; `json` takes any JSON
        document; `string` and `password` take anything.
        """
        if self.type == "number":
            return _NUMBER.fullmatch(value) is not None and math.isfinite(float(value))
        if self.type == "boolean":
            return value.lower() in ("true", "false")
        if self.type == "url":
            return _is_absolute_url(value)
        if self.type == "options":
            return value in self.options
        if self.type == "json":
            try:
                json.loads(value)
            except ValueError:
                return False
            return True
        return True


def _is_absolute_url(value: str) -> bool:
    if not value or any(character.isspace() for character in value):
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc)


@dataclasses.dataclass(frozen=True)
class OAuth2Spec:
    """A type's `oauth2` section: its Credentials hold OAuth2 tokens that credbridge keeps fresh."""

    grant: str
    """One of `GRANTS`."""
    client_authentication: str = "client_secret_post"
    """One of `CLIENT_AUTHENTICATIONS`."""


def _token_input(name: str) -> InputField:
    secret = name in tokens.SECRET_TOKEN_FIELDS
    return InputField(
        name=name,
        label=name,
        type="password" if secret else "string",
        optional=True,
        hidden=True,
        description="OAuth2 token field, written by `credbridge oauth2 authorize` and the operator's refresh",
    )


_TOKEN_INPUTS = tuple(_token_input(name) for name in tokens.TOKEN_FIELDS)


@dataclasses.dataclass(frozen=True)
class CredentialTypeSpec:
    """A credential type: its exact name, label, schema version and input fields."""

    name: str
    """Exact (case-sensitive) type name that `Credential.spec.type` refers to, e.g. `openAIApi`."""
    label: str
    """Human-readable name."""
    version: int | float
    """Flowise schema version (`1`, `1.1`, ...), copied to `Credential.status.typeVersion`."""
    inputs: tuple[InputField, ...]
    """Input fields in declaration order."""
    description: str = ""
    """Free text for users."""
    builtin: bool = False
    """True for the types that ship with the package."""
    verify: verifyspec.VerifySpec | None = None
    """How to ask the real service whether a credential of this type works; None: it cannot be checked."""
    oauth2: OAuth2Spec | None = None
    """The OAuth2 grant of the type, or None for a type without tokens."""

    @property
    def token_inputs(self) -> tuple[InputField, ...]:
        """The token fields an OAuth2 type accepts besides its declared inputs (optional, hidden; Flowise's
        names, `tokens.TOKEN_FIELDS`); none for other types. A declared input of the same name wins."""
        if self.oauth2 is None:
            return ()
        declared = {input_field.name for input_field in self.inputs}
        return tuple(input_field for input_field in _TOKEN_INPUTS if input_field.name not in declared)

    @property
    def all_inputs(self) -> tuple[InputField, ...]:
        """The declared inputs, then the token fields: every field a Credential of the type may set."""
        return self.inputs + self.token_inputs

    def field(self, name: str) -> InputField | None:
        """Returns the field called `name` (declared or token field), or None when the type has no such field."""
        for input_field in self.all_inputs:
            if input_field.name == name:
                return input_field
        return None

    def field_names(self) -> tuple[str, ...]:
        """Returns the names of every field, declared inputs first, in declaration order."""
        return tuple(input_field.name for input_field in self.all_inputs)


class TypeDefinitionError(ValueError):
    """A credential type definition is malformed; the message names the type, the field and the fix."""


def type_object_name(type_name: str) -> str:
    """Returns the CredentialType object name of a type: the type name lowercased.

    Kubernetes object names are lowercase DNS subdomains while Flowise type names are camelCase,
    so the exact name lives in `spec.name` and the object is named after its lowercase form. No
    two built-ins collide once lowercased (a unit test keeps it so).
    """
    return type_name.lower()


def _fail(type_name: str, where: str, problem: str) -> typing.NoReturn:
    raise TypeDefinitionError(f"CredentialType {type_name!r}: {where} {problem}")


def _text(type_name: str, where: str, value: object, *, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        _fail(type_name, where, "must be a string: quote it in YAML")
    return value


def _flag(type_name: str, where: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        _fail(type_name, where, "must be true or false")
    return value


def _parse_input(type_name: str, index: int, raw: object, seen: set[str]) -> InputField:
    where = f"spec.inputs[{index}]"
    if not isinstance(raw, collections.abc.Mapping):
        _fail(type_name, where, "must be a mapping with name, label and type")
    name = raw.get("name")
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
        _fail(
            type_name,
            f"{where}.name",
            "must be a field name matching [A-Za-z_][A-Za-z0-9_]* (letters, digits, underscores)",
        )
    where = f"spec.inputs[{index}] (field {name!r})"
    if name in seen:
        _fail(type_name, where, "repeats a field name: give every input a unique name")
    seen.add(name)
    field_type = raw.get("type")
    if field_type not in FIELD_TYPES:
        _fail(type_name, f"{where}.type", f"must be one of {', '.join(FIELD_TYPES)}")
    raw_options = raw.get("options")
    options: tuple[str, ...] = ()
    if raw_options is not None:
        if not isinstance(raw_options, collections.abc.Sequence) or isinstance(raw_options, str):
            _fail(type_name, f"{where}.options", "must be a list of strings")
        if not all(isinstance(option, str) and option for option in raw_options):
            _fail(type_name, f"{where}.options", "must be a list of non-empty strings")
        options = tuple(raw_options)
        if len(set(options)) != len(options):
            _fail(type_name, f"{where}.options", "repeats an option: list every option once")
    if field_type == "options" and not options:
        _fail(type_name, f"{where}.options", "must list at least one option for a field of type options")
    if field_type != "options" and options:
        _fail(type_name, f"{where}.options", "is only allowed on fields of type options: remove it")
    default = raw.get("default")
    if default is not None:
        default = _text(type_name, f"{where}.default", default)
    input_field = InputField(
        name=name,
        label=_text(type_name, f"{where}.label", raw.get("label"), default=name),
        type=field_type,
        optional=_flag(type_name, f"{where}.optional", raw.get("optional")),
        default=default,
        hidden=_flag(type_name, f"{where}.hidden", raw.get("hidden")),
        options=options,
        description=_text(type_name, f"{where}.description", raw.get("description"), default=""),
    )
    if default is not None and not input_field.accepts(default):
        if field_type == "options":
            _fail(type_name, f"{where}.default", "must be one of the field's options")
        _fail(type_name, f"{where}.default", f"is not a valid {field_type} value: correct or remove it")
    return input_field


def _parse_version(type_name: str, value: object) -> int | float:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(type_name, "spec.version", "must be a number such as 1 or 1.1")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _parse_oauth2(type_name: str, raw: object, inputs: tuple[InputField, ...]) -> OAuth2Spec | None:
    if raw is None:
        return None
    if not isinstance(raw, collections.abc.Mapping):
        _fail(type_name, "spec.oauth2", "must be a mapping with grant (and optionally clientAuthentication)")
    grant = raw.get("grant")
    if grant not in GRANTS:
        _fail(type_name, "spec.oauth2.grant", f"must be one of {', '.join(GRANTS)}")
    authentication = raw.get("clientAuthentication", "client_secret_post")
    if authentication not in CLIENT_AUTHENTICATIONS:
        _fail(type_name, "spec.oauth2.clientAuthentication", f"must be one of {', '.join(CLIENT_AUTHENTICATIONS)}")
    declared = {input_field.name for input_field in inputs}
    missing = [name for name in OAUTH2_INPUTS[grant] if name not in declared]
    if missing:
        _fail(
            type_name,
            "spec.inputs",
            f"must declare {', '.join(missing)} for the OAuth2 grant {grant} (Flowise's field names)",
        )
    return OAuth2Spec(grant=grant, client_authentication=authentication)


def _parse_spec(type_name: str, spec: collections.abc.Mapping[str, typing.Any], *, builtin: bool) -> CredentialTypeSpec:
    if not _TYPE_NAME.fullmatch(type_name):
        _fail(
            type_name,
            "the type name",
            "must be letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    raw_inputs = spec.get("inputs")
    if not isinstance(raw_inputs, collections.abc.Sequence) or isinstance(raw_inputs, str) or not raw_inputs:
        _fail(type_name, "spec.inputs", "must be a non-empty list of input fields")
    seen: set[str] = set()
    inputs = tuple(_parse_input(type_name, index, raw, seen) for index, raw in enumerate(raw_inputs))
    verify = None
    if spec.get("verify") is not None:
        try:
            verify = verifyspec.parse_verify(spec["verify"], [input_field.name for input_field in inputs])
        except verifyspec.VerifyDefinitionError as error:
            raise TypeDefinitionError(f"CredentialType {type_name!r}: {error}") from None
    return CredentialTypeSpec(
        name=type_name,
        label=_text(type_name, "spec.label", spec.get("label"), default=type_name),
        version=_parse_version(type_name, spec.get("version")),
        inputs=inputs,
        description=_text(type_name, "spec.description", spec.get("description"), default=""),
        builtin=builtin,
        verify=verify,
        oauth2=_parse_oauth2(type_name, spec.get("oauth2"), inputs),
    )


@functools.cache
def _builtin_types() -> types.MappingProxyType[str, CredentialTypeSpec]:
    resource = importlib.resources.files("credbridge.core") / "data" / _BUILTIN_DATA
    document = json.loads(resource.read_text(encoding="utf-8"))
    # Checks are ours, not Flowise's facts: they live in their own file, keyed by type name.
    checks = dict(_builtin_verify_declarations())
    loaded: dict[str, CredentialTypeSpec] = {}
    for raw in document["types"]:
        # Flowise's type-level `optional` (awsApi) says a node may run without the credential;
        # it says nothing about fields, which carry their own flags, so it is not kept.
        declaration = checks.pop(raw["name"], None)
        oauth2 = BUILTIN_OAUTH2.get(raw["name"])
        spec = _parse_spec(raw["name"], {**raw, "verify": declaration, "oauth2": oauth2}, builtin=True)
        if spec.name in loaded:
            _fail(spec.name, "the type name", f"appears twice in {_BUILTIN_DATA}")
        loaded[spec.name] = spec
    if checks:
        _fail(sorted(checks)[0], "the type name", f"in {_BUILTIN_VERIFY_DATA} names no built-in type")
    return types.MappingProxyType(loaded)


def _builtin_verify_declarations() -> dict[str, object]:
    resource = importlib.resources.files("credbridge.core") / "data" / _BUILTIN_VERIFY_DATA
    document = json.loads(resource.read_text(encoding="utf-8"))
    return {name: entry["verify"] for name, entry in document["types"].items()}


def load_builtin_types() -> dict[str, CredentialTypeSpec]:
    """Returns the built-in types (Flowise's) by name, read once from the package data."""
    return dict(_builtin_types())


def type_from_object(obj: collections.abc.Mapping[str, typing.Any]) -> CredentialTypeSpec:
    """Parses and checks a CredentialType object.

    The type name is `spec.name`, falling back to `metadata.name`; when both are present the
    object must be named `type_object_name(spec.name)`, so two objects cannot claim one type.
    Raises TypeDefinitionError naming the type, the offending part and the fix.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, collections.abc.Mapping):
        metadata = {}
    spec = obj.get("spec")
    object_name = metadata.get("name")
    label_for_errors = str(object_name) if object_name else "<unnamed>"
    if not isinstance(spec, collections.abc.Mapping):
        _fail(label_for_errors, "spec", "must be a mapping with name, label, version and inputs")
    type_name = spec.get("name")
    if type_name is None:
        type_name = object_name
    if not isinstance(type_name, str) or not type_name:
        _fail(label_for_errors, "spec.name", "must name the type, e.g. openAIApi")
    if object_name is not None and object_name != type_object_name(type_name):
        _fail(
            type_name,
            "metadata.name",
            f"must be {type_object_name(type_name)!r}, the lowercased spec.name: rename the object",
        )
    labels = metadata.get("labels") or {}
    builtin = isinstance(labels, collections.abc.Mapping) and labels.get(names.BUILTIN_LABEL) == "true"
    return _parse_spec(type_name, spec, builtin=builtin)


def _input_to_object(input_field: InputField) -> dict[str, typing.Any]:
    body: dict[str, typing.Any] = {
        "name": input_field.name,
        "label": input_field.label,
        "type": input_field.type,
    }
    if input_field.optional:
        body["optional"] = True
    if input_field.default is not None:
        body["default"] = input_field.default
    if input_field.hidden:
        body["hidden"] = True
    if input_field.options:
        body["options"] = list(input_field.options)
    if input_field.description:
        body["description"] = input_field.description
    return body


def type_to_object(spec: CredentialTypeSpec) -> dict[str, typing.Any]:
    """Returns the CredentialType object for `spec`; `type_from_object` reads it back unchanged.

    Built-ins carry the builtin and managed-by labels so the operator can find and own them;
    keys with default or empty values are left out, keeping server-side apply diffs small.
    """
    metadata: dict[str, typing.Any] = {"name": type_object_name(spec.name)}
    if spec.builtin:
        metadata["labels"] = {names.BUILTIN_LABEL: "true", names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE}
    body: dict[str, typing.Any] = {"name": spec.name, "label": spec.label, "version": spec.version}
    if spec.description:
        body["description"] = spec.description
    body["inputs"] = [_input_to_object(input_field) for input_field in spec.inputs]
    if spec.verify is not None:
        body["verify"] = spec.verify.to_object()
    if spec.oauth2 is not None:
        body["oauth2"] = {"grant": spec.oauth2.grant}
        if spec.oauth2.client_authentication != "client_secret_post":
            body["oauth2"]["clientAuthentication"] = spec.oauth2.client_authentication
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_TYPE_KIND,
        "metadata": metadata,
        "spec": body,
    }


_NO_TYPES: collections.abc.Mapping[str, CredentialTypeSpec] = types.MappingProxyType({})


class Registry:
    """The credential types known at one moment: built-ins plus cluster-defined types.

    Immutable: the operator swaps in a new registry when a CredentialType changes, so a
    reconcile in flight always sees one consistent set. A custom type overrides a built-in of
    the same name.
    """

    __slots__ = ("_builtins", "_custom")

    def __init__(
        self,
        builtins: collections.abc.Mapping[str, CredentialTypeSpec],
        custom: collections.abc.Mapping[str, CredentialTypeSpec] = _NO_TYPES,
    ) -> None:
        """Copies both mappings, so later changes to them do not reach the registry."""
        self._builtins: collections.abc.Mapping[str, CredentialTypeSpec] = types.MappingProxyType(dict(builtins))
        self._custom: collections.abc.Mapping[str, CredentialTypeSpec] = types.MappingProxyType(dict(custom))

    @classmethod
    def builtin(cls) -> Registry:
        """Returns a registry of the built-in types only."""
        return cls(_builtin_types())

    @property
    def builtins(self) -> collections.abc.Mapping[str, CredentialTypeSpec]:
        """The built-in types by name, read-only."""
        return self._builtins

    @property
    def custom(self) -> collections.abc.Mapping[str, CredentialTypeSpec]:
        """The cluster-defined types by name, read-only."""
        return self._custom

    def get(self, name: str) -> CredentialTypeSpec | None:
        """Returns the type called exactly `name` (custom first), or None when it is unknown."""
        found = self._custom.get(name)
        return found if found is not None else self._builtins.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._custom or name in self._builtins

    def __len__(self) -> int:
        return len(self._builtins.keys() | self._custom.keys())

    def names(self) -> list[str]:
        """Returns every known type name, sorted case-insensitively."""
        return sorted(self._builtins.keys() | self._custom.keys(), key=lambda name: (name.casefold(), name))

    def with_custom(self, spec: CredentialTypeSpec) -> Registry:
        """Returns a registry where `spec` is defined (replacing a custom type of the same name)."""
        return Registry(self._builtins, {**self._custom, spec.name: spec})

    def without_custom(self, name: str) -> Registry:
        """Returns a registry without the custom type `name`; a built-in of that name shows again."""
        return Registry(self._builtins, {key: spec for key, spec in self._custom.items() if key != name})

    def __repr__(self) -> str:
        return f"Registry(builtins={len(self._builtins)}, custom={sorted(self._custom)!r})"
