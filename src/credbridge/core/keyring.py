"""The keyring: every encryption key by id, and which one seals new envelopes.

Flowise keeps one key in a file; when it is regenerated, every credential is lost. credbridge
keeps a keyring Secret instead: envelopes name the key that sealed them, a new key can become
active while older ones still open existing envelopes, and a key is retired only when no
credential uses it. This module parses and changes keyrings as values; reading and writing the
Secret is the kube layer's job, and it never makes a key on its own: a keyring that is present
but unreadable is an error to fix, not a reason to start over.

Key material is immutable per key id: envelopes name their key by id, so new bytes under an old
id would seal envelopes that the original key (restored from a backup, say) cannot open, while
every envelope sealed before stops opening. A change of the bytes behind a known id is refused
like any other malformed keyring. To notice it across restarts, the keyring Secret carries a
fingerprint per key id (`credbridge.io/key-fingerprints`): a keyed commitment to the key, see
`key_fingerprint`.

The keyring also holds the sealing key pairs (X25519, core.sealing) that `credbridge seal` seals
values to, under the same rules: data entries `sealing.<keyId>`, an annotation naming the active
one, fingerprints in the same annotation, immutable per id (a sealing key's id is derived from its
public key, so changed bytes show even without a fingerprint), never made again on their own once
the keyring has had one. One Secret, so one backup holds everything (`credbridge keys export`).
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import datetime
import hashlib
import hmac
import json
import types
import typing

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf

from credbridge.core import envelope, names, sealing

_MAX_ID_ATTEMPTS = 64

FINGERPRINT_INFO = b"credbridge.io/v1 key-fingerprint"
"""HKDF info that derives the fingerprint subkey from a keyring key (its own label: the subkey is
used for nothing else)."""
SEALING_FINGERPRINT_INFO = b"credbridge.io/v1 sealing-key-fingerprint"
"""HKDF info that derives the fingerprint subkey from a sealing private key."""
_MAX_LISTED = 10


class KeyringError(ValueError):
    """A keyring is malformed or a change to it is refused; the message names the fix, never key material."""


@dataclasses.dataclass(frozen=True, repr=False)
class Keyring:
    """Keys by id (8 lowercase hex characters, 32 bytes each) and the id of the active key.

    The active key seals new envelopes; every key opens the envelopes that name it. The repr
    shows key ids only.
    """

    keys: collections.abc.Mapping[str, bytes]
    """Key material by key id; read-only."""
    active_id: str
    """Id of the key that seals new envelopes."""
    sealing_keys: collections.abc.Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    """Sealing private keys (raw X25519, 32 bytes) by sealing key id; read-only. Empty on a keyring
    from before sealing (the operator adds one)."""
    active_sealing_id: str | None = None
    """Id of the sealing key pair whose public key `credbridge seal` seals to; None without sealing keys."""
    sealing_since: str = ""
    """When the active sealing key became active (RFC 3339), or empty when unknown."""

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not envelope.is_key_id(key_id):
                raise KeyringError(f"keyring key id {key_id!r} is not 8 lowercase hex characters")
            if len(key) != envelope.KEY_BYTES:
                raise KeyringError(f"keyring key {key_id!r} is not {envelope.KEY_BYTES} bytes long")
        if self.active_id not in self.keys:
            raise KeyringError(f"keyring active key {self.active_id!r} is not one of its keys {self.ids()}")
        for key_id, private_key in self.sealing_keys.items():
            problem = _sealing_key_problem(key_id, private_key)
            if problem is not None:
                raise KeyringError(f"keyring {problem}")
        if (self.active_sealing_id is None) != (not self.sealing_keys) or (
            self.active_sealing_id is not None and self.active_sealing_id not in self.sealing_keys
        ):
            raise KeyringError(
                f"keyring active sealing key {self.active_sealing_id!r} is not one of its sealing keys "
                f"{self.sealing_ids()}"
            )
        # Freeze private copies: a caller's dict must not change the keyring behind its back.
        object.__setattr__(self, "keys", types.MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "sealing_keys", types.MappingProxyType(dict(self.sealing_keys)))

    @property
    def active_key(self) -> bytes:
        """The key that seals new envelopes."""
        return self.keys[self.active_id]

    def ids(self) -> list[str]:
        """Returns the key ids, sorted."""
        return sorted(self.keys)

    def sealing_ids(self) -> list[str]:
        """Returns the sealing key ids, sorted."""
        return sorted(self.sealing_keys)

    def sealing_public_keys(self) -> dict[str, bytes]:
        """The public key of every sealing key pair, by id (what the operator publishes)."""
        return {key_id: sealing.public_key_of(self.sealing_keys[key_id]) for key_id in self.sealing_ids()}

    def __repr__(self) -> str:
        sealing_part = (
            f", sealing_ids={self.sealing_ids()!r}, active_sealing_id={self.active_sealing_id!r}"
            if self.sealing_keys
            else ""
        )
        return f"Keyring(ids={self.ids()!r}, active_id={self.active_id!r}{sealing_part})"


def _sealing_key_problem(key_id: str, private_key: bytes) -> str | None:
    """Why `private_key` cannot be the sealing key `key_id` (naming the id, never bytes), or None."""
    if not envelope.is_key_id(key_id):
        return f"sealing key id {key_id!r} is not 8 lowercase hex characters"
    if len(private_key) != sealing.KEY_BYTES:
        return f"sealing key {key_id!r} is {len(private_key)} bytes long, not {sealing.KEY_BYTES}"
    actual = sealing.key_id_for(sealing.public_key_of(private_key))
    if actual != key_id:
        return (
            f"sealing key {key_id!r} holds the bytes of another key pair (its public key has the id {actual}): "
            "sealed values name their key by id, so restore the original bytes of this key from a backup"
        )
    return None


def _decode_key(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_keyring(
    secret_name: str,
    data: collections.abc.Mapping[str, str],
    annotations: collections.abc.Mapping[str, str],
) -> Keyring:
    """Reads a keyring from its Secret's `.data` (base64) and annotations.

    Raises KeyringError listing everything wrong with the Secret and how to fix it; an empty
    Secret is an error too, never a reason to make a key.
    """
    subject = f"keyring Secret {secret_name!r}"
    if not data:
        raise KeyringError(
            f"{subject} has no keys: restore it from a backup, or delete it so the operator "
            "creates a new keyring (credentials sealed with the lost keys must then be re-applied)"
        )
    problems: list[str] = []
    keys: dict[str, bytes] = {}
    sealing_keys: dict[str, bytes] = {}
    for key_id, encoded in data.items():
        if key_id.startswith(names.SEALING_KEY_PREFIX):
            _parse_sealing_entry(key_id, encoded, sealing_keys, problems)
            continue
        if not envelope.is_key_id(key_id):
            problems.append(f"data entry {key_id!r} is not a key id (8 lowercase hex characters): remove or rename it")
            continue
        key = _decode_key(encoded)
        if key is None:
            problems.append(f"key {key_id!r} is not valid base64: store the key base64-encoded in .data")
            continue
        if len(key) != envelope.KEY_BYTES:
            problems.append(
                f"key {key_id!r} is {len(key)} bytes long, not {envelope.KEY_BYTES}: "
                f"store {envelope.KEY_BYTES} random bytes (AES-256)"
            )
            continue
        keys[key_id] = key
    active_id = annotations.get(names.ACTIVE_KEY_ANNOTATION)
    known = ", ".join(sorted(key for key in data if not key.startswith(names.SEALING_KEY_PREFIX))) or "(none)"
    if active_id is None:
        problems.append(
            f"the annotation {names.ACTIVE_KEY_ANNOTATION} naming the active key is missing: "
            f"set it to one of the key ids ({known})"
        )
    elif active_id not in data:
        problems.append(
            f"the annotation {names.ACTIVE_KEY_ANNOTATION} names key {active_id!r}, which is not in "
            f"the Secret's data: set it to one of the key ids ({known})"
        )
    active_sealing_id = annotations.get(names.ACTIVE_SEALING_KEY_ANNOTATION)
    problems.extend(_sealing_problems(data, annotations, active_sealing_id))
    if problems:
        raise KeyringError(f"{subject} is malformed: " + "; ".join(problems))
    assert active_id is not None
    return Keyring(
        keys=keys,
        active_id=active_id,
        sealing_keys=sealing_keys,
        active_sealing_id=active_sealing_id if sealing_keys else None,
        sealing_since=annotations.get(names.SEALING_KEY_SINCE_ANNOTATION, "") if sealing_keys else "",
    )


def _parse_sealing_entry(entry: str, encoded: str, sealing_keys: dict[str, bytes], problems: list[str]) -> None:
    key_id = entry[len(names.SEALING_KEY_PREFIX) :]
    key = _decode_key(encoded)
    if key is None:
        problems.append(f"sealing key {entry!r} is not valid base64: store the private key base64-encoded in .data")
        return
    problem = _sealing_key_problem(key_id, key)
    if problem is not None:
        problems.append(f"data entry {entry!r}: {problem}")
        return
    sealing_keys[key_id] = key


def _recorded_sealing_ids(annotations: collections.abc.Mapping[str, str]) -> list[str]:
    """Sealing key ids with a recorded fingerprint (lenient: a malformed annotation is reported elsewhere)."""
    try:
        recorded = json.loads(annotations.get(names.KEY_FINGERPRINTS_ANNOTATION) or "{}")
    except ValueError:
        return []
    if not isinstance(recorded, dict):
        return []
    prefix = names.SEALING_KEY_PREFIX
    return sorted(str(name)[len(prefix) :] for name in recorded if str(name).startswith(prefix))


def _sealing_problems(
    data: collections.abc.Mapping[str, str],
    annotations: collections.abc.Mapping[str, str],
    active_sealing_id: str | None,
) -> list[str]:
    """What is wrong with the sealing part of a keyring Secret; above all, a sealing key pair that is gone.

    A keyring that has had a sealing key (an active-sealing-key annotation, or a recorded sealing
    fingerprint) and holds none now lost it: every sealed value in Git depends on it, so this is
    an error to fix from a backup, never a reason to make a new pair.
    """
    entries = sorted(key[len(names.SEALING_KEY_PREFIX) :] for key in data if key.startswith(names.SEALING_KEY_PREFIX))
    annotation = names.ACTIVE_SEALING_KEY_ANNOTATION
    restore = "restore it from a backup (`credbridge keys import BUNDLE`)"
    if not entries:
        had = [active_sealing_id] if active_sealing_id else _recorded_sealing_ids(annotations)
        if not had:
            return []
        return [
            f"the sealing key pair {', '.join(had)} was removed (the Secret has no sealing.<keyId> entries, yet "
            f"{'the annotation ' + annotation + ' names one' if active_sealing_id else 'its fingerprint is recorded'}):"
            f" every value sealed with it would stop opening; {restore}"
        ]
    if active_sealing_id is None:
        return [
            f"the annotation {annotation} naming the active sealing key is missing: set it to one of the sealing "
            f"key ids ({', '.join(entries)})"
        ]
    if active_sealing_id not in entries:
        return [
            f"the annotation {annotation} names sealing key {active_sealing_id!r}, which is not in the Secret's data "
            f"(sealing keys: {', '.join(entries)}): {restore}, or set the annotation to one of them"
        ]
    return []


def _new_key(random_bytes: envelope.RandomBytes, taken: collections.abc.Container[str]) -> tuple[str, bytes]:
    for _ in range(_MAX_ID_ATTEMPTS):
        id_bytes = random_bytes(4)
        if len(id_bytes) != 4:
            raise ValueError(f"the random source returned {len(id_bytes)} bytes for a 4-byte key id")
        key_id = id_bytes.hex()
        if key_id not in taken:
            break
    else:
        raise ValueError(f"the random source repeated key ids {_MAX_ID_ATTEMPTS} times: it is not random")
    key = random_bytes(envelope.KEY_BYTES)
    if len(key) != envelope.KEY_BYTES:
        raise ValueError(f"the random source returned {len(key)} bytes for a {envelope.KEY_BYTES}-byte key")
    return key_id, key


def new_keyring(random_bytes: envelope.RandomBytes) -> Keyring:
    """Returns a keyring of one new random key, active."""
    key_id, key = _new_key(random_bytes, ())
    return Keyring(keys={key_id: key}, active_id=key_id)


def _with(keyring: Keyring, **changes: typing.Any) -> Keyring:
    return dataclasses.replace(keyring, **changes)


def add_key(keyring: Keyring, random_bytes: envelope.RandomBytes) -> Keyring:
    """Returns `keyring` plus a new random key, which becomes active (a fresh id on collision)."""
    key_id, key = _new_key(random_bytes, keyring.keys)
    return _with(keyring, keys={**keyring.keys, key_id: key}, active_id=key_id)


def add_sealing_key(keyring: Keyring, random_bytes: envelope.RandomBytes, now: str) -> Keyring:
    """Returns `keyring` plus a new sealing key pair, which becomes active (`now`: RFC 3339 time)."""
    for _ in range(_MAX_ID_ATTEMPTS):
        private_key = sealing.new_private_key(random_bytes)
        key_id = sealing.key_id_for(sealing.public_key_of(private_key))
        if key_id not in keyring.sealing_keys:
            break
    else:
        raise ValueError(f"the random source repeated sealing keys {_MAX_ID_ATTEMPTS} times: it is not random")
    return _with(
        keyring,
        sealing_keys={**keyring.sealing_keys, key_id: private_key},
        active_sealing_id=key_id,
        sealing_since=now,
    )


def listed(items: collections.abc.Sequence[str], limit: int = _MAX_LISTED) -> str:
    """Up to `limit` items, sorted, and how many more."""
    shown = ", ".join(sorted(items)[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def retire_sealing_key(keyring: Keyring, key_id: str, users: collections.abc.Sequence[str]) -> Keyring:
    """Returns `keyring` without the sealing key pair `key_id`.

    `users` names (`namespace/name`) every Credential in the cluster with a spec.sealedData value
    sealed with that key. Raises KeyringError when the key is unknown, active, or still opens one.
    """
    if key_id not in keyring.sealing_keys:
        known = ", ".join(keyring.sealing_ids()) or "none"
        raise KeyringError(f"sealing key {key_id!r} is not in the keyring (sealing keys: {known}): check the key id")
    if key_id == keyring.active_sealing_id:
        raise KeyringError(
            f"sealing key {key_id!r} is the active sealing key: rotate first (credbridge keys rotate --sealing), "
            "then re-seal and retire it"
        )
    if users:
        noun = "Credential" if len(users) == 1 else "Credentials"
        raise KeyringError(
            f"sealing key {key_id!r} still opens spec.sealedData of {len(users)} {noun} ({listed(users)}): re-seal "
            "their manifests with the active key (credbridge seal --reseal -f DIR), apply them, then retire it"
        )
    return _with(keyring, sealing_keys={other: key for other, key in keyring.sealing_keys.items() if other != key_id})


def restore_keys(current: Keyring | None, imported: Keyring) -> Keyring:
    """The keyring after importing a backup: every key of both, the backup's keys active.

    Raises KeyringError when a key id is in both with different bytes (key material is immutable
    per id: one of the two is not the key that sealed what names it).
    """
    if current is None:
        return imported
    clashes = [
        key_id for key_id in imported.keys if key_id in current.keys and current.keys[key_id] != imported.keys[key_id]
    ]
    clashes += [
        names.SEALING_KEY_PREFIX + key_id
        for key_id in imported.sealing_keys
        if key_id in current.sealing_keys and current.sealing_keys[key_id] != imported.sealing_keys[key_id]
    ]
    if clashes:
        raise KeyringError(
            f"the bundle holds other bytes than the keyring for key {', '.join(sorted(clashes))}: key material is "
            "immutable per key id, so one of the two is not the key that sealed what names it; nothing was "
            "imported. Check that the bundle belongs to this cluster"
        )
    return Keyring(
        keys={**current.keys, **imported.keys},
        active_id=imported.active_id,
        sealing_keys={**current.sealing_keys, **imported.sealing_keys},
        active_sealing_id=imported.active_sealing_id or current.active_sealing_id,
        sealing_since=imported.sealing_since if imported.active_sealing_id else current.sealing_since,
    )


def retire_key(keyring: Keyring, key_id: str, in_use: collections.abc.Collection[str]) -> Keyring:
    """Returns `keyring` without `key_id`.

    `in_use` holds the key id of every Credential (one entry per Credential, e.g. each
    `status.keyId`). Raises KeyringError when the key is unknown, active, or still used.
    """
    if key_id not in keyring.keys:
        raise KeyringError(f"key {key_id!r} is not in the keyring (keys: {', '.join(keyring.ids())}): check the key id")
    if key_id == keyring.active_id:
        raise KeyringError(f"key {key_id!r} is the active key: rotate first (credbridge keys rotate), then retire it")
    users = sum(1 for used in in_use if used == key_id)
    if users:
        noun = "credential" if users == 1 else "credentials"
        raise KeyringError(
            f"key {key_id!r} is still used by {users} {noun}: wait until re-encryption moves them "
            "to the active key (see status.keyId), then retire it"
        )
    return _with(keyring, keys={other: key for other, key in keyring.keys.items() if other != key_id})


def keyring_to_secret_fields(
    keyring: Keyring, recorded: collections.abc.Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Returns the keyring Secret's `.data` (base64 keys by id) and its annotations.

    The fingerprints annotation holds the keyring's keys and, from `recorded`, keys that were in
    the Secret before (removed by hand: if one comes back, it must come back with its own bytes).
    """
    data = {key_id: base64.b64encode(keyring.keys[key_id]).decode("ascii") for key_id in keyring.ids()}
    data.update(
        {
            names.SEALING_KEY_PREFIX + key_id: base64.b64encode(keyring.sealing_keys[key_id]).decode("ascii")
            for key_id in keyring.sealing_ids()
        }
    )
    annotations = {
        names.ACTIVE_KEY_ANNOTATION: keyring.active_id,
        names.KEY_FINGERPRINTS_ANNOTATION: fingerprints_annotation(keyring, recorded or {}),
    }
    if keyring.active_sealing_id is not None:
        annotations[names.ACTIVE_SEALING_KEY_ANNOTATION] = keyring.active_sealing_id
        if keyring.sealing_since:
            annotations[names.SEALING_KEY_SINCE_ANNOTATION] = keyring.sealing_since
    return data, annotations


