"""Validation of a Credential against its type: the one implementation every caller uses.

The admission webhook (fast feedback at `kubectl apply`), the reconciler (authoritative) and
`credbridge validate` (offline, in GitOps CI) must agree, or a Credential accepted in CI fails in
the cluster. So the rules live here once, in two steps:

- `check_spec` looks at a spec without resolving anything: type, field names, required fields,
  and the format and size of literal values. It works offline.
- `finalize` looks at the resolved values (after `<<NAME>>` and Secret references, and opened
  sealed values), applies defaults and checks every format and size. Its result is what gets
  encrypted into the managed Secret.
- `check_field_value` checks one value of one field: what `credbridge seal` runs before sealing,
  so a typo is found by whoever seals, not by the application that fails later.

Problems name the field, the rule and the fix, never a value.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

from credbridge.core import envelope, envrefs, redaction, registry, sealing

MAX_VALUE_BYTES = 64 * 1024
"""Largest value of one field, in UTF-8 bytes: as written in spec.data, and once resolved.

The CRD schema repeats it as `maxLength` of spec.data values (a test keeps them equal). `maxLength`
counts characters, never fewer than bytes, so the API server never refuses a value this limit allows.
"""
MAX_PLAINTEXT_BYTES = 512 * 1024
"""Largest encoded plaintext of one credential (all fields as sealed: compact JSON), in bytes.

Sealed, it is a Secret of about 700 KB, under the API server's 1 MiB limit for Secret data.
"""
MAX_FIELDS = 64
"""Most fields one credential (and one CredentialType) has; the CRDs' maxProperties and maxItems."""

Rule = typing.Literal[
    "unknown-type",
    "required",
    "unknown-field",
    "number",
    "boolean",
    "url",
    "options",
    "json",
    "max-value-size",
    "max-plaintext-size",
    "both-data-and-valueFrom",
    "set-twice",
    "empty-name",
    "utf-8",
]
"""Names of the rules a Problem can break; stable, since conditions and tests match on them."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One broken rule: the field (None for the whole credential), the rule and a message."""

    field: str | None
    """Name of the offending field, or None when the problem is not about one field."""
    rule: Rule
    """Which rule is broken."""
    message: str
    """A sentence naming the field and the fix, never the value; lowercase, no final period."""


_FORMAT_HINTS: dict[str, str] = {
    "number": "must be a number such as 6379 or 0.5",
    "boolean": "must be true or false",
    "url": "must be an absolute URL with a scheme and a host, such as https://host or redis://host:6379",
    "json": "must be valid JSON",
}


def _format_problem(
    cred_type: registry.CredentialTypeSpec, input_field: registry.InputField, value: str, where: str
) -> Problem | None:
    if input_field.accepts(value):
        return None
    rule = typing.cast(Rule, input_field.type)
    if input_field.type == "options":
        hint = f"must be one of {', '.join(input_field.options)}"
    else:
        hint = _FORMAT_HINTS[input_field.type]
    return Problem(
        input_field.name,
        rule,
        f"field {input_field.name!r} of type {cred_type.name!r} {hint}: correct {where}",
    )


def _size_problems(name: str, value: str, where: str) -> list[Problem]:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return [
            Problem(
                name,
                "utf-8",
                f"field {name!r} is not valid UTF-8 text (it holds an unpaired surrogate): correct {where}",
            )
        ]
    if size > MAX_VALUE_BYTES:
        return [
            Problem(
                name,
                "max-value-size",
                f"field {name!r} is larger than the limit of {MAX_VALUE_BYTES} bytes per value: shorten {where}",
            )
        ]
    return []


def _plaintext_problem(
    cred_type: registry.CredentialTypeSpec, fields: collections.abc.Mapping[str, str]
) -> list[Problem]:
    """The one check of the whole credential's size, on the fields as they are sealed.

    `check_spec` passes the fields it knows without resolving anything (a subset of what gets
    sealed, so never more bytes), `finalize` all of them: for a Credential of literals both see
    the same bytes and agree exactly at the limit.
    """
    if len(envelope.encode_plaintext(fields)) <= MAX_PLAINTEXT_BYTES:
        return []
    return [
        Problem(
            None,
            "max-plaintext-size",
            f"the fields of this {cred_type.name!r} credential together exceed the limit of "
            f"{MAX_PLAINTEXT_BYTES} bytes (encoded as JSON): shorten the largest values or split the credential",
        )
    ]


