"""Key bundles: the whole keyring in one passphrase-protected file, for backup and restore.

Sealed values in Git are worth nothing without the sealing private key, and managed Secrets
nothing without the AES keys: losing the keyring Secret (a deleted namespace, a new cluster) loses
them all. Sealed Secrets users meet this as their most common trouble. `credbridge keys export`
writes every key into one file encrypted with a key derived from a passphrase, and `keys import`
puts them back; the file can sit next to other backups, the passphrase elsewhere.

The file is JSON: a public header (format, KDF parameters, key ids, when it was made) and the keys
sealed with AES-256-GCM under `scrypt(passphrase, salt)`, with the header as associated data, so
neither the ids nor the parameters can be changed without the file failing to open. Pure: the
salt and nonce come from the random source passed in.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import json
import typing

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.kdf import scrypt

from credbridge.core import envelope, keyring

FORMAT = "credbridge-key-bundle/v1"
"""The `format` of every bundle; a reader refuses any other."""
MIN_PASSPHRASE_CHARS = 12
"""Shortest passphrase accepted for a new bundle: scrypt slows guessing down, it cannot save a short one."""
SCRYPT_N = 2**17
"""scrypt cost (128 MiB with r=8), as the scrypt paper and OWASP advise for files at rest."""
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N = 2**20
"""Largest cost a bundle may ask for when read (1 GiB with r=8): a crafted file must not exhaust memory."""
_SALT_BYTES = 16
_NONCE_BYTES = 12

RandomBytes = envelope.RandomBytes


class BundleError(ValueError):
    """A bundle could not be written or read; the message names the problem and the fix, never key material."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise BundleError(f"the bundle's {what} is missing: the file is not a credbridge key bundle or was cut short")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"the bundle's {what} is not base64: the file was altered") from None


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return scrypt.Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _associated_data(header: collections.abc.Mapping[str, typing.Any]) -> bytes:
    return json.dumps(dict(header), sort_keys=True, separators=(",", ":")).encode("utf-8")


def _keyring_document(ring: keyring.Keyring) -> dict[str, typing.Any]:
    return {
        "keys": {key_id: _b64(ring.keys[key_id]) for key_id in ring.ids()},
        "activeKey": ring.active_id,
        "sealingKeys": {key_id: _b64(ring.sealing_keys[key_id]) for key_id in ring.sealing_ids()},
        "activeSealingKey": ring.active_sealing_id,
        "sealingSince": ring.sealing_since,
    }


def export_bundle(ring: keyring.Keyring, passphrase: str, random_bytes: RandomBytes, now: str) -> str:
    """The bundle text of `ring`, protected by `passphrase`; BundleError when the passphrase is too short."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise BundleError(
            f"the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters: choose a longer one (a few words)"
        )
    salt, nonce = random_bytes(_SALT_BYTES), random_bytes(_NONCE_BYTES)
    if len(salt) != _SALT_BYTES or len(nonce) != _NONCE_BYTES:
        raise ValueError("the random source returned too few bytes")
    header: dict[str, typing.Any] = {
        "format": FORMAT,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": "AES-256-GCM",
        "keyIds": ring.ids(),
        "activeKeyId": ring.active_id,
        "sealingKeyIds": ring.sealing_ids(),
        "activeSealingKeyId": ring.active_sealing_id,
        "exported": now,
    }
    plaintext = json.dumps(_keyring_document(ring), sort_keys=True).encode("utf-8")
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = aead.AESGCM(key).encrypt(nonce, plaintext, _associated_data(header))
    return json.dumps({**header, "nonce": _b64(nonce), "ciphertext": _b64(sealed)}, indent=2) + "\n"


def _kdf_parameters(kdf: object) -> tuple[bytes, int, int, int]:
    if not isinstance(kdf, collections.abc.Mapping) or kdf.get("name") != "scrypt":
        raise BundleError("the bundle names a key derivation other than scrypt: it was not made by credbridge")
    n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (n, r, p)):
        raise BundleError("the bundle's scrypt parameters are not numbers: the file was altered")
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise BundleError("the bundle's scrypt parameters are out of range: the file was altered")
    return _unb64(kdf.get("salt"), "salt"), n, r, p


def _keyring_from(document: object) -> keyring.Keyring:
    if not isinstance(document, collections.abc.Mapping):
        raise BundleError("the bundle's content is not a keyring: it was not made by credbridge keys export")
    try:
        keys = {str(key_id): _unb64(value, f"key {key_id}") for key_id, value in (document.get("keys") or {}).items()}
        sealing_keys = {
            str(key_id): _unb64(value, f"sealing key {key_id}")
            for key_id, value in (document.get("sealingKeys") or {}).items()
        }
        return keyring.Keyring(
            keys=keys,
            active_id=str(document.get("activeKey")),
            sealing_keys=sealing_keys,
            active_sealing_id=document.get("activeSealingKey") if sealing_keys else None,
            sealing_since=str(document.get("sealingSince") or ""),
        )
    except (keyring.KeyringError, AttributeError, TypeError) as error:
        raise BundleError(f"the bundle's keyring is malformed: {error}") from None


def import_bundle(text: str, passphrase: str) -> keyring.Keyring:
    """The keyring a bundle holds; BundleError when the text is not a bundle, the passphrase is wrong or the
    file was altered (the last two cannot be told apart, by design of authenticated encryption)."""
    try:
        bundle = json.loads(text)
    except ValueError:
        bundle = None
    if not isinstance(bundle, dict):
        raise BundleError("the file is not JSON: give the file `credbridge keys export` wrote")
    if bundle.get("format") != FORMAT:
        raise BundleError(
            f"the file's format is {bundle.get('format')!r}, not {FORMAT!r}: give a credbridge key bundle"
        )
    salt, n, r, p = _kdf_parameters(bundle.get("kdf"))
    nonce = _unb64(bundle.get("nonce"), "nonce")
    sealed = _unb64(bundle.get("ciphertext"), "ciphertext")
    header = {key: value for key, value in bundle.items() if key not in ("nonce", "ciphertext")}
    key = _derive(passphrase, salt, n, r, p)
    try:
        plaintext = aead.AESGCM(key).decrypt(nonce, sealed, _associated_data(header))
    except (crypto_exceptions.InvalidTag, ValueError):
        raise BundleError("the passphrase is wrong, or the bundle was altered: nothing was imported") from None
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleError("the bundle's content is not a keyring: it was not made by credbridge keys export") from None
    return _keyring_from(document)