def key_fingerprint(key_id: str, key: bytes) -> str:
    """A keyed commitment to one key: HMAC-SHA256 over the key id, keyed by a subkey of the key itself.

    It tells whether the bytes behind `key_id` are the ones seen before, and nothing else:
    - Never the key, never a bare hash of it: one needs the key to compute or check it.
    - Keyed by the key itself, through HKDF with its own label, rather than by anything else in
      the keyring: a fingerprint keyed by the other keys (or by a key derived from them) says
      nothing when every key is replaced at once, and a fingerprint keyed by a separate secret
      would need a home of its own. The HKDF label keeps the subkey apart from the AES key and the
      content-HMAC subkey derived from the same key.
    - Over the key id: the same bytes under two ids give two fingerprints, so one cannot be
      copied over the other.
    It protects against mistakes (a wrong backup restored, a tool that regenerated a key under an
    old id), not against someone who can write the keyring Secret and recompute it: see
    docs/security.md.
    """
    if not envelope.is_key_id(key_id) or len(key) != envelope.KEY_BYTES:
        raise ValueError(f"key_fingerprint needs a key id and a {envelope.KEY_BYTES}-byte key")
    subkey = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FINGERPRINT_INFO).derive(key)
    digest = hmac.new(subkey, key_id.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sealing_key_fingerprint(key_id: str, private_key: bytes) -> str:
    """A keyed commitment to one sealing private key, as `key_fingerprint` is to an AES key.

    Keyed through HKDF with a label of its own, over the data entry name `sealing.<keyId>`.
    """
    if not envelope.is_key_id(key_id) or len(private_key) != sealing.KEY_BYTES:
        raise ValueError(f"sealing_key_fingerprint needs a key id and a {sealing.KEY_BYTES}-byte key")
    subkey = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEALING_FINGERPRINT_INFO).derive(
        private_key
    )
    digest = hmac.new(subkey, (names.SEALING_KEY_PREFIX + key_id).encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _material(keyring: Keyring) -> dict[str, tuple[bytes, str]]:
    """Every key of the keyring by its data entry name: (bytes, fingerprint)."""
    entries = {
        key_id: (keyring.keys[key_id], key_fingerprint(key_id, keyring.keys[key_id])) for key_id in keyring.ids()
    }
    for key_id in keyring.sealing_ids():
        private_key = keyring.sealing_keys[key_id]
        entries[names.SEALING_KEY_PREFIX + key_id] = (private_key, sealing_key_fingerprint(key_id, private_key))
    return entries


def fingerprints(keyring: Keyring) -> dict[str, str]:
    """The fingerprint of every key, by data entry name (key id, or `sealing.<keyId>`)."""
    return {name: fingerprint for name, (_, fingerprint) in _material(keyring).items()}


def fingerprints_annotation(keyring: Keyring, recorded: collections.abc.Mapping[str, str]) -> str:
    """The annotation value: `recorded` with the fingerprint of every key of `keyring` added or updated."""
    return json.dumps({**recorded, **fingerprints(keyring)}, sort_keys=True, separators=(",", ":"))


def parse_fingerprints(secret_name: str, annotations: collections.abc.Mapping[str, str]) -> dict[str, str]:
    """The recorded fingerprints by key id (empty when the annotation is absent: a keyring from before them).

    Raises KeyringError when the annotation is not a JSON object of strings.
    """
    text = annotations.get(names.KEY_FINGERPRINTS_ANNOTATION)
    if text is None:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise KeyringError(
            f"keyring Secret {secret_name!r} is malformed: the annotation {names.KEY_FINGERPRINTS_ANNOTATION} is not "
            '{"<key id>": "<fingerprint>", ...}: restore it from a backup of the Secret, or remove it (the operator '
            "then records the fingerprints of the keys as they are now)"
        )
    return {str(key_id): value for key_id, value in parsed.items()}


@dataclasses.dataclass(frozen=True)
class KeyMaterialCheck:
    """What `check_key_material` found: key ids whose bytes changed, and keys without a recorded fingerprint."""

    changed: tuple[str, ...]
    """Data entry names (key id, or `sealing.<keyId>`) whose bytes differ from the recorded fingerprint or
    from the keyring in use; sorted."""
    unrecorded: tuple[str, ...]
    """Data entry names (not changed) that have no recorded fingerprint yet; sorted."""


def check_key_material(
    keyring: Keyring,
    recorded: collections.abc.Mapping[str, str],
    in_use: Keyring | None = None,
) -> KeyMaterialCheck:
    """Compares each key with its recorded fingerprint and with the key of the same id in `in_use`.

    `in_use` is the keyring the operator runs with: it catches a change even when the
    fingerprints annotation was rewritten or removed along with the key.
    """
    changed: list[str] = []
    unrecorded: list[str] = []
    known_material = {name: key for name, (key, _) in _material(in_use).items()} if in_use is not None else {}
    for name, (key, fingerprint) in sorted(_material(keyring).items()):
        known = known_material.get(name)
        expected = recorded.get(name)
        differs_from_in_use = known is not None and not hmac.compare_digest(known, key)
        differs_from_record = expected is not None and not hmac.compare_digest(expected, fingerprint)
        if differs_from_in_use or differs_from_record:
            changed.append(name)
        elif expected is None:
            unrecorded.append(name)
    return KeyMaterialCheck(tuple(changed), tuple(unrecorded))


def refuse_changed_keys(secret_name: str, changed: collections.abc.Collection[str]) -> KeyringError:
    """The error for keys whose bytes changed under the same id: names the ids and the fix, never bytes."""
    ids = ", ".join(sorted(changed))
    return KeyringError(
        f"keyring Secret {secret_name!r} is refused: the bytes of key {ids} differ from the key the operator "
        f"knows under that id (its fingerprint in the annotation {names.KEY_FINGERPRINTS_ANNOTATION}, or the "
        "keyring in use). Key material is immutable per key id: envelopes sealed with the original key open "
        "with no other. Restore the original bytes from a backup of the Secret; to use a new key, add it under "
        "a new id (credbridge keys rotate)"
    )


def published_sealing_keys(keyring: Keyring) -> dict[str, str]:
    """What the operator publishes about the sealing keys (the ConfigMap's data, the endpoint's JSON):
    the active key id, its PEM under `cert.pem`, and every public key as `<keyId>.pem`. Empty without
    sealing keys. Public keys only: nothing here is secret."""
    if keyring.active_sealing_id is None:
        return {}
    public_keys = keyring.sealing_public_keys()
    published = {
        names.SEALING_ACTIVE_KEY: keyring.active_sealing_id,
        names.SEALING_CERT_KEY: sealing.public_key_pem(public_keys[keyring.active_sealing_id]),
    }
    published.update({f"{key_id}.pem": sealing.public_key_pem(key) for key_id, key in public_keys.items()})
    return published


def sealing_rotation_due(since: str, now: str, interval: float) -> bool:
    """Whether a sealing key active since `since` is due for its scheduled rotation at `now`.

    Times are RFC 3339; `interval` is in seconds, 0 meaning never. An unreadable `since` is never
    due: a schedule must not rotate on a guess (the caller passes a time it knows instead).
    """
    if interval <= 0:
        return False
    try:
        started = datetime.datetime.fromisoformat(since)
        current = datetime.datetime.fromisoformat(now)
    except ValueError:
        return False
    return (current - started).total_seconds() >= interval
