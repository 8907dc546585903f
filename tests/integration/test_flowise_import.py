"""`credbridge import flowise` against a real Flowise database, and the migration round trip:
credentials made in one Flowise are imported (same ids), applied to the cluster, and synced into a
second, fresh Flowise, where they hold the same plaintext (read back from its database with its
key) and a flow exported from the first Flowise finds its credential by id.

Also: a wrong key writes nothing, a key file's trailing newline is called out, a corrupt row is
skipped and reported while the rest are imported, values never reach the terminal, files are
0600, and the API-only mode imports names, types and ids without values.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import stat
import subprocess
import sys
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client

from credbridge.core.flowise import stored
from credbridge.local import controlplane
from credbridge.local import flowise as local_flowise
from credbridge.testing import fixtures, objects
from credbridge.testing import flowise as flowise_testing

pytestmark = pytest.mark.cluster


def run_import(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("FLOWISE_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", "import", "flowise", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def database_url(server: local_flowise.FlowiseServer) -> str:
    return f"postgresql://{server.postgres.superuser}@{server.postgres.host}:{server.postgres.port}/{server.database}"


def stored_fields(server: local_flowise.FlowiseServer, credential_id: str) -> dict[str, str]:
    row = server.postgres.psql(
        server.database, f"SELECT \"encryptedData\" FROM credential WHERE id = '{credential_id}'"
    )
    return dict(stored.decrypt_fields(row.strip(), server.secret_key.reveal().encode()))


@pytest.fixture
def source_credentials(flowise_server: local_flowise.FlowiseServer) -> Any:
    """Three credentials made in the first Flowise through its API, plus one row damaged in its database."""
    api = flowise_testing.flowise_api(flowise_server)
    made = {
        "openai": {
            "id": str(uuid.uuid4()),
            "name": "Prod OpenAI " + secrets.token_hex(3),
            "credentialName": "openAIApi",
            "plainDataObj": {"openAIApiKey": "sk-canary-" + secrets.token_hex(10)},
        },
        "postgres": {
            "id": str(uuid.uuid4()),
            "name": "Analytics DB ünïcødé " + secrets.token_hex(3),
            "credentialName": "PostgresApi",
            "plainDataObj": {"user": "dbuser" + secrets.token_hex(6), "password": "pw-canary-" + secrets.token_hex(10)},
        },
        "broken": {
            "id": str(uuid.uuid4()),
            "name": "Broken " + secrets.token_hex(3),
            "credentialName": "openAIApi",
            "plainDataObj": {"openAIApiKey": "sk-broken-" + secrets.token_hex(10)},
        },
    }
    for body in made.values():
        api.put_credential(body)
    flowise_server.postgres.psql(
        flowise_server.database,
        f"UPDATE credential SET \"encryptedData\" = 'U2FsdGVkX1/damaged' WHERE id = '{made['broken']['id']}'",
    )
    yield made
    for body in made.values():
        api.delete_credential(body["id"])


def test_import_from_the_database_and_sync_into_a_fresh_flowise_keeps_ids_and_values(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: pathlib.Path,
    flowise_server: local_flowise.FlowiseServer,
    second_flowise_server: local_flowise.FlowiseServer,
    source_credentials: dict[str, dict[str, Any]],
    credbridge_operator: Any,
) -> None:
    env = {
        "FLOWISE_SECRETKEY_OVERWRITE": flowise_server.secret_key.reveal(),
        "PGPASSWORD": flowise_server.postgres.password.reveal(),
    }
    out = tmp_path / "imported"
    result = run_import("--database", database_url(flowise_server), "--output-dir", str(out), "-n", namespace, env=env)
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    for body in source_credentials.values():
        for value in body["plainDataObj"].values():
            if "canary" in value or "broken" in value:
                assert value not in report, "values never reach the terminal"
    assert f"id {source_credentials['openai']['id']}" in report
    assert f"(id {source_credentials['broken']['id']})" in report and "could not be decrypted" in report
    assert "2 imported, 1 skipped" in report

    files = sorted(out.rglob("*.yaml"))
    assert {path.relative_to(out).parts[0] for path in files} == {
        "secrets",
        *[p.name for p in files if p.parent == out],
    }
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    manifests = [yaml.safe_load(path.read_text()) for path in files if path.parent == out]
    assert {m["spec"]["id"] for m in manifests} == {
        source_credentials["openai"]["id"],
        source_credentials["postgres"]["id"],
    }
    assert all("data" not in m["spec"] for m in manifests), "Credential manifests hold no values"

    # kubectl create, not client-side apply: apply would copy the Secret data into an annotation.
    created = fixtures.kubectl_run(control_plane, "create", "-R", "-f", str(out))
    assert created.returncode == 0, created.stderr
    assert second_flowise_server.api_key is not None
    flowise_testing.create_api_key_secret(kube_api, namespace, "second-key", second_flowise_server.api_key.reveal())
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("second", second_flowise_server.url, "second-key")
    )
    objects.wait_until(
        lambda: (
            (objects.ready(flowise_testing.get_target(kube_api, namespace, "second")) or {}).get("reason") == "Synced"
            and (flowise_testing.get_target(kube_api, namespace, "second") or {})["status"]["counts"]["synced"] == 2
        ),
        120,
        "the imported credentials to reach the second Flowise",
    )
    listed = {item.id: item for item in flowise_testing.flowise_api(second_flowise_server).list_credentials()}
    for key in ("openai", "postgres"):
        body = source_credentials[key]
        assert listed[body["id"]].name == body["name"] and listed[body["id"]].credential_name == body["credentialName"]
        assert (
            stored_fields(second_flowise_server, body["id"])
            == stored_fields(flowise_server, body["id"])
            == body["plainDataObj"]
        )

    # A flow exported from the first Flowise finds its credential in the second by id.
    flow = {
        "nodes": [
            {
                "id": "chatOpenAI_0",
                "data": {
                    "name": "chatOpenAI",
                    "credential": source_credentials["openai"]["id"],
                    "inputs": {"modelName": "gpt-4o-mini"},
                },
            }
        ],
        "edges": [],
    }
    assert second_flowise_server.admin is not None
    saved = second_flowise_server.admin.call(
        "POST", "/chatflows", {"name": "moved flow", "flowData": json.dumps(flow), "type": "CHATFLOW"}
    )
    loaded = second_flowise_server.admin.call("GET", f"/chatflows/{saved['id']}")
    referenced = json.loads(loaded["flowData"])["nodes"][0]["data"]["credential"]
    found = second_flowise_server.admin.call("GET", f"/credentials/{referenced}")
    assert found["id"] == referenced and found["name"] == source_credentials["openai"]["name"]
    second_flowise_server.admin.call("DELETE", f"/chatflows/{saved['id']}")
    flowise_testing.delete_target(kube_api, namespace, "second")
    objects.wait_until(lambda: flowise_testing.get_target(kube_api, namespace, "second") is None, 60, "cleanup")


def test_a_wrong_key_writes_nothing_and_a_trailing_newline_is_called_out(
    tmp_path: pathlib.Path, flowise_server: local_flowise.FlowiseServer, source_credentials: dict[str, Any]
) -> None:
    env = {"PGPASSWORD": flowise_server.postgres.password.reveal(), "FLOWISE_SECRETKEY_OVERWRITE": "not-the-key"}
    out = tmp_path / "never"
    result = run_import("--database", database_url(flowise_server), "--output-dir", str(out), env=env)
    assert result.returncode == 2
    assert "could be decrypted with this key: nothing was written" in " ".join(result.stderr.split())
    assert not out.exists()

    key_file = tmp_path / "encryption.key"
    key_file.write_text(flowise_server.secret_key.reveal() + "\n")
    result = run_import(
        "--database", database_url(flowise_server), "--key-file", str(key_file), "--output-dir", str(out), env=env
    )
    assert result.returncode == 2 and "ends with a newline" in result.stderr
    assert not out.exists()
    key_file.write_bytes(flowise_server.secret_key.reveal().encode())
    result = run_import(
        "--database", database_url(flowise_server), "--key-file", str(key_file), "--output-dir", str(out), env=env
    )
    assert result.returncode == 0, result.stderr


def test_api_only_import_brings_names_types_and_ids_without_values(
    tmp_path: pathlib.Path, flowise_server: local_flowise.FlowiseServer, source_credentials: dict[str, Any]
) -> None:
    assert flowise_server.api_key is not None
    out = tmp_path / "api"
    result = run_import(
        "--url", flowise_server.url, "--output-dir", str(out), env={"FLOWISE_API_KEY": flowise_server.api_key.reveal()}
    )
    assert result.returncode == 0, result.stderr
    assert "no values (API-only)" in result.stdout
    assert not (out / "secrets").exists()
    manifests = {yaml.safe_load(p.read_text())["spec"]["id"]: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}
    postgres = manifests[source_credentials["postgres"]["id"]]
    assert (
        postgres["spec"]["type"] == "PostgresApi"
        and postgres["spec"]["displayName"] == source_credentials["postgres"]["name"]
    )
    assert set(postgres["spec"]["valueFrom"]) >= {"user", "password"}
    text = "".join(p.read_text() for p in out.glob("*.yaml"))
    assert source_credentials["postgres"]["plainDataObj"]["password"] not in text
    assert source_credentials["postgres"]["plainDataObj"]["user"] not in text
