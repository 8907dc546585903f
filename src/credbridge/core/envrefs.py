"""`<<NAME>>` references: secret values taken from the operator's environment, through a policy.

Git must never hold a secret, so a Credential's `spec.data` may say `<<CRED_OPENAI_KEY>>` and the
operator fills it in from its own environment (which the Helm chart loads from user Secrets).
Because that environment also holds the operator's own settings, every reference passes an
allow-list and optional per-namespace rules before it is looked up; the lookup itself is a
parameter, so this module never reads `os.environ`.

Syntax, decided here once for the webhook, the reconciler and the CLI:

- `<<NAME>>` with NAME matching `[A-Za-z_][A-Za-z0-9_]*` is a reference, anywhere in a value,
  any number of times: `postgres://app:<<CRED_PG_PASSWORD>>@db:5432/app`.
- `\\<<` writes a literal `<<`. More generally, a run of N backslashes directly before `<<`
  writes N // 2 backslashes; when N is odd the `<<` is literal, when N is even it may start a
  reference (so `CORP\\\\<<CRED_USER>>` gives `CORP\\` followed by the variable's value).
  Backslashes anywhere else are ordinary characters.
- A `<<` that does not start a valid `<<NAME>>` is literal text: `<<not valid>>`, `<<>>` and
  `a << b` stay as written. In `<<<NAME>>` the reference is the last `<<NAME>>`.
- Values from the environment are inserted as they are: they are never scanned for references.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import fnmatch
import re
import typing

from credbridge.core import names

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE_TAIL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)>>")
_BACKSLASHES_BEFORE_OPEN = re.compile(r"(\\*)<<")
_TRAILING_BACKSLASHES = re.compile(r"(\\*)(<?)\Z")

Lookup: typing.TypeAlias = collections.abc.Callable[[str], str | None]
"""Reads one variable of the operator's environment; None when it is not set."""


@dataclasses.dataclass(frozen=True)
class _Segment:
    text: str
    """Literal text, with escapes already decoded (empty for a reference)."""
    variable: str | None = None
    """Name of the referenced variable, or None for literal text."""


