"""Sealed values in a running cluster: `credbridge seal` against the published key, the reconciler opening
them, every bad input of issue 17 reported on the Credential (nothing lost), the <<NAME>> attack, key
publication, rotation with --reseal and retirement, scheduled rotation, and a sealing key pair that is
removed from the keyring. The reconciler is tested alone here (webhook off); test_sealing_admission.py
checks the webhook."""

from __future__ import annotations

import json
import pathlib
import secrets
import ssl
import urllib.request
from collections.abc import Callable

import pytest
import yaml
from kubernetes import client

from credbridge.core import names, sealing
from credbridge.kube import keyrings
from credbridge.local import controlplane, operator
from credbridge.testing import objects, workloads
from credbridge.testing import sealing as sealing_testing
from credbridge.testing.fixtures import Namespaces, kubectl_run

pytestmark = pytest.mark.cluster

CANARY = "sk-sealed-" + secrets.token_hex(12)
TEAM_A_CANARY = "team-a-env-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> workloads.EndpointCertificate:
    return workloads.endpoint_certificate(tmp_path_factory.mktemp("endpoint-cert"))


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_TEAM_A_KEY": TEAM_A_CANARY}


@pytest.fixture(scope="module")
def operator_args(endpoint_certificate: workloads.EndpointCertificate) -> list[str]:
    return ["--webhook-port", "0", *endpoint_certificate.args, "--env-policy", "CRED_TEAM_A_*=sealing-team-a-*"]


def reason_events(api: client.ApiClient, namespace: str, name: str) -> set[str]:
    return {str(event.get("reason")) for event in objects.events_for(api, namespace, name)}


