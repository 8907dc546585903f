"""The keyring Secret in the cluster: load it, create it once, rotate and retire keys, watch it.

The one rule this module exists for: a keyring that is present but unreadable is an error that
stops the operator, never a reason to make a new key (new keys would make every existing
credential undecryptable — the top complaint of Flowise users). Changed bytes under a known key
id count as unreadable: every read checks the fingerprints recorded in the Secret
(core.keyring.check_key_material), and the fingerprints of keys that have none yet are recorded
once.

The sealing key pairs live in the same Secret. A keyring that has never had one gets one (a new
keyring, or one from before sealing): that loses nothing. A keyring that had one and lost it is
malformed like any other (core.keyring), and stops the operator.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from kubernetes import client, watch

from credbridge.core import envelope, keyring, names
from credbridge.kube import errors, fetching

logger = logging.getLogger(__name__)

_RECORD_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class Stored:
    """The keyring Secret as read: the keyring, its fingerprints and where it is, never its raw data."""

    ring: keyring.Keyring
    recorded: Mapping[str, str]
    """Fingerprints by key id from the Secret's annotation (empty on a keyring from before them)."""
    resource_version: str
    reference: dict[str, Any]
    """apiVersion, kind and metadata (name, namespace, uid, resourceVersion): what an Event names."""


@dataclasses.dataclass(frozen=True)
class Observed:
    """One change of the keyring Secret seen by the watch: its new state, or why it is unusable."""

    stored: Stored | None
    """The keyring as now stored; None when the Secret was deleted or is malformed."""
    problem: str | None
    """Why `stored` is None: a message naming the Secret and the fix, never key material."""
    reference: dict[str, Any]
    """The keyring Secret, for Events (also when it was deleted)."""


def reference_to(namespace: str, name: str, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyring Secret as an Event's involved object, without its data."""
    metadata = metadata or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
    }


def _parse(namespace: str, name: str, data: Mapping[str, str], metadata: Mapping[str, Any]) -> Stored:
    where = f"{namespace}/{name}"
    annotations = metadata.get("annotations") or {}
    ring = keyring.parse_keyring(where, data, annotations)
    return Stored(
        ring=ring,
        recorded=keyring.parse_fingerprints(where, annotations),
        resource_version=str(metadata.get("resourceVersion", "")),
        reference=reference_to(namespace, name, metadata),
    )


def read(api: client.ApiClient, namespace: str, name: str) -> Stored | None:
    """The keyring Secret, or None when it does not exist; KeyringError when it is malformed.

    Fingerprints are not checked here: `load` and the operator do, each against what it knows.
    """
    secret = fetching.read_secret(api, namespace, name)
    if secret is None:
        return None
    return _parse(namespace, name, secret.get("data") or {}, secret.get("metadata") or {})


def _verified(stored: Stored, namespace: str, name: str) -> keyring.KeyMaterialCheck:
    check = keyring.check_key_material(stored.ring, stored.recorded)
    if check.changed:
        raise keyring.refuse_changed_keys(f"{namespace}/{name}", check.changed)
    return check


def load(api: client.ApiClient, namespace: str, name: str) -> tuple[keyring.Keyring, str] | None:
    """The keyring and its resourceVersion, or None when the Secret does not exist.

    Raises keyring.KeyringError when it exists but is malformed, or when a key's bytes differ from
    its recorded fingerprint.
    """
    stored = read(api, namespace, name)
    if stored is None:
        return None
    _verified(stored, namespace, name)
    return stored.ring, stored.resource_version