def _segments(value: str) -> list[_Segment]:
    segments: list[_Segment] = []
    literal: list[str] = []
    position = 0
    length = len(value)
    while position < length:
        character = value[position]
        if character == "\\":
            run_end = position
            while run_end < length and value[run_end] == "\\":
                run_end += 1
            run = run_end - position
            if not value.startswith("<<", run_end):
                literal.append(value[position:run_end])
                position = run_end
                continue
            literal.append("\\" * (run // 2))
            if run % 2:
                literal.append("<<")
                position = run_end + 2
                continue
            position = run_end
            character = "<"
        if character == "<" and value.startswith("<<", position):
            match = _REFERENCE_TAIL.match(value, position + 2)
            if match is not None:
                if literal:
                    segments.append(_Segment("".join(literal)))
                    literal = []
                segments.append(_Segment("", match.group(1)))
                position = match.end()
                continue
        literal.append(character)
        position += 1
    if literal:
        segments.append(_Segment("".join(literal)))
    return segments


def references(value: str) -> tuple[str, ...]:
    """Returns the variables `value` references, in order of first appearance, without repeats."""
    return tuple(dict.fromkeys(segment.variable for segment in _segments(value) if segment.variable is not None))


def has_references(value: str) -> bool:
    """Tells whether `value` references at least one variable (escaped `\\<<` does not count)."""
    return any(segment.variable is not None for segment in _segments(value))


def decode_literal(value: str) -> str:
    """Returns the text a reference-free value stands for, with `\\<<` escapes decoded.

    Raises ValueError when `value` contains a reference: such a value is only known after
    resolution.
    """
    segments = _segments(value)
    if any(segment.variable is not None for segment in segments):
        raise ValueError("the value contains <<NAME>> references: resolve it with resolve_value instead")
    return "".join(segment.text for segment in segments)


def escape_literal(text: str, *, before_reference: bool = False) -> str:
    """Returns a value that stands for exactly `text`, with no reference in it.

    Every `<<` in `text`, with the backslashes right before it, is escaped, so tools that
    write values for users (e.g. `credbridge dev`) can pass arbitrary text through. Pass
    `before_reference=True` when a `<<NAME>>` will directly follow: backslashes at the end of
    `text` (or before its final `<`) are then doubled so they do not escape the reference.
    Escaped pieces do not concatenate: escape the whole literal text between references.
    """

    def escape(match: re.Match[str]) -> str:
        return "\\" * (2 * len(match.group(1)) + 1) + "<<"

    escaped = _BACKSLASHES_BEFORE_OPEN.sub(escape, text)
    if before_reference:
        # The reference's `<<` would turn trailing backslashes (or backslashes and one `<`) into
        # an escape; doubling the backslashes keeps them literal.
        tail = _TRAILING_BACKSLASHES.search(escaped)
        assert tail is not None
        escaped = escaped[: tail.start()] + tail.group(1) * 2 + tail.group(2)
    return escaped


def is_variable_name(name: str) -> bool:
    """Tells whether `name` is a valid variable name for a reference."""
    return _NAME.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class EnvPolicy:
    """Which environment variables references may read, and from which namespaces.

    A name is resolvable when it is not reserved, matches an `allow` glob, and — if any
    namespace rule's variable glob matches it — the Credential's namespace matches one of that
    rule's namespace globs. Globs use `fnmatch` syntax, case-sensitively.
    """

    allow: tuple[str, ...] = names.DEFAULT_ENV_ALLOW
    """Globs of resolvable variable names (`--env-allow`, default `CRED_*`)."""
    namespace_rules: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(variable glob, namespace globs) pairs restricting matching variables to those namespaces."""
    reserved_prefixes: tuple[str, ...] = ("CREDBRIDGE_",)
    """Prefixes of the operator's own settings; never resolvable, whatever `allow` says."""
    reserved_names: frozenset[str] = frozenset()
    """Further names never resolvable (settings without the prefix)."""

    def check(self, name: str, namespace: str) -> str | None:
        """Returns None when `name` may be resolved for `namespace`, else the reason and the fix."""
        if name in self.reserved_names or any(name.startswith(prefix) for prefix in self.reserved_prefixes):
            return (
                f"variable {name!r} is one of the operator's own settings and is never resolvable: "
                "reference a variable of your own instead"
            )
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allow):
            allowed = ", ".join(self.allow) if self.allow else "(empty)"
            return f"variable {name!r} does not match the allow-list {allowed}: rename it or extend --env-allow"
        for variable_glob, namespace_globs in self.namespace_rules:
            if fnmatch.fnmatchcase(name, variable_glob) and not any(
                fnmatch.fnmatchcase(namespace, namespace_glob) for namespace_glob in namespace_globs
            ):
                return (
                    f"variable {name!r} is not allowed in namespace {namespace!r} by the env policy "
                    f"(rule {variable_glob}={','.join(namespace_globs)}): use another variable or "
                    "add the namespace to the rule"
                )
        return None

    def grants_explicitly(self, name: str, namespace: str) -> bool:
        """Tells whether a namespace rule names `namespace` for `name` (the allow-list alone does not).

        The allow-list says which variables exist for Credentials at all; a namespace rule is
        the admin saying which namespaces a variable belongs to. Plaintext outputs require the
        latter (see core.release).
        """
        if self.check(name, namespace) is not None:
            return False
        return any(
            fnmatch.fnmatchcase(name, variable_glob)
            and any(fnmatch.fnmatchcase(namespace, namespace_glob) for namespace_glob in namespace_globs)
            for variable_glob, namespace_globs in self.namespace_rules
        )


@dataclasses.dataclass(frozen=True)
class ReferenceProblem:
    """A reference that could not be resolved; names the field and variable, never a value."""

    field: str
    variable: str
    kind: typing.Literal["missing", "forbidden"]
    message: str


def resolve_value(
    value: str,
    lookup: Lookup,
    policy: EnvPolicy,
    namespace: str,
    field: str,
) -> tuple[str, list[ReferenceProblem]]:
    """Replaces every reference in `value` and decodes escapes.

    Forbidden variables are never looked up. Each (field, variable) problem is reported once.
    When there are problems the returned text leaves the failed references out and must not be
    used.
    """
    parts: list[str] = []
    problems: dict[str, ReferenceProblem] = {}
    for segment in _segments(value):
        variable = segment.variable
        if variable is None:
            parts.append(segment.text)
            continue
        if variable in problems:
            continue
        reason = policy.check(variable, namespace)
        if reason is not None:
            problems[variable] = ReferenceProblem(
                field=field, variable=variable, kind="forbidden", message=f"field {field!r}: {reason}"
            )
            continue
        resolved = lookup(variable)
        if resolved is None:
            problems[variable] = ReferenceProblem(
                field=field,
                variable=variable,
                kind="missing",
                message=(
                    f"field {field!r} references variable {variable!r}, which is not set in the "
                    "operator's environment: add it (e.g. to the Secret the Helm chart loads with "
                    "envFrom) and restart the operator, or change the reference"
                ),
            )
            continue
        parts.append(resolved)
    return "".join(parts), list(problems.values())


def resolve_fields(
    data: collections.abc.Mapping[str, str],
    lookup: Lookup,
    policy: EnvPolicy,
    namespace: str,
) -> tuple[dict[str, str], list[ReferenceProblem]]:
    """Resolves every value of `data`, collecting the problems of all fields."""
    resolved: dict[str, str] = {}
    problems: list[ReferenceProblem] = []
    for field, value in data.items():
        resolved[field], field_problems = resolve_value(value, lookup, policy, namespace, field)
        problems.extend(field_problems)
    return resolved, problems


def parse_policy(allow: collections.abc.Sequence[str], namespace_rules: collections.abc.Sequence[str]) -> EnvPolicy:
    """Builds an EnvPolicy from command-line values.

    `allow` entries are globs, each possibly a comma-separated list; blank entries are ignored.
    A namespace rule is `VARIABLE_GLOB=NAMESPACE_GLOB[,NAMESPACE_GLOB...]`. Raises ValueError
    naming the malformed rule.
    """
    patterns = tuple(pattern.strip() for entry in allow for pattern in entry.split(",") if pattern.strip())
    rules: list[tuple[str, tuple[str, ...]]] = []
    for rule in namespace_rules:
        variable_glob, separator, namespaces_text = rule.partition("=")
        variable_glob = variable_glob.strip()
        namespace_globs = tuple(namespace.strip() for namespace in namespaces_text.split(",") if namespace.strip())
        if not separator or not variable_glob or not namespace_globs or "=" in namespaces_text:
            raise ValueError(
                f"env namespace rule {rule!r} is malformed: write it as "
                "VARIABLE_GLOB=NAMESPACE[,NAMESPACE...], e.g. CRED_TEAM_A_*=team-a"
            )
        rules.append((variable_glob, namespace_globs))
    return EnvPolicy(allow=patterns, namespace_rules=tuple(rules))
