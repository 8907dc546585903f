"""Verification through the operator: Credentials checked against real servers and the vendor stand-in.

The operator runs as a process against the local control plane. The vendors' hosts reach the
TLS stand-in (`credbridge.testing.vendors`) through `--verification-resolve` and its CA through
`--verification-ca-file`; PostgreSQL, Redis and MariaDB run as local processes, reached by test
names on the verification allow-list. Tests assert what a user sees: the Verified and expiry
conditions, `status.lastVerifiedTime` and `expiresAt`, Events, `kubectl get`, `credbridge verify`,
the metrics, bindings and FlowiseTargets, and the audit log.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import typing

import pytest
from kubernetes import client

from credbridge import tls
from credbridge.core import names, verification
from credbridge.local import controlplane, databases
from credbridge.local import flowise as local_flowise
from credbridge.testing import flowise as flowise_testing
from credbridge.testing import objects, vendors
from credbridge.testing.fixtures import AuditLog, Namespaces

pytestmark = [pytest.mark.cluster, pytest.mark.services]

OPERATOR_USER = "credbridge-operator"
DEBOUNCE = "1"
VALID, REVOKED, WEAK, BUSY = vendors.VALID_KEY, vendors.REVOKED_KEY, vendors.WEAK_KEY, vendors.BUSY_KEY


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLOSED_PORT = _free_port()
"""A port nothing listens on (a service that is down)."""


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_VERIFY_UNGRANTED": VALID}


@pytest.fixture(scope="module")
def operator_args(
    vendor_ca: tls.Issued, standin: vendors.VendorStandIn, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    ca_file = vendors.write_ca(vendor_ca, tmp_path_factory.mktemp("verification"))
    return [
        *vendors.resolve_args(standin),
        f"--verification-resolve=down.test:443=127.0.0.3:{CLOSED_PORT}",
        "--verification-resolve=pg.test=127.0.0.1",
        "--verification-resolve=redis.test=127.0.0.1",
        "--verification-resolve=maria.test=127.0.0.1",
        "--verification-allow-host=*.test",
        "--verification-allow-network=127.0.0.0/24",
        f"--verification-ca-file={ca_file}",
        f"--verification-debounce={DEBOUNCE}",
        "--verification-rate=20",
        "--verification-interval=3600",
        "--flowise-resync=2",
    ]


# ---- helpers ------------------------------------------------------------------------------------


def create(
    api: client.ApiClient, namespace: str, name: str, type_name: str, data: dict[str, str], **spec: typing.Any
) -> None:
    objects.create_credential(api, namespace, objects.credential_body(name, type_name, data, spec_extra=spec or None))


def verified(credential: objects.Json | None) -> objects.Json:
    found = objects.condition(credential, verification.VERIFIED)
    assert found is not None, credential
    return found


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    return [str(event.get("reason")) for event in objects.events_for(api, namespace, name)]


def metric_lines(operator: typing.Any, name: str, namespace: str) -> list[str]:
    return [
        line
        for line in operator.process.metrics().splitlines()
        if line.startswith(name + "{") and f'namespace="{namespace}"' in line
    ]


def custom_type(type_name: str, url: str, **http: typing.Any) -> dict[str, typing.Any]:
    return {
        "inputs": [
            {"name": "apiKey", "label": "API key", "type": "password"},
            {"name": "endpoint", "label": "Endpoint", "type": "url", "optional": True},
        ],
        "verify": {"http": {"url": url, "headers": {"Authorization": "Bearer ${apiKey}"}, **http}},
    }


def credbridge(plane: controlplane.ControlPlane, *argv: str) -> tuple[int, str, str]:
    """Run the installed `credbridge` command against the control plane; (exit code, stdout, stderr)."""
    command = pathlib.Path(sys.executable).parent / "credbridge"
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    env.pop("POD_NAMESPACE", None)
    done = subprocess.run([str(command), *argv], env=env, capture_output=True, text=True, timeout=300, check=False)
    return done.returncode, done.stdout, done.stderr


# ---- outcomes -----------------------------------------------------------------------------------


def test_the_vendor_check_reports_valid_invalid_forbidden_and_rate_limited(
    kube_api: client.ApiClient,
    namespace: str,
    control_plane: controlplane.ControlPlane,
    credbridge_operator: typing.Any,
) -> None:
    expected = {
        "valid": (VALID, "True", "Valid"),
        "revoked": (REVOKED, "False", "Invalid"),
        "weak": (WEAK, "False", "Forbidden"),
        "busy": (BUSY, "False", "RateLimited"),
    }
    for name, (key, _, _) in expected.items():
        create(kube_api, namespace, name, "openAIApi", {"openAIApiKey": key})
    for name, (key, state, reason) in expected.items():
        credential = objects.wait_for_verified(kube_api, namespace, name, reason)
        found = verified(credential)
        assert found["status"] == state, found
        assert "api.openai.com" in found["message"] and key not in found["message"]
        assert credential["status"]["lastVerifiedTime"]
        assert reason in event_reasons(kube_api, namespace, name)
        assert objects.ready(credential)["reason"] == "Encrypted"  # type: ignore[index]  # Ready is its own condition

    listing = control_plane.kubectl("get", "credentials", "-n", namespace)
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "VERIFIED" in listing.splitlines()[0]
    assert " Valid " in rows["valid"] and " Invalid " in rows["revoked"]

    lines = metric_lines(credbridge_operator, "credbridge_credential_verified", namespace)
    assert any('name="revoked"' in line and 'outcome="Invalid"' in line and line.endswith(" 1.0") for line in lines)
    assert any(
        'name="valid"' in line
        for line in metric_lines(
            credbridge_operator, "credbridge_credential_last_verified_timestamp_seconds", namespace
        )
    )


def test_unreachable_not_verifiable_and_not_released_send_nothing_they_should_not(
    kube_api: client.ApiClient, namespace: str, standin: vendors.VendorStandIn, credbridge_operator: typing.Any
) -> None:
    type_name = "downApi" + secrets.token_hex(3)
    objects.create_credential_type(kube_api, type_name, custom_type(type_name, "https://down.test/v1/ping"))
    try:
        objects.create_credential_when_type_known(
            kube_api, namespace, objects.credential_body("down", type_name, {"apiKey": VALID})
        )
        create(kube_api, namespace, "tavily", "tavilyApi", {"tavilyApiKey": "tvly-" + secrets.token_hex(12)})
        before = len(standin.requests)
        create(kube_api, namespace, "from-env", "openAIApi", {"openAIApiKey": "<<CRED_VERIFY_UNGRANTED>>"})

        down = verified(objects.wait_for_verified(kube_api, namespace, "down", "Unreachable"))
        assert down["status"] == "Unknown" and "down.test" in down["message"]
        tavily = verified(objects.wait_for_verified(kube_api, namespace, "tavily", "NotVerifiable"))
        assert tavily["status"] == "Unknown" and "declares no check" in tavily["message"]
        held = verified(objects.wait_for_verified(kube_api, namespace, "from-env", "NotReleased"))
        assert held["status"] == "Unknown"
        assert "CRED_VERIFY_UNGRANTED" in held["message"] and "--env-policy" in held["message"]
        assert objects.ready(objects.get_credential(kube_api, namespace, "from-env"))["status"] == "True"  # type: ignore[index]
        # The Credential whose values may not leave was never sent to the stand-in (the only vendor here).
        assert len(standin.requests) == before
    finally:
        objects.delete_credential_type(kube_api, type_name)


def test_databases_are_checked_with_a_native_login_through_the_operator(
    kube_api: client.ApiClient,
    namespace: str,
    postgres_server: local_flowise.PostgresServer,
    redis_server: databases.RedisServer,
    mariadb_server: databases.MariaDBServer,
    credbridge_operator: typing.Any,
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    pg = postgres_server
    for name, password in (("pg-right", pg.password.reveal()), ("pg-wrong", wrong)):
        url = f"postgresql://postgres:{password}@pg.test:{pg.port}/postgres"
        create(kube_api, namespace, name, "PostgresUrl", {"postgresUrl": url})
    redis_fields = {
        "redisCacheHost": "redis.test",
        "redisCachePort": str(redis_server.port),
        "redisCacheUser": "default",
        "redisCacheSslEnabled": "false",
    }
    create(
        kube_api, namespace, "redis-right", "redisCacheApi", {**redis_fields, "redisCachePwd": redis_server.password}
    )
    create(kube_api, namespace, "redis-wrong", "redisCacheApi", {**redis_fields, "redisCachePwd": wrong})

    type_name = "mariaCheck" + secrets.token_hex(3)
    objects.create_credential_type(
        kube_api,
        type_name,
        {
            "inputs": [
                {"name": "user", "label": "User", "type": "string"},
                {"name": "password", "label": "Password", "type": "password"},
            ],
            "verify": {
                "mysql": {
                    "host": "maria.test",
                    "port": str(mariadb_server.port),
                    "user": "${user}",
                    "password": "${password}",
                    "database": "checks",
                }
            },
        },
    )
    try:
        for name, password in (("maria-right", mariadb_server.password), ("maria-wrong", wrong)):
            objects.create_credential_when_type_known(
                kube_api,
                namespace,
                objects.credential_body(name, type_name, {"user": mariadb_server.user, "password": password}),
            )
        for kind in ("pg", "redis", "maria"):
            right = verified(objects.wait_for_verified(kube_api, namespace, f"{kind}-right", "Valid"))
            assert right["status"] == "True"
            bad = verified(objects.wait_for_verified(kube_api, namespace, f"{kind}-wrong", "Invalid"))
            assert bad["status"] == "False" and wrong not in bad["message"]
    finally:
        objects.delete_credential_type(kube_api, type_name)


def test_credbridge_verify_checks_now_and_prints_the_outcome(
    kube_api: client.ApiClient,
    namespace: str,
    standin: vendors.VendorStandIn,
    control_plane: controlplane.ControlPlane,
    credbridge_operator: typing.Any,
) -> None:
    create(kube_api, namespace, "openai", "openAIApi", {"openAIApiKey": VALID})
    first = objects.wait_for_verified(kube_api, namespace, "openai", "Valid")
    checks = len(standin.requests)

    code, out, err = credbridge(control_plane, "verify", "openai", "-n", namespace, "--timeout", "120")
    assert code == 0, err
    assert "Verified: True (Valid)" in out and "api.openai.com" in out
    again = objects.get_credential(kube_api, namespace, "openai")
    assert again is not None and again["status"]["lastVerifyRequest"]
    assert again["status"]["lastVerifiedTime"] >= first["status"]["lastVerifiedTime"]
    assert len(standin.requests) == checks + 1  # checked once more, now: not waiting for the interval

    objects.patch_credential(kube_api, namespace, "openai", {"spec": {"data": {"openAIApiKey": REVOKED}}})
    objects.wait_for_verified(kube_api, namespace, "openai", "Invalid")
    code, out, _ = credbridge(control_plane, "verify", "openai", "-n", namespace, "--timeout", "120")
    assert code == 1 and "Verified: False (Invalid)" in out


def test_a_mirror_shows_the_outcome_of_its_sources_one_check(
    kube_api: client.ApiClient, namespaces: Namespaces, standin: vendors.VendorStandIn, credbridge_operator: typing.Any
) -> None:
    owner = namespaces.create("owner")
    target = namespaces.create("target", annotations={names.ACCEPT_SHARES_ANNOTATION: owner})
    checks = len(standin.requests)
    create(kube_api, owner, "openai", "openAIApi", {"openAIApiKey": VALID})
    objects.create_share(kube_api, owner, objects.share_body("to-target", "openai", [target]))
    mirror = names.mirror_name(owner, "openai")
    shown = verified(objects.wait_for_verified(kube_api, target, mirror, "Valid", timeout=120))
    assert shown["status"] == "True" and f"{owner}/openai" in shown["message"]
    assert "api.openai.com" not in shown["message"]  # the source's details stay with the source
    source = objects.get_credential(kube_api, owner, "openai")
    copy = objects.get_credential(kube_api, target, mirror)
    assert source is not None and copy is not None
    assert copy["status"]["lastVerifiedTime"] == source["status"]["lastVerifiedTime"]
    assert len(standin.requests) == checks + 1  # verified once, at its source

    objects.patch_credential(kube_api, owner, "openai", {"spec": {"data": {"openAIApiKey": REVOKED}}})
    objects.wait_for_verified(kube_api, target, mirror, "Invalid", timeout=120)
    assert "Invalid" in event_reasons(kube_api, target, mirror)
    assert len(standin.requests) == checks + 2


def in_days(days: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    return verification.format_time(moment)


def test_expiry_conditions_events_and_the_transition_without_any_change(
    kube_api: client.ApiClient, namespace: str, credbridge_operator: typing.Any
) -> None:
    create(kube_api, namespace, "soon", "tavilyApi", {"tavilyApiKey": "tvly-a"}, expiresAt=in_days(3))
    create(kube_api, namespace, "gone", "tavilyApi", {"tavilyApiKey": "tvly-b"}, expiresAt=in_days(-1))
    create(kube_api, namespace, "github", "githubApi", {"accessToken": VALID})
    # Expires in 40 s with a reminder 20 s before: the operator must come back by itself, twice.
    moving = verification.format_time(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=40))
    create(kube_api, namespace, "moving", "tavilyApi", {"tavilyApiKey": "tvly-c"}, expiresAt=moving, remindBefore="20s")

    def states(name: str) -> tuple[str | None, str | None]:
        credential = objects.get_credential(kube_api, namespace, name)
        soon, expired = objects.condition(credential, "ExpiringSoon"), objects.condition(credential, "Expired")
        return (soon or {}).get("status"), (expired or {}).get("status")

    objects.wait_until(lambda: states("soon") == ("True", "False"), 90, "ExpiringSoon on 'soon'")
    objects.wait_until(lambda: states("gone") == ("False", "True"), 90, "Expired on 'gone'")
    assert "ExpiringSoon" in event_reasons(kube_api, namespace, "soon")
    assert "Expired" in event_reasons(kube_api, namespace, "gone")
    soon = objects.get_credential(kube_api, namespace, "soon")
    assert soon is not None and soon["status"]["expiresAt"]
    # Ready stays first: kubectl users and scripts read conditions[0].
    assert soon["status"]["conditions"][0]["type"] == "Ready"

    github = objects.wait_for_verified(kube_api, namespace, "github", "Valid")
    assert github["status"]["discoveredExpiresAt"] == "2031-02-03T04:05:06Z"
    assert github["status"]["expiresAt"] == "2031-02-03T04:05:06Z"
    assert states("github") == ("False", "False")

    objects.wait_until(lambda: states("moving") == ("False", "True"), 180, "'moving' to expire without any change")
    assert {"ExpiringSoon", "Expired"} <= set(event_reasons(kube_api, namespace, "moving"))
    lines = metric_lines(credbridge_operator, "credbridge_credential_expiration_timestamp_seconds", namespace)
    github_expiry = datetime.datetime(2031, 2, 3, 4, 5, 6, tzinfo=datetime.UTC).timestamp()
    assert any('name="github"' in line and float(line.rsplit(" ", 1)[1]) == github_expiry for line in lines)


def test_resolved_values_are_linted_into_a_warning_event_naming_fields_not_values(
    kube_api: client.ApiClient, namespace: str, credbridge_operator: typing.Any
) -> None:
    pasted = "sk-ant-api03-" + secrets.token_hex(16) + "\n"
    objects.create_secret(kube_api, namespace, "pasted-source", {"key": pasted})
    objects.create_credential(
        kube_api,
        namespace,
        objects.credential_body("pasted", "openAIApi", value_from={"openAIApiKey": ("pasted-source", "key")}),
    )
    objects.wait_for_verified(kube_api, namespace, "pasted")

    def lint_events() -> list[objects.Json]:
        return [e for e in objects.events_for(kube_api, namespace, "pasted") if e.get("reason") == "ValueWarning"]

    found = objects.wait_until(lint_events, 60, "the ValueWarning Event")
    message = found[0]["message"]
    assert "openAIApiKey" in message and "line break" in message and "Anthropic" in message
    assert pasted.strip() not in message and pasted.strip()[:20] not in message


# ---- informs, never blocks (unless asked) -----------------------------------------------------------


def test_bindings_and_flowise_targets_keep_working_whatever_the_outcome(
    kube_api: client.ApiClient,
    namespace: str,
    flowise_server: local_flowise.FlowiseServer,
    credbridge_operator: typing.Any,
) -> None:
    create(kube_api, namespace, "revoked", "openAIApi", {"openAIApiKey": REVOKED})
    objects.create_binding(kube_api, namespace, objects.binding_body("app", "revoked"))
    assert flowise_server.api_key is not None
    flowise_testing.create_api_key_secret(kube_api, namespace, "flowise-api-key", flowise_server.api_key.reveal())
    flowise_testing.create_target(
        kube_api, namespace, flowise_testing.target_body("flowise", flowise_server.url, "flowise-api-key")
    )
    objects.wait_for_verified(kube_api, namespace, "revoked", "Invalid")
    objects.wait_for_binding(kube_api, namespace, "app", "Rendered", timeout=60)
    secret = objects.read_secret(kube_api, namespace, "app")
    assert secret is not None and objects.decoded(secret)["openAIApiKey"] == REVOKED
    objects.wait_until(
        lambda: (
            (flowise_testing.entry(flowise_testing.get_target(kube_api, namespace, "flowise"), "revoked") or {}).get(
                "state"
            )
            == "Synced"
        ),
        90,
        "the revoked Credential to be pushed into Flowise anyway",
    )


def test_block_consumers_holds_back_an_invalid_credential_through_the_release_rule(
    kube_api: client.ApiClient, namespace: str, credbridge_operator: typing.Any
) -> None:
    create(kube_api, namespace, "openai", "openAIApi", {"openAIApiKey": VALID})
    objects.create_binding(kube_api, namespace, objects.binding_body("app", "openai"))
    objects.wait_for_binding(kube_api, namespace, "app", "Rendered", timeout=60)
    objects.wait_for_verified(kube_api, namespace, "openai", "Valid")
    credbridge_operator.restart(extra_args=("--verification-block-consumers=on",))
    try:
        objects.patch_credential(kube_api, namespace, "openai", {"spec": {"data": {"openAIApiKey": REVOKED}}})
        objects.wait_for_verified(kube_api, namespace, "openai", "Invalid")
        binding = objects.wait_for_binding(kube_api, namespace, "app", "NotVerified", timeout=90)
        assert "credbridge verify" in (objects.ready(binding) or {}).get("message", "")
        # Held back, not withdrawn: the binding's Secret stays (new content reaches consumers before its
        # check; what the flag stops is releasing a credential a check found Invalid).
        assert objects.read_secret(kube_api, namespace, "app") is not None
        objects.create_binding(kube_api, namespace, objects.binding_body("late", "openai"))
        objects.wait_for_binding(kube_api, namespace, "late", "NotVerified", timeout=90)
        assert objects.read_secret(kube_api, namespace, "late") is None

        objects.patch_credential(kube_api, namespace, "openai", {"spec": {"data": {"openAIApiKey": VALID}}})
        objects.wait_for_verified(kube_api, namespace, "openai", "Valid")
        objects.wait_for_binding(kube_api, namespace, "late", "Rendered", timeout=90)
        secret = objects.read_secret(kube_api, namespace, "late")
        assert secret is not None and objects.decoded(secret)["openAIApiKey"] == VALID
    finally:
        credbridge_operator.restart()


# ---- restarts ---------------------------------------------------------------------------------------


def test_a_restart_writes_nothing_for_credentials_in_every_verification_state(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    standin: vendors.VendorStandIn,
    audit: AuditLog,
    credbridge_operator: typing.Any,
) -> None:
    namespace = namespaces.create("verify-restart")
    target = namespaces.create("verify-mirror", annotations={names.ACCEPT_SHARES_ANNOTATION: namespace})
    states = {
        "valid": ("openAIApi", {"openAIApiKey": VALID}, "Valid"),
        "revoked": ("openAIApi", {"openAIApiKey": REVOKED}, "Invalid"),
        "busy": ("openAIApi", {"openAIApiKey": BUSY}, "RateLimited"),
        "unchecked": ("tavilyApi", {"tavilyApiKey": "tvly-x"}, "NotVerifiable"),
        "held": ("openAIApi", {"openAIApiKey": "<<CRED_VERIFY_UNGRANTED>>"}, "NotReleased"),
    }
    for name, (type_name, data, _) in states.items():
        create(kube_api, namespace, name, type_name, data)
    create(kube_api, namespace, "expiring", "tavilyApi", {"tavilyApiKey": "tvly-y"}, expiresAt=in_days(2))
    objects.create_share(kube_api, namespace, objects.share_body("share", "valid", [target]))
    for name, (_, _, reason) in states.items():
        objects.wait_for_verified(kube_api, namespace, name, reason)
    objects.wait_for_verified(kube_api, target, names.mirror_name(namespace, "valid"), "Valid", timeout=120)
    objects.wait_until(
        lambda: objects.condition(objects.get_credential(kube_api, namespace, "expiring"), "ExpiringSoon"),
        60,
        "ExpiringSoon",
    )
    time.sleep(3)  # Events and the usage of the first passes land

    checks = len(standin.requests)
    mark = audit.mark()
    restarted = credbridge_operator.restart()

    def looked_at_everything() -> bool:
        # The restarted operator queues every Credential of the cluster once; then its queue runs dry.
        reconciled, depth = 0.0, None
        for line in restarted.metrics().splitlines():
            if line.startswith("credbridge_reconciles_total{") and 'kind="verification"' in line:
                reconciled += float(line.rsplit(" ", 1)[1])
            if line.startswith('credbridge_workqueue_depth{queue="verification"}'):
                depth = float(line.rsplit(" ", 1)[1])
        return reconciled > 0 and depth == 0

    objects.wait_until(looked_at_everything, 90, "the verification passes after the restart")
    time.sleep(5)
    writes = [
        (w["verb"], w["objectRef"].get("resource"), w["objectRef"].get("subresource"), w["objectRef"].get("name"))
        for ns in (namespace, target)
        for w in audit.writes(since=mark, user=OPERATOR_USER, namespace=ns)
    ]
    assert writes == []
    assert len(standin.requests) == checks  # nothing was due, nothing was sent
    # The gauges were filled again from what the status says.
    lines = metric_lines(credbridge_operator, "credbridge_credential_verified", namespace)
    assert any('name="revoked"' in line and 'outcome="Invalid"' in line for line in lines)
