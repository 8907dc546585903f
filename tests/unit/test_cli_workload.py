"""`credbridge env` and `credbridge fetch` without a cluster: flags, files, errors and exit codes.

The HTTP behaviour (retries on 429/503, refusals) is checked against a small local HTTPS server
that answers what the endpoint answers; reads through the real endpoint are integration tests.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.server
import json
import os
import pathlib
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from credbridge import tls
from credbridge.cli import env, fetch, main, workloadclient
from credbridge.core import redaction

CANARY = "sk-canary-cli-5d1e"


def values(data: dict[str, str], name: str = "chat") -> workloadclient.Values:
    return workloadclient.Values("CredentialBinding", "team-b", name, "openai", redaction.SecretFields(data))


def token_for(namespace: str) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"kubernetes.io": {"namespace": namespace}}).encode()).decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{claims.rstrip('=')}.c2ln"


# ---- env --------------------------------------------------------------------------------------


def test_env_mappings_are_var_equals_key() -> None:
    assert env.parse_mappings(["OPENAI_API_KEY=openAIApiKey", "B=x.y"]) == {
        "OPENAI_API_KEY": "openAIApiKey",
        "B": "x.y",
    }
    for bad in ("NOEQUALS", "1VAR=x", "VAR=", "=x"):
        with pytest.raises(workloadclient.ClientError) as refused:
            env.parse_mappings([bad])
        assert refused.value.exit_code == workloadclient.EXIT_CONFIG


def test_env_sets_every_key_or_the_mapped_ones() -> None:
    read = values({"OPENAI_API_KEY": CANARY, "ORG": "o"})
    assert env.variables(read, {}) == {"OPENAI_API_KEY": CANARY, "ORG": "o"}
    assert env.variables(read, {"KEY": "OPENAI_API_KEY"}) == {"KEY": CANARY}
    with pytest.raises(workloadclient.ClientError, match="has no key nope; its keys are: OPENAI_API_KEY, ORG"):
        env.variables(read, {"X": "nope"})


# ---- fetch files ------------------------------------------------------------------------------


def test_fetch_writes_one_file_per_key_with_mode_0400(tmp_path: pathlib.Path) -> None:
    written = fetch.write_files(tmp_path / "values", redaction.SecretFields({"A": CANARY, "b.txt": "2"}), 0o400, set())
    assert written == ["A", "b.txt"]
    assert (tmp_path / "values" / "A").read_text() == CANARY
    assert stat.S_IMODE((tmp_path / "values" / "A").stat().st_mode) == 0o400
    assert sorted(p.name for p in (tmp_path / "values").iterdir()) == ["A", "b.txt"]  # no temporary files left


def test_fetch_rewrites_only_what_changed_and_removes_keys_that_went_away(tmp_path: pathlib.Path) -> None:
    fetch.write_files(tmp_path, redaction.SecretFields({"A": "1", "B": "2"}), 0o400, set())
    inode = (tmp_path / "A").stat().st_ino
    changed = fetch.write_files(tmp_path, redaction.SecretFields({"A": "1", "C": "3"}), 0o400, {"A", "B"})
    assert changed == ["C", "B"]
    assert (tmp_path / "A").stat().st_ino == inode
    assert not (tmp_path / "B").exists()
    assert fetch.write_files(tmp_path, redaction.SecretFields({"A": "new", "C": "3"}), 0o400, {"A", "C"}) == ["A"]
    assert (tmp_path / "A").read_text() == "new"
    assert (tmp_path / "A").stat().st_ino != inode  # replaced by rename, not written in place


def test_fetch_refuses_keys_from_two_objects_that_would_share_a_file() -> None:
    with pytest.raises(workloadclient.ClientError, match="key A comes from both"):
        fetch.merged([values({"A": "1"}, "one"), values({"A": "2"}, "two")])


def test_fetch_refuses_keys_that_are_not_file_names() -> None:
    for key in ("../etc/passwd", "..", "a/b"):
        with pytest.raises(workloadclient.ClientError, match="cannot be a file name"):
            fetch.merged([values({key: "x"})])


def test_fetch_says_when_the_directory_is_not_writable(tmp_path: pathlib.Path) -> None:
    # A file where the directory should be: unwritable for root too (a mode bit would not stop root).
    not_a_directory = tmp_path / "volume"
    not_a_directory.write_text("")
    with pytest.raises(workloadclient.ClientError) as refused:
        fetch.write_files(not_a_directory, redaction.SecretFields({"A": "1"}), 0o400, set())
    assert refused.value.exit_code == workloadclient.EXIT_WRITE
    assert "mount a writable volume" in str(refused.value)


# ---- finding the endpoint, token and namespace ------------------------------------------------


def connection_args(**overrides: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "endpoint": None,
        "ca_file": None,
        "token_file": None,
        "namespace": None,
        "timeout": 5.0,
    }
    return argparse.Namespace(**{**defaults, **overrides})


def test_the_connection_comes_from_the_environment_injection_sets(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text(token_for("team-b") + "\n")
    connection = workloadclient.connection_from(
        connection_args(),
        {"CREDBRIDGE_ENDPOINT": "https://op:8443/", "CREDBRIDGE_TOKEN_FILE": str(token), "CREDBRIDGE_CA_DATA": "PEM"},
    )
    assert (connection.endpoint, connection.namespace, connection.ca_data) == ("https://op:8443", "team-b", "PEM")
    flagged = workloadclient.connection_from(
        connection_args(endpoint="https://other:1", namespace="team-c", token_file=str(token)),
        {"CREDBRIDGE_ENDPOINT": "https://op:8443", "CREDBRIDGE_NAMESPACE": "team-b"},
    )
    assert (flagged.endpoint, flagged.namespace) == ("https://other:1", "team-c")


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({}, "no endpoint: pass --endpoint"),
        ({"CREDBRIDGE_ENDPOINT": "http://op:80"}, "must be an https:// URL"),
        ({"CREDBRIDGE_ENDPOINT": "https://op", "CREDBRIDGE_TOKEN_FILE": "/nonexistent/token"}, "cannot read the token"),
    ],
)
def test_missing_configuration_is_one_line_naming_the_fix(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(workloadclient.ClientError) as refused:
        workloadclient.connection_from(connection_args(), environ)
    assert fragment in str(refused.value)
    assert "\n" not in str(refused.value)
    assert refused.value.exit_code == workloadclient.EXIT_CONFIG


def test_the_namespace_is_read_from_the_tokens_claims() -> None:
    assert workloadclient.token_namespace(token_for("team-x")) == "team-x"
    assert workloadclient.token_namespace("opaque") == ""
    assert workloadclient.token_namespace("a.!!!.c") == ""


# ---- HTTP behaviour against a stand-in server -------------------------------------------------


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers the next queued (status, headers, body) and records the requests it saw."""

    answers: list[tuple[int, dict[str, str], dict[str, object]]] = []
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization", "")))
        status, headers, body = type(self).answers.pop(0)
        payload = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in(tmp_path: pathlib.Path) -> Iterator[workloadclient.Connection]:
    ca = tls.make_ca("test-ca")
    certfile, keyfile = tls.issue(ca, "127.0.0.1", hosts=["127.0.0.1"]).write(tmp_path, "server")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("the-token")
    StandIn.answers, StandIn.seen = [], []
    yield workloadclient.Connection(
        endpoint=f"https://127.0.0.1:{server.server_address[1]}",
        token_file=token,
        namespace="team-b",
        ca_data=ca.cert_pem.decode(),
        timeout=5.0,
    )
    server.shutdown()
    server.server_close()


