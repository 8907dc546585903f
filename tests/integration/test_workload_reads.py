"""Workload reads on the real control plane: a ServiceAccount token (TokenRequest, audience
credbridge.io), real TokenReview and SubjectAccessReview, the operator's TLS endpoint — and every
way a caller without the right permission or token is refused, each with a clear message."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import secrets
import stat
import subprocess
import sys
import time
import urllib.request

import pytest
from kubernetes import client

from credbridge.core import names
from credbridge.local import controlplane
from credbridge.testing import objects, workloads
from credbridge.testing.fixtures import Namespaces, kubectl_run, wait_for

pytestmark = pytest.mark.cluster

OPENAI_KEY = "sk-workload-" + secrets.token_hex(16)
SHARED_KEY = "sk-workload-shared-" + secrets.token_hex(16)
TOKEN_REVIEW_TTL = 3.0
READ_RATE, READ_BURST = 20.0, 40


@pytest.fixture(scope="module")
def endpoint_certificate(tmp_path_factory: pytest.TempPathFactory) -> workloads.EndpointCertificate:
    return workloads.endpoint_certificate(tmp_path_factory.mktemp("endpoint-cert"))


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {"CRED_WL_OPENAI": OPENAI_KEY, "CRED_SHARED_OPENAI": SHARED_KEY}


@pytest.fixture(scope="module")
def operator_args(endpoint_certificate: workloads.EndpointCertificate) -> list[str]:
    return [
        *endpoint_certificate.args,
        "--env-policy",
        "CRED_WL_*=wl-*",
        "--token-review-ttl",
        str(TOKEN_REVIEW_TTL),
        "--read-rate",
        str(READ_RATE),
        "--read-burst",
        str(READ_BURST),
    ]


@pytest.fixture
def endpoint(credbridge_operator, endpoint_certificate: workloads.EndpointCertificate):  # type: ignore[no-untyped-def]
    assert credbridge_operator.process.alive()
    reader = workloads.EndpointClient(credbridge_operator.process.endpoint_port, endpoint_certificate.ca_pem)
    yield reader
    reader.close()


def ready_credential(api: client.ApiClient, namespace: str, name: str, value: str = "<<CRED_WL_OPENAI>>") -> None:
    objects.create_credential(api, namespace, objects.credential_body(name, "openAIApi", {"openAIApiKey": value}))
    objects.wait_for_reason(api, namespace, name, "Encrypted")


def test_kubectl_auth_can_i_answers_the_use_verb(
    control_plane: controlplane.ControlPlane, kube_api: client.ApiClient, namespaces: Namespaces
) -> None:
    namespace = namespaces.create("wl")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["production-openai"])

    def can_i(target: str, user: str) -> str:
        result = kubectl_run(control_plane, "auth", "can-i", "use", target, "--as", user, "-n", namespace)
        return result.stdout.strip()

    chat = f"system:serviceaccount:{namespace}:chat"
    assert can_i("credentials/production-openai", chat) == "yes"
    assert can_i("credentials/other", chat) == "no"
    assert can_i("credentials/production-openai", f"system:serviceaccount:{namespace}:default") == "no"
    assert can_i("credentialbindings/production-openai", chat) == "no"


def test_a_service_account_with_use_reads_the_fields_over_tls(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient, credbridge_operator
) -> None:  # type: ignore[no-untyped-def]
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["openai"])
    token = workloads.request_token(kube_api, namespace, "chat")

    response = wait_for(
        lambda: (r := endpoint.read(namespace, "credentials", "openai", token)).status == 200 and r,
        timeout=15,
        message="the first read to be allowed",
    )
    document = response.json
    assert document["data"] == {"openAIApiKey": OPENAI_KEY}
    assert (document["kind"], document["namespace"], document["name"], document["type"]) == (
        "Credential",
        namespace,
        "openai",
        "openAIApi",
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")

    metrics = credbridge_operator.process.metrics()
    assert f'credbridge_workload_reads_total{{kind="Credential",namespace="{namespace}",result="ok"}}' in metrics
    logs = credbridge_operator.logs()
    assert (
        f"workload read of credentials/openai in namespace {namespace} by system:serviceaccount:{namespace}:chat: ok"
        in logs
    )
    assert OPENAI_KEY not in logs and OPENAI_KEY not in metrics
    assert token not in logs


def test_the_fields_change_when_the_credential_does(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    objects.create_secret(kube_api, namespace, "key", {"k": "first-value"})
    objects.create_credential(
        kube_api, namespace, objects.credential_body("openai", "openAIApi", value_from={"openAIApiKey": ("key", "k")})
    )
    objects.wait_for_reason(kube_api, namespace, "openai", "Encrypted")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, None)
    token = workloads.request_token(kube_api, namespace, "chat")
    assert endpoint.read(namespace, "credentials", "openai", token).json["data"]["openAIApiKey"] == "first-value"
    client.CoreV1Api(kube_api).patch_namespaced_secret("key", namespace, {"stringData": {"k": "second-value"}})
    wait_for(
        lambda: (
            endpoint.read(namespace, "credentials", "openai", token).json.get("data", {}).get("openAIApiKey")
            == "second-value"
        ),
        timeout=20,
        message="the read to return the new value",
    )


# ---- refusals ------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_for_our_audience_are_401(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    endpoint: workloads.EndpointClient,
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["openai"])
    good = workloads.request_token(kube_api, namespace, "chat")

    none = endpoint.read(namespace, "credentials", "openai", None)
    assert none.status == 401
    assert none.message.startswith("no token: send 'Authorization: Bearer TOKEN'")
    assert none.headers["www-authenticate"].startswith("Bearer")
    basic = endpoint.get(f"/v1/namespaces/{namespace}/credentials/openai", authorization="Basic dXNlcjpwYXNz")
    assert basic.status == 401

    api_audience = workloads.request_token(kube_api, namespace, "chat", audiences=["https://kubernetes.default.svc"])
    other = endpoint.read(namespace, "credentials", "openai", api_audience)
    assert other.status == 401
    assert "the API server did not accept the token" in other.message
    assert "--audience credbridge.io" in other.message

    assert control_plane.workdir is not None
    expired = workloads.expired_copy(good, control_plane.workdir / "pki" / "sa.key")
    refused = endpoint.read(namespace, "credentials", "openai", expired)
    assert refused.status == 401
    assert "expired" in refused.message

    garbage = endpoint.read(namespace, "credentials", "openai", "not-a-token")
    assert garbage.status == 401

    # The good token works, so each refusal above was about the token alone.
    assert endpoint.read(namespace, "credentials", "openai", good).status == 200
    for response in (none, other, refused, garbage):
        assert OPENAI_KEY.encode() not in response.body
        assert response.headers["cache-control"] == "no-store"


def test_a_token_of_a_deleted_service_account_is_refused(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "gone")
    workloads.grant_use(kube_api, namespace, "gone", names.CREDENTIAL_PLURAL, ["openai"])
    token = workloads.request_token(kube_api, namespace, "gone")
    assert endpoint.read(namespace, "credentials", "openai", token).status == 200  # its review is now cached

    client.CoreV1Api(kube_api).delete_namespaced_service_account("gone", namespace)
    deleted = time.monotonic()
    refused = wait_for(
        lambda: (r := endpoint.read(namespace, "credentials", "openai", token)).status == 401 and r,
        timeout=TOKEN_REVIEW_TTL + 45,
        message="the deleted ServiceAccount's token to be refused",
    )
    assert "the API server did not accept the token" in refused.message
    # Refused within the review cache's lifetime, plus the API server noticing the deletion (generous:
    # on a busy machine the service-account deletion takes a while to reach the authenticator).
    assert time.monotonic() - deleted < TOKEN_REVIEW_TTL + 45


def test_without_use_the_answer_names_the_missing_permission(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "chat")
    token = workloads.request_token(kube_api, namespace, "chat")
    refused = endpoint.read(namespace, "credentials", "openai", token)
    assert refused.status == 403
    assert refused.json["reason"] == "Forbidden"
    assert refused.message == (
        f"system:serviceaccount:{namespace}:chat may not use credentials/openai in namespace {namespace}: "
        f"grant it with a Role in {namespace} holding the rule {{apiGroups: [credbridge.io], resources: "
        "[credentials], resourceNames: [openai], verbs: [use]} and a RoleBinding to "
        f"system:serviceaccount:{namespace}:chat; the Credential must exist"
    )


def test_use_on_one_credential_does_not_read_another(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "allowed")
    ready_credential(kube_api, namespace, "other")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["allowed"])
    token = workloads.request_token(kube_api, namespace, "chat")
    assert endpoint.read(namespace, "credentials", "allowed", token).status == 200
    other = endpoint.read(namespace, "credentials", "other", token)
    assert other.status == 403 and "may not use credentials/other" in other.message
    binding = endpoint.read(namespace, "credentialbindings", "allowed", token)
    assert binding.status == 403 and "may not use credentialbindings/allowed" in binding.message


def test_use_in_one_namespace_does_not_read_in_another(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    home, elsewhere = namespaces.create("wl"), namespaces.create("wl")
    ready_credential(kube_api, home, "openai")
    ready_credential(kube_api, elsewhere, "openai")
    workloads.create_service_account(kube_api, home, "chat")
    workloads.grant_use(kube_api, home, "chat", names.CREDENTIAL_PLURAL, None)
    token = workloads.request_token(kube_api, home, "chat")
    assert endpoint.read(home, "credentials", "openai", token).status == 200
    refused = endpoint.read(elsewhere, "credentials", "openai", token)
    assert refused.status == 403
    assert f"may not use credentials/openai in namespace {elsewhere}" in refused.message


def test_a_missing_credential_answers_exactly_like_a_missing_permission(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    workloads.create_service_account(kube_api, namespace, "chat")
    token = workloads.request_token(kube_api, namespace, "chat")
    without_permission = endpoint.read(namespace, "credentials", "ghost", token)
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, None)
    with_permission = wait_for(
        lambda: (r := endpoint.read(namespace, "credentials", "ghost", token)) and r,
        message="a read after the grant",
    )
    assert (with_permission.status, with_permission.body) == (without_permission.status, without_permission.body)
    assert without_permission.status == 403


def test_a_mirror_is_read_in_its_namespace_and_not_from_the_source_namespace(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    source = namespaces.create("wl")
    target = namespaces.create("wl", annotations={names.ACCEPT_SHARES_ANNOTATION: source})
    ready_credential(kube_api, source, "openai")
    objects.create_share(kube_api, source, objects.share_body("to-target", "openai", [target]))
    mirror = f"{source}.openai"
    objects.wait_for_reason(kube_api, target, mirror, "Encrypted")

    workloads.create_service_account(kube_api, target, "chat")
    workloads.grant_use(kube_api, target, "chat", names.CREDENTIAL_PLURAL, [mirror])
    reader = workloads.request_token(kube_api, target, "chat")
    assert endpoint.read(target, "credentials", mirror, reader).json["data"] == {"openAIApiKey": OPENAI_KEY}

    # The source team may use its own Credentials, and that gives it nothing in the target namespace.
    workloads.create_service_account(kube_api, source, "owner")
    workloads.grant_use(kube_api, source, "owner", names.CREDENTIAL_PLURAL, None)
    owner = workloads.request_token(kube_api, source, "owner")
    assert endpoint.read(source, "credentials", "openai", owner).status == 200
    refused = endpoint.read(target, "credentials", mirror, owner)
    assert refused.status == 403
    assert f"system:serviceaccount:{source}:owner may not use credentials/{mirror} in namespace {target}" in (
        refused.message
    )


def test_env_values_not_granted_to_the_namespace_never_leave_as_plaintext(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    """A tenant who may create Credentials and use them must not read another team's variable."""
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "stolen", "<<CRED_SHARED_OPENAI>>")  # allowed, but granted to no namespace
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, None)
    token = workloads.request_token(kube_api, namespace, "chat")
    refused = endpoint.read(namespace, "credentials", "stolen", token)
    assert refused.status == 403
    assert "CRED_SHARED_OPENAI" in refused.message
    assert f"--env-policy 'CRED_SHARED_OPENAI={namespace}'" in refused.message
    assert SHARED_KEY.encode() not in refused.body


