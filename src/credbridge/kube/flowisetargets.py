"""FlowiseTarget reads and writes: status, and the clean-up finalizer.

The Flowise sync reads targets from its watch; it writes their status, and adds or removes its
finalizer with the resourceVersion it planned against, so a concurrent change to the finalizer
list (another controller's finalizer) fails with 409 and is retried instead of being lost.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from credbridge.core import names
from credbridge.core.flowise import target as target_module
from credbridge.kube import errors

Json = dict[str, Any]


def read_flowise_target(api: client.ApiClient, namespace: str, name: str) -> Json | None:
    """The FlowiseTarget, or None when it does not exist."""
    try:
        with errors.translated(f"read FlowiseTarget {namespace}/{name}"):
            found: Json = client.CustomObjectsApi(api).get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, target_module.PLURAL, name
            )
    except errors.ApiError as error:
        if error.status == 404:
            return None
        raise
    return found


def patch_flowise_target_status(api: client.ApiClient, namespace: str, name: str, patch: Json) -> str | None:
    """Merge-patches the status; returns the new resourceVersion, or None when the target is gone."""
    try:
        with errors.translated(f"update the status of FlowiseTarget {namespace}/{name}"):
            patched = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                names.GROUP, names.VERSION, namespace, target_module.PLURAL, name, {"status": patch}
            )
    except errors.ApiError as error:
        if error.status == 404:
            return None
        raise
    return str((patched.get("metadata") or {}).get("resourceVersion", ""))


def set_flowise_target_finalizers(
    api: client.ApiClient, namespace: str, name: str, finalizers: list[str], resource_version: str
) -> bool:
    """Replaces the finalizer list, only if the target is still at `resource_version` (else 409).

    Returns False when the target is gone.
    """
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
    try:
        with errors.translated(f"update the finalizers of FlowiseTarget {namespace}/{name}"):
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, target_module.PLURAL, name, patch
            )
    except errors.ApiError as error:
        if error.status == 404:
            return False
        raise
    return True