OK = (200, {}, {"kind": "CredentialBinding", "namespace": "team-b", "name": "chat", "data": {"KEY": CANARY}})


def test_a_read_sends_the_token_and_returns_the_values(stand_in: workloadclient.Connection) -> None:
    StandIn.answers = [OK]
    read = workloadclient.Reader(stand_in).read("credentialbindings", "chat")
    assert read.data["KEY"] == CANARY
    assert CANARY not in repr(read)
    assert StandIn.seen == [("/v1/namespaces/team-b/credentialbindings/chat", "Bearer the-token")]


def test_busy_answers_are_retried_after_the_delay_they_give(stand_in: workloadclient.Connection) -> None:
    StandIn.answers = [(429, {"Retry-After": "2"}, {"message": "slow down"}), (503, {}, {"message": "not ready"}), OK]
    slept: list[float] = []
    reader = workloadclient.Reader(stand_in, sleep=slept.append)
    assert reader.read("credentialbindings", "chat").data["KEY"] == CANARY
    assert slept == [2.0, 1.0]


def test_refusals_are_not_retried_and_carry_the_endpoints_message(stand_in: workloadclient.Connection) -> None:
    StandIn.answers = [(403, {}, {"message": "x may not use credentialbindings/chat in namespace team-b: grant ..."})]
    with pytest.raises(workloadclient.ClientError) as refused:
        workloadclient.Reader(stand_in).read("credentialbindings", "chat")
    assert refused.value.exit_code == workloadclient.EXIT_REFUSED
    assert str(refused.value) == (
        "CredentialBinding team-b/chat: x may not use credentialbindings/chat in namespace team-b: grant ..."
    )


