"""The template language of CredentialBindings: output keys → strings built from a Credential's fields.

A binding turns a Credential into the keys an application reads (`OPENAI_API_KEY`,
`DATABASE_URL`), so it needs composite strings and a few encodings, and nothing more. Bindings
live in Helm charts and GitOps repositories, so the syntax must not collide with Helm's `{{ }}`,
and a template must never run code: it is parsed once into a small typed tree and rendered by
substitution only.

Syntax:

- `${field}` is the value of a Credential field (names as in the CredentialType).
- `${field|transform|transform}` passes the value through transforms, left to right:
  `urlencode` (percent-encodes everything but `A-Z a-z 0-9 - . _ ~`, for URL parts such as a
  password), `base64`, `base64url`, `json` (a JSON string literal, quotes included), `lower`,
  `upper`, and `default:TEXT` (TEXT when the field has no value or an empty one; TEXT is taken
  verbatim up to the next `|` or `}`).
- `$$` writes one `$` (as in Kubernetes `$(VAR)` expansion and Docker Compose), so `$${` writes
  a literal `${`. A `$` followed by anything else is itself.
- Spaces around field and transform names are ignored: `${ user | urlencode }`.

Without a template a binding writes one key per field, named after the field.

Rendered values are secrets: they come back as `redaction.SecretFields`, and no error of this
module quotes a value — only output keys, field names, positions and the fix.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import json
import re
import urllib.parse

from credbridge.core import redaction

MAX_OUTPUT_KEYS = 256
"""Most output keys one binding may write."""
MAX_TEMPLATE_CHARS = 64 * 1024
"""Longest template of one output key, in characters."""
MAX_RENDERED_BYTES = 1024 * 1024
"""Largest rendered Secret: keys and values together, in UTF-8 bytes (the API server's Secret limit)."""
MAX_KEY_LENGTH = 253
"""Longest Secret data key the API server accepts."""

_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TRANSFORMS = ("urlencode", "base64", "base64url", "json", "lower", "upper", "default")
"""Every transform a reference may name."""
_ARGUMENT_TRANSFORMS = frozenset({"default"})


class TemplateError(ValueError):
    """A binding's templates cannot be used; the message lists every problem with its key, position and fix."""

    def __init__(self, problems: collections.abc.Sequence[str]) -> None:
        """Joins `problems` (sentences naming keys, positions and fixes, never values) into one message."""
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class RenderError(ValueError):
    """A parsed template cannot be rendered from the Credential it was given; never quotes a value."""


@dataclasses.dataclass(frozen=True)
class Literal:
    """Text copied as it is (escapes already decoded)."""

    text: str


@dataclasses.dataclass(frozen=True)
class Transform:
    """One step of a reference's pipeline: a name from TRANSFORMS and, for `default`, its argument."""

    name: str
    argument: str | None = None


@dataclasses.dataclass(frozen=True)
class Reference:
    """`${field|...}`: the value of `field` through `transforms`; `position` is its 1-based column."""

    field: str
    transforms: tuple[Transform, ...]
    position: int


Part = Literal | Reference


@dataclasses.dataclass(frozen=True)
class Template:
    """The parsed template of one output key."""

    key: str
    parts: tuple[Part, ...]

    @property
    def fields(self) -> frozenset[str]:
        """Every field the template reads."""
        return frozenset(part.field for part in self.parts if isinstance(part, Reference))


@dataclasses.dataclass(frozen=True)
class Templates:
    """A binding's parsed templates, by output key; `explicit` is False for the one-key-per-field default."""

    by_key: collections.abc.Mapping[str, Template]
    explicit: bool = True

    @property
    def fields(self) -> frozenset[str]:
        """Every field some template reads."""
        used: set[str] = set()
        for template in self.by_key.values():
            used |= template.fields
        return frozenset(used)


def secret_key_problem(key: str) -> str | None:
    """Why `key` cannot be a Secret data key (the API server's rule), or None when it can."""
    shown = key if len(key) <= 80 else key[:80] + "..."
    if not key:
        return "an output key is empty: name it, e.g. OPENAI_API_KEY"
    if len(key) > MAX_KEY_LENGTH:
        return f"output key {shown!r} is longer than {MAX_KEY_LENGTH} characters: shorten it"
    if not _SECRET_KEY.fullmatch(key):
        return (
            f"output key {shown!r} is not a valid Secret key: use only letters, digits, '-', '_' and '.' "
            "(e.g. OPENAI_API_KEY)"
        )
    if key in (".", "..") or key.startswith(".."):
        return f"output key {shown!r} is not a valid Secret key: it may not be '.' or start with '..'"
    return None


def parse(key: str, text: str, *, where: str = "spec.template") -> Template:
    """Parses the template of output key `key`; raises TemplateError naming the key, position and fix.

    `where` is the path of the templates in their object, for messages (`spec.template` of a
    binding, `spec.verify.http.headers` of a CredentialType).
    """
    problems: list[str] = []
    parts = _parse_parts(key, text, problems, where=where)
    if problems:
        raise TemplateError(problems)
    return Template(key, parts)


def parse_templates(templates: collections.abc.Mapping[str, object]) -> Templates:
    """Parses every template of a binding (output key → template text).

    Raises TemplateError listing every problem: invalid output keys, non-string templates, bad
    syntax, unknown transforms, too many keys or too long a template.
    """
    problems: list[str] = []
    if len(templates) > MAX_OUTPUT_KEYS:
        problems.append(
            f"spec.template has {len(templates)} output keys, more than {MAX_OUTPUT_KEYS}: split the binding"
        )
    parsed: dict[str, Template] = {}
    for raw_key, text in templates.items():
        key = str(raw_key)
        key_problem = secret_key_problem(key)
        if key_problem is not None:
            problems.append(f"spec.template: {key_problem}")
            continue
        if not isinstance(text, str):
            problems.append(f"spec.template.{key}: must be a string: quote it in YAML")
            continue
        if len(text) > MAX_TEMPLATE_CHARS:
            problems.append(f"spec.template.{key}: longer than {MAX_TEMPLATE_CHARS} characters: shorten it")
            continue
        parts = _parse_parts(key, text, problems)
        parsed[key] = Template(key, parts)
    if problems:
        raise TemplateError(problems)
    return Templates(parsed)


def one_key_per_field(fields: collections.abc.Iterable[str]) -> Templates:
    """The templates of a binding without spec.template: each field under its own name."""
    return Templates(
        {field: Template(field, (Reference(field, (), 1),)) for field in sorted(fields)},
        explicit=False,
    )


def unknown_field_problems(templates: Templates, known: collections.abc.Collection[str], type_name: str) -> list[str]:
    """One problem per template reading a field that the Credential's type does not have."""
    problems: list[str] = []
    listed = ", ".join(sorted(known)) or "none"
    for key, template in sorted(templates.by_key.items()):
        for part in template.parts:
            if isinstance(part, Reference) and part.field not in known:
                problems.append(
                    f"spec.template.{key}, character {part.position}: field {part.field!r} does not exist in type "
                    f"{type_name!r}; its fields are: {listed}"
                )
    return problems


def escape(text: str) -> str:
    """A template that renders to `text` exactly, whatever it holds (every `$` doubled)."""
    return text.replace("$", "$$")


def render(templates: Templates, fields: collections.abc.Mapping[str, str], *, where: str) -> redaction.SecretFields:
    """Renders every template from `fields` (a Credential's plaintext); the result is wrapped.

    `where` names the Credential for messages. Raises RenderError naming the output key and field
    when a field has no value and no `default`, a value is not text a transform accepts, or the
    result exceeds MAX_RENDERED_BYTES.
    """
    rendered: dict[str, str] = {}
    total = 0
    for key, template in sorted(templates.by_key.items()):
        if not templates.explicit and key not in fields:
            continue
        try:
            value = "".join(
                part.text if isinstance(part, Literal) else _value_of(key, part, fields, where)
                for part in template.parts
            )
            total += len(key) + len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise RenderError(f"output key {key!r} is not valid UTF-8 text: correct the fields it reads") from None
        if total > MAX_RENDERED_BYTES:
            raise RenderError(
                f"the rendered Secret would exceed {MAX_RENDERED_BYTES} bytes (at output key {key!r}): "
                "write fewer or shorter keys, or split the binding"
            )
        rendered[key] = value
    return redaction.SecretFields(rendered)


def _value_of(key: str, reference: Reference, fields: collections.abc.Mapping[str, str], where: str) -> str:
    value: str | None = fields.get(reference.field)
    for transform in reference.transforms:
        if transform.name == "default":
            if not value:
                value = transform.argument or ""
            continue
        if value is not None:
            value = _apply(transform.name, value)
    if value is None:
        raise RenderError(
            f"output key {key!r}, character {reference.position}: field {reference.field!r} has no value in "
            f"{where}: set it, or give a default with ${{{reference.field}|default:TEXT}}"
        )
    return value


def _apply(name: str, value: str) -> str:
    if name == "urlencode":
        return urllib.parse.quote(value, safe="")
    if name == "base64":
        return base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")
    if name == "base64url":
        return base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii")
    if name == "json":
        return json.dumps(value, ensure_ascii=False)
    if name == "lower":
        return value.lower()
    if name == "upper":
        return value.upper()
    raise AssertionError(f"unknown transform {name}")  # parse() admits only TRANSFORMS


def _parse_parts(key: str, text: str, problems: list[str], *, where: str = "spec.template") -> tuple[Part, ...]:
    """Splits `text` into literals and references; appends a problem per syntax error to `problems`."""
    parts: list[Part] = []
    literal: list[str] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char != "$" or index + 1 >= length:
            literal.append(char)
            index += 1
            continue
        following = text[index + 1]
        if following == "$":
            literal.append("$")
            index += 2
            continue
        if following != "{":
            literal.append("$")
            index += 1
            continue
        end = text.find("}", index + 2)
        if end < 0:
            problems.append(
                f"{where}.{key}, character {index + 1}: '${{' is not closed: add '}}', "
                "or write '$${' for a literal '${'"
            )
            break
        reference = _parse_reference(f"{where}.{key}", index + 1, text[index + 2 : end], problems)
        if reference is not None:
            if literal:
                parts.append(Literal("".join(literal)))
                literal = []
            parts.append(reference)
        index = end + 1
    if literal:
        parts.append(Literal("".join(literal)))
    return tuple(parts)


def _parse_reference(path: str, position: int, body: str, problems: list[str]) -> Reference | None:
    where = f"{path}, character {position}"
    segments = body.split("|")
    field = segments[0].strip()
    if not field:
        problems.append(f"{where}: empty reference: name a field, e.g. ${{openAIApiKey}}")
        return None
    if not _FIELD_NAME.fullmatch(field):
        problems.append(
            f"{where}: {_shown(field)} is not a field name (letters, digits and '_', not starting with a digit); "
            "write '$${' for a literal '${'"
        )
        return None
    transforms: list[Transform] = []
    for segment in segments[1:]:
        name, colon, argument = segment.partition(":")
        name = name.strip()
        if name not in TRANSFORMS:
            problems.append(
                f"{where}: unknown transform {_shown(name)} for field {field!r}; use one of: {', '.join(TRANSFORMS)}"
            )
            return None
        if name in _ARGUMENT_TRANSFORMS and not colon:
            problems.append(f"{where}: transform {name!r} needs a value, e.g. ${{{field}|{name}:TEXT}}")
            return None
        if name not in _ARGUMENT_TRANSFORMS and colon:
            problems.append(f"{where}: transform {name!r} takes no value: remove ':' after it")
            return None
        transforms.append(Transform(name, argument if colon else None))
    return Reference(field, tuple(transforms), position)


def _shown(text: str) -> str:
    """A piece of template text for a message (templates hold no secrets), shortened."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
