"""The Helm chart and the static install manifests, checked with the helm the project builds.

The chart is how most clusters get credbridge, and deploy/ is rendered from it: these tests catch a
chart that does not lint or render, values that do not reach the operator's flags, RBAC that grew a
wildcard, a schema that lets typos through, and CRD copies or manifests that drifted from their source.
"""

from __future__ import annotations

import base64
import pathlib
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from cryptography import x509

from credbridge.cli import flags
from credbridge.cli import main as cli_main

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "credbridge"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
NAMESPACE = "credbridge-system"


@pytest.fixture(scope="module")
def helm() -> pathlib.Path:
    """The helm binary hack/controlplane/build.sh builds; its absence is a setup error, not a skip."""
    dirs = subprocess.run(
        [str(ROOT / "hack" / "controlplane" / "build.sh"), "--print-dirs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    binary = pathlib.Path(dirs[2]) / "helm"
    if not binary.is_file():
        pytest.fail(f"helm is not built ({binary} is missing): run `make controlplane` first")
    return binary


def run_helm(helm: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, cwd=ROOT, check=False)


def render(helm: pathlib.Path, *args: str) -> list[dict[str, Any]]:
    """`helm template` the chart into the install namespace; return every object."""
    result = run_helm(helm, "template", "credbridge", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def values_file(tmp_path: pathlib.Path, values: dict[str, Any]) -> Sequence[str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ("--values", str(path))


def find(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def container_args(objects: list[dict[str, Any]]) -> list[str]:
    deployment = find(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


@pytest.mark.parametrize("extra", [(), ("--values", str(CI_VALUES))], ids=["defaults", "ci-values"])
def test_helm_lint_passes(helm: pathlib.Path, extra: tuple[str, ...]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *extra)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_are_exact_copies_of_the_repository_crds() -> None:
    source = {path.name: path.read_bytes() for path in (ROOT / "crds").glob("*.yaml")}
    copies = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*")}
    assert source, "crds/ holds no CRD"
    assert sorted(copies) == sorted(source), "run hack/render-manifests.sh"
    for name, content in source.items():
        assert copies[name] == content, f"charts/credbridge/crds/{name} differs: run hack/render-manifests.sh"


@pytest.mark.parametrize("extra", [(), ("--values", str(CI_VALUES))], ids=["defaults", "ci-values"])
def test_template_renders_well_formed_objects(helm: pathlib.Path, extra: tuple[str, ...]) -> None:
    objects = render(helm, "--include-crds", *extra)
    kinds = {obj["kind"] for obj in objects}
    assert {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "Secret",
        "ValidatingWebhookConfiguration",
    } <= kinds
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj["metadata"].get("name"), obj


def test_container_args_reflect_values(helm: pathlib.Path, tmp_path: pathlib.Path) -> None:
    values = {
        "envAllow": ["CRED_*", "LLM_*"],
        "envPolicy": [{"pattern": "CRED_TEAM_A_*", "namespaces": ["team-a", "team-c"]}],
        "watchNamespaces": ["team-a", "team-b"],
        "literalSecrets": "deny",
        "keyringSecret": "my-keyring",
        "logFormat": "text",
        "bindings": {"secrets": "deny", "rollouts": False, "rolloutDebounce": 5},
    }
    args = container_args(render(helm, *values_file(tmp_path, values)))
    assert [a for a in args if a.startswith("--env-allow=")] == ["--env-allow=CRED_*", "--env-allow=LLM_*"]
    assert "--env-policy=CRED_TEAM_A_*=team-a,team-c" in args
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--literal-secrets=deny" in args
    assert "--keyring-secret=my-keyring" in args
    assert "--log-format=text" in args
    assert "--binding-secrets=deny" in args
    assert "--binding-rollouts=off" in args
    assert "--rollout-debounce=5" in args


def _lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def test_chart_defaults_equal_the_operator_settings() -> None:
    """Every Helm value that sets a flag defaults to what the operator defaults to without the flag."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    mapped = flags.chart_defaults()
    assert {"workers", "bindings.secrets", "flowise.resyncSeconds", "endpoint.readRate"} <= set(mapped)
    for chart_path, (settings_path, default) in mapped.items():
        chart_value = _lookup(values, chart_path)
        expected = list(default) if isinstance(default, tuple) else default
        assert chart_value == expected, (
            f"values.yaml {chart_path} = {chart_value!r}, settings {settings_path} = {default!r}"
        )


def test_the_rendered_default_flags_give_the_operator_its_default_settings(helm: pathlib.Path) -> None:
    """The chart's default args, parsed by `credbridge run`, leave every chart-mapped setting at its default."""
    args = container_args(render(helm))
    parsed = cli_main.build_parser().parse_args(args if args[:1] == ["run"] else ["run", *args])
    given = flags.values(parsed, flags.options())
    for _, (settings_path, default) in flags.chart_defaults().items():
        assert given[settings_path] == default, settings_path


def test_default_args_watch_all_namespaces_and_use_the_mounted_certificate(helm: pathlib.Path) -> None:
    objects = render(helm)
    args = container_args(objects)
    assert not [a for a in args if a.startswith("--namespace")]
    assert "--env-allow=CRED_*" in args
    assert "--literal-secrets=warn" in args
    assert "--binding-secrets=allow" in args and "--binding-rollouts=on" in args
    assert "--webhook-certfile=/etc/credbridge/webhook/tls.crt" in args
    assert not [a for a in args if a.startswith("--peering")]
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secret_volumes == [find(objects, "Secret")["metadata"]["name"]]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])


def test_container_runs_the_image_entrypoint_with_the_run_command(helm: pathlib.Path) -> None:
    """The image's entrypoint is `credbridge` (init containers run its client commands from the same
    image); the Deployment leaves `command` alone and passes `run` first."""
    container = operator_container(render(helm))
    assert "command" not in container
    assert container["args"][0] == "run"
    assert all(arg.startswith("--") for arg in container["args"][1:])


def test_pod_runs_as_the_image_user(helm: pathlib.Path) -> None:
    """The chart's runAsUser/runAsGroup are the Dockerfile's numeric USER: files the image owns and
    the ids the kubelet enforces agree."""
    (user,) = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    uid, gid = (int(part) for part in user.split(":"))
    pod = find(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["runAsNonRoot"] is True and uid != 0
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_image_reference_defaults_to_the_app_version(helm: pathlib.Path) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    container = operator_container(render(helm))
    assert container["image"] == f"ghcr.io/credbridge/credbridge:{app_version}"
    assert container["imagePullPolicy"] == "IfNotPresent"


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("values", "reference"),
    [
        ({"repository": "registry.example.com/platform/credbridge"}, "registry.example.com/platform/credbridge:0.1.0"),
        (
            {"repository": "registry.example.com/credbridge", "tag": "0.1.0-rc1"},
            "registry.example.com/credbridge:0.1.0-rc1",
        ),
        ({"digest": DIGEST}, f"ghcr.io/credbridge/credbridge@{DIGEST}"),
        ({"tag": "0.1.0-rc1", "digest": DIGEST}, f"ghcr.io/credbridge/credbridge@{DIGEST}"),
    ],
    ids=["repository", "repository-and-tag", "digest", "digest-wins-over-tag"],
)
def test_image_values_make_the_reference(
    helm: pathlib.Path, tmp_path: pathlib.Path, values: dict[str, str], reference: str
) -> None:
    container = operator_container(render(helm, *values_file(tmp_path, {"image": values})))
    assert container["image"] == reference


def operator_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The ClusterRole the operator's ClusterRoleBinding grants."""
    binding = find(objects, "ClusterRoleBinding")
    return next(
        obj for obj in objects if obj["kind"] == "ClusterRole" and obj["metadata"]["name"] == binding["roleRef"]["name"]
    )


@pytest.mark.parametrize("extra", [(), ("--values", str(CI_VALUES))], ids=["defaults", "ci-values"])
def test_cluster_roles_have_no_wildcards(helm: pathlib.Path, extra: tuple[str, ...]) -> None:
    roles = [obj for obj in render(helm, *extra) if obj["kind"] == "ClusterRole"]
    assert len(roles) == 3
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
            assert "resourceNames" not in rule or rule["resourceNames"]


def test_tenant_roles_aggregate_into_default_roles_without_secrets(helm: pathlib.Path) -> None:
    objects = render(helm)
    operator = operator_role(objects)
    tenant = [obj for obj in objects if obj["kind"] == "ClusterRole" and obj is not operator]
    aggregated = {
        label
        for role in tenant
        for label in role["metadata"]["labels"]
        if label.startswith("rbac.authorization.k8s.io/aggregate-to-")
    }
    assert aggregated == {f"rbac.authorization.k8s.io/aggregate-to-{r}" for r in ("admin", "edit", "view")}
    assert all("secrets" not in rule["resources"] for role in tenant for rule in role["rules"])
    without = render(helm, "--set", "rbac.aggregateToDefaultRoles=false")
    assert [obj["metadata"]["name"] for obj in without if obj["kind"] == "ClusterRole"] == [
        operator["metadata"]["name"]
    ]


def test_peering_rules_only_with_peering(helm: pathlib.Path) -> None:
    def groups(*args: str) -> set[str]:
        role = operator_role(render(helm, *args))
        return {group for rule in role["rules"] for group in rule["apiGroups"]}

    assert "kopf.dev" not in groups()
    assert "kopf.dev" in groups("--set", "peering.enabled=true")
    assert "admissionregistration.k8s.io" not in groups()


def test_rollout_permission_follows_the_bindings_rollouts_value(helm: pathlib.Path) -> None:
    def workload_verbs(*args: str) -> set[str]:
        role = operator_role(render(helm, *args))
        return {verb for rule in role["rules"] if "deployments" in rule["resources"] for verb in rule["verbs"]}

    assert workload_verbs() == {"get", "patch"}
    assert workload_verbs("--set", "bindings.rollouts=false") == set()


def test_tenants_manage_bindings_through_the_default_roles(helm: pathlib.Path) -> None:
    objects = render(helm)
    operator = operator_role(objects)
    tenant = [obj for obj in objects if obj["kind"] == "ClusterRole" and obj is not operator]
    for role in tenant:
        assert any("credentialbindings" in rule["resources"] for rule in role["rules"]), role["metadata"]["name"]
    assert any("credentialbindings/status" in rule["resources"] for rule in operator["rules"])


def test_the_webhook_validates_credential_bindings(helm: pathlib.Path) -> None:
    config = find(render(helm), "ValidatingWebhookConfiguration")
    hook = next(h for h in config["webhooks"] if h["rules"][0]["resources"] == ["credentialbindings"])
    assert hook["clientConfig"]["service"]["path"] == "/validate-credentialbindings"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]


@pytest.mark.parametrize(
    "args",
    [
        ("--set", "literalScrets=deny"),
        ("--set", "literalSecrets=block"),
        ("--set", "logFormat=xml"),
        ("--set", "webhook.failurePolicy=fail"),
        ("--set", "webhook.enabeld=false"),
        ("--set", "image.digest=0123456789abcdef"),
        ("--set", "image.digest=sha256:XYZ"),
        ("--set", "image.repository="),
        ("--set", "image.pullPolicy=always"),
    ],
    ids=[
        "unknown-top-level-key",
        "bad-literalSecrets",
        "bad-logFormat",
        "bad-failurePolicy",
        "unknown-webhook-key",
        "digest-without-algorithm",
        "digest-not-hex",
        "empty-repository",
        "bad-pullPolicy",
    ],
)
def test_schema_rejects_typos_and_bad_enum_values(helm: pathlib.Path, args: tuple[str, ...]) -> None:
    result = run_helm(helm, "template", "credbridge", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0
    assert "schema" in result.stderr.lower(), result.stderr


def test_more_than_one_replica_requires_peering(helm: pathlib.Path) -> None:
    result = run_helm(helm, "template", "credbridge", str(CHART), "--set", "replicaCount=2")
    assert result.returncode != 0
    assert "peering.enabled" in result.stderr
    assert find(render(helm, "--set", "replicaCount=2", "--set", "peering.enabled=true"), "Deployment")


def test_webhook_uses_the_service_by_default(helm: pathlib.Path) -> None:
    config = find(render(helm), "ValidatingWebhookConfiguration")
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    assert set(hooks) == {
        "credentials.credbridge.io",
        "credentialbindings.credbridge.io",
        "secrets.credbridge.io",
    }
    assert hooks["credentials.credbridge.io"]["clientConfig"]["service"]["path"] == "/validate-credentials"
    assert hooks["secrets.credbridge.io"]["clientConfig"]["service"]["path"] == "/protect-mirror-secrets"
    assert hooks["credentials.credbridge.io"]["failurePolicy"] == "Fail"
    # Only mirror Secrets: the operator's writes of every other managed Secret skip the webhook.
    assert hooks["secrets.credbridge.io"]["objectSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "credbridge"},
        "matchExpressions": [{"key": "credbridge.io/shared-from", "operator": "Exists"}],
    }
    for hook in hooks.values():
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] == 5


def test_webhook_url_replaces_the_service(helm: pathlib.Path) -> None:
    objects = render(helm, "--set", "webhook.url=https://127.0.0.1:9443")
    config = find(objects, "ValidatingWebhookConfiguration")
    urls = {hook["name"]: hook["clientConfig"] for hook in config["webhooks"]}
    assert urls["credentials.credbridge.io"].get("url") == "https://127.0.0.1:9443/validate-credentials"
    assert urls["secrets.credbridge.io"].get("url") == "https://127.0.0.1:9443/protect-mirror-secrets"
    assert not any("service" in client for client in urls.values())


def test_ca_bundle_signs_a_certificate_for_the_service_and_extra_sans(helm: pathlib.Path) -> None:
    objects = render(helm, "--set", "webhook.extraSANs={127.0.0.1,localhost}")
    secret = find(objects, "Secret")
    config = find(objects, "ValidatingWebhookConfiguration")
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    assert all(base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem for hook in config["webhooks"])
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"credbridge.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_render_manifests_check_passes() -> None:
    result = subprocess.run(
        [str(ROOT / "hack" / "render-manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_every_value() -> None:
    def keys(values: dict[str, Any], prefix: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            path = f"{prefix}{key}"
            # Kubernetes pass-through objects are documented as a whole, not field by field.
            if isinstance(value, dict) and value and key not in {"resources", "podSecurityContext", "securityContext"}:
                found.extend(keys(value, f"{path}."))
            else:
                found.append(path)
        return found

    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in keys(values) if f"| `{key}` |" not in readme]
    assert not missing, f"charts/credbridge/README.md does not document: {missing}"


# ---- workload reads and Pod injection ------------------------------------------------------------


def test_the_read_endpoint_serves_the_webhook_certificate_through_the_service(helm: pathlib.Path) -> None:
    objects = render(helm)
    args = container_args(objects)
    assert "--endpoint-port=8443" in args
    assert "--endpoint-certfile=/etc/credbridge/webhook/tls.crt" in args
    assert "--endpoint-pkeyfile=/etc/credbridge/webhook/tls.key" in args
    assert "--endpoint-cafile=/etc/credbridge/webhook/ca.crt" in args
    assert f"--endpoint-url=https://credbridge.{NAMESPACE}.svc:8443" in args
    assert {"--read-rate=10", "--read-burst=50", "--token-review-ttl=10"} <= set(args)
    assert "--inject-image=ghcr.io/credbridge/credbridge:0.1.0" in args
    ports = {port["name"]: port for port in find(objects, "Service")["spec"]["ports"]}
    assert ports["reads"]["port"] == 8443 and ports["reads"]["targetPort"] == "reads"
    secret = find(objects, "Secret")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"credbridge.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)


def test_the_operator_may_review_tokens_and_access_only_with_the_endpoint(helm: pathlib.Path) -> None:
    def review_rules(*args: str) -> list[tuple[str, str, tuple[str, ...]]]:
        role = operator_role(render(helm, *args))
        return [
            (group, resource, tuple(rule["verbs"]))
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            if resource in ("tokenreviews", "subjectaccessreviews")
        ]

    assert review_rules() == [
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    ]
    assert review_rules("--set", "endpoint.enabled=false") == []
    args = container_args(render(helm, "--set", "endpoint.enabled=false"))
    assert "--endpoint-port=0" in args
    assert not [a for a in args if a.startswith(("--endpoint-certfile", "--inject-image"))]


def test_tenant_roles_grant_use_only_when_asked(helm: pathlib.Path) -> None:
    def use_rules(*args: str) -> list[dict[str, Any]]:
        objects = render(helm, *args)
        return [
            rule for obj in objects if obj["kind"] == "ClusterRole" for rule in obj["rules"] if "use" in rule["verbs"]
        ]

    assert use_rules() == []
    granted = use_rules("--set", "rbac.aggregateUseToEditors=true")
    assert granted == [
        {"apiGroups": ["credbridge.io"], "resources": ["credentials", "credentialbindings"], "verbs": ["use"]}
    ]
    edit = [
        obj
        for obj in render(helm, "--set", "rbac.aggregateUseToEditors=true")
        if obj["kind"] == "ClusterRole" and "use" in str(obj["rules"])
    ]
    assert edit[0]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit[0]["metadata"]["labels"]


def test_injection_webhook_reaches_only_opted_in_namespaces(helm: pathlib.Path) -> None:
    objects = render(helm)
    config = find(objects, "MutatingWebhookConfiguration")
    [hook] = config["webhooks"]
    assert hook["name"] == "pods.credbridge.io"
    assert hook["clientConfig"]["service"]["path"] == "/inject-pods"
    assert hook["failurePolicy"] == "Fail"
    assert hook["namespaceSelector"] == {"matchLabels": {"credbridge.io/injection": "enabled"}}
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["clientConfig"]["caBundle"] == find(objects, "Secret")["data"]["ca.crt"]
    scoped = find(render(helm, "--set", "watchNamespaces={team-a}"), "MutatingWebhookConfiguration")
    assert scoped["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"]
    ignore = find(render(helm, "--set", "injection.failurePolicy=Ignore"), "MutatingWebhookConfiguration")
    assert ignore["webhooks"][0]["failurePolicy"] == "Ignore"


def test_injection_can_be_turned_off_or_use_another_image(helm: pathlib.Path) -> None:
    off = render(helm, "--set", "injection.enabled=false")
    assert not [obj for obj in off if obj["kind"] == "MutatingWebhookConfiguration"]
    assert "--no-injection" in container_args(off)
    args = container_args(render(helm, "--set", "injection.image=registry.example.com/credbridge:1.2.3"))
    assert "--inject-image=registry.example.com/credbridge:1.2.3" in args
    digest = "sha256:" + "a" * 64
    args = container_args(render(helm, "--set", f"image.digest={digest}"))
    assert f"--inject-image=ghcr.io/credbridge/credbridge@{digest}" in args


def test_the_endpoint_keeps_its_certificate_without_the_validating_webhook(helm: pathlib.Path) -> None:
    objects = render(helm, "--set", "webhook.enabled=false")
    assert not [obj for obj in objects if obj["kind"].endswith("WebhookConfiguration")]
    assert find(objects, "Secret")["type"] == "kubernetes.io/tls"
    assert "--endpoint-certfile=/etc/credbridge/webhook/tls.crt" in container_args(objects)


@pytest.mark.parametrize(
    "args",
    [
        ("--set", "injection.failurePolicy=fail"),
        ("--set", "endpoint.readRate=0"),
        ("--set", "endpoint.url=http://x"),
        ("--set", "endpoint.readburst=5"),
    ],
    ids=["bad-injection-failurePolicy", "zero-readRate", "http-url", "unknown-endpoint-key"],
)
def test_schema_rejects_bad_endpoint_and_injection_values(helm: pathlib.Path, args: tuple[str, ...]) -> None:
    result = run_helm(helm, "template", "credbridge", str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode != 0
    assert "schema" in result.stderr.lower(), result.stderr


def test_the_prometheus_rule_is_off_by_default_and_alerts_on_expiry_and_invalid_credentials(helm: pathlib.Path) -> None:
    assert not [obj for obj in render(helm) if obj.get("kind") == "PrometheusRule"]
    rules = [
        obj
        for obj in render(helm, "--set", "metrics.prometheusRule.enabled=true")
        if obj.get("kind") == "PrometheusRule"
    ]
    assert len(rules) == 1
    alerts = {rule["alert"]: rule for rule in rules[0]["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "CredbridgeCredentialExpiringSoon",
        "CredbridgeCredentialExpired",
        "CredbridgeCredentialInvalid",
    }
    assert "credbridge_credential_expiration_timestamp_seconds" in alerts["CredbridgeCredentialExpired"]["expr"]
    assert 'outcome=~"Invalid|Forbidden"' in alerts["CredbridgeCredentialInvalid"]["expr"]


def test_crd_schemas_are_structural_where_the_api_server_checks_it() -> None:
    """The API server refuses a schema node with both `properties` and `additionalProperties`: catch it here,
    before a control plane refuses to install the CRDs."""

    def walk(node: Any, where: str) -> list[str]:
        found: list[str] = []
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" in node:
                found.append(where)
            for key, child in node.items():
                found.extend(walk(child, f"{where}.{key}"))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                found.extend(walk(child, f"{where}[{index}]"))
        return found

    problems = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for version in (document or {}).get("spec", {}).get("versions", []):
                problems += walk(version.get("schema", {}), f"{path.name}:{version.get('name')}")
    assert problems == []
