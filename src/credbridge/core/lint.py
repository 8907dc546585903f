"""Troubleshooting lint: the mistakes behind most "credential not working" reports, caught at apply time.

Flowise's Credentials guide blames two of its "Credential Not Working" cases on the value
itself: typos and extra spaces (a key pasted with a trailing newline is a different key), and
the wrong credential type (an Anthropic key saved as an OpenAI credential). Both can be seen
without asking the vendor. These are warnings, never refusals: a value may legitimately look
odd, and only the service can say whether it works (that is verification's job).

Messages name the field and the shape (`sk-ant-`), never the value. Only literal values can be
linted at admission and in `credbridge validate`; values from `<<ENV>>` references, Secrets and
sealed values are linted by the reconciler once resolved.
"""

from __future__ import annotations

import collections.abc
import dataclasses

from credbridge.core import envrefs, registry


@dataclasses.dataclass(frozen=True)
class KeyShape:
    """A vendor key format recognisable by its prefix."""

    prefix: str
    vendor: str
    types: tuple[str, ...]
    """Built-in types such a key belongs in."""


KEY_SHAPES: tuple[KeyShape, ...] = (
    # Longer prefixes first: `sk-ant-` and `sk-or-` must win over OpenAI's `sk-proj-` family.
    KeyShape("sk-ant-", "an Anthropic API key", ("anthropicApi",)),
    KeyShape("sk-or-", "an OpenRouter API key", ("openRouterApi",)),
    KeyShape("sk-proj-", "an OpenAI project key", ("openAIApi", "litellmApi", "localAIApi")),
    KeyShape("sk-svcacct-", "an OpenAI service-account key", ("openAIApi", "litellmApi", "localAIApi")),
    KeyShape("sk-lf-", "a Langfuse secret key", ("langfuseApi",)),
    KeyShape("pk-lf-", "a Langfuse public key", ("langfuseApi",)),
    KeyShape("github_pat_", "a GitHub fine-grained token", ("githubApi",)),
    KeyShape("ghp_", "a GitHub personal access token", ("githubApi",)),
    KeyShape("gho_", "a GitHub OAuth token", ("githubApi",)),
    KeyShape("ghs_", "a GitHub App token", ("githubApi",)),
    KeyShape("hf_", "a Hugging Face token", ("huggingFaceApi",)),
    KeyShape("gsk_", "a Groq API key", ("groqApi",)),
    KeyShape("xai-", "an xAI API key", ("xaiApi",)),
    KeyShape("pcsk_", "a Pinecone API key", ("pineconeApi",)),
    KeyShape("ntn_", "a Notion integration token", ("notionApi",)),
    KeyShape("pplx-", "a Perplexity API key", ("perplexityApi",)),
    KeyShape("r8_", "a Replicate API token", ("replicateApi",)),
    KeyShape("tvly-", "a Tavily API key", ("tavilyApi",)),
    KeyShape("nvapi-", "an NVIDIA NIM API key", ("nvidiaNIMApi",)),
    KeyShape("lsv2_", "a LangSmith API key", ("langsmithApi",)),
    KeyShape("xoxb-", "a Slack bot token", ("slackApi",)),
    KeyShape("sk_live_", "a Stripe secret key", ("stripeApi",)),
    KeyShape("sk_test_", "a Stripe test secret key", ("stripeApi",)),
    KeyShape("rk_live_", "a Stripe restricted key", ("stripeApi",)),
    KeyShape("AIza", "a Google API key", ("googleGenerativeAI", "googleMakerSuite", "googleCustomSearchApi")),
)
"""Prefixes that identify a vendor's keys well enough to warn about a wrong credential type."""

_SHAPE_FIELD_TYPES = ("password", "string")
_MIN_KEY_LENGTH = 16  # shorter values with a matching prefix are more likely words than keys


@dataclasses.dataclass(frozen=True)
class LintWarning:
    """One finding about one field; `message` names the field and the fix, never the value."""

    field: str
    message: str


def _whitespace(field: str, value: str) -> LintWarning | None:
    if "\n" in value or "\r" in value:
        where = "ends with" if value.rstrip("\r\n") == value.rstrip() and value != value.rstrip("\r\n") else "holds"
        return LintWarning(
            field,
            f"field {field!r} {where} a line break (often a file or a paste with a trailing newline): services "
            "compare keys byte for byte, so remove it",
        )
    if value != value.strip():
        side = "leading" if value != value.lstrip() else "trailing"
        if value != value.lstrip() and value != value.rstrip():
            side = "leading and trailing"
        return LintWarning(
            field, f"field {field!r} has {side} whitespace, which services keep as part of the key: remove it"
        )
    return None


def _shape(field: str, value: str, type_name: str) -> LintWarning | None:
    candidate = value.strip()
    if len(candidate) < _MIN_KEY_LENGTH:
        return None
    for shape in KEY_SHAPES:
        if candidate.startswith(shape.prefix):
            if type_name in shape.types:
                return None
            return LintWarning(
                field,
                f"field {field!r} looks like {shape.vendor} ({shape.prefix}...), but the Credential's type is "
                f"{type_name}: check spec.type (such keys belong in {' or '.join(shape.types)})",
            )
    return None


def lint_values(cred_type: registry.CredentialTypeSpec, values: collections.abc.Mapping[str, str]) -> list[LintWarning]:
    """Warnings about `values` (field -> resolved or literal value) of a Credential of `cred_type`.

    Fields of type `json` are not checked for whitespace (documents span lines), and only
    `password` and `string` fields are compared with vendor key shapes.
    """
    warnings: list[LintWarning] = []
    for field, value in sorted(values.items()):
        input_field = cred_type.field(field)
        if input_field is None or not value:
            continue
        if input_field.type != "json":
            found = _whitespace(field, value)
            if found is not None:
                warnings.append(found)
        if input_field.type in _SHAPE_FIELD_TYPES:
            found = _shape(field, value, cred_type.name)
            if found is not None:
                warnings.append(found)
    return warnings


def lint_literals(cred_type: registry.CredentialTypeSpec, data: collections.abc.Mapping[str, str]) -> list[LintWarning]:
    """Warnings about the literal values in `spec.data` (admission, `credbridge validate`).

    A value with a `<<NAME>>` reference is judged only for whitespace around the references (it
    is still whitespace once resolved), not against key shapes: the key itself is not there yet.
    """
    plain = {field: value for field, value in data.items() if not envrefs.references(value)}
    warnings = lint_values(cred_type, plain)
    for field, value in sorted(data.items()):
        input_field = cred_type.field(field)
        if field in plain or input_field is None or input_field.type == "json":
            continue
        found = _whitespace(field, value)
        if found is not None:
            warnings.append(found)
    return sorted(warnings, key=lambda warning: warning.field)
