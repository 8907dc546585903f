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
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import hashlib
import hmac
import json
import types

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf

from credbridge.core import envelope, names

_MAX_ID_ATTEMPTS = 64

FINGERPRINT_INFO = b"credbridge.io/v1 key-fingerprint"
"""HKDF info that derives the fingerprint subkey from a keyring key (its own label: the subkey is
used for nothing else)."""


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

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not envelope.is_key_id(key_id):
                raise KeyringError(f"keyring key id {key_id!r} is not 8 lowercase hex characters")
            if len(key) != envelope.KEY_BYTES:
                raise KeyringError(f"keyring key {key_id!r} is not {envelope.KEY_BYTES} bytes long")
        if self.active_id not in self.keys:
            raise KeyringError(f"keyring active key {self.active_id!r} is not one of its keys {self.ids()}")
        # Freeze a private copy: a caller's dict must not change the keyring behind its back.
        object.__setattr__(self, "keys", types.MappingProxyType(dict(self.keys)))

    @property
    def active_key(self) -> bytes:
        """The key that seals new envelopes."""
        return self.keys[self.active_id]

    def ids(self) -> list[str]:
        """Returns the key ids, sorted."""
        return sorted(self.keys)

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids()!r}, active_id={self.active_id!r})"


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
    for key_id, encoded in data.items():
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
    known = ", ".join(sorted(data)) or "(none)"
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
    if problems:
        raise KeyringError(f"{subject} is malformed: " + "; ".join(problems))
    assert active_id is not None
    return Keyring(keys=keys, active_id=active_id)


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


def add_key(keyring: Keyring, random_bytes: envelope.RandomBytes) -> Keyring:
    """Returns `keyring` plus a new random key, which becomes active (a fresh id on collision)."""
    key_id, key = _new_key(random_bytes, keyring.keys)
    return Keyring(keys={**keyring.keys, key_id: key}, active_id=key_id)


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
    return Keyring(
        keys={other: key for other, key in keyring.keys.items() if other != key_id},
        active_id=keyring.active_id,
    )


def keyring_to_secret_fields(
    keyring: Keyring, recorded: collections.abc.Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Returns the keyring Secret's `.data` (base64 keys by id) and its annotations.

    The fingerprints annotation holds the keyring's keys and, from `recorded`, keys that were in
    the Secret before (removed by hand: if one comes back, it must come back with its own bytes).
    """
    data = {key_id: base64.b64encode(keyring.keys[key_id]).decode("ascii") for key_id in keyring.ids()}
    return data, {
        names.ACTIVE_KEY_ANNOTATION: keyring.active_id,
        names.KEY_FINGERPRINTS_ANNOTATION: fingerprints_annotation(keyring, recorded or {}),
    }


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


def fingerprints(keyring: Keyring) -> dict[str, str]:
    """The fingerprint of every key, by key id."""
    return {key_id: key_fingerprint(key_id, keyring.keys[key_id]) for key_id in keyring.ids()}


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
    """Ids whose bytes differ from the recorded fingerprint or from the keyring in use; sorted."""
    unrecorded: tuple[str, ...]
    """Ids (not changed) that have no recorded fingerprint yet; sorted."""


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
    for key_id in keyring.ids():
        key = keyring.keys[key_id]
        known = in_use.keys.get(key_id) if in_use is not None else None
        expected = recorded.get(key_id)
        differs_from_in_use = known is not None and not hmac.compare_digest(known, key)
        differs_from_record = expected is not None and not hmac.compare_digest(expected, key_fingerprint(key_id, key))
        if differs_from_in_use or differs_from_record:
            changed.append(key_id)
        elif expected is None:
            unrecorded.append(key_id)
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