def record_fingerprints(api: client.ApiClient, namespace: str, name: str, stored: Stored) -> None:
    """Add the fingerprints of keys that have none to the keyring Secret: one write, logged.

    The patch carries the resourceVersion it was computed from: a concurrent change fails it with
    409 (errors.ApiError) rather than being overwritten.
    """
    missing = sorted(set(stored.ring.ids()) - set(stored.recorded))
    patch = {
        "metadata": {
            "resourceVersion": stored.resource_version,
            "annotations": {
                names.KEY_FINGERPRINTS_ANNOTATION: keyring.fingerprints_annotation(stored.ring, stored.recorded)
            },
        }
    }
    with errors.translated(f"record key fingerprints in keyring Secret {namespace}/{name}"):
        client.CoreV1Api(api).patch_namespaced_secret(name, namespace, patch, _preload_content=False)
    logger.info(
        "recorded the fingerprint of key(s) %s in keyring Secret %s/%s (annotation %s)",
        ", ".join(missing),
        namespace,
        name,
        names.KEY_FINGERPRINTS_ANNOTATION,
    )


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure(api: client.ApiClient, namespace: str, name: str, random_bytes: envelope.RandomBytes) -> keyring.Keyring:
    """Load the keyring, creating it with one fresh key (and sealing key pair) only when the Secret is absent.

    A keyring without any sealing key (from before sealing) gets its first one. Raises KeyringError
    when it is malformed or a key changed; records missing fingerprints.
    """
    for _ in range(_RECORD_ATTEMPTS):
        stored = read(api, namespace, name)
        if stored is None:
            break
        _verified(stored, namespace, name)
        if not stored.ring.sealing_keys:
            try:
                return _add_first_sealing_key(api, namespace, name, stored, random_bytes)
            except errors.ApiError as error:
                if error.conflict:
                    continue
                if not error.forbidden:
                    raise
                logger.warning(
                    "keyring Secret %s/%s has no sealing key and the operator may not add one (%s): sealed values "
                    "cannot be opened; allow it to update the Secret, or import a key bundle (credbridge keys import)",
                    namespace,
                    name,
                    error,
                )
                return stored.ring
        if not _verified(stored, namespace, name).unrecorded:
            return stored.ring
        try:
            record_fingerprints(api, namespace, name, stored)
        except errors.ApiError as error:
            if error.conflict:
                continue  # changed meanwhile (another replica recorded them): read and check again
            if not error.forbidden:
                raise
            # A keyring the operator may read but not change (brought by another tool, RBAC kept
            # tight): it still works; only a change of bytes across restarts goes unnoticed.
            logger.warning(
                "cannot record key fingerprints in keyring Secret %s/%s (%s): changed key bytes are noticed "
                "only while the operator runs; allow it to patch the Secret, or add the annotation %s yourself",
                namespace,
                name,
                error,
                names.KEY_FINGERPRINTS_ANNOTATION,
            )
        return stored.ring
    else:
        raise keyring.KeyringError(f"keyring Secret {namespace}/{name} kept changing while it was read: try again")
    ring = keyring.add_sealing_key(keyring.new_keyring(random_bytes), random_bytes, now_rfc3339())
    try:
        with errors.translated(f"create keyring Secret {namespace}/{name}"):
            _create(api, namespace, name, ring)
    except errors.ApiError as error:
        if error.status != 409:
            raise
        # Another operator instance made it first: use theirs, never a second key.
        loaded = load(api, namespace, name)
        assert loaded is not None
        return loaded[0]
    logger.info(
        "created keyring Secret %s/%s with key %s and sealing key %s",
        namespace,
        name,
        ring.active_id,
        ring.active_sealing_id,
    )
    return ring


def _create(api: client.ApiClient, namespace: str, name: str, ring: keyring.Keyring) -> None:
    """Create the keyring Secret holding `ring` (ApiException 409 when it exists)."""
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
    client.CoreV1Api(api).create_namespaced_secret(namespace, body, _preload_content=False)


def _add_first_sealing_key(
    api: client.ApiClient, namespace: str, name: str, stored: Stored, random_bytes: envelope.RandomBytes
) -> keyring.Keyring:
    """One write adding the first sealing key pair to a keyring that never had one (ApiError on 409/403)."""
    ring = keyring.add_sealing_key(stored.ring, random_bytes, now_rfc3339())
    with errors.translated(f"add a sealing key to keyring Secret {namespace}/{name}"):
        _store(api, namespace, name, ring, stored.recorded, stored.resource_version)
    logger.info("added sealing key %s to keyring Secret %s/%s", ring.active_sealing_id, namespace, name)
    return ring


def _store(
    api: client.ApiClient,
    namespace: str,
    name: str,
    ring: keyring.Keyring,
    recorded: Mapping[str, str],
    resource_version: str,
) -> None:
    data, annotations = keyring.keyring_to_secret_fields(ring, recorded)
    core = client.CoreV1Api(api)
    current = core.read_namespaced_secret(name, namespace)
    current.data = data
    current.metadata.annotations = {**(current.metadata.annotations or {}), **annotations}
    current.metadata.resource_version = resource_version
    core.replace_namespaced_secret(name, namespace, current)


def _load_stored(api: client.ApiClient, namespace: str, name: str) -> Stored:
    stored = read(api, namespace, name)
    if stored is None:
        raise keyring.KeyringError(
            f"keyring Secret {namespace}/{name} does not exist: start the operator once, or create it"
        )
    _verified(stored, namespace, name)
    return stored


