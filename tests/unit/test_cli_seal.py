"""`credbridge seal` offline, with a saved certificate: one value from stdin, whole manifests, and refusals
before sealing (the type's schema, references, empty values), never echoing a value."""

from __future__ import annotations

import io
import pathlib
import textwrap

import pytest
import yaml

from credbridge.cli import main
from credbridge.core import sealing

PRIVATE = bytes(range(32))
PUBLIC = sealing.public_key_of(PRIVATE)
KEY_ID = sealing.key_id_for(PUBLIC)
CANARY = "sk-seal-canary-0a1b2c3d"


@pytest.fixture
def cert(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "sealing.pem"
    path.write_text(sealing.public_key_pem(PUBLIC))
    return path


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main.main(["seal", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_one_value_from_stdin_is_sealed_for_its_credential_and_field(
    cert: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(
        capsys,
        monkeypatch,
        "--cert",
        str(cert),
        "-n",
        "team-a",
        "--name",
        "production-openai",
        "--type",
        "openAIApi",
        "--field",
        "openAIApiKey",
        stdin=CANARY + "\n",
    )
    assert code == 0, err
    field, _, token = out.strip().partition(": ")
    assert field == "openAIApiKey"
    header = sealing.read_header(token)
    assert header is not None and header.key_id == KEY_ID
    assert header.scope == sealing.Scope("team-a", "production-openai", "openAIApiKey")
    assert sealing.open_value(token, {KEY_ID: PRIVATE}) == CANARY  # the trailing newline is dropped
    assert CANARY not in out + err and "spec.sealedData" in err


def test_namespace_scope_and_raw_keep_what_was_asked(
    cert: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(
        capsys,
        monkeypatch,
        "--cert",
        str(cert),
        "-n",
        "team-a",
        "--type",
        "PostgresApi",
        "--field",
        "password",
        "--scope",
        "namespace",
        "--raw",
        stdin="pw\n",
    )
    assert code == 0, err
    token = out.strip().partition(": ")[2]
    header = sealing.read_header(token)
    assert header is not None and header.scope == sealing.Scope("team-a")
    assert sealing.open_value(token, {KEY_ID: PRIVATE}) == "pw\n"


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        (["--type", "redisCacheApi", "--field", "redisCachePort"], "six-three-seven-nine", "must be a number"),
        (["--type", "openAIApi", "--field", "nope"], CANARY, "field 'nope' is not defined by type 'openAIApi'"),
        (["--type", "noSuchType", "--field", "x"], CANARY, "type 'noSuchType' is not a known CredentialType"),
        (["--type", "openAIApi", "--field", "openAIApiKey"], "", "the value is empty"),
        (["--type", "openAIApi", "--field", "openAIApiKey"], "x" * 70_000, "65536 bytes"),
        (["--field", "openAIApiKey"], CANARY, "give --type TYPE"),
    ],
    ids=["bad-number", "unknown-field", "unknown-type", "empty", "too-large", "no-type"],
)
def test_a_value_that_fails_the_schema_is_refused_before_sealing(
    cert: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    stdin: str,
    fragment: str,
) -> None:
    code, out, err = run(
        capsys, monkeypatch, "--cert", str(cert), "-n", "team-a", "--name", "cache", *args, stdin=stdin
    )
    assert code == 1
    assert out == "" and fragment in err
    assert CANARY not in err and "six-three" not in err


def test_a_value_is_never_taken_from_the_command_line() -> None:
    with pytest.raises(SystemExit):
        main.main(["seal", "--value", CANARY])


MANIFESTS = textwrap.dedent(
    """\
    apiVersion: credbridge.io/v1alpha1
    kind: Credential
    metadata: {name: production-openai, namespace: team-a}
    spec:
      type: openAIApi
      data:
        openAIApiKey: "CANARY"
    ---
    apiVersion: credbridge.io/v1alpha1
    kind: Credential
    metadata: {name: cache, namespace: team-a}
    spec:
      type: redisCacheApi
      data:
        redisCacheUser: app
        redisCachePwd: 'p\\<<ss'
        redisCacheHost: "<<CRED_REDIS_HOST>>"
        redisCacheSslEnabled: "true"
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: team-a}
    """
).replace("CANARY", CANARY)


def test_whole_manifests_get_their_password_fields_sealed_and_keep_the_rest(
    cert: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "plain.yaml"
    source.write_text(MANIFESTS)
    code, out, err = run(capsys, monkeypatch, "--cert", str(cert), "-f", str(source))
    assert code == 0, err
    openai, redis, namespace = list(yaml.safe_load_all(out))
    assert "data" not in openai["spec"] and list(openai["spec"]["sealedData"]) == ["openAIApiKey"]
    assert sealing.open_value(openai["spec"]["sealedData"]["openAIApiKey"], {KEY_ID: PRIVATE}) == CANARY
    assert redis["spec"]["data"] == {
        "redisCacheUser": "app",
        "redisCacheHost": "<<CRED_REDIS_HOST>>",
        "redisCacheSslEnabled": "true",
    }
    # The escape is decoded: the sealed plaintext is the literal text the manifest stood for.
    assert sealing.open_value(redis["spec"]["sealedData"]["redisCachePwd"], {KEY_ID: PRIVATE}) == "p<<ss"
    assert namespace == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    assert CANARY not in out and CANARY not in err
    assert "Credential team-a/production-openai: sealed openAIApiKey" in err
    assert out.count("\n") < 40  # one line per sealed value: diff-friendly


def test_manifest_problems_are_reported_with_validate_messages_and_nothing_is_sealed(
    cert: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "plain.yaml"
    source.write_text(MANIFESTS.replace("redisCacheUser: app", "redisCacheUser: app\n    redisCachePort: eighty"))
    code, out, err = run(capsys, monkeypatch, "--cert", str(cert), "-f", str(source))
    assert code == 1 and out == ""
    expected = f"{source}:1: Credential team-a/cache: field 'redisCachePort' of type 'redisCacheApi' must be a number"
    assert expected in err
    assert "nothing sealed" in err and CANARY not in err

    good = tmp_path / "good.yaml"
    good.write_text(MANIFESTS)
    code, out, err = run(capsys, monkeypatch, "--cert", str(cert), "-f", str(good), "--field", "redisCacheHost")
    assert code == 1 and out == ""
    assert "field 'redisCacheHost' holds a <<NAME>> reference" in err
    assert "Credential team-a/production-openai: field 'redisCacheHost' has no value in spec.data to seal" in err


def test_an_unusable_certificate_is_named(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, _, err = run(
        capsys,
        monkeypatch,
        "--cert",
        str(bad),
        "-n",
        "a",
        "--name",
        "b",
        "--type",
        "openAIApi",
        "--field",
        "openAIApiKey",
        stdin=CANARY,
    )
    assert code == 2 and f"{bad}: it is not a PEM public key" in err