def test_bad_paths_and_methods(endpoint: workloads.EndpointClient) -> None:
    assert endpoint.get("/v1/namespaces/x/secrets/y").status == 404
    assert "credentials/NAME" in endpoint.get("/").message
    connection = endpoint._connection
    assert connection is not None
    connection.request("POST", "/v1/namespaces/x/credentials/y", body=b"{}")
    response = connection.getresponse()
    response.read()
    assert response.status == 405


# ---- a runaway client -----------------------------------------------------------------------------


def test_a_burst_of_10000_reads_is_rate_limited_and_reconciling_goes_on(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "runaway")
    workloads.grant_use(kube_api, namespace, "runaway", names.CREDENTIAL_PLURAL, None)
    token = workloads.request_token(kube_api, namespace, "runaway")
    process = credbridge_operator.process
    reviews_before = _metric(process.metrics(), 'credbridge_token_reviews_total{source="reviewed"}')
    total, workers = 10_000, 16

    def hammer(count: int) -> list[tuple[int, str | None]]:
        reader = workloads.EndpointClient(process.endpoint_port, endpoint_certificate.ca_pem)
        try:
            return [
                ((r := reader.read(namespace, "credentials", "openai", token)).status, r.headers.get("retry-after"))
                for _ in range(count)
            ]
        finally:
            reader.close()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(hammer, total // workers) for _ in range(workers)]
        # Meanwhile the operator keeps reconciling: a Credential created during the burst gets Ready,
        # and its health endpoint keeps answering.
        objects.create_credential(
            kube_api, namespace, objects.credential_body("during", "openAIApi", {"openAIApiKey": "<<CRED_WL_OPENAI>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "during", "Encrypted", timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/healthz", timeout=10) as health:
            assert health.status == 200
        results = [item for future in futures for item in future.result()]
    elapsed = time.monotonic() - started

    statuses = [status for status, _ in results]
    allowed = statuses.count(200)
    assert len(results) == total
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert allowed <= READ_BURST + READ_RATE * elapsed + 1, (allowed, elapsed)
    assert statuses.count(429) >= total - (READ_BURST + READ_RATE * elapsed + 1)
    assert all(retry and int(retry) >= 1 for status, retry in results if status == 429)
    assert process.alive()

    metrics = process.metrics()
    limited = _metric(
        metrics, f'credbridge_workload_reads_total{{kind="Credential",namespace="{namespace}",result="rate_limited"}}'
    )
    assert limited == statuses.count(429)
    # One token, reviewed once per cache lifetime at most — not once per request.
    reviews = _metric(metrics, 'credbridge_token_reviews_total{source="reviewed"}') - reviews_before
    assert reviews <= elapsed / TOKEN_REVIEW_TTL + 2, (reviews, elapsed)

    # Another identity is not slowed down by the runaway one.
    workloads.create_service_account(kube_api, namespace, "calm")
    workloads.grant_use(kube_api, namespace, "calm", names.CREDENTIAL_PLURAL, None)
    calm = workloads.request_token(kube_api, namespace, "calm")
    reader = workloads.EndpointClient(process.endpoint_port, endpoint_certificate.ca_pem)
    assert reader.read(namespace, "credentials", "openai", calm).status == 200
    reader.close()


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---- the client commands --------------------------------------------------------------------------


def _client_env(
    process_port: int, certificate: workloads.EndpointCertificate, token_file: pathlib.Path
) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "CREDBRIDGE_ENDPOINT": f"https://127.0.0.1:{process_port}",
        "CREDBRIDGE_CA_FILE": str(certificate.cafile),
        "CREDBRIDGE_TOKEN_FILE": str(token_file),
    }


def test_credbridge_env_execs_the_command_with_the_values(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
    tmp_path: pathlib.Path,
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["openai"])
    token_file = tmp_path / "token"
    token_file.write_text(workloads.request_token(kube_api, namespace, "chat"))
    environ = _client_env(credbridge_operator.process.endpoint_port, endpoint_certificate, token_file)
    out = tmp_path / "seen"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "credbridge.cli.main",
            "env",
            "--credential",
            "openai",
            "--env",
            "OPENAI_API_KEY=openAIApiKey",
            "--",
            "sh",
            "-c",
            f'printf %s "$OPENAI_API_KEY" > {out}; echo "pid $$"',
        ],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == OPENAI_KEY
    assert OPENAI_KEY not in result.stderr + result.stdout

    refused = subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", "env", "--credential", "nope", "--env", "X=y", "--", "true"],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )
    assert refused.returncode == 3
    assert refused.stderr.startswith(
        f"credbridge env: Credential {namespace}/nope: system:serviceaccount:{namespace}:chat may not use "
        f"credentials/nope in namespace {namespace}: grant it with a Role"
    )
    assert len(refused.stderr.strip().splitlines()) == 1


def test_credbridge_fetch_writes_read_only_files(
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    credbridge_operator,  # type: ignore[no-untyped-def]
    endpoint_certificate: workloads.EndpointCertificate,
    tmp_path: pathlib.Path,
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_PLURAL, ["openai"])
    token_file = tmp_path / "token"
    token_file.write_text(workloads.request_token(kube_api, namespace, "chat"))
    environ = _client_env(credbridge_operator.process.endpoint_port, endpoint_certificate, token_file)
    directory = tmp_path / "values"
    result = subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", "fetch", "--credential", "openai", "--dir", str(directory)],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (directory / "openAIApiKey").read_text() == OPENAI_KEY
    assert stat.S_IMODE((directory / "openAIApiKey").stat().st_mode) == 0o400
    assert sorted(p.name for p in directory.iterdir()) == ["openAIApiKey"]
    assert OPENAI_KEY not in result.stderr


# ---- CredentialBindings ---------------------------------------------------------------------------


def create_binding(api: client.ApiClient, namespace: str, name: str, credential: str, template: dict[str, str]) -> None:
    """A binding for workload reads only: no plain Secret output."""
    objects.create_binding(api, namespace, objects.binding_body(name, credential, template=template, secret=""))


def test_use_on_a_binding_reads_its_rendered_template_and_nothing_else(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "openai")
    create_binding(
        kube_api,
        namespace,
        "chat-openai",
        "openai",
        {"OPENAI_API_KEY": "${openAIApiKey}", "AUTH": "Bearer ${openAIApiKey}"},
    )
    create_binding(kube_api, namespace, "broken", "missing", {"X": "${openAIApiKey}"})
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(
        kube_api, namespace, "chat", names.CREDENTIAL_BINDING_PLURAL, ["chat-openai", "broken", "ghost"]
    )
    token = workloads.request_token(kube_api, namespace, "chat")

    read = wait_for(
        lambda: (r := endpoint.read(namespace, "credentialbindings", "chat-openai", token)).status == 200 and r,
        timeout=20,
        message="the binding to be readable",
    )
    assert read.json["data"] == {"OPENAI_API_KEY": OPENAI_KEY, "AUTH": f"Bearer {OPENAI_KEY}"}
    assert (read.json["kind"], read.json["credential"]) == ("CredentialBinding", "openai")
    assert read.headers["cache-control"] == "no-store"

    # `use` on the binding is not `use` on the Credential behind it.
    assert endpoint.read(namespace, "credentials", "openai", token).status == 403
    # A binding naming a missing Credential says so — to whoever may use the binding.
    broken = endpoint.read(namespace, "credentialbindings", "broken", token)
    assert broken.status == 503 and "names Credential missing, which does not exist" in broken.message
    # A binding that does not exist answers like one the caller may not use.
    workloads.create_service_account(kube_api, namespace, "other")
    other = workloads.request_token(kube_api, namespace, "other")
    ghost = endpoint.read(namespace, "credentialbindings", "ghost", token)
    assert ghost.status == 403 and ghost.message.startswith(
        f"system:serviceaccount:{namespace}:chat may not use credentialbindings/ghost"
    )
    no_permission = endpoint.read(namespace, "credentialbindings", "chat-openai", other)
    assert no_permission.status == 403 and "may not use credentialbindings/chat-openai" in no_permission.message


def test_a_binding_over_a_credential_with_ungranted_env_values_is_refused(
    kube_api: client.ApiClient, namespaces: Namespaces, endpoint: workloads.EndpointClient
) -> None:
    namespace = namespaces.create("wl")
    ready_credential(kube_api, namespace, "stolen", "<<CRED_SHARED_OPENAI>>")
    create_binding(kube_api, namespace, "steal", "stolen", {"KEY": "${openAIApiKey}"})
    workloads.create_service_account(kube_api, namespace, "chat")
    workloads.grant_use(kube_api, namespace, "chat", names.CREDENTIAL_BINDING_PLURAL, None)
    token = workloads.request_token(kube_api, namespace, "chat")
    refused = wait_for(
        lambda: (r := endpoint.read(namespace, "credentialbindings", "steal", token)).status == 403 and r,
        timeout=20,
        message="the read to be refused",
    )
    assert "CRED_SHARED_OPENAI" in refused.message
    assert SHARED_KEY.encode() not in refused.body