def sealed_credential(name: str, type_name: str, sealed_data: dict[str, str], data: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = objects.credential_body(name, type_name, data)
    body["spec"]["sealedData"] = sealed_data
    return body


def test_values_sealed_with_the_cli_open_into_the_managed_secret(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    credbridge_operator,  # type: ignore[no-untyped-def]
    tmp_path: pathlib.Path,
) -> None:
    run = lambda *argv, stdin="": sealing_testing.run_cli(control_plane.kubeconfig, *argv, stdin=stdin)  # noqa: E731
    cert = tmp_path / "sealing.pem"
    fetched = run("seal", "--fetch-cert", str(cert))
    assert fetched.returncode == 0, fetched.stderr
    key_id = sealing.key_id_for(sealing.parse_public_key_pem(cert.read_text()))
    assert f"saved sealing certificate {key_id}" in fetched.stdout

    # One value from stdin, sealed offline with the saved certificate.
    one = run(
        "seal", "--cert", str(cert), "-n", namespace, "--name", "openai", "--type", "openAIApi",
        "--field", "openAIApiKey", stdin=CANARY + "\n",
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    field, _, token = one.stdout.strip().partition(": ")
    objects.create_credential(kube_api, namespace, sealed_credential("openai", "openAIApi", {field: token}))

    # A whole manifest with plain values, sealed against the cluster directly (no --cert).
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        yaml.safe_dump(
            {
                "apiVersion": names.API_VERSION,
                "kind": names.CREDENTIAL_KIND,
                "metadata": {"name": "cache", "namespace": namespace, "labels": objects.TEST_LABEL},
                "spec": {
                    "type": "redisCacheApi",
                    "data": {
                        "redisCacheUser": "app",
                        "redisCachePwd": CANARY + "-redis",
                        "redisCacheSslEnabled": "true",
                    },
                },
            }
        )
    )
    manifest = run("seal", "-f", str(plain))
    assert manifest.returncode == 0, manifest.stderr
    assert CANARY not in manifest.stdout + manifest.stderr
    applied = kubectl_run(control_plane, "apply", "--server-side", "-f", "-", input=manifest.stdout)
    assert applied.returncode == 0, applied.stderr

    # Namespace-wide, used by another Credential; and the largest value there is: 64 KiB.
    key = sealing_testing.public_key(kube_api)
    wide = sealing_testing.seal(key, CANARY + "-pg", namespace)
    objects.create_credential(
        kube_api, namespace, sealed_credential("pg", "PostgresApi", {"password": wide}, data={"user": "app"})
    )
    big_value = "k" * sealing.MAX_VALUE_BYTES
    big = sealing_testing.seal(key, big_value, namespace, "big", "openAIApiKey")
    objects.create_credential(kube_api, namespace, sealed_credential("big", "openAIApi", {"openAIApiKey": big}))

    for name in ("openai", "cache", "pg", "big"):
        objects.wait_for_reason(kube_api, namespace, name, "Encrypted", timeout=60)
    assert objects.open_managed_secret(kube_api, namespace, "openai") == {"openAIApiKey": CANARY}
    assert objects.open_managed_secret(kube_api, namespace, "cache")["redisCachePwd"] == CANARY + "-redis"
    assert objects.open_managed_secret(kube_api, namespace, "pg") == {"user": "app", "password": CANARY + "-pg"}
    assert objects.open_managed_secret(kube_api, namespace, "big") == {"openAIApiKey": big_value}
    hint = next(
        c
        for c in (objects.get_credential(kube_api, namespace, "openai") or {})["status"]["conditions"]
        if c["type"] == names.SEALED_WITH_OLD_KEY_CONDITION
    )
    assert hint["status"] == "False"


def test_every_bad_sealed_value_is_reported_and_the_last_good_secret_stays(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    home, other = namespaces.create("seal-home"), namespaces.create("seal-other")
    key = sealing_testing.public_key(kube_api)
    strict = sealing_testing.seal(key, CANARY, home, "good", "openAIApiKey")
    wide = sealing_testing.seal(key, CANARY, home)

    def flip(token: str) -> str:
        header, _, payload = token.rpartition(".")
        middle = len(payload) // 2
        return f"{header}.{payload[:middle]}{'A' if payload[middle] != 'A' else 'B'}{payload[middle + 1 :]}"

    truncated = sealing_testing.seal(key, CANARY, home, "truncated", "openAIApiKey")[:-6]
    flipped = flip(sealing_testing.seal(key, CANARY, home, "flipped", "openAIApiKey"))
    unknown_key = sealing.public_key_of(secrets.token_bytes(32))
    cases = {
        # (namespace, name, type, sealedData, extra data): expected reason
        "moved-namespace": ((other, "good", "openAIApi", {"openAIApiKey": strict}, None), "SealedForElsewhere"),
        "moved-credential": ((home, "copy", "openAIApi", {"openAIApiKey": strict}, None), "SealedForElsewhere"),
        "moved-field": ((home, "good-pg", "PostgresApi", {"password": strict}, {"user": "u"}), "SealedForElsewhere"),
        "wide-elsewhere": ((other, "wide", "openAIApi", {"openAIApiKey": wide}, None), "SealedForElsewhere"),
        "truncated": ((home, "truncated", "openAIApi", {"openAIApiKey": truncated}, None), "SealedValueInvalid"),
        "flipped": ((home, "flipped", "openAIApi", {"openAIApiKey": flipped}, None), "SealedValueInvalid"),
        "never-existed": (
            (home, "nokey", "openAIApi", {"openAIApiKey": sealing_testing.seal(unknown_key, CANARY, home)}, None),
            "SealKeyUnknown",
        ),
    }
    for (namespace, name, type_name, sealed_data, data), _ in cases.values():
        objects.create_credential(kube_api, namespace, sealed_credential(name, type_name, sealed_data, data))
    for label, ((namespace, name, *_), reason) in cases.items():
        found = objects.wait_for_reason(kube_api, namespace, name, reason, timeout=60)
        message = objects.ready(found)["message"]  # type: ignore[index]
        assert CANARY not in message, label
        assert objects.read_secret(kube_api, namespace, name) is None, label
        objects.wait_until(
            lambda ns=namespace, n=name, r=reason: r in reason_events(kube_api, ns, n), 30, f"the {reason} Event"
        )
    moved = objects.ready(objects.get_credential(kube_api, other, "good"))
    assert moved is not None and f"Credential {home}/good, field 'openAIApiKey'" in moved["message"]

    # A good Credential that is then broken keeps its last good Secret.
    objects.create_credential(kube_api, home, sealed_credential("good", "openAIApi", {"openAIApiKey": strict}))
    objects.wait_for_reason(kube_api, home, "good", "Encrypted", timeout=60)
    before = objects.read_secret(kube_api, home, "good")
    assert before is not None
    objects.patch_credential(kube_api, home, "good", {"spec": {"sealedData": {"openAIApiKey": flip(strict)}}})
    objects.wait_for_reason(kube_api, home, "good", "SealedValueInvalid", timeout=60)
    after = objects.read_secret(kube_api, home, "good")
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert objects.open_managed_secret(kube_api, home, "good") == {"openAIApiKey": CANARY}


def test_a_sealed_env_reference_stays_literal_through_a_binding(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    # team-a's variable is granted to the team-a namespaces only. A tenant of team-b seals the text
    # "<<CRED_TEAM_A_KEY>>" for its own Credential and binds it, hoping for team-a's key in a plain Secret.
    team_b = namespaces.create("sealing-team-b")
    key = sealing_testing.public_key(kube_api)
    attack = sealing_testing.seal(key, "<<CRED_TEAM_A_KEY>>", team_b, "attack", "openAIApiKey")
    objects.create_credential(kube_api, team_b, sealed_credential("attack", "openAIApi", {"openAIApiKey": attack}))
    objects.wait_for_reason(kube_api, team_b, "attack", "Encrypted", timeout=60)
    objects.create_binding(
        kube_api, team_b, objects.binding_body("attack-env", "attack", template={"KEY": "${openAIApiKey}"})
    )
    objects.wait_for_binding(kube_api, team_b, "attack-env", "Rendered")
    rendered = objects.decoded(objects.read_secret(kube_api, team_b, "attack-env") or {})
    assert rendered == {"KEY": "<<CRED_TEAM_A_KEY>>"}
    assert TEAM_A_CANARY not in json.dumps(objects.open_managed_secret(kube_api, team_b, "attack"))


def test_public_keys_are_published_in_a_configmap_and_on_the_endpoint(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
    tmp_path: pathlib.Path,
) -> None:
    ring = keyrings.load(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET)
    assert ring is not None
    active = ring[0].active_sealing_id
    shown = kubectl_run(
        control_plane, "get", "configmap", names.DEFAULT_SEALING_CONFIGMAP, "-n", "credbridge-system", "-o", "json"
    )
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)["data"]
    assert data[names.SEALING_ACTIVE_KEY] == active
    assert sealing.key_id_for(sealing.parse_public_key_pem(data[names.SEALING_CERT_KEY])) == active
    assert set(ring[0].sealing_ids()) <= {key[: -len(".pem")] for key in data if key.endswith(".pem")}

    # The endpoint answers without a token, over TLS.
    context = ssl.create_default_context(cafile=str(endpoint_certificate.cafile))
    base = f"https://127.0.0.1:{credbridge_operator.process.endpoint_port}"
    with urllib.request.urlopen(f"{base}/v1/sealing-keys", context=context, timeout=10) as response:
        published = json.loads(response.read())
    assert published[names.SEALING_ACTIVE_KEY] == active and published[names.SEALING_CERT_KEY] == data["cert.pem"]
    cert = tmp_path / "from-endpoint.pem"
    fetched = sealing_testing.run_cli(
        control_plane.kubeconfig,
        "seal", "--fetch-cert", str(cert), "--endpoint", base, "--ca-file", str(endpoint_certificate.cafile),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert cert.read_text() == data["cert.pem"]

    # An edit by hand does not last: a restart (or the next keyring change) publishes the keys again.
    kubectl_run(
        control_plane,
        "patch", "configmap", names.DEFAULT_SEALING_CONFIGMAP, "-n", "credbridge-system", "--type", "merge",
        "-p", json.dumps({"data": {names.SEALING_CERT_KEY: "tampered"}}),
    )  # fmt: skip
    credbridge_operator.restart()
    objects.wait_until(
        lambda: (
            json.loads(
                kubectl_run(
                    control_plane,
                    "get",
                    "configmap",
                    names.DEFAULT_SEALING_CONFIGMAP,
                    "-n",
                    "credbridge-system",
                    "-o",
                    "json",
                ).stdout
            )["data"][names.SEALING_CERT_KEY]
            == data["cert.pem"]
        ),
        60,
        "the operator to publish the keys again",
    )


@pytest.fixture
def own_operator(
    namespaces: Namespaces,
    run_operator: Callable[..., operator.OperatorProcess],
    operator_kubeconfig: pathlib.Path,
) -> Callable[..., tuple[str, str, operator.OperatorProcess]]:
    """An operator with a keyring of its own (its own operator namespace), serving one namespace."""

    def start(*extra: str) -> tuple[str, str, operator.OperatorProcess]:
        operator_namespace, served = namespaces.create("seal-op"), namespaces.create("seal-ns")
        process = run_operator(
            "--operator-namespace", operator_namespace, "--namespace", served, "--webhook-port", "0",
            "--endpoint-port", "0", *extra, kubeconfig=operator_kubeconfig,
        )  # fmt: skip
        return operator_namespace, served, process

    return start


def test_rotation_reseal_and_retire_without_anyone_holding_a_private_key(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    own_operator: Callable[..., tuple[str, str, operator.OperatorProcess]],
    tmp_path: pathlib.Path,
) -> None:
    operator_namespace, served, _ = own_operator()
    cli = lambda *argv, stdin="": sealing_testing.run_cli(  # noqa: E731
        control_plane.kubeconfig, *argv, "--operator-namespace", operator_namespace, stdin=stdin
    )
    old_key = sealing_testing.public_key(kube_api, operator_namespace)
    old_id = sealing.key_id_for(old_key)
    repo = tmp_path / "repo"
    repo.mkdir()
    manifest = repo / "openai.yaml"
    body = sealed_credential(
        "openai", "openAIApi", {"openAIApiKey": sealing_testing.seal(old_key, CANARY, served, "openai", "openAIApiKey")}
    )
    body["metadata"]["namespace"] = served
    manifest.write_text("# team-a's OpenAI key, sealed\n" + yaml.safe_dump(body, width=1_000_000))
    assert kubectl_run(control_plane, "apply", "-f", str(manifest)).returncode == 0
    objects.wait_for_reason(kube_api, served, "openai", "Encrypted", timeout=60)

    rotated = cli("keys", "rotate", "--sealing")
    assert rotated.returncode == 0, rotated.stderr
    new_id = rotated.stdout.split("new active sealing key: ")[1].split()[0]
    assert new_id != old_id

    # Retiring the old key is refused while a Credential still holds a value sealed with it.
    refused = cli("keys", "retire", "--sealing", old_id)
    assert refused.returncode == 1 and f"{served}/openai" in refused.stderr

    def hint() -> dict[str, str] | None:
        found = objects.get_credential(kube_api, served, "openai") or {}
        for condition in (found.get("status") or {}).get("conditions") or []:
            if condition["type"] == names.SEALED_WITH_OLD_KEY_CONDITION and condition["status"] == "True":
                return dict(condition)
        return None

    assert old_id in objects.wait_until(hint, 60, "the SealedWithOldKey hint")["message"]
    listed = cli("keys", "list", "--sealing")
    assert [line.split() for line in listed.stdout.splitlines()[1:]] == sorted(
        [[new_id, "yes", "0"], [old_id, "1"]], key=lambda row: row[0]
    )

    resealed = cli("seal", "--reseal", "-f", str(repo))
    assert resealed.returncode == 0, resealed.stderr
    assert "re-sealed 1 value(s) in 1 file(s)" in resealed.stdout
    text = manifest.read_text()
    assert text.startswith("# team-a's OpenAI key, sealed\n") and f"cbs1.{new_id}." in text and old_id not in text
    assert CANARY not in resealed.stdout + resealed.stderr
    assert kubectl_run(control_plane, "apply", "-f", str(manifest)).returncode == 0
    objects.wait_until(lambda: hint() is None, 60, "the hint to clear")
    assert objects.open_managed_secret(kube_api, served, "openai", operator_namespace) == {"openAIApiKey": CANARY}
    again = cli("seal", "--reseal", "-f", str(repo))
    assert again.returncode == 0 and "re-sealed 0 value(s)" in again.stdout

    retired = cli("keys", "retire", "--sealing", old_id)
    assert retired.returncode == 0, retired.stderr
    # A manifest still holding a value sealed with the retired key now reports it.
    stale = sealed_credential(
        "stale", "openAIApi", {"openAIApiKey": sealing_testing.seal(old_key, CANARY, served, "stale", "openAIApiKey")}
    )
    objects.create_credential(kube_api, served, stale)
    found = objects.wait_for_reason(kube_api, served, "stale", "SealKeyUnknown", timeout=60)
    assert old_id in objects.ready(found)["message"]  # type: ignore[index]


def test_scheduled_rotation_publishes_a_new_key_and_keeps_the_old_one(
    kube_api: client.ApiClient, own_operator: Callable[..., tuple[str, str, operator.OperatorProcess]]
) -> None:
    operator_namespace, served, _ = own_operator("--sealing-key-rotation", "3")
    first = sealing.key_id_for(sealing_testing.public_key(kube_api, operator_namespace))
    value = sealing_testing.seal(sealing_testing.public_key(kube_api, operator_namespace), CANARY, served)

    def rotated() -> str | None:
        key_id = sealing.key_id_for(sealing_testing.public_key(kube_api, operator_namespace))
        return key_id if key_id != first else None

    second = objects.wait_until(rotated, 90, "a scheduled sealing key rotation")
    loaded = keyrings.load(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET)
    assert loaded is not None and {first, second} <= set(loaded[0].sealing_ids())
    objects.create_credential(kube_api, served, sealed_credential("old", "openAIApi", {"openAIApiKey": value}))
    objects.wait_for_reason(kube_api, served, "old", "Encrypted", timeout=60)


def test_a_removed_sealing_key_pair_fails_closed(
    kube_api: client.ApiClient,
    own_operator: Callable[..., tuple[str, str, operator.OperatorProcess]],
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    operator_namespace, served, process = own_operator()
    key = sealing_testing.public_key(kube_api, operator_namespace)
    objects.create_credential(
        kube_api,
        served,
        sealed_credential("kept", "openAIApi", {"openAIApiKey": sealing_testing.seal(key, CANARY, served)}),
    )
    objects.wait_for_reason(kube_api, served, "kept", "Encrypted", timeout=60)
    core = client.CoreV1Api(kube_api)
    saved = core.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace)
    broken = core.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace)
    broken.data = {k: v for k, v in broken.data.items() if not k.startswith(names.SEALING_KEY_PREFIX)}
    core.replace_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace, broken)

    # The running operator refuses the change and keeps opening sealed values with the keys it holds.
    objects.wait_until(
        lambda: "KeyringRejected" in reason_events(kube_api, operator_namespace, names.DEFAULT_KEYRING_SECRET),
        60,
        "the keyring change to be refused",
    )
    objects.create_credential(
        kube_api,
        served,
        sealed_credential("after", "openAIApi", {"openAIApiKey": sealing_testing.seal(key, CANARY, served)}),
    )
    objects.wait_for_reason(kube_api, served, "after", "Encrypted", timeout=60)

    # Started again on the broken keyring, it refuses to start, naming the lost pair; nothing is made anew.
    process.stop()
    restarted = operator.start(
        operator_kubeconfig,
        tmp_path / "restart.log",
        wait_ready=False,
        args=["--operator-namespace", operator_namespace, "--namespace", served, "--webhook-port", "0"],
    )
    assert restarted.popen.wait(60) == 2
    assert "sealing key pair" in restarted.logs() and "keys import" in restarted.logs()
    still = core.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace)
    assert not any(key.startswith(names.SEALING_KEY_PREFIX) for key in still.data)

    # Restoring the Secret from its backup brings everything back.
    restored = core.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace)
    restored.data = saved.data
    core.replace_namespaced_secret(names.DEFAULT_KEYRING_SECRET, operator_namespace, restored)
    again = operator.start(
        operator_kubeconfig,
        tmp_path / "restored.log",
        args=["--operator-namespace", operator_namespace, "--namespace", served, "--webhook-port", "0"],
    )
    try:
        objects.patch_credential(kube_api, served, "kept", {"metadata": {"labels": {"touched": "yes"}}})
        assert objects.open_managed_secret(kube_api, served, "kept", operator_namespace) == {"openAIApiKey": CANARY}
    finally:
        again.stop()