def _unknown_field(cred_type: registry.CredentialTypeSpec, name: str, where: str) -> Problem:
    return Problem(
        name,
        "unknown-field",
        f"field {name!r} is not defined by type {cred_type.name!r}: remove {where} "
        f"(the type's fields are {', '.join(cred_type.field_names())})",
    )


def check_spec(
    cred_type: registry.CredentialTypeSpec | None,
    type_name: str,
    data: collections.abc.Mapping[str, str],
    value_from: collections.abc.Collection[str],
    sealed: collections.abc.Mapping[str, str] | None = None,
) -> list[Problem]:
    """Checks a Credential spec without resolving references; usable offline.

    `data` is `spec.data` (literals and `<<NAME>>` references), `value_from` the field names in
    `spec.valueFrom`, `sealed` is `spec.sealedData` (field → sealed value, whose size shows
    without opening it; its form and scope are core.sealing's to judge). Every value's size is
    checked as written; literal values are checked for
    format now, values with a reference by `finalize` once resolved. The whole credential's
    size is checked on what is known (literals and defaults): for a Credential of literals that is
    exactly what `finalize` checks. A required field given as an empty literal counts as missing.
    """
    if not type_name:
        return [Problem(None, "empty-name", "spec.type is empty: set it to a CredentialType name")]
    if cred_type is None:
        return [
            Problem(
                None,
                "unknown-type",
                f"type {type_name!r} is not a known CredentialType: use a type listed by "
                "`kubectl get credentialtypes` or `credbridge types`, or create it",
            )
        ]
    sealed = sealed or {}
    problems: list[Problem] = []
    for source, field_names in (
        ("spec.data", list(data)),
        ("spec.valueFrom", list(value_from)),
        ("spec.sealedData", list(sealed)),
    ):
        for name in field_names:
            if not name:
                problems.append(
                    Problem(None, "empty-name", f"{source} has an entry with an empty field name: remove it")
                )
            elif cred_type.field(name) is None:
                problems.append(_unknown_field(cred_type, name, f"it from {source}"))
    both = [name for name in data if name and name in value_from]
    problems.extend(
        Problem(
            name,
            "both-data-and-valueFrom",
            f"field {name!r} is set in both spec.data and spec.valueFrom: keep only one",
        )
        for name in both
    )
    problems.extend(
        Problem(
            name,
            "set-twice",
            f"field {name!r} is set in both spec.sealedData and {other}: keep only one",
        )
        for name in sealed
        for other, names in (("spec.data", data), ("spec.valueFrom", value_from))
        if name and name in names
    )
    for name, token in sealed.items():
        header = sealing.read_header(token) if isinstance(token, str) else None
        if header is not None and header.value_bytes > MAX_VALUE_BYTES:
            problems.append(
                Problem(
                    name,
                    "max-value-size",
                    f"field {name!r} is larger than the limit of {MAX_VALUE_BYTES} bytes per value: seal a shorter "
                    f"value into spec.sealedData.{name}",
                )
            )
    # The fields whose plaintext is known without resolving anything: literals and defaults.
    known: dict[str, str] = {}
    for input_field in cred_type.all_inputs:
        name = input_field.name
        value = data.get(name)
        if name not in value_from and name not in sealed and input_field.required and not value:
            problems.append(_required(cred_type, input_field))
        if value is None:
            if name not in value_from and name not in sealed and input_field.default is not None:
                known[name] = input_field.default
            continue
        where = f"spec.data.{name}"
        # As written: a reference is short, but many of them (or escapes) are not.
        size_problems = _size_problems(name, value, where)
        if envrefs.has_references(value) or size_problems:
            problems.extend(size_problems)
            continue
        literal = envrefs.decode_literal(value)
        known[name] = literal
        # An empty literal means "not set": the required check above covers it.
        if literal:
            problem = _format_problem(cred_type, input_field, literal, where)
            if problem is not None:
                problems.append(problem)
    if not problems:
        problems.extend(_plaintext_problem(cred_type, known))
    return problems


