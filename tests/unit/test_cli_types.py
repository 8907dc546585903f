"""`credbridge types`: the built-in types as a table, one type's fields, machine output, suggestions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from credbridge.cli import main
from credbridge.core import registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_table_lists_all_113_builtin_types_sorted_case_insensitively(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "types")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["NAME", "LABEL", "VERSION", "FIELDS"]
    names = [line.split()[0] for line in lines[1:]]
    assert len(names) == 113
    assert names == sorted(names, key=str.casefold)
    openai = next(line for line in lines if line.startswith("openAIApi "))
    assert "OpenAI API" in openai and openai.split()[-2:] == ["1", "1"]


def test_one_type_shows_its_fields_with_required_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "types", "redisCacheApi")
    assert code == 0
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith("redisCacheApi:")
    }
    assert rows["NAME"] == ["NAME", "TYPE", "REQUIRED", "DEFAULT", "LABEL"]
    spec = registry.Registry.builtin().get("redisCacheApi")
    assert spec is not None
    for input_field in spec.inputs:
        expected = "yes" if input_field.required else ("default" if input_field.default is not None else "no")
        assert rows[input_field.name][2] == expected


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_machine_output_round_trips_to_the_same_type(capsys: pytest.CaptureFixture[str], output: str) -> None:
    code, out, _ = run(capsys, "types", "openAIApi", "-o", output)
    assert code == 0
    obj = json.loads(out) if output == "json" else yaml.safe_load(out)
    assert obj["kind"] == "CredentialType"
    assert registry.type_from_object(obj) == registry.Registry.builtin().get("openAIApi")


def test_machine_output_of_all_types_is_a_list_of_credential_types(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "types", "-o", "json")
    assert code == 0
    items = json.loads(out)["items"]
    assert len(items) == 113
    assert {registry.type_from_object(item).name for item in items} == set(registry.Registry.builtin().names())


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("openaiapi", "'openAIApi'"), ("opnAIApi", "'openAIApi'"), ("PostgresAPI", "'PostgresApi'")],
)
def test_unknown_type_exits_1_with_a_suggestion(capsys: pytest.CaptureFixture[str], typed: str, suggested: str) -> None:
    code, out, err = run(capsys, "types", typed)
    assert code == 1
    assert out == ""
    assert f"unknown credential type {typed!r}" in err
    assert f"did you mean {suggested}" in err


def test_unknown_type_without_a_close_match_has_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "types", "zzzzzzzzzzzzzz")
    assert code == 1
    assert "did you mean" not in err


def test_console_script_runs_the_types_command() -> None:
    script = Path(sys.executable).parent / "credbridge"
    result = subprocess.run(
        [str(script), "types", "openAIApi", "-o", "json"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["spec"]["name"] == "openAIApi"


def test_an_oauth2_type_shows_its_grant_and_token_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "types", "slackOAuth2")
    assert code == 0
    assert "OAuth2: grant authorization_code, client authentication client_secret_post" in out
    assert "refresh_token" in out.splitlines()[-1]
    code, out, _ = run(capsys, "types", "-o", "yaml", "slackOAuth2")
    assert code == 0 and yaml.safe_load(out)["spec"]["oauth2"] == {"grant": "authorization_code"}
