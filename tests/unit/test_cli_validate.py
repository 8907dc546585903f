"""`credbridge validate`: offline checks of manifests for GitOps CI, reported like a compiler."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from credbridge.cli import main

CANARY = "canary-7c1d9e-do-not-print"


def credential(name: str, type_name: str, data: dict[str, str] | None = None, *, namespace: str = "team-a") -> str:
    lines = [
        "apiVersion: credbridge.io/v1alpha1",
        "kind: Credential",
        f"metadata: {{name: {name}, namespace: {namespace}}}",
        "spec:",
        f"  type: {type_name}",
    ]
    if data is not None:
        lines.append("  data:")
        lines.extend(f"    {field}: {value}" for field, value in data.items())
    return "\n".join(lines) + "\n"


REDIS_OK = {"redisCacheUser": "u", "redisCachePwd": '"<<CRED_P>>"', "redisCacheSslEnabled": '"true"'}
GOOD_OPENAI = credential("openai", "openAIApi", {"openAIApiKey": '"<<CRED_OPENAI_API_KEY>>"'})
GOOD_REDIS = credential(
    "redis",
    "redisCacheApi",
    {"redisCacheUser": "app", "redisCachePwd": '"<<CRED_REDIS_PASSWORD>>"', "redisCacheSslEnabled": '"true"'},
)


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main.main(["validate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def problem_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "checked," not in line]


def test_clean_file_exits_0_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "creds.yaml", GOOD_OPENAI + "---\n" + GOOD_REDIS)
    code, out, err = run(capsys, "-f", str(path))
    assert (code, out, err) == (0, "2 credentials checked, 0 problems\n", "")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (credential("x", "openAI", {"openAIApiKey": '"<<CRED_K>>"'}), "type 'openAI' is not a known CredentialType"),
        (
            credential("x", "redisCacheApi", {"redisCachePwd": '"<<CRED_P>>"', "redisCacheSslEnabled": '"true"'}),
            "field 'redisCacheUser' is required by type 'redisCacheApi'",
        ),
        (
            credential("x", "openAIApi", {"openAIApiKey": '"<<CRED_K>>"', "organization": "acme"}),
            "field 'organization' is not defined by type 'openAIApi'",
        ),
        (
            credential("x", "redisCacheUrlApi", {"redisUrl": f'"not a url {CANARY}"'}),
            "field 'redisUrl' of type 'redisCacheUrlApi' must be an absolute URL",
        ),
        (
            credential("x", "redisCacheApi", {**REDIS_OK, "redisCachePort": f'"six-{CANARY}"'}),
            "field 'redisCachePort' of type 'redisCacheApi' must be a number",
        ),
        (
            credential("x", "redisCacheApi", {**REDIS_OK, "redisCacheSslEnabled": f'"{CANARY}"'}),
            "field 'redisCacheSslEnabled' of type 'redisCacheApi' must be true or false",
        ),
        (
            credential("x", "openAIApi", {"openAIApiKey": '"<<OPENAI_API_KEY>>"'}),
            "field 'openAIApiKey': variable 'OPENAI_API_KEY' does not match the allow-list CRED_*",
        ),
        (
            credential("x", "openAIApi", {"openAIApiKey": '"<<CREDBRIDGE_KEYRING>>"'}),
            "variable 'CREDBRIDGE_KEYRING' is one of the operator's own settings",
        ),
        (
            credential("x", "redisCacheApi", {**REDIS_OK, "redisCachePort": "6379"}),
            "spec.data.redisCachePort must be a string: quote the value in YAML",
        ),
    ],
    ids=[
        "unknown-type",
        "missing-required",
        "unknown-field",
        "bad-url",
        "bad-number",
        "bad-boolean",
        "forbidden-env",
        "reserved-env",
        "unquoted-number",
    ],
)
def test_each_problem_is_one_line_naming_file_document_and_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: str, expected: str
) -> None:
    path = write(tmp_path, "bad.yaml", GOOD_OPENAI + "---\n" + document)
    code, out, err = run(capsys, "-f", str(path))
    assert code == 1
    [line] = problem_lines(out)
    assert line.startswith(f"{path}:1: Credential team-a/x: ")
    assert expected in line
    assert out.splitlines()[-1] == "2 credentials checked, 1 problem"
    assert CANARY not in out + err


def test_env_allow_option_widens_the_allow_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.yaml", credential("x", "openAIApi", {"openAIApiKey": '"<<OPENAI_API_KEY>>"'}))
    assert run(capsys, "-f", str(path), "--env-allow", "OPENAI_*")[0] == 0
    assert run(capsys, "-f", str(path), "--env-allow", "OTHER_*", "--env-allow", "OPENAI_*")[0] == 0
    assert run(capsys, "-f", str(path))[0] == 1


def test_env_policy_restricts_variables_to_namespaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.yaml", credential("x", "openAIApi", {"openAIApiKey": '"<<CRED_TEAM_B_KEY>>"'}))
    code, out, _ = run(capsys, "-f", str(path), "--env-policy", "CRED_TEAM_B_*=team-b")
    assert code == 1
    assert "is not allowed in namespace 'team-a'" in out


@pytest.mark.parametrize(("mode", "exit_code", "lines"), [("warn", 0, 1), ("deny", 1, 1), ("allow", 0, 0)])
def test_literal_password_is_a_warning_or_a_problem_by_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, exit_code: int, lines: int
) -> None:
    path = write(tmp_path, "c.yaml", credential("x", "openAIApi", {"openAIApiKey": f'"{CANARY}"'}))
    code, out, err = run(capsys, "-f", str(path), "--literal-secrets", mode)
    assert code == exit_code
    found = problem_lines(out)
    assert len(found) == lines
    if lines:
        prefix = "warning: " if mode == "warn" else ""
        assert found[0].startswith(f"{path}:0: Credential team-a/x: {prefix}field 'openAIApiKey' is a password field")
    assert CANARY not in out + err


def test_literal_password_warns_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.yaml", credential("x", "openAIApi", {"openAIApiKey": f'"{CANARY}"'}))
    code, out, _ = run(capsys, "-f", str(path))
    assert code == 0
    assert out.splitlines()[-1] == "1 credential checked, 0 problems, 1 warning"


def test_directories_are_searched_recursively_for_yaml_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a/good.yaml", GOOD_OPENAI)
    bad = write(tmp_path, "a/b/c/bad.yml", credential("deep", "noSuchType"))
    write(tmp_path, "a/notes.txt", "not: [yaml")
    write(tmp_path, "a/.hidden/ignored.yaml", credential("hidden", "noSuchType"))
    code, out, _ = run(capsys, "-f", str(tmp_path / "a"))
    assert code == 1
    [line] = problem_lines(out)
    assert line.startswith(f"{bad}:0: Credential team-a/deep: type 'noSuchType'")
    assert out.splitlines()[-1] == "2 credentials checked, 1 problem"


def test_several_inputs_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "good.yaml", GOOD_OPENAI)
    monkeypatch.setattr(sys, "stdin", io.StringIO(credential("piped", "noSuchType")))
    code, out, _ = run(capsys, "-f", str(path), "-f", "-")
    assert code == 1
    assert problem_lines(out)[0].startswith("<stdin>:0: Credential team-a/piped: ")


def test_yaml_syntax_error_exits_2_naming_file_and_line_without_quoting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "good.yaml", GOOD_OPENAI)
    broken = write(tmp_path, "broken.yaml", f"apiVersion: v1\nkind: Secret\nstringData:\n  key: [{CANARY}\n")
    code, out, err = run(capsys, "-f", str(tmp_path))
    assert code == 2
    assert f"{broken}:5:1: YAML syntax error" in err
    assert out.splitlines()[-1] == "1 credential checked, 0 problems; 1 input could not be read"
    assert CANARY not in out + err


def test_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file or directory" in err


def test_custom_credential_type_in_the_inputs_is_honoured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path,
        "z-types.yaml",
        textwrap.dedent(
            """\
            apiVersion: credbridge.io/v1alpha1
            kind: CredentialType
            metadata: {name: internalapi}
            spec:
              name: internalApi
              label: Internal API
              inputs:
                - {name: token, label: Token, type: password}
                - {name: port, label: Port, type: number, optional: true}
            """
        ),
    )
    write(tmp_path, "a-good.yaml", credential("internal", "internalApi", {"token": '"<<CRED_INTERNAL_TOKEN>>"'}))
    bad = write(tmp_path, "b-bad.yaml", credential("internal2", "internalApi", {"port": '"eighty"'}))
    code, out, _ = run(capsys, "-f", str(tmp_path))
    assert code == 1
    assert problem_lines(out) == [
        f"{bad}:0: Credential team-a/internal2: field 'token' is required by type 'internalApi': "
        "set spec.data.token, spec.valueFrom.token or spec.sealedData.token to a non-empty value",
        f"{bad}:0: Credential team-a/internal2: field 'port' of type 'internalApi' must be a number such as "
        "6379 or 0.5: correct spec.data.port",
    ]


def test_malformed_credential_type_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "t.yaml",
        "apiVersion: credbridge.io/v1alpha1\nkind: CredentialType\nmetadata: {name: broken}\n"
        "spec: {name: broken, inputs: [{name: a, type: color}]}\n",
    )
    code, out, _ = run(capsys, "-f", str(path))
    assert code == 1
    assert problem_lines(out) == [
        f"{path}:0: CredentialType broken: CredentialType 'broken': spec.inputs[0] (field 'a').type must be one of "
        "string, password, url, number, boolean, options, json"
    ]


def test_credential_share_basics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "shares.yaml",
        textwrap.dedent(
            """\
            apiVersion: credbridge.io/v1alpha1
            kind: CredentialShare
            metadata: {name: good, namespace: team-a}
            spec: {credential: openai, namespaces: [team-b]}
            ---
            apiVersion: credbridge.io/v1alpha1
            kind: CredentialShare
            metadata: {name: by-selector, namespace: team-a}
            spec: {credential: openai, namespaceSelector: {matchLabels: {workspace: ml}}}
            ---
            apiVersion: credbridge.io/v1alpha1
            kind: CredentialShare
            metadata: {name: nothing, namespace: team-a}
            spec: {namespaces: []}
            """
        ),
    )
    code, out, _ = run(capsys, "-f", str(path))
    assert code == 1
    assert problem_lines(out) == [
        f"{path}:2: CredentialShare team-a/nothing: spec.credential is missing: name the Credential "
        "(in this namespace) to share",
        f"{path}:2: CredentialShare team-a/nothing: no target namespaces: set spec.namespaces and/or "
        "spec.namespaceSelector",
    ]


def test_other_objects_are_ignored_and_other_versions_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "mixed.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: " + CANARY + "}\n---\n"
        "# only a comment\n---\n" + credential("old", "openAIApi").replace("v1alpha1", "v1"),
    )
    code, out, err = run(capsys, "-f", str(path))
    assert code == 1
    assert problem_lines(out) == [
        f"{path}:2: Credential team-a/old: apiVersion credbridge.io/v1 is not served: use credbridge.io/v1alpha1"
    ]
    assert CANARY not in out + err


def test_list_documents_are_checked_item_by_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    item = credential("listed", "noSuchType")
    indented = textwrap.indent(item, "    ").replace("    apiVersion", "  - apiVersion", 1)
    path = write(tmp_path, "list.yaml", "apiVersion: v1\nkind: List\nitems:\n" + indented)
    code, out, _ = run(capsys, "-f", str(path))
    assert code == 1
    assert problem_lines(out)[0].startswith(f"{path}:0: Credential team-a/listed: type 'noSuchType'")


def test_no_value_from_the_input_reaches_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = {
        "redisCacheHost": f'"{CANARY}-host"',
        "redisCachePort": f'"{CANARY}"',
        "redisCacheUser": f'"{CANARY}-user"',
        "redisCachePwd": f'"{CANARY}-password"',
        "redisCacheSslEnabled": f'"{CANARY}-bool"',
        "unknownField": f'"{CANARY}-unknown"',
    }
    path = write(tmp_path, "canary.yaml", credential("canary", "redisCacheApi", values))
    code, out, err = run(capsys, "-f", str(path), "--literal-secrets", "deny")
    assert code == 1
    assert len(problem_lines(out)) == 4  # port, boolean, unknown field, literal password
    assert CANARY not in out + err


def test_console_script_reports_problems_and_exit_code(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", credential("x", "openAIApi"))
    script = Path(sys.executable).parent / "credbridge"
    result = subprocess.run([str(script), "validate", "-f", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:0: Credential team-a/x: field 'openAIApiKey' is required by type 'openAIApi': "
        "set spec.data.openAIApiKey, spec.valueFrom.openAIApiKey or spec.sealedData.openAIApiKey to a non-empty value",
        "1 credential checked, 1 problem",
    ]


BINDING = """apiVersion: credbridge.io/v1alpha1
kind: CredentialBinding
metadata: {name: chat, namespace: team-a}
spec:
  credential: openai
  template: {OPENAI_API_KEY: "${openAIApiKy}", "bad key": "x"}
