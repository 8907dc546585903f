"""Built-in CredentialTypes in the cluster: create the missing, revert drift, write nothing otherwise.

The operator applies the 113 built-ins on every start. Comparing first (one list) instead of
blindly applying keeps a restart at zero writes when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from credbridge.core import registry
from credbridge.kube import writing

logger = logging.getLogger(__name__)


def differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when a cluster CredentialType is not what the package says it should be."""
    labels = (existing.get("metadata") or {}).get("labels") or {}
    wanted_labels = desired["metadata"].get("labels") or {}
    if any(labels.get(key) != value for key, value in wanted_labels.items()):
        return True
    return bool(existing.get("spec") != desired["spec"])


def sync(
    api: client.ApiClient,
    builtins: Mapping[str, registry.CredentialTypeSpec],
    in_cluster: Sequence[Mapping[str, Any]],
) -> tuple[int, int]:
    """Create missing built-in types and replace drifted ones; return (created, replaced).

    `in_cluster` is the list of CredentialTypes the cluster has now (read once by the caller).
    """
    existing = {str(obj["metadata"]["name"]): obj for obj in in_cluster}
    created = replaced = 0
    for spec in builtins.values():
        desired = registry.type_to_object(spec)
        current = existing.get(desired["metadata"]["name"])
        if current is None:
            try:
                writing.create_credential_type(api, desired)
            except client.ApiException as error:
                if error.status != 409:
                    raise
            created += 1
        elif differs(current, desired):
            writing.replace_credential_type(api, desired, str(current["metadata"]["resourceVersion"]))
            replaced += 1
    if created or replaced:
        logger.info("built-in credential types: %d created, %d reverted to the package version", created, replaced)
    return created, replaced


def revert(
    api: client.ApiClient,
    event_type: str | None,
    body: Mapping[str, Any],
    builtins: Mapping[str, registry.CredentialTypeSpec],
) -> bool:
    """Undo a change to, or the deletion of, one built-in type; True when something was written."""
    spec_name = str((body.get("spec") or {}).get("name", ""))
    builtin = builtins.get(spec_name)
    if builtin is None or (body.get("metadata") or {}).get("name") != registry.type_object_name(spec_name):
        return False
    desired = registry.type_to_object(builtin)
    try:
        if event_type == "DELETED":
            writing.create_credential_type(api, desired)
            logger.info("re-created built-in credential type %s", spec_name)
            return True
        if differs(body, desired):
            writing.replace_credential_type(api, desired, str(body["metadata"]["resourceVersion"]))
            logger.info("reverted a change to built-in credential type %s", spec_name)
            return True
    except client.ApiException as error:
        if error.status not in (404, 409):
            raise
    return False