def test_busy_until_the_timeout_is_unavailable_after_exactly_the_timeout(
    stand_in: workloadclient.Connection,
) -> None:
    # --timeout 8 against a 503 with Retry-After: 5 tries at 0 s, 5 s and 8 s, then gives up, saying so.
    StandIn.answers = [(503, {"Retry-After": "5"}, {"message": "not ready"})] * 3
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    connection = dataclasses.replace(stand_in, timeout=8.0)
    with pytest.raises(workloadclient.ClientError) as refused:
        workloadclient.Reader(connection, sleep=sleep, clock=lambda: now[0]).read("credentials", "openai")
    assert refused.value.exit_code == workloadclient.EXIT_UNAVAILABLE
    assert slept == [5.0, 3.0] and len(StandIn.seen) == 3
    assert "still after 8s" in str(refused.value) and "raise --timeout" in str(refused.value)


def test_an_untrusted_certificate_is_refused_naming_the_ca_flag(stand_in: workloadclient.Connection) -> None:
    other_ca = tls.make_ca("other").cert_pem.decode()
    untrusting = workloadclient.Connection(stand_in.endpoint, stand_in.token_file, "team-b", ca_data=other_ca)
    with pytest.raises(workloadclient.ClientError, match="--ca-file") as refused:
        workloadclient.Reader(untrusting).read("credentials", "openai")
    assert refused.value.exit_code == workloadclient.EXIT_UNAVAILABLE


def test_an_unreachable_endpoint_is_unavailable(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    connection = workloadclient.Connection("https://127.0.0.1:1", token, "team-b", timeout=0.5)
    with pytest.raises(workloadclient.ClientError, match="cannot reach the endpoint") as refused:
        workloadclient.Reader(connection, sleep=lambda _: None).read("credentials", "openai")
    assert refused.value.exit_code == workloadclient.EXIT_UNAVAILABLE


# ---- the commands as processes ----------------------------------------------------------------


def run_credbridge(*args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **(environ or {})},
        check=False,
    )


def test_client_commands_load_no_cluster_client() -> None:
    probe = (
        "import sys\nfrom credbridge.cli import main\n"
        "try:\n    main.main(['fetch', '--binding', 'x', '--dir', '/nonexistent'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('kubernetes', 'kopf', 'aiohttp') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_env_without_an_endpoint_exits_2_with_one_line() -> None:
    result = run_credbridge("env", "--binding", "chat", "--", "true")
    assert result.returncode == workloadclient.EXIT_CONFIG
    assert result.stderr.strip().splitlines() == [
        "credbridge env: no endpoint: pass --endpoint https://HOST:PORT or set CREDBRIDGE_ENDPOINT "
        "(the credbridge.io/inject annotation sets it)"
    ]


def test_env_without_a_command_says_where_it_goes() -> None:
    result = run_credbridge("env", "--binding", "chat")
    assert result.returncode == workloadclient.EXIT_CONFIG
    assert "put it after --" in result.stderr


def test_fetch_without_anything_to_fetch_exits_2() -> None:
    result = run_credbridge("fetch", "--dir", "/tmp/x")
    assert result.returncode == workloadclient.EXIT_CONFIG
    assert "name at least one --binding" in result.stderr


def test_help_lists_the_client_commands() -> None:
    help_text = main.build_parser().format_help()
    assert "env" in help_text and "fetch" in help_text
