"""The binding template language (core.templating): syntax, transforms, errors, limits, and properties."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import redaction, templating

FIELDS = redaction.SecretFields(
    {"user": "app user", "password": "p@ss:w/rd%", "host": "db", "port": "5432", "database": "app", "empty": ""}
)


def render_one(text: str, fields: redaction.SecretFields = FIELDS) -> str:
    return templating.render(templating.parse_templates({"OUT": text}), fields, where="Credential ns/c")["OUT"]


def test_a_reference_is_replaced_by_the_field_value() -> None:
    assert render_one("${host}") == "db"
    assert render_one("Bearer ${ host }") == "Bearer db"


def test_a_postgres_url_is_built_with_url_encoding() -> None:
    text = "postgresql://${user|urlencode}:${password|urlencode}@${host}:${port}/${database}"
    assert render_one(text) == "postgresql://app%20user:p%40ss%3Aw%2Frd%25@db:5432/app"


def test_transforms_apply_left_to_right() -> None:
    assert render_one("${user|upper|base64}") == base64.b64encode(b"APP USER").decode()
    assert render_one("${user|base64url}") == base64.urlsafe_b64encode(b"app user").decode()
    assert render_one("${password|json}") == json.dumps("p@ss:w/rd%")
    assert render_one("${user|lower}") == "app user"


def test_default_fills_a_missing_or_empty_field() -> None:
    assert render_one("${organizationId|default:none}") == "none"
    assert render_one("${empty|default:x}") == "x"
    assert render_one("${organizationId|default:}") == ""
    assert render_one("${host|default:x}") == "db"


def test_a_missing_field_without_default_names_key_and_field_not_values() -> None:
    with pytest.raises(templating.RenderError) as raised:
        render_one("${password}${organizationId}")
    message = str(raised.value)
    assert "'OUT'" in message and "'organizationId'" in message and "default" in message
    assert "p@ss" not in message


def test_dollar_escapes() -> None:
    assert render_one("$${host}") == "${host}"
    assert render_one("$$") == "$"
    assert render_one("cost: $5 ${port}") == "cost: $5 5432"
    assert render_one("$") == "$"


def test_helm_braces_are_plain_text() -> None:
    assert render_one("{{ .Values.x }}-${host}") == "{{ .Values.x }}-db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${host", "character 1: '${' is not closed"),
        ("ab${}", "character 3: empty reference"),
        ("${9x}", "is not a field name"),
        ("${host|rot13}", "unknown transform 'rot13'"),
        ("${host|default}", "needs a value"),
        ("${host|upper:x}", "takes no value"),
    ],
)
def test_syntax_errors_name_key_position_and_fix(text: str, expected: str) -> None:
    with pytest.raises(templating.TemplateError) as raised:
        templating.parse_templates({"OUT": text})
    assert "spec.template.OUT" in str(raised.value)
    assert expected in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(templating.TemplateError) as raised:
        templating.parse_templates({"A": "${", "B": "${x|nope}", "bad key": "x"})
    assert len(raised.value.problems) == 3


@pytest.mark.parametrize("key", ["", "has space", "a/b", ".", "..", "..x", "k" * 254, "ключ"])
def test_invalid_output_keys_are_refused(key: str) -> None:
    with pytest.raises(templating.TemplateError) as raised:
        templating.parse_templates({key: "x"})
    assert "output key" in str(raised.value)


@pytest.mark.parametrize("key", ["OPENAI_API_KEY", "config.json", "a-b", ".env", "k" * 253])
def test_valid_output_keys_are_accepted(key: str) -> None:
    assert templating.secret_key_problem(key) is None


def test_unknown_fields_are_named_with_the_fields_the_type_has() -> None:
    parsed = templating.parse_templates({"KEY": "${openAIApiKy}"})
    problems = templating.unknown_field_problems(parsed, {"openAIApiKey", "organizationId"}, "openAIApi")
    assert problems == [
        "spec.template.KEY, character 1: field 'openAIApiKy' does not exist in type 'openAIApi'; "
        "its fields are: openAIApiKey, organizationId"
    ]


def test_without_a_template_each_field_is_its_own_key() -> None:
    rendered = templating.render(templating.one_key_per_field(FIELDS), FIELDS, where="x")
    assert dict(rendered) == dict(FIELDS)


def test_the_rendered_size_is_limited() -> None:
    big = redaction.SecretFields({"v": "x" * (600 * 1024)})
    with pytest.raises(templating.RenderError) as raised:
        templating.render(templating.parse_templates({"A": "${v}", "B": "${v}"}), big, where="x")
    assert "exceed" in str(raised.value)


def test_too_many_keys_are_refused() -> None:
    with pytest.raises(templating.TemplateError):
        templating.parse_templates({f"K{i}": "x" for i in range(templating.MAX_OUTPUT_KEYS + 1)})


def test_rendered_values_do_not_show_in_repr() -> None:
    rendered = templating.render(templating.parse_templates({"P": "${password}"}), FIELDS, where="x")
    assert "p@ss" not in repr(rendered) and "p@ss" not in str(rendered)


# ---- properties ---------------------------------------------------------------------------

field_values = st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), st.text(max_size=20))


@given(st.text(max_size=200), field_values)
def test_free_form_templates_raise_nothing_but_the_modules_errors(text: str, values: dict[str, str]) -> None:
    with contextlib.suppress(templating.TemplateError, templating.RenderError):
        parsed = templating.parse_templates({"K": text})
        templating.render(parsed, redaction.SecretFields(values), where="x")


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=50), max_size=5))
def test_free_form_keys_raise_nothing_but_template_errors(templates: dict[str, str]) -> None:
    with contextlib.suppress(templating.TemplateError):
        templating.parse_templates(templates)


@given(st.text(max_size=200), field_values)
def test_rendering_is_deterministic(text: str, values: dict[str, str]) -> None:
    fields = redaction.SecretFields(values)
    try:
        first = templating.render(templating.parse_templates({"K": text}), fields, where="x")
    except (templating.TemplateError, templating.RenderError) as error:
        with pytest.raises(type(error)):
            templating.render(templating.parse_templates({"K": text}), fields, where="x")
        return
    assert dict(templating.render(templating.parse_templates({"K": text}), fields, where="x")) == dict(first)


@given(st.text(max_size=200).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)))
def test_escaped_text_renders_to_itself(text: str) -> None:
    parsed = templating.parse_templates({"K": templating.escape(text)})
    assert templating.render(parsed, redaction.SecretFields(), where="x")["K"] == text
