"""Zero-leak guarantee: canary values planted through the environment, Secret references and literals
never show up in operator logs (debug level, text and JSON), metrics, Events, statuses, labels,
annotations, admission responses, CredentialBinding statuses, rollout annotations, refusals of the
workload read endpoint or the audit log — only inside ciphertext, the data of CredentialBinding
Secrets, the body of a read the caller was allowed to make, and the real Flowise they are pushed to
(whose FlowiseTarget status and Events stay clean, through pushes and a revert). OAuth2 tokens from a
real provider stay in their token Secret and the ciphertext, whatever `credbridge oauth2 authorize`
prints. Sealed values too: a canary sealed with `credbridge seal`, opened, misplaced, corrupted and
re-sealed after a sealing key rotation never shows in any of these, nor in what the CLI prints. And the
checks of verification: canaries sent to the vendor stand-in (valid and refused), a Redis login with a
wrong password, a check refused by the egress policy and lint findings about resolved values leave no
trace in the Verified conditions, Events, metrics or logs."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
from kubernetes import client

from credbridge import tls
from credbridge.core import names, redaction
from credbridge.core.flowise import target as flowise_target
from credbridge.kube import keyrings
from credbridge.local import controlplane, databases, oauth2provider
from credbridge.local import flowise as local_flowise
from credbridge.testing import flowise as flowise_testing
from credbridge.testing import oauth2 as oauth2_testing
from credbridge.testing import objects, vendors, workloads
from credbridge.testing import sealing as sealing_testing
from credbridge.testing.fixtures import Namespaces

pytestmark = pytest.mark.cluster

ENV_CANARY = "canaryENV" + secrets.token_hex(12)
REF_CANARY = "canaryREF" + secrets.token_hex(12)
REF_CANARY_2 = "canaryREFTWO" + secrets.token_hex(12)
FORBIDDEN_CANARY = "canaryFORBIDDEN" + secrets.token_hex(12)
SETTING_CANARY = "canarySETTING" + secrets.token_hex(12)
LITERAL_CANARY = "canaryLITERAL" + secrets.token_hex(12)
SEALED_CANARY = "canarySEALED" + secrets.token_hex(12)
VERIFY_CANARY = "canaryVERIFY" + secrets.token_hex(12)
SECRET_CANARIES = (
    ENV_CANARY,
    REF_CANARY,
    REF_CANARY_2,
    FORBIDDEN_CANARY,
    SETTING_CANARY,
    SEALED_CANARY,
    VERIFY_CANARY,
)


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
    oauth2_provider_process: oauth2provider.OAuth2Provider,
    vendor_ca: tls.Issued,
    standin: vendors.VendorStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    # CRED_CANARY is granted to the test namespaces, so CredentialBindings may render it and workloads read it;
    # CRED_UNGRANTED is allowed but granted nowhere, so reading it exercises the tenancy refusal. The OAuth2
    # refresh reaches the test provider. Checks of the vendors' hosts go to the stand-in; redis.test is the
    # local Redis.
    return [
        *oauth2_testing.refresh_args(oauth2_provider_process),
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


def _cluster_haystacks(kube_api: client.ApiClient, control_plane: controlplane.ControlPlane) -> dict[str, str]:
    """Everything the cluster shows besides Secret data: statuses, labels and annotations of credbridge's
    objects and of every Secret, the readable keys of managed Secrets, Deployment annotations, Events
    and the audit log, by where it was found."""
    haystacks: dict[str, str] = {}
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
    return haystacks


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
    # A value sealed with the CLI (stdin), as a user would; then opened, misplaced and corrupted.
    sealed_cli = sealing_testing.run_cli(
        control_plane.kubeconfig,
        "seal", "-n", owner, "--name", "sealed", "--type", "openAIApi", "--field", "openAIApiKey",
        stdin=SEALED_CANARY,
    )  # fmt: skip
    assert sealed_cli.returncode == 0, sealed_cli.stderr
    sealed_token = sealed_cli.stdout.strip().partition(": ")[2]
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
        "sealed-broken": objects.credential_body("sealed-broken", "openAIApi"),
    }
    bad["sealed-broken"]["spec"]["sealedData"] = {"openAIApiKey": sealed_token.replace("/sealed/", "/sealed-broken/")}
    good["sealed"] = objects.credential_body("sealed", "openAIApi")
    good["sealed"]["spec"]["sealedData"] = {"openAIApiKey": sealed_token}
    for body in good.values():
        create(body)
    for name in ("env", "ref-cred", "embedded", "literal", "ungranted", "sealed"):
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
        ("sealed-broken", "SealedValueInvalid"),
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
        # A sealed value applied to another Credential is refused by the webhook (its scope is public).
        _expect_refusal(
            lambda: create(
                {
                    **objects.credential_body("sealed-moved", "openAIApi"),
                    "spec": {"type": "openAIApi", "sealedData": {"openAIApiKey": sealed_token}},
                }
            )
        ),
    ]
    assert "was sealed for Credential" in refusals[-1]

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
    # A sealing key rotation: the operator re-seals the sealed canary into status.resealedData (ciphertext).
    keyrings.rotate_sealing(kube_api, "credbridge-system", names.DEFAULT_KEYRING_SECRET, secrets.token_bytes)
    objects.wait_until(
        lambda: ((objects.get_credential(kube_api, owner, "sealed") or {}).get("status") or {}).get("resealedData"),
        what="the sealed canary to be re-sealed into the status",
    )
    resealed = sealing_testing.run_cli(control_plane.kubeconfig, "keys", "list", "--sealing")
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
        "credbridge seal output": sealed_cli.stdout + sealed_cli.stderr + resealed.stdout + resealed.stderr,
    }
    haystacks.update(_cluster_haystacks(kube_api, control_plane))

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
    assert SEALED_CANARY in values_read  # the sealed value was opened and served to an allowed read
    assert any(key.startswith("event ") and "SealedValueInvalid" in text for key, text in haystacks.items())
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


def test_no_oauth2_token_leaves_its_secrets(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    oauth2_provider: oauth2provider.OAuth2Provider,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    """Refresh and access tokens from a real provider reach the token Secret and the ciphertext only: not
    the output of `credbridge oauth2 authorize` (a success and each refusal), the operator's logs, statuses,
    Events, labels, annotations or the audit log."""
    namespace = namespaces.create("leak-oauth2")
    cred_type = oauth2_testing.oauth2_type(f"leakOAuth2{secrets.token_hex(4)}", "authorization_code")
    oauth2_testing.create_oauth2_type(kube_api, cred_type)
    try:
        outputs: list[str] = []
        for client_id in ("rotating", "fixed"):
            credential, client_secret = oauth2_testing.credential_objects(
                oauth2_provider, client_id, name=client_id, type_name=cred_type.name
            )
            client.CoreV1Api(kube_api).create_namespaced_secret(namespace, client_secret)
            objects.create_credential(kube_api, namespace, credential)
            command = oauth2_testing.AuthorizeCommand(
                control_plane.kubeconfig, namespace, client_id, "--no-browser", ca_file=oauth2_provider.ca_file
            )
            code, out, err = command.finish(oauth2_provider.sign_in_and_consent(command.authorization_url()))
            assert code == 0, err
            outputs.append(out + err)
        # Refusals: a redirect of another authorization, and a second run whose code is replayed.
        mismatch = oauth2_testing.AuthorizeCommand(
            control_plane.kubeconfig, namespace, "fixed", "--no-browser", ca_file=oauth2_provider.ca_file
        )
        redirect = oauth2_provider.sign_in_and_consent(mismatch.authorization_url())
        _, out, err = mismatch.finish(redirect.replace("state=", "state=x"))
        outputs.append(out + err)
        replay = oauth2_testing.AuthorizeCommand(
            control_plane.kubeconfig, namespace, "fixed", "--no-browser", ca_file=oauth2_provider.ca_file
        )
        replay.authorization_url()
        _, out, err = replay.finish(redirect)  # a used code of another flow: refused by state first
        outputs.append(out + err)

        tokens: list[str] = []
        for client_id in ("rotating", "fixed"):
            stored = objects.decoded(objects.read_secret(kube_api, namespace, f"{client_id}-tokens") or {})
            tokens += [stored["refresh_token"], stored["access_token"]]
            objects.wait_until(
                lambda client_id=client_id: (
                    "refresh_token"
                    in ((objects.get_credential(kube_api, namespace, client_id) or {}).get("status") or {}).get(
                        "fields", []
                    )
                ),
                60,
                "the tokens in the Credential's ciphertext",
            )
            assert objects.open_managed_secret(kube_api, namespace, client_id)["access_token"] in tokens
        # A binding renders the access token; the operator refreshes both Credentials (a rotated refresh
        # token for one), then the provider refuses the other's refresh token: every outcome is logged
        # (at debug level), posted as Events and written to statuses.
        binding = {
            "apiVersion": names.API_VERSION,
            "kind": names.CREDENTIAL_BINDING_KIND,
            "metadata": {"name": "mail-token", "labels": dict(objects.TEST_LABEL)},
            "spec": {
                "credential": "rotating",
                "template": {"TOKEN": "Bearer ${access_token}"},
                "secret": {"name": "t"},
            },
        }
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CREDENTIAL_BINDING_PLURAL, binding
        )
        firsts = {"rotating": tokens[1], "fixed": tokens[3]}  # their first access tokens
        for client_id, first in firsts.items():

            def refreshed(client_id: str = client_id, first: str = first) -> dict[str, str] | None:
                now = objects.decoded(objects.read_secret(kube_api, namespace, f"{client_id}-tokens") or {})
                return now if now.get("access_token") not in (None, first) else None

            now = objects.wait_until(refreshed, 180, f"a refresh of {client_id}")
            tokens += [now["refresh_token"], now["access_token"]]
        oauth2_provider.revoke(redaction.Redacted(tokens[-2]), "fixed")
        oauth2_testing.wait_for_oauth2(
            kube_api,
            namespace,
            "fixed",
            lambda condition, block: condition.get("reason") == "ReauthorizationRequired",
            what="the refused refresh token",
        )

        def rendered_current_token() -> str | None:
            # "rotating" keeps refreshing (30 s tokens): the binding must hold the token its Secret holds now.
            current = objects.decoded(objects.read_secret(kube_api, namespace, "rotating-tokens") or {})
            shown = objects.decoded(objects.read_secret(kube_api, namespace, "t") or {}).get("TOKEN", "")[7:]
            return shown if shown and shown == current.get("access_token") else None

        tokens.append(
            objects.wait_until(rendered_current_token, 120, "the current access token rendered by the binding")
        )
        current = objects.decoded(objects.read_secret(kube_api, namespace, "rotating-tokens") or {})
        tokens += [current[name] for name in ("access_token", "refresh_token") if current.get(name) not in tokens]
        haystacks = {
            "credbridge oauth2 authorize output": "\n".join(outputs),
            "operator logs": credbridge_operator.logs(),
        }
        haystacks.update(_cluster_haystacks(kube_api, control_plane))
        leaks = [(where, token[:6]) for where, text in haystacks.items() for token in tokens if token in text]
        assert leaks == [], f"OAuth2 tokens leaked into: {leaks}"
        # Not vacuous: the outputs hold what was done and refused, the scan saw the Credentials.
        assert "Stored in Secret" in haystacks["credbridge oauth2 authorize output"]
        assert "state does not match" in haystacks["credbridge oauth2 authorize output"]
        assert f"{names.CREDENTIAL_PLURAL} {namespace}/rotating status" in haystacks
        assert "ReauthorizationRequired" in haystacks[f"{names.CREDENTIAL_PLURAL} {namespace}/fixed status"]
        assert "new access token from 127.0.0.1" in haystacks["operator logs"]
    finally:
        oauth2_testing.delete_oauth2_type(kube_api, cred_type)
