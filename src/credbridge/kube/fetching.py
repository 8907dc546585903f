"""Reads from the API server, returning objects in their plain JSON form (dicts).

Plain dicts keep the rest of credbridge independent of the client library's model classes, and
`_preload_content=False` skips the library's slow model deserialization. Failures leave as
`errors.ApiError`, which never quotes a response body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client

from credbridge.core import names
from credbridge.kube import errors

Json = dict[str, Any]


def _json(response: Any) -> Json:
    data: Json = json.loads(response.data)
    return data


def _or_none_if_missing(action: str, call: Any, *args: Any, **kwargs: Any) -> Json | None:
    with errors.translated(action):
        try:
            return _json(call(*args, _preload_content=False, **kwargs))
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Secret, or None when it does not exist."""
    return _or_none_if_missing(
        f"read Secret {namespace}/{name}", client.CoreV1Api(api).read_namespaced_secret, name, namespace
    )


def read_credential(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Credential, or None when it does not exist."""
    return _or_none_if_missing(
        f"read Credential {namespace}/{name}",
        client.CustomObjectsApi(api).get_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_PLURAL,
        name,
    )


def read_credential_share(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The CredentialShare, or None when it does not exist."""
    return _or_none_if_missing(
        f"read CredentialShare {namespace}/{name}",
        client.CustomObjectsApi(api).get_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_SHARE_PLURAL,
        name,
    )


def _items(action: str, call: Any, *args: Any, **kwargs: Any) -> list[Json]:
    with errors.translated(action):
        items: list[Json] = _json(call(*args, _preload_content=False, **kwargs)).get("items", [])
    return items


PAGE_SIZE = 500
"""Objects per request when listing in pages: bounds the memory a large list needs at once."""


def _pages(action: str, call: Any, *args: Any, **kwargs: Any) -> Iterator[list[Json]]:
    """Lists in pages of PAGE_SIZE, following the continue token; yields each page's items."""
    token = ""
    while True:
        page_args = {"limit": PAGE_SIZE, **kwargs, **({"_continue": token} if token else {})}
        with errors.translated(action):
            page = _json(call(*args, _preload_content=False, **page_args))
        yield list(page.get("items") or [])
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return


def iter_credentials(api: client.ApiClient, namespace: str | None = None) -> Iterator[list[Json]]:
    """Credentials in `namespace` (None: every namespace), a page at a time."""
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        return _pages(
            "list Credentials in all namespaces",
            objects.list_cluster_custom_object,
            names.GROUP,
            names.VERSION,
            names.CREDENTIAL_PLURAL,
        )
    return _pages(
        f"list Credentials in namespace {namespace}",
        objects.list_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_PLURAL,
    )


def iter_managed_secrets(api: client.ApiClient, namespace: str | None = None) -> Iterator[list[Json]]:
    """Secrets labelled as managed by credbridge in `namespace` (None: every namespace), a page at a time."""
    core = client.CoreV1Api(api)
    if namespace is None:
        return _pages(
            "list managed Secrets in all namespaces",
            core.list_secret_for_all_namespaces,
            label_selector=names.MANAGED_SELECTOR,
        )
    return _pages(
        f"list managed Secrets in namespace {namespace}",
        core.list_namespaced_secret,
        namespace,
        label_selector=names.MANAGED_SELECTOR,
    )


def read_peering(api: client.ApiClient, name: str, namespace: str | None) -> Json | None:
    """kopf's peering object: the ClusterKopfPeering `name` (namespace None), or the KopfPeering in `namespace`."""
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        return _or_none_if_missing(
            f"read ClusterKopfPeering {name}",
            objects.get_cluster_custom_object,
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            name,
        )
    return _or_none_if_missing(
        f"read KopfPeering {namespace}/{name}",
        objects.get_namespaced_custom_object,
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        name,
    )


def iter_namespaces(api: client.ApiClient) -> Iterator[list[Json]]:
    """Every Namespace, a page at a time."""
    return _pages("list Namespaces", client.CoreV1Api(api).list_namespace)


def list_credentials(
    api: client.ApiClient, namespace: str | None = None, *, label_selector: str | None = None
) -> list[Json]:
    """Credentials in `namespace`, or in every namespace when it is None."""
    objects = client.CustomObjectsApi(api)
    kwargs: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
    where = f"namespace {namespace}" if namespace else "all namespaces"
    if namespace is None:
        return _items(
            f"list Credentials in {where}",
            objects.list_cluster_custom_object,
            names.GROUP,
            names.VERSION,
            names.CREDENTIAL_PLURAL,
            **kwargs,
        )
    return _items(
        f"list Credentials in {where}",
        objects.list_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_PLURAL,
        **kwargs,
    )


def list_credential_shares(api: client.ApiClient, namespace: str | None = None) -> list[Json]:
    """CredentialShares in `namespace`, or in every namespace when it is None."""
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        return _items(
            "list CredentialShares in all namespaces",
            objects.list_cluster_custom_object,
            names.GROUP,
            names.VERSION,
            names.CREDENTIAL_SHARE_PLURAL,
        )
    return _items(
        f"list CredentialShares in namespace {namespace}",
        objects.list_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_SHARE_PLURAL,
    )


def list_credential_types(api: client.ApiClient) -> list[Json]:
    """Every CredentialType in the cluster."""
    return _items(
        "list CredentialTypes",
        client.CustomObjectsApi(api).list_cluster_custom_object,
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_TYPE_PLURAL,
    )


def read_credential_type(api: client.ApiClient, name: str) -> Json | None:
    """The CredentialType object `name` (lower-case type name), or None when it does not exist."""
    return _or_none_if_missing(
        f"read CredentialType {name}",
        client.CustomObjectsApi(api).get_cluster_custom_object,
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_TYPE_PLURAL,
        name,
    )


def read_namespace(api: client.ApiClient, name: str) -> Json | None:
    """The Namespace, or None when it does not exist."""
    return _or_none_if_missing(f"read Namespace {name}", client.CoreV1Api(api).read_namespace, name)


def list_pods(api: client.ApiClient, namespace: str) -> list[Json]:
    """Pods in a namespace (for the in-use check before deleting a Credential)."""
    return _items(f"list Pods in namespace {namespace}", client.CoreV1Api(api).list_namespaced_pod, namespace)


def read_object(api: client.ApiClient, plural: str, kind: str, namespace: str, name: str) -> Json | None:
    """One of credbridge's namespaced objects (`plural` in group credbridge.io), or None when it does not exist."""
    return _or_none_if_missing(
        f"read {kind} {namespace}/{name}",
        client.CustomObjectsApi(api).get_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        plural,
        name,
    )


def read_credential_binding(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The CredentialBinding, or None when it does not exist."""
    return read_object(api, names.CREDENTIAL_BINDING_PLURAL, names.CREDENTIAL_BINDING_KIND, namespace, name)


def list_credential_bindings(api: client.ApiClient, namespace: str) -> list[Json]:
    """CredentialBindings in `namespace`."""
    return _items(
        f"list CredentialBindings in namespace {namespace}",
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_BINDING_PLURAL,
    )


_WORKLOAD_READERS = {
    "Deployment": "read_namespaced_deployment",
    "StatefulSet": "read_namespaced_stateful_set",
    "DaemonSet": "read_namespaced_daemon_set",
}
WORKLOAD_KINDS = tuple(_WORKLOAD_READERS)
"""The apps/v1 workload kinds `read_workload` and `writing.restart_workload` handle."""


def read_workload(api: client.ApiClient, kind: str, namespace: str, name: str) -> Json | None:
    """The apps/v1 Deployment, StatefulSet or DaemonSet, or None when it does not exist."""
    reader = getattr(client.AppsV1Api(api), _WORKLOAD_READERS[kind])
    return _or_none_if_missing(f"read {kind} {namespace}/{name}", reader, name, namespace)
