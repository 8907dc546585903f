"""Small helpers for tests that create credbridge objects and wait for what a user would see.

They work on plain JSON bodies through the kubernetes client, and every object they make carries
the `created-by: credbridge-tests` label.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from credbridge.core import names, planning
from credbridge.kube import fetching, keyrings

TEST_LABEL = {"created-by": "credbridge-tests"}
Json = dict[str, Any]


def credential_body(
    name: str,
    type_name: str,
    data: Mapping[str, str] | None = None,
    *,
    value_from: Mapping[str, tuple[str, str]] | None = None,
    spec_extra: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Json:
    """A Credential manifest; `value_from` maps field -> (secret name, key)."""
    spec: Json = {"type": type_name}
    if data is not None:
        spec["data"] = dict(data)
    if value_from:
        spec["valueFrom"] = {
            field: {"secretKeyRef": {"name": secret, "key": key}} for field, (secret, key) in value_from.items()
        }
    spec.update(spec_extra or {})
    metadata: Json = {"name": name, "labels": dict(TEST_LABEL)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": names.API_VERSION, "kind": names.CREDENTIAL_KIND, "metadata": metadata, "spec": spec}


def create_credential(api: client.ApiClient, namespace: str, body: Json) -> Json:
    created: Json = client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, body
    )
    return created


def get_credential(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    return fetching.read_credential(api, namespace, name)


def patch_credential(api: client.ApiClient, namespace: str, name: str, patch: Json) -> Json:
    patched: Json = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name, patch
    )
    return patched


def delete_credential(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name
    )


def share_body(
    name: str, credential: str, namespaces: list[str] | None = None, selector: Mapping[str, Any] | None = None
) -> Json:
    spec: Json = {"credential": credential}
    if namespaces is not None:
        spec["namespaces"] = namespaces
    if selector is not None:
        spec["namespaceSelector"] = dict(selector)
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_SHARE_KIND,
        "metadata": {"name": name, "labels": dict(TEST_LABEL)},
        "spec": spec,
    }


def create_share(api: client.ApiClient, namespace: str, body: Json) -> Json:
    created: Json = client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_SHARE_PLURAL, body
    )
    return created


def get_share(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    return fetching.read_credential_share(api, namespace, name)


def create_secret(api: client.ApiClient, namespace: str, name: str, data: Mapping[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name, labels=TEST_LABEL), string_data=dict(data)),
    )


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    result: Json = api.sanitize_for_serialization(secret)
    return result


def decoded(secret: Json) -> dict[str, str]:
    """A Secret's data, base64-decoded."""
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def ready(obj: Json | None) -> Json | None:
    """The Ready condition of an object, or None."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == names.READY_CONDITION:
            found: Json = condition
            return found
    return None


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy and return it; raise AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def wait_for_reason(api: client.ApiClient, namespace: str, name: str, reason: str, timeout: float = 30.0) -> Json:
    """Wait until the Credential's Ready condition has `reason`; return the Credential."""

    def check() -> Json | None:
        credential = get_credential(api, namespace, name)
        condition = ready(credential)
        return credential if condition and condition.get("reason") == reason else None

    try:
        result: Json = wait_until(check, timeout, f"Credential {namespace}/{name} to report {reason}")
    except AssertionError:
        last = ready(get_credential(api, namespace, name))
        raise AssertionError(
            f"Credential {namespace}/{name} did not reach {reason}; last Ready condition: {last}"
        ) from None
    return result


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[Json]:
    """Events about the object `name` in `namespace`, as JSON."""
    listed = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [api.sanitize_for_serialization(event) for event in listed.items]


def open_managed_secret(
    api: client.ApiClient, namespace: str, name: str, operator_namespace: str = names.DEFAULT_OPERATOR_NAMESPACE
) -> dict[str, str]:
    """Decrypt a Credential's managed Secret with the cluster's keyring, as `credbridge reveal` does."""
    credential = get_credential(api, namespace, name)
    assert credential is not None, f"Credential {namespace}/{name} does not exist"
    view = planning.CredentialView.from_object(credential)
    secret = read_secret(api, namespace, view.secret_name)
    assert secret is not None, f"Secret {namespace}/{view.secret_name} does not exist"
    loaded = keyrings.load(api, operator_namespace, names.DEFAULT_KEYRING_SECRET)
    assert loaded is not None, f"no keyring in {operator_namespace}"
    return dict(planning.open_managed_secret(view, planning.SecretView.from_object(secret), loaded[0]))


