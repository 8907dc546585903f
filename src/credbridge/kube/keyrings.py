"""The keyring Secret in the cluster: load it, create it once, rotate and retire keys, watch it.

The one rule this module exists for: a keyring that is present but unreadable is an error that
stops the operator, never a reason to make a new key (new keys would make every existing
credential undecryptable — the top complaint of Flowise users).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection

from kubernetes import client, watch

from credbridge.core import envelope, keyring, names
from credbridge.kube import errors, fetching

logger = logging.getLogger(__name__)


def load(api: client.ApiClient, namespace: str, name: str) -> tuple[keyring.Keyring, str] | None:
    """The keyring and its resourceVersion, or None when the Secret does not exist.

    Raises keyring.KeyringError when it exists but is malformed.
    """
    secret = fetching.read_secret(api, namespace, name)
    if secret is None:
        return None
    metadata = secret.get("metadata") or {}
    ring = keyring.parse_keyring(f"{namespace}/{name}", secret.get("data") or {}, metadata.get("annotations") or {})
    return ring, str(metadata.get("resourceVersion", ""))


def ensure(api: client.ApiClient, namespace: str, name: str, random_bytes: envelope.RandomBytes) -> keyring.Keyring:
    """Load the keyring, creating it with one fresh key only when the Secret is absent."""
    loaded = load(api, namespace, name)
    if loaded is not None:
        return loaded[0]
    ring = keyring.new_keyring(random_bytes)
    data, annotations = keyring.keyring_to_secret_fields(ring)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": annotations,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
        },
        "data": data,
    }
    try:
        with errors.translated(f"create keyring Secret {namespace}/{name}"):
            client.CoreV1Api(api).create_namespaced_secret(namespace, body, _preload_content=False)
    except errors.ApiError as error:
        if error.status != 409:
            raise
        # Another operator instance made it first: use theirs, never a second key.
        loaded = load(api, namespace, name)
        assert loaded is not None
        return loaded[0]
    logger.info("created keyring Secret %s/%s with key %s", namespace, name, ring.active_id)
    return ring


def _store(api: client.ApiClient, namespace: str, name: str, ring: keyring.Keyring, resource_version: str) -> None:
    data, annotations = keyring.keyring_to_secret_fields(ring)
    core = client.CoreV1Api(api)
    current = core.read_namespaced_secret(name, namespace)
    current.data = data
    current.metadata.annotations = {**(current.metadata.annotations or {}), **annotations}
    current.metadata.resource_version = resource_version
    core.replace_namespaced_secret(name, namespace, current)


def rotate(api: client.ApiClient, namespace: str, name: str, random_bytes: envelope.RandomBytes) -> keyring.Keyring:
    """Add a new key and make it active; older keys stay for decryption until retired."""
    loaded = load(api, namespace, name)
    if loaded is None:
        raise keyring.KeyringError(
            f"keyring Secret {namespace}/{name} does not exist: start the operator once, or create it"
        )
    ring, version = loaded
    rotated = keyring.add_key(ring, random_bytes)
    _store(api, namespace, name, rotated, version)
    return rotated


def retire(api: client.ApiClient, namespace: str, name: str, key_id: str, in_use: Collection[str]) -> keyring.Keyring:
    """Remove a key that no Credential uses any more (`in_use`: status.keyId of every Credential)."""
    loaded = load(api, namespace, name)
    if loaded is None:
        raise keyring.KeyringError(f"keyring Secret {namespace}/{name} does not exist")
    ring, version = loaded
    retired = keyring.retire_key(ring, key_id, in_use)
    _store(api, namespace, name, retired, version)
    return retired


def watch_changes(
    api: client.ApiClient,
    namespace: str,
    name: str,
    on_change: Callable[[keyring.Keyring | None, str | None], None],
    stop: threading.Event,
) -> threading.Thread:
    """Call `on_change(keyring, error)` whenever the keyring Secret changes, in a daemon thread.

    A malformed keyring reports `(None, message)`; the running operator keeps the last good
    keyring and says so instead of stopping.
    """

    def run() -> None:
        core = client.CoreV1Api(api)
        last_version = ""
        while not stop.is_set():
            try:
                stream = watch.Watch().stream(
                    core.list_namespaced_secret,
                    namespace,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=60,
                    _preload_content=True,
                )
                for event in stream:
                    if stop.is_set():
                        break
                    secret = event["object"]
                    version = secret.metadata.resource_version
                    if event["type"] == "DELETED":
                        on_change(None, f"keyring Secret {namespace}/{name} was deleted")
                        continue
                    if version == last_version:
                        continue
                    last_version = version
                    try:
                        ring = keyring.parse_keyring(
                            f"{namespace}/{name}", secret.data or {}, secret.metadata.annotations or {}
                        )
                    except keyring.KeyringError as error:
                        on_change(None, str(error))
                    else:
                        on_change(ring, None)
            except Exception as error:
                logger.debug("keyring watch restarting after %s", type(error).__name__)
                time.sleep(1)

    thread = threading.Thread(target=run, name="keyring-watch", daemon=True)
    thread.start()
    return thread