def rotate(api: client.ApiClient, namespace: str, name: str, random_bytes: envelope.RandomBytes) -> keyring.Keyring:
    """Add a new key and make it active; older keys stay for decryption until retired.

    Refuses (KeyringError) a keyring whose keys do not match their fingerprints: rotating would
    record the changed bytes as the right ones.
    """
    stored = _load_stored(api, namespace, name)
    rotated = keyring.add_key(stored.ring, random_bytes)
    _store(api, namespace, name, rotated, stored.recorded, stored.resource_version)
    return rotated


def rotate_sealing(
    api: client.ApiClient,
    namespace: str,
    name: str,
    random_bytes: envelope.RandomBytes,
    *,
    unless_newer_than: str | None = None,
) -> keyring.Keyring | None:
    """Add a new sealing key pair and make it active; older ones stay to open what was sealed with them.

    With `unless_newer_than` (RFC 3339), a scheduled rotation: nothing happens (None) when the
    active sealing key became active after that time — another replica rotated already. The write
    carries the resourceVersion it was computed from, so two replicas never both rotate (409).
    """
    stored = _load_stored(api, namespace, name)
    since = stored.ring.sealing_since
    if unless_newer_than is not None and since and since > unless_newer_than:
        return None
    rotated = keyring.add_sealing_key(stored.ring, random_bytes, now_rfc3339())
    _store(api, namespace, name, rotated, stored.recorded, stored.resource_version)
    return rotated


def retire_sealing(
    api: client.ApiClient, namespace: str, name: str, key_id: str, users: Sequence[str]
) -> keyring.Keyring:
    """Remove a sealing key pair no Credential's spec.sealedData uses (`users`: those that do, by name)."""
    stored = _load_stored(api, namespace, name)
    retired = keyring.retire_sealing_key(stored.ring, key_id, users)
    entry = names.SEALING_KEY_PREFIX + key_id
    recorded = {other: value for other, value in stored.recorded.items() if other != entry}
    _store(api, namespace, name, retired, recorded, stored.resource_version)
    return retired


def restore(
    api: client.ApiClient, namespace: str, name: str, imported: keyring.Keyring
) -> tuple[keyring.Keyring, bool]:
    """Put the keys of a bundle into the keyring Secret: create it when absent, else add them to it.

    Returns the keyring and whether the Secret was created. The bundle's keys become active. Raises
    KeyringError when a key id is in both with other bytes, or the Secret is malformed.
    """
    stored = read(api, namespace, name)
    if stored is None:
        _create(api, namespace, name, imported)
        return imported, True
    _verified(stored, namespace, name)
    merged = keyring.restore_keys(stored.ring, imported)
    _store(api, namespace, name, merged, stored.recorded, stored.resource_version)
    return merged, False


def retire(api: client.ApiClient, namespace: str, name: str, key_id: str, in_use: Collection[str]) -> keyring.Keyring:
    """Remove a key that no Credential uses any more (`in_use`: status.keyId of every Credential).

    Its fingerprint goes with it; the other keys must match theirs (KeyringError otherwise).
    """
    stored = _load_stored(api, namespace, name)
    retired = keyring.retire_key(stored.ring, key_id, in_use)
    recorded = {other: value for other, value in stored.recorded.items() if other != key_id}
    _store(api, namespace, name, retired, recorded, stored.resource_version)
    return retired


def watch_changes(
    api: client.ApiClient,
    namespace: str,
    name: str,
    on_change: Callable[[Observed], None],
    stop: threading.Event,
) -> threading.Thread:
    """Call `on_change(observed)` whenever the keyring Secret changes, in a daemon thread.

    A deleted or malformed keyring is observed with a problem instead of a keyring; the running
    operator keeps the last good keyring and says so instead of stopping.
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
                    metadata = {
                        "uid": secret.metadata.uid,
                        "resourceVersion": version,
                        "annotations": secret.metadata.annotations or {},
                    }
                    reference = reference_to(namespace, name, metadata)
                    if event["type"] == "DELETED":
                        on_change(Observed(None, _deleted(namespace, name), reference))
                        continue
                    if version == last_version:
                        continue
                    last_version = version
                    try:
                        stored = _parse(namespace, name, secret.data or {}, metadata)
                    except keyring.KeyringError as error:
                        on_change(Observed(None, str(error), reference))
                    else:
                        on_change(Observed(stored, None, reference))
            except Exception as error:
                logger.debug("keyring watch restarting after %s", type(error).__name__)
                time.sleep(1)

    thread = threading.Thread(target=run, name="keyring-watch", daemon=True)
    thread.start()
    return thread


def _deleted(namespace: str, name: str) -> str:
    return (
        f"keyring Secret {namespace}/{name} was deleted: the operator keeps sealing and opening with the keys it "
        "holds in memory; restore the Secret from a backup (an operator started without it creates a new keyring, "
        "which opens none of the existing Secrets)"
    )
