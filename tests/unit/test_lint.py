"""Troubleshooting lint: whitespace and keys of another vendor, as warnings that never name the value."""

from __future__ import annotations

import pytest

from credbridge.core import lint, registry

BUILTINS = registry.Registry.builtin()
KEY_TAIL = "0123456789abcdefghij"


def spec(name: str) -> registry.CredentialTypeSpec:
    found = BUILTINS.get(name)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"sk-proj-{KEY_TAIL}\n", "line break"),
        (f" sk-proj-{KEY_TAIL}", "leading whitespace"),
        (f"sk-proj-{KEY_TAIL}  ", "trailing whitespace"),
        (f"sk-proj-{KEY_TAIL}\r\n", "line break"),
    ],
)
def test_whitespace_around_a_key_is_a_warning(value: str, expected: str) -> None:
    warnings = lint.lint_values(spec("openAIApi"), {"openAIApiKey": value})
    assert [warning.field for warning in warnings] == ["openAIApiKey"]
    assert expected in warnings[0].message
    assert KEY_TAIL not in warnings[0].message


def test_an_anthropic_key_in_an_openai_credential_names_the_right_type() -> None:
    warnings = lint.lint_values(spec("openAIApi"), {"openAIApiKey": f"sk-ant-api03-{KEY_TAIL}"})
    assert len(warnings) == 1
    assert "Anthropic" in warnings[0].message and "anthropicApi" in warnings[0].message
    assert KEY_TAIL not in warnings[0].message


@pytest.mark.parametrize(
    ("type_name", "field", "value"),
    [
        ("anthropicApi", "anthropicApiKey", f"sk-ant-api03-{KEY_TAIL}"),
        ("openAIApi", "openAIApiKey", f"sk-proj-{KEY_TAIL}"),
        ("githubApi", "accessToken", f"github_pat_{KEY_TAIL}"),
        ("huggingFaceApi", "huggingFaceApiKey", f"hf_{KEY_TAIL}"),
        ("openAIApi", "openAIApiKey", "short"),
        ("openAIApi", "openAIApiKey", f"sk-{KEY_TAIL}{KEY_TAIL}"),
    ],
)
def test_keys_in_their_own_type_and_unknown_shapes_pass(type_name: str, field: str, value: str) -> None:
    assert lint.lint_values(spec(type_name), {field: value}) == []


def test_json_fields_may_span_lines() -> None:
    spec_with_json = registry.type_from_object(
        {"metadata": {"name": "j"}, "spec": {"name": "j", "inputs": [{"name": "doc", "type": "json"}]}}
    )
    assert lint.lint_values(spec_with_json, {"doc": '{\n  "a": 1\n}\n'}) == []


def test_literals_with_env_references_are_checked_for_whitespace_only() -> None:
    warnings = lint.lint_literals(spec("openAIApi"), {"openAIApiKey": "<<CRED_OPENAI_KEY>> "})
    assert [warning.field for warning in warnings] == ["openAIApiKey"]
    assert lint.lint_literals(spec("openAIApi"), {"openAIApiKey": "<<CRED_OPENAI_KEY>>"}) == []