"""


def test_bindings_are_checked_against_the_credentials_in_the_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "all.yaml", GOOD_OPENAI + "---\n" + BINDING.replace(', "bad key": "x"', ""))
    code, out, _ = run(capsys, "-f", str(path))
    assert code == 1
    assert "CredentialBinding team-a/chat" in out
    assert "field 'openAIApiKy' does not exist in type 'openAIApi'; its fields are: openAIApiKey" in out
    code, out, _ = run(capsys, "-f", str(write(tmp_path, "keys.yaml", GOOD_OPENAI + "---\n" + BINDING)))
    assert code == 1
    assert "'bad key' is not a valid Secret key" in out


def test_a_binding_whose_credential_is_elsewhere_is_checked_for_syntax_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "binding.yaml", BINDING.replace(', "bad key": "x"', ""))
    code, _, _ = run(capsys, "-f", str(path))
    assert code == 0


def test_the_size_limit_is_the_webhooks_and_the_operators(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    types = "".join(f"    - {{name: p{index}, label: P{index}, type: password}}\n" for index in range(8))
    write(
        tmp_path,
        "z-types.yaml",
        "apiVersion: credbridge.io/v1alpha1\nkind: CredentialType\nmetadata: {name: eight}\n"
        f"spec:\n  name: eight\n  label: Eight\n  inputs:\n{types}",
    )
    # 8 x 65,500 bytes fit in 512 KiB with their JSON framing; 8 x 65,536 (each value at its own limit) do not.
    write(tmp_path, "a-fits.yaml", credential("fits", "eight", {f"p{i}": "w" * 65_500 for i in range(8)}))
    over = write(tmp_path, "b-over.yaml", credential("over", "eight", {f"p{i}": "o" * 65_536 for i in range(8)}))
    code, out, _ = run(capsys, "-f", str(tmp_path), "--literal-secrets", "allow")
    assert code == 1
    assert problem_lines(out) == [
        f"{over}:0: Credential team-a/over: the fields of this 'eight' credential together exceed the limit of "
        "524288 bytes (encoded as JSON): shorten the largest values or split the credential"
    ]


def test_sealed_values_are_checked_for_form_and_place_without_opening_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from credbridge.core import sealing

    public_key = sealing.public_key_of(bytes(range(32)))

    def sealed_for(namespace: str, name: str, field: str) -> str:
        return sealing.seal_value(CANARY, public_key, sealing.Scope(namespace, name, field), bytes)

    def with_sealed(name: str, sealed: dict[str, str], data: dict[str, str] | None = None) -> str:
        text = credential(name, "openAIApi", data)
        return text + "  sealedData:\n" + "".join(f"    {field}: {token}\n" for field, token in sealed.items())

    good = write(
        tmp_path, "good.yaml", with_sealed("openai", {"openAIApiKey": sealed_for("team-a", "openai", "openAIApiKey")})
    )
    code, out, _ = run(capsys, "-f", str(good))
    assert code == 0 and "0 problems" in out

    moved = write(
        tmp_path, "moved.yaml", with_sealed("copy", {"openAIApiKey": sealed_for("team-a", "openai", "openAIApiKey")})
    )
    broken = write(tmp_path, "broken.yaml", with_sealed("broken", {"openAIApiKey": "cbs1.nope"}))
    twice = write(
        tmp_path,
        "twice.yaml",
        with_sealed(
            "twice", {"openAIApiKey": sealed_for("team-a", "twice", "openAIApiKey")}, {"openAIApiKey": '"<<CRED_X>>"'}
        ),
    )
    code, out, _ = run(capsys, "-f", str(moved), "-f", str(broken), "-f", str(twice))
    assert code == 1
    lines = problem_lines(out)
    assert any(
        line.startswith(
            f"{moved}:0: Credential team-a/copy: field 'openAIApiKey': spec.sealedData.openAIApiKey was "
            "sealed for Credential team-a/openai"
        )
        for line in lines
    )
    assert any(line.startswith(f"{broken}:0:") and "is not a sealed value" in line for line in lines)
    assert any(line.startswith(f"{twice}:0:") and "set in both spec.sealedData and spec.data" in line for line in lines)
    assert CANARY not in out


def test_troubleshooting_lint_is_a_warning_in_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        "wrong-type.yaml",
        credential("openai", "openAIApi", {"openAIApiKey": '"sk-ant-api03-abcdefghijklmnopqrstuv"'}),
    )
    code, out, _ = run(capsys, "-f", str(path), "--literal-secrets", "allow")
    assert code == 0
    assert "warning: field 'openAIApiKey' looks like an Anthropic API key" in out
    assert "abcdefghijklmnop" not in out
