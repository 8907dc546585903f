"""The sealing public keys in the cluster: the ConfigMap the operator publishes them in, and reading it back.

Anyone who may seal needs the public key, and nobody needs more: the operator writes the public
half of every sealing key pair into a ConfigMap in its namespace (`kubectl get configmap
credbridge-sealing-keys -n credbridge-system -o yaml` shows it), which the chart lets every
authenticated user read, and `credbridge seal --fetch-cert` saves for offline use. The operator
rewrites it from the keyring at start and after every keyring change, so an edit by hand does not
last; `read_certificate` also checks that the id it names belongs to the key it holds.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kubernetes import client

from credbridge.core import keyring, names, sealing
from credbridge.kube import errors

logger = logging.getLogger(__name__)

Json = dict[str, Any]


def publish(api: client.ApiClient, namespace: str, name: str, ring: keyring.Keyring) -> bool:
    """Make the ConfigMap hold the public keys of `ring`; returns whether it wrote (create or replace)."""
    data = keyring.published_sealing_keys(ring)
    if not data:
        return False
    core = client.CoreV1Api(api)
    action = f"publish the sealing public keys in ConfigMap {namespace}/{name}"
    with errors.translated(action):
        try:
            current = json.loads(core.read_namespaced_config_map(name, namespace, _preload_content=False).data)
        except client.ApiException as error:
            if error.status != 404:
                raise
            current = None
        body: Json = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
                "annotations": {names.ACTIVE_SEALING_KEY_ANNOTATION: str(ring.active_sealing_id)},
            },
            "data": data,
        }
        if current is None:
            core.create_namespaced_config_map(namespace, body, _preload_content=False)
        elif current.get("data") != data:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            core.replace_namespaced_config_map(name, namespace, body, _preload_content=False)
        else:
            return False
    logger.info(
        "published sealing public keys %s (active %s) in ConfigMap %s/%s",
        ", ".join(ring.sealing_ids()),
        ring.active_sealing_id,
        namespace,
        name,
    )
    return True


def read_certificate(api: client.ApiClient, namespace: str, name: str) -> tuple[str, str]:
    """(active key id, PEM) from the ConfigMap; ApiError when it is missing or incomplete.

    The id is checked against the key it names (ids derive from public keys), so a ConfigMap
    edited by hand into inconsistency is noticed rather than sealed to.
    """
    action = f"read the sealing certificate from ConfigMap {namespace}/{name}"
    with errors.translated(action):
        try:
            found: Json = json.loads(
                client.CoreV1Api(api).read_namespaced_config_map(name, namespace, _preload_content=False).data
            )
        except client.ApiException as error:
            if error.status == 404:
                raise errors.ApiError(
                    action,
                    404,
                    "it does not exist: is the operator running (it publishes the keys at start)? Check "
                    "--operator-namespace",
                ) from None
            raise
    data = found.get("data") or {}
    key_id, pem = data.get(names.SEALING_ACTIVE_KEY), data.get(names.SEALING_CERT_KEY)
    if not key_id or not pem:
        raise errors.ApiError(action, None, f"it has no {names.SEALING_CERT_KEY}: restart the operator to publish it")
    try:
        public_key = sealing.parse_public_key_pem(str(pem))
    except sealing.CertificateError as error:
        raise errors.ApiError(action, None, f"its {names.SEALING_CERT_KEY} is unusable: {error}") from None
    if sealing.key_id_for(public_key) != key_id:
        raise errors.ApiError(
            action,
            None,
            f"its {names.SEALING_ACTIVE_KEY} does not match the key in {names.SEALING_CERT_KEY}: "
            "it was edited by hand; restart the operator to publish it again",
        )
    return str(key_id), str(pem)