def binding_body(
    name: str,
    credential: str,
    *,
    template: Mapping[str, str] | None = None,
    secret: str | None = None,
    rollout: list[tuple[str, str]] | None = None,
) -> Json:
    """A CredentialBinding manifest; `secret` defaults to the binding's name ("" for no Secret output)."""
    spec: Json = {"credential": credential}
    if template is not None:
        spec["template"] = dict(template)
    secret_name = name if secret is None else secret
    if secret_name:
        spec["secret"] = {"name": secret_name}
    if rollout:
        spec["rollout"] = [{"kind": kind, "name": target} for kind, target in rollout]
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_BINDING_KIND,
        "metadata": {"name": name, "labels": dict(TEST_LABEL)},
        "spec": spec,
    }


def create_binding(api: client.ApiClient, namespace: str, body: Json) -> Json:
    created: Json = client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_BINDING_PLURAL, body
    )
    return created


def patch_binding(api: client.ApiClient, namespace: str, name: str, patch: Json) -> Json:
    patched: Json = client.CustomObjectsApi(api).patch_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_BINDING_PLURAL, name, patch
    )
    return patched


def get_binding(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    return fetching.read_credential_binding(api, namespace, name)


def wait_for_binding(
    api: client.ApiClient, namespace: str, name: str, reason: str, timeout: float = 60.0, condition: str = "Ready"
) -> Json:
    """Wait until the binding's `condition` has `reason`; return the binding."""

    def check() -> Json | None:
        body = get_binding(api, namespace, name)
        found = next(
            (c for c in ((body or {}).get("status") or {}).get("conditions") or [] if c.get("type") == condition),
            None,
        )
        return body if found and found.get("reason") == reason else None

    try:
        result: Json = wait_until(check, timeout, f"CredentialBinding {namespace}/{name} to report {reason}")
    except AssertionError:
        last = ((get_binding(api, namespace, name) or {}).get("status") or {}).get("conditions")
        raise AssertionError(
            f"CredentialBinding {namespace}/{name} did not reach {condition}={reason}; conditions: {last}"
        ) from None
    return result


def deployment_body(name: str) -> Json:
    """A Deployment that needs no image to exist: nothing here runs a kubelet, only the object matters."""
    labels = {"app": name, **TEST_LABEL}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


def pod_template_annotations(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    """The pod-template annotations of a Deployment (where a rollout restart shows)."""
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return dict(deployment.spec.template.metadata.annotations or {})


def condition(obj: Json | None, condition_type: str) -> Json | None:
    """The condition of `condition_type` in an object's status, or None."""
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == condition_type:
            result: Json = found
            return result
    return None


def wait_for_verified(
    api: client.ApiClient, namespace: str, name: str, reason: str | None = None, timeout: float = 90.0
) -> Json:
    """Wait until the Credential's Verified condition has `reason` (None: any); return the Credential."""

    def check() -> Json | None:
        credential = get_credential(api, namespace, name)
        found = condition(credential, "Verified")
        return credential if found and (reason is None or found.get("reason") == reason) else None

    try:
        result: Json = wait_until(check, timeout, f"Credential {namespace}/{name} to be verified ({reason or 'any'})")
    except AssertionError:
        last = condition(get_credential(api, namespace, name), "Verified")
        raise AssertionError(
            f"Credential {namespace}/{name} did not reach Verified {reason or '(any)'}; last Verified condition: {last}"
        ) from None
    return result


def create_credential_type(api: client.ApiClient, type_name: str, spec: Mapping[str, Any]) -> None:
    """A cluster-scoped CredentialType named after `type_name` (lowercased), labelled created-by."""
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_TYPE_KIND,
        "metadata": {"name": type_name.lower(), "labels": dict(TEST_LABEL)},
        "spec": {"name": type_name, "label": type_name, "version": 1, **spec},
    }
    client.CustomObjectsApi(api).create_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, body
    )


def delete_credential_type(api: client.ApiClient, type_name: str) -> None:
    try:
        client.CustomObjectsApi(api).delete_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, type_name.lower()
        )
    except client.ApiException as error:
        if error.status != 404:
            raise


def create_credential_when_type_known(api: client.ApiClient, namespace: str, body: Json, timeout: float = 30.0) -> Json:
    """Create a Credential of a type just created: the webhook refuses it until the operator has seen the type."""

    def attempt() -> Json | None:
        try:
            return create_credential(api, namespace, body)
        except client.ApiException as error:
            if error.status in {400, 403, 422}:
                return None
            raise

    result: Json = wait_until(attempt, timeout, f"Credential {namespace}/{body['metadata']['name']} to be accepted")
    return result
