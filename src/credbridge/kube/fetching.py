"""Reads from the API server, returning objects in their plain JSON form (dicts).

Plain dicts keep the rest of credbridge independent of the client library's model classes, and
`_preload_content=False` skips the library's slow model deserialization.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from credbridge.core import names

Json = dict[str, Any]


def _json(response: Any) -> Json:
    data: Json = json.loads(response.data)
    return data


def _or_none_if_missing(call: Any, *args: Any, **kwargs: Any) -> Json | None:
    try:
        return _json(call(*args, _preload_content=False, **kwargs))
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Secret, or None when it does not exist."""
    return _or_none_if_missing(client.CoreV1Api(api).read_namespaced_secret, name, namespace)


def read_credential(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The Credential, or None when it does not exist."""
    return _or_none_if_missing(
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
        client.CustomObjectsApi(api).get_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        namespace,
        names.CREDENTIAL_SHARE_PLURAL,
        name,
    )


def list_credentials(
    api: client.ApiClient, namespace: str | None = None, *, label_selector: str | None = None
) -> list[Json]:
    """Credentials in `namespace`, or in every namespace when it is None."""
    objects = client.CustomObjectsApi(api)
    kwargs: dict[str, Any] = {"_preload_content": False}
    if label_selector:
        kwargs["label_selector"] = label_selector
    if namespace is None:
        response = objects.list_cluster_custom_object(names.GROUP, names.VERSION, names.CREDENTIAL_PLURAL, **kwargs)
    else:
        response = objects.list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, **kwargs
        )
    items: list[Json] = _json(response).get("items", [])
    return items


def list_credential_shares(api: client.ApiClient, namespace: str | None = None) -> list[Json]:
    """CredentialShares in `namespace`, or in every namespace when it is None."""
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        response = objects.list_cluster_custom_object(
            names.GROUP, names.VERSION, names.CREDENTIAL_SHARE_PLURAL, _preload_content=False
        )
    else:
        response = objects.list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CREDENTIAL_SHARE_PLURAL, _preload_content=False
        )
    items: list[Json] = _json(response).get("items", [])
    return items


def list_credential_types(api: client.ApiClient) -> list[Json]:
    """Every CredentialType in the cluster."""
    response = client.CustomObjectsApi(api).list_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, _preload_content=False
    )
    items: list[Json] = _json(response).get("items", [])
    return items


def read_credential_type(api: client.ApiClient, name: str) -> Json | None:
    """The CredentialType object `name` (lower-case type name), or None when it does not exist."""
    return _or_none_if_missing(
        client.CustomObjectsApi(api).get_cluster_custom_object,
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_TYPE_PLURAL,
        name,
    )


def read_namespace(api: client.ApiClient, name: str) -> Json | None:
    """The Namespace, or None when it does not exist."""
    return _or_none_if_missing(client.CoreV1Api(api).read_namespace, name)


def list_namespaces(api: client.ApiClient, label_selector: str | None = None) -> list[Json]:
    """Namespaces, optionally only those matching a label selector."""
    kwargs: dict[str, Any] = {"_preload_content": False}
    if label_selector is not None:
        kwargs["label_selector"] = label_selector
    items: list[Json] = _json(client.CoreV1Api(api).list_namespace(**kwargs)).get("items", [])
    return items


def list_pods(api: client.ApiClient, namespace: str) -> list[Json]:
    """Pods in a namespace (for the in-use check before deleting a Credential)."""
    response = client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    items: list[Json] = _json(response).get("items", [])
    return items


def list_managed_secrets(
    api: client.ApiClient, namespace: str | None = None, *, extra_selector: str = ""
) -> list[Json]:
    """Secrets labelled as managed by credbridge."""
    selector = f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}" + (f",{extra_selector}" if extra_selector else "")
    core = client.CoreV1Api(api)
    if namespace is None:
        response = core.list_secret_for_all_namespaces(label_selector=selector, _preload_content=False)
    else:
        response = core.list_namespaced_secret(namespace, label_selector=selector, _preload_content=False)
    items: list[Json] = _json(response).get("items", [])
    return items