def _required(cred_type: registry.CredentialTypeSpec, input_field: registry.InputField) -> Problem:
    name = input_field.name
    return Problem(
        name,
        "required",
        f"field {name!r} is required by type {cred_type.name!r}: set spec.data.{name}, "
        f"spec.valueFrom.{name} or spec.sealedData.{name} to a non-empty value",
    )


def finalize(
    cred_type: registry.CredentialTypeSpec,
    resolved: collections.abc.Mapping[str, str],
    sealed_fields: collections.abc.Collection[str] = (),
) -> tuple[redaction.SecretFields, list[Problem]]:
    """Applies defaults to the resolved values and checks all of them; returns what to seal.

    `resolved` holds every supplied field with references, Secret values and opened sealed values
    (`sealed_fields` names those, for the messages) already filled in.
    Fields the type does not define are reported, absent fields with a default get it, and each
    value is checked for format and size, then the whole plaintext for size. The fields are
    meaningless when there are problems.
    """
    problems: list[Problem] = []
    fields: dict[str, str] = {}
    for name, value in resolved.items():
        if cred_type.field(name) is None:
            problems.append(_unknown_field(cred_type, name, "it from spec.data or spec.valueFrom"))
        else:
            fields[name] = value
    for input_field in cred_type.all_inputs:
        name = input_field.name
        if name not in fields and input_field.default is not None:
            fields[name] = input_field.default
        if not fields.get(name):
            # Absent or empty: only a problem for a required field; empty optional values are kept.
            if input_field.required:
                problems.append(_required(cred_type, input_field))
            continue
        given = fields[name]
        where = (
            f"the value sealed in spec.sealedData.{name} (seal it again)"
            if name in sealed_fields
            else f"spec.data.{name} or the variable or Secret key it comes from"
        )
        size_problems = _size_problems(name, given, where)
        problems.extend(size_problems)
        if not size_problems:
            problem = _format_problem(cred_type, input_field, given, where)
            if problem is not None:
                problems.append(problem)
    ordered = {name: fields[name] for name in cred_type.field_names() if name in fields}
    secret_fields = redaction.SecretFields(ordered)
    if not problems:
        problems.extend(_plaintext_problem(cred_type, ordered))
    return secret_fields, problems


def check_field_value(cred_type: registry.CredentialTypeSpec, name: str, value: str, where: str) -> list[Problem]:
    """Checks one value for one field of `cred_type`, as `finalize` would: the field exists, the value
    fits the size limit and the field's format. `where` names the value in the messages
    ("the value to seal")."""
    input_field = cred_type.field(name)
    if input_field is None:
        return [_unknown_field(cred_type, name, f"{where} or seal it for another field")]
    size_problems = _size_problems(name, value, where)
    if size_problems:
        return size_problems
    if not value:
        return [_required(cred_type, input_field)] if input_field.required else []
    problem = _format_problem(cred_type, input_field, value, where)
    return [] if problem is None else [problem]


def literal_secret_fields(
    cred_type: registry.CredentialTypeSpec,
    data: collections.abc.Mapping[str, str],
) -> list[str]:
    """Returns the `password` fields whose value in `data` is a literal rather than a reference.

    Literal secrets end up in Git and in `kubectl apply`'s last-applied annotation; the webhook
    warns about or refuses them according to `--literal-secrets`.
    """
    return [
        input_field.name
        for input_field in cred_type.all_inputs
        if input_field.type == "password"
        and data.get(input_field.name)  # an empty value means "not set", as in check_spec
        and not envrefs.has_references(data[input_field.name])
    ]


def summarize(problems: collections.abc.Iterable[Problem]) -> str:
    """Joins the problem messages into one line, for a condition message or an Event."""
    return "; ".join(problem.message for problem in problems)
