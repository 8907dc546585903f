"""Zero-leak guarantee: canary values planted through the environment, Secret references and literals
never show up in operator logs (debug level, text and JSON), metrics, Events, statuses, labels,
annotations, admission responses, CredentialBinding statuses, rollout annotations, refusals of the
workload read endpoint or the audit log — only inside ciphertext, the data of CredentialBinding
Secrets, the body of a read the caller was allowed to make, and the real Flowise they are pushed to
(whose FlowiseTarget status and Events stay clean, through pushes and a revert), and the checks of
verification: canaries sent to the vendor stand-in (valid and refused), a Redis login with a wrong
password, a check refused by the egress policy and lint findings about resolved values leave no
trace in the Verified conditions, Events, metrics or logs."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
from kubernetes import client

from credbridge import tls
from credbridge.core import names
from credbridge.core.flowise import target as flowise_target
from credbridge.kube import keyrings
from credbridge.local import controlplane, databases
from credbridge.local import flowise as local_flowise
from credbridge.testing import flowise as flowise_testing
from credbridge.testing import objects, vendors, workloads
from credbridge.testing.fixtures import Namespaces

pytestmark = pytest.mark.cluster

ENV_CANARY = "canaryENV" + secrets.token_hex(12)
REF_CANARY = "canaryREF" + secrets.token_hex(12)
REF_CANARY_2 = "canaryREFTWO" + secrets.token_hex(12)
FORBIDDEN_CANARY = "canaryFORBIDDEN" + secrets.token_hex(12)
SETTING_CANARY = "canarySETTING" + secrets.token_hex(12)
LITERAL_CANARY = "canaryLITERAL" + secrets.token_hex(12)
VERIFY_CANARY = "canaryVERIFY" + secrets.token_hex(12)
SECRET_CANARIES = (ENV_CANARY, REF_CANARY, REF_CANARY_2, FORBIDDEN_CANARY, SETTING_CANARY, VERIFY_CANARY)


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {
        "CRED_CANARY": ENV_CANARY,
        "OTHER_CANARY": FORBIDDEN_CANARY,
        "CREDBRIDGE_CANARY": SETTING_CANARY,
        "CRED_BIG": ENV_CANARY * 2100,
        "CRED_UNGRANTED": ENV_CANARY,
    }


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> workloads.EndpointCertificate:
    return workloads.endpoint_certificate(tmp_path_factory.mktemp("endpoint-cert"))


@pytest.fixture(scope="module")
def operator_args(
    endpoint_certificate: workloads.EndpointCertificate,
    vendor_ca: tls.Issued,
    standin: vendors.VendorStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    # CRED_CANARY is granted to the test namespaces, so CredentialBindings may render it and workloads read it;
    # CRED_UNGRANTED is allowed but granted nowhere, so reading it exercises the tenancy refusal.
    # Checks of the vendors' hosts go to the stand-in; redis.test is the local Redis.
    return [
        *vendors.resolve_args(standin),
        "--verification-resolve=redis.test=127.0.0.1",
        "--verification-allow-host=redis.test",
        "--verification-allow-network=127.0.0.1/32",
        f"--verification-ca-file={vendors.write_ca(vendor_ca, tmp_path_factory.mktemp('leak-ca'))}",
        "--verification-debounce=1",
        "--log-format",
        "text",
        *endpoint_certificate.args,
        "--env-policy",
        "CRED_CANARY=leak-*",
        "--read-burst",
        "30",
        "--read-rate",
        "1",
        "--rollout-debounce",
        "1",
    ]


def _workload_reads(
    api: client.ApiClient, port: int, ca_pem: str, reads: dict[str, list[str]], token: str
) -> tuple[list[str], list[str]]:
    """Reads every object named in `reads` (namespace → names; `credentialbindings/NAME` for a binding, else a
    Credential) with `token`, plus refused reads and a burst over the rate limit; returns the refusal bodies
    and the values of the allowed reads."""
    reader = workloads.EndpointClient(port, ca_pem)
    refusals: list[str] = []
    allowed: list[str] = []
    try:
        for namespace, names_ in reads.items():
            for entry in names_:
                plural, _, name = entry.rpartition("/")
                response = reader.read(namespace, plural or names.CREDENTIAL_PLURAL, name, token)
                if response.status == 200:
                    allowed.extend(response.json["data"].values())
                else:
                    refusals.append(f"{response.status} {response.headers} {response.body.decode()}")
        namespace, name = next((ns, n[0]) for ns, n in reads.items() if n)
        for bad in (None, "not-a-token"):
            response = reader.read(namespace, names.CREDENTIAL_PLURAL, name, bad)
            refusals.append(f"{response.status} {response.headers} {response.body.decode()}")
        for _ in range(40):  # over --read-burst: some are refused with 429
            response = reader.read(namespace, names.CREDENTIAL_PLURAL, name, token)
            if response.status != 200:
                refusals.append(f"{response.status} {response.headers} {response.body.decode()}")
    finally:
        reader.close()
    return refusals, allowed


def _expect_refusal(call: Any) -> str:
    with pytest.raises(client.ApiException) as refused:
        call()
    return str(refused.value.body) + str(refused.value)


def test_no_canary_leaves_ciphertext(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    flowise_server: local_flowise.FlowiseServer,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
    standin: vendors.VendorStandIn,
    redis_server: databases.RedisServer,
) -> None:
    owner = namespaces.create("leak-a")
    target = namespaces.create("leak-b", annotations={names.ACCEPT_SHARES_ANNOTATION: owner})
    objects.create_secret(kube_api, owner, "ref", {"password": REF_CANARY})
    create = lambda body: objects.create_credential(kube_api, owner, body)  # noqa: E731
    good = {
        "env": objects.credential_body("env", "openAIApi", {"openAIApiKey": "<<CRED_CANARY>>"}),
        "ref": objects.credential_body(
            "ref-cred", "PostgresApi", {"user": "u"}, value_from={"password": ("ref", "password")}
        ),
        "embedded": objects.credential_body(
            "embedded", "PostgresUrl", {"postgresUrl": "postgres://u:<<CRED_CANARY>>@db/app"}
        ),
        "literal": objects.credential_body("literal", "openAIApi", {"openAIApiKey": LITERAL_CANARY}),
        "ungranted": objects.credential_body("ungranted", "openAIApi", {"openAIApiKey": "<<CRED_UNGRANTED>>"}),
    }
    bad = {
        "forbidden": objects.credential_body("forbidden", "openAIApi", {"openAIApiKey": "<<OTHER_CANARY>>"}),
        "setting": objects.credential_body("setting", "openAIApi", {"openAIApiKey": "<<CREDBRIDGE_CANARY>>"}),
        "bad-number": objects.credential_body(
            "bad-number",
            "redisCacheApi",
            {
                "redisCacheHost": "h",
                "redisCacheUser": "u",
                "redisCachePwd": "<<CRED_CANARY>>",
                "redisCachePort": "<<CRED_CANARY>>",
                "redisCacheSslEnabled": "true",
            },
        ),
        "bad-url": objects.credential_body("bad-url", "PostgresUrl", {"postgresUrl": "<<CRED_CANARY>>"}),
        "oversized": objects.credential_body("oversized", "openAIApi", {"openAIApiKey": "<<CRED_BIG>>"}),
        "missing-key": objects.credential_body(
            "missing-key", "PostgresApi", {"user": "u"}, value_from={"password": ("ref", "nope")}
        ),
        "duplicate": objects.credential_body("duplicate", "openAIApi", {"openAIApiKey": "<<CRED_CANARY>>"}),
    }
    for body in good.values():
        create(body)
    for name in ("env", "ref-cred", "embedded", "literal", "ungranted"):
        objects.wait_for_reason(kube_api, owner, name, "Encrypted")
    env_id = objects.get_credential(kube_api, owner, "env")["status"]["id"]  # type: ignore[index]
    bad["duplicate"]["spec"]["id"] = env_id
    for body in bad.values():
        create(body)
    for name, reason in [
        ("forbidden", "EnvReferenceForbidden"),
        ("setting", "EnvReferenceForbidden"),
        ("bad-number", "ValidationFailed"),
        ("bad-url", "ValidationFailed"),
        ("oversized", "ValidationFailed"),
        ("missing-key", "SecretReferenceMissing"),
        ("duplicate", "DuplicateId"),
    ]:
        objects.wait_for_reason(kube_api, owner, name, reason)

    # Verification: canaries checked at the stand-in (accepted, refused), a database login refused, a check the
    # egress policy refuses, and lint findings about resolved values.
    objects.create_secret(kube_api, owner, "pasted", {"key": f"sk-ant-api03-{VERIFY_CANARY}\n"})
    checked = {
        "verify-valid": (
            objects.credential_body("verify-valid", "openAIApi", {"openAIApiKey": vendors.VALID_KEY + VERIFY_CANARY}),
            "Valid",
        ),
        "verify-invalid": (
            objects.credential_body("verify-invalid", "githubApi", {"accessToken": VERIFY_CANARY}),
            "Invalid",
        ),
        "verify-redis": (
            objects.credential_body(
                "verify-redis",
                "redisCacheApi",
                {
                    "redisCacheHost": "redis.test",
                    "redisCachePort": str(redis_server.port),
                    "redisCacheUser": "default",
                    "redisCachePwd": VERIFY_CANARY,
                    "redisCacheSslEnabled": "false",
                },
            ),
            "Invalid",
        ),
        "verify-blocked": (
            objects.credential_body(
                "verify-blocked",
                "redisCacheApi",
                {
                    "redisCacheHost": "elsewhere.test",
                    "redisCacheUser": "default",
                    "redisCachePwd": VERIFY_CANARY,
                    "redisCachePort": "6379",
                    "redisCacheSslEnabled": "false",
                },
            ),
            "VerificationBlocked",
        ),
        "verify-pasted": (
            objects.credential_body("verify-pasted", "openAIApi", value_from={"openAIApiKey": ("pasted", "key")}),
            "NotVerifiable",  # a line break cannot go into an HTTP header: said, not sent
        ),
    }
    for body, _ in checked.values():
        create(body)
    for name, (_, reason) in checked.items():
        objects.wait_for_verified(kube_api, owner, name, reason)
    objects.wait_for_verified(kube_api, owner, "env", "Invalid")  # the environment canary went to the stand-in
    objects.wait_until(
        lambda: any(e.get("reason") == "ValueWarning" for e in objects.events_for(kube_api, owner, "verify-pasted")),
        60,
        "the lint finding about the resolved value",
    )
    assert any(request.path == "/user" for request in standin.requests)

    # CredentialBindings render values into plain Secrets, roll a Deployment out, and fail.
    client.AppsV1Api(kube_api).create_namespaced_deployment(owner, objects.deployment_body("app"))
    objects.create_binding(
        kube_api,
        owner,
        objects.binding_body(
            "env-binding", "env", template={"KEY": "${openAIApiKey}", "URL": "https://x:${openAIApiKey|urlencode}@h"}
        ),
    )
    objects.create_binding(
        kube_api,
        owner,
        objects.binding_body(
            "ref-binding", "ref-cred", template={"PGPASSWORD": "${password}"}, rollout=[("Deployment", "app")]
        ),
    )
    objects.create_binding(kube_api, owner, objects.binding_body("not-granted", "forbidden"))
    objects.create_binding(kube_api, owner, objects.binding_body("not-ready", "bad-url"))
    objects.create_binding(kube_api, owner, objects.binding_body("literal-binding", "literal"))
    for name in ("env-binding", "ref-binding", "literal-binding"):
        objects.wait_for_binding(kube_api, owner, name, "Rendered")
    objects.wait_for_binding(kube_api, owner, "not-granted", "EnvNotGranted")
    objects.wait_for_binding(kube_api, owner, "not-ready", "CredentialNotReady")
    client.CoreV1Api(kube_api).patch_namespaced_secret("ref", owner, {"stringData": {"password": REF_CANARY_2}})
    objects.wait_until(
        lambda: objects.pod_template_annotations(kube_api, owner, "app").get(names.RESTARTED_AT_ANNOTATION),
        what="the rollout",
    )
    assert objects.decoded(objects.read_secret(kube_api, owner, "ref-binding") or {}) == {"PGPASSWORD": REF_CANARY_2}
    assert objects.decoded(objects.read_secret(kube_api, owner, "env-binding") or {})["KEY"] == ENV_CANARY

    # Admission refusals quote fields, never values.
    refusals = [
        _expect_refusal(
            lambda: create(
                objects.credential_body(
                    "refused", "openAIApi", {"openAIApiKey": "<<CRED_CANARY>>", "extra": LITERAL_CANARY}
                )
            )
        ),
        _expect_refusal(
            lambda: create(objects.credential_body("refused2", "PostgresUrl", {"postgresUrl": LITERAL_CANARY}))
        ),
    ]

    # Flowise: push the environment, Secret-referenced and literal canaries and revert an edit made there.
    assert flowise_server.api_key is not None and flowise_server.admin is not None
    flowise_testing.create_api_key_secret(kube_api, owner, "flowise-key", flowise_server.api_key.reveal())
    flowise_testing.create_target(
        kube_api, owner, flowise_testing.target_body("flowise", flowise_server.url, "flowise-key")
    )
    pushed = objects.wait_until(
        lambda: flowise_testing.entry(flowise_testing.get_target(kube_api, owner, "flowise"), "ref-cred"),
        60,
        "the Secret-referenced canary to reach Flowise",
    )
    objects.wait_until(
        lambda: (
            (flowise_testing.entry(flowise_testing.get_target(kube_api, owner, "flowise"), "ref-cred") or {}).get(
                "state"
            )
            == "Synced"
        ),
        60,
        "the push",
    )
    flowise_server.admin.call(
        "PUT", f"/credentials/{pushed['id']}", {"plainDataObj": {"password": "edited-in-ui"}, "name": "edited"}
    )
    objects.wait_until(
        lambda: any(e.get("reason") == "RevertedFlowiseEdit" for e in objects.events_for(kube_api, owner, "flowise")),
        60,
        "the revert of the edit made in Flowise",
    )
    # CRED_CANARY is granted to this namespace (--env-policy), so the environment canary went to Flowise too.
    assert (flowise_testing.entry(flowise_testing.get_target(kube_api, owner, "flowise"), "env") or {}).get(
        "state"
    ) == "Synced"

    # Sharing, tampering, rotation and a restart exercise every other code path that handles values.
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, owner, names.CREDENTIAL_SHARE_PLURAL, objects.share_body("share", "env", [target])
    )
    objects.wait_for_reason(kube_api, target, f"{owner}.env", "Encrypted")
    client.CoreV1Api(kube_api).patch_namespaced_secret(
        "env", owner, {"data": {"encryptedData": base64.b64encode(b"cb1.00000000.AAAA").decode()}}
    )
    objects.wait_until(
        lambda: (
            objects.decoded(objects.read_secret(kube_api, owner, "env") or {})
            .get("encryptedData", "")
            .startswith("cb1.")
            and "00000000" not in objects.decoded(objects.read_secret(kube_api, owner, "env") or {})["encryptedData"]
        ),
        what="tamper repair",
    )
    rotated = keyrings.rotate(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    objects.wait_until(
        lambda: (
            (objects.get_credential(kube_api, target, f"{owner}.env") or {}).get("status", {}).get("keyId")
            == rotated.active_id
        ),
        what="rotation to reach the mirror",
    )

    # Workload reads of every Credential, allowed and refused, in both log formats.
    for account_namespace in (owner, target):
        workloads.create_service_account(kube_api, account_namespace, "reader")
        workloads.grant_use(kube_api, account_namespace, "reader", names.CREDENTIAL_PLURAL, None)
        workloads.grant_use(kube_api, account_namespace, "reader", names.CREDENTIAL_BINDING_PLURAL, None)
    bindings_read = ("env-binding", "ref-binding", "not-granted", "not-ready", "literal-binding", "ghost")
    reads = {
        owner: [
            *(body["metadata"]["name"] for body in [*good.values(), *bad.values()]),
            "ghost",
            *(f"{names.CREDENTIAL_BINDING_PLURAL}/{name}" for name in bindings_read),
        ],
        target: [f"{owner}.env"],
    }
    refusals_seen: list[str] = []
    values_read: list[str] = []

    def read_everything() -> None:
        for account_namespace in (owner, target):
            token = workloads.request_token(kube_api, account_namespace, "reader")
            refused, allowed = _workload_reads(
                kube_api,
                credbridge_operator.process.endpoint_port,
                endpoint_certificate.ca_pem,
                {
                    account_namespace: reads[account_namespace],
                    (target if account_namespace == owner else owner): ["env"],
                },
                token,
            )
            refusals_seen.extend(refused)
            values_read.extend(allowed)

    read_everything()

    # A refused keyring change (new bytes under the active key id) is reported without key material.
    core_api = client.CoreV1Api(kube_api)
    saved = core_api.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, "credbridge-system")
    swapped_key = secrets.token_bytes(32)
    key_canaries = [
        text
        for key in [swapped_key, *(base64.b64decode(value) for value in saved.data.values())]
        for text in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("="), key.hex())
    ]
    broken = core_api.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, "credbridge-system")
    broken.data[rotated.active_id] = base64.b64encode(swapped_key).decode()
    core_api.replace_namespaced_secret(names.DEFAULT_KEYRING_SECRET, "credbridge-system", broken)
    objects.wait_until(
        lambda: any(
            event.get("reason") == "KeyringRejected"
            for event in objects.events_for(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET)
        ),
        what="the keyring change to be refused",
    )
    restored = core_api.read_namespaced_secret(names.DEFAULT_KEYRING_SECRET, "credbridge-system")
    restored.data = saved.data
    restored.metadata.annotations = saved.metadata.annotations
    core_api.replace_namespaced_secret(names.DEFAULT_KEYRING_SECRET, "credbridge-system", restored)

    credbridge_operator.restart(extra_args=("--log-format", "json"))  # the scan covers both formats
    objects.wait_until(lambda: 'result="unchanged"' in credbridge_operator.process.metrics(), what="resync")
    read_everything()
    metrics_text = credbridge_operator.process.metrics()

    # --- the scan -------------------------------------------------------------------------
    haystacks: dict[str, str] = {
        "operator logs": credbridge_operator.logs(),
        "admission refusals": "\n".join(refusals),
        "operator metrics": metrics_text,
        "workload read refusals": "\n".join(refusals_seen),
    }
    custom, core = client.CustomObjectsApi(kube_api), client.CoreV1Api(kube_api)
    for plural in (
        names.CREDENTIAL_PLURAL,
        names.CREDENTIAL_SHARE_PLURAL,
        names.CREDENTIAL_BINDING_PLURAL,
        flowise_target.PLURAL,
    ):
        for item in custom.list_cluster_custom_object(names.GROUP, names.VERSION, plural)["items"]:
            metadata = item["metadata"]
            where = f"{plural} {metadata['namespace']}/{metadata['name']}"
            haystacks[f"{where} status"] = json.dumps(item.get("status"))
            haystacks[f"{where} labels+annotations"] = json.dumps([metadata.get("labels"), metadata.get("annotations")])
    for secret in core.list_secret_for_all_namespaces().items:
        where = f"secret {secret.metadata.namespace}/{secret.metadata.name}"
        haystacks[f"{where} labels+annotations"] = json.dumps([secret.metadata.labels, secret.metadata.annotations])
        if secret.type == names.SECRET_TYPE:
            visible = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items() if k != "encryptedData"}
            haystacks[f"{where} plain data"] = json.dumps(visible)
    for deployment in client.AppsV1Api(kube_api).list_deployment_for_all_namespaces().items:
        where = f"deployment {deployment.metadata.namespace}/{deployment.metadata.name}"
        haystacks[f"{where} annotations"] = json.dumps(
            [deployment.metadata.annotations, deployment.spec.template.metadata.annotations]
        )
    for event in core.list_event_for_all_namespaces().items:
        haystacks[f"event {event.metadata.namespace}/{event.metadata.name}"] = f"{event.reason} {event.message}"
    assert control_plane.audit_log is not None
    haystacks["audit log"] = control_plane.audit_log.read_text()

    assert len(haystacks) > 40, "the scan should cover many objects"
    leaks = [(where, canary[:12]) for where, text in haystacks.items() for canary in SECRET_CANARIES if canary in text]
    assert leaks == [], f"secret values leaked into: {leaks}"
    literal_leaks = [where for where, text in haystacks.items() if LITERAL_CANARY in text]
    assert literal_leaks == [], f"literal values leaked into: {literal_leaks}"
    key_leaks = [where for where, text in haystacks.items() for key in key_canaries if key in text]
    assert key_leaks == [], f"key material leaked into: {key_leaks}"
    # And the scan is not vacuous: the operator did log at debug level and did post Events.
    assert "DEBUG" in haystacks["operator logs"]
    assert '"level": "debug"' in haystacks["operator logs"]
    assert any(key.startswith("event ") and "EnvReferenceForbidden" in text for key, text in haystacks.items())
    # The workload reads ran every path: values were served, and refused for each reason.
    assert ENV_CANARY in values_read and REF_CANARY_2 in values_read and LITERAL_CANARY in values_read
    read_results = {
        line.split('result="')[1].split('"')[0]
        for line in metrics_text.splitlines()
        if line.startswith("credbridge_workload_reads_total{")
    }
    assert {"ok", "unauthenticated", "forbidden", "rate_limited", "not_ready", "not_plaintext"} <= read_results
    assert "workload read of credentials/ungranted" in haystacks["operator logs"]
    # Verification ran every kind of check it has, and its outputs were scanned.
    assert any(
        "credbridge_credential_verified{" in line and 'outcome="Valid"' in line for line in metrics_text.splitlines()
    )
    assert any(key.startswith("event ") and "ValueWarning" in text for key, text in haystacks.items())
    assert "checked (" in haystacks["operator logs"]
    assert "workload read of credentialbindings/env-binding" in haystacks["operator logs"]
    assert f"https://x:{ENV_CANARY}@h" in values_read  # the binding's rendered template was served
