"""The `cb1` envelope: how a credential's fields are encrypted into its managed Secret.

One pure module seals and opens envelopes for the operator and the CLI alike, with the random
source passed in, so tests and the published test vectors are reproducible. The format is

    cb1.<keyId>.<base64url-nopad(nonce || ciphertext || tag)>

AES-256-GCM with a 96-bit nonce, bound by associated data to the Secret it lives in, so a token
copied to another namespace, Secret, credential or type fails to open. Every failure to open
raises the same opaque EnvelopeError: telling "unknown key" from "bad tag" helps attackers and
never the user, whose fix is the same (re-create the credential or restore the key).
`docs/envelope.md` describes the format for other implementations.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import hashlib
import hmac
import json
import re

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.kdf import hkdf

from credbridge.core import redaction

FORMAT_PREFIX = "cb1"
"""First part of every token; a new format gets a new prefix."""
KEY_BYTES = 32
"""AES-256 key length."""
NONCE_BYTES = 12
"""96-bit GCM nonce, random per seal."""
TAG_BYTES = 16
"""GCM authentication tag length."""
AAD_PREFIX = "credbridge.io/v1"
"""First component of the associated data; versions the binding, not the token format."""
HMAC_INFO = b"credbridge.io/v1 content-hmac"
"""HKDF info that derives the content-HMAC subkey from a keyring key."""

_KEY_ID = re.compile(r"[0-9a-f]{8}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_OPEN_FAILED = "the envelope could not be opened"

RandomBytes = collections.abc.Callable[[int], bytes]
"""Returns that many cryptographically random bytes (`os.urandom` outside tests)."""


class EnvelopeError(Exception):
    """An envelope could not be opened; the message is the same whatever the cause."""

    def __init__(self) -> None:
        """Uses the one opaque message, so no caller can put a detail (or a value) in it."""
        super().__init__(_OPEN_FAILED)


def is_key_id(key_id: str) -> bool:
    """Tells whether `key_id` is a well-formed key id: 8 lowercase hex characters."""
    return _KEY_ID.fullmatch(key_id) is not None


def _check_key(key_id: str, key: bytes) -> None:
    if not is_key_id(key_id):
        raise ValueError(f"key id {key_id!r} is not 8 lowercase hex characters: use an id from the keyring")
    if len(key) != KEY_BYTES:
        raise ValueError(f"key {key_id!r} is not {KEY_BYTES} bytes long: use a key from the keyring")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decodes canonical unpadded base64url; raises ValueError on anything else."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None
    if _b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def associated_data(namespace: str, secret_name: str, credential_id: str, type_name: str) -> bytes:
    """Returns the associated data binding a token to its Secret, credential id and type."""
    # Only the credential id (user-chosen) may hold '|': with every other part free of it, the
    # joined form still parses one way (type from the right, names from the left).
    if any("|" in part for part in (namespace, secret_name, type_name)):
        raise ValueError("namespace, Secret name and type name must not contain '|'")
    return "|".join((AAD_PREFIX, namespace, secret_name, credential_id, type_name)).encode("utf-8")


def encode_plaintext(fields: collections.abc.Mapping[str, str]) -> bytes:
    """Encodes fields as compact UTF-8 JSON with sorted keys: the bytes that get sealed.

    Raises ValueError naming the field whose name or value is not encodable as UTF-8 (a lone
    surrogate, e.g. from an environment variable holding invalid UTF-8), never the value.
    """
    for name, value in fields.items():
        for text, what in ((name, "name"), (value, "value")):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"the {what} of field {name.encode('utf-8', 'backslashreplace').decode()!r} "
                    "is not valid UTF-8 text: correct its source"
                ) from None
    return json.dumps(dict(fields), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_plaintext(data: bytes) -> redaction.SecretFields:
    """Decodes opened plaintext into fields; raises EnvelopeError when it is not a JSON object of strings."""
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError:
        raise EnvelopeError() from None
    if not isinstance(document, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in document.items()
    ):
        raise EnvelopeError()
    return redaction.SecretFields(document)


def seal(
    plaintext: bytes,
    key_id: str,
    key: bytes,
    aad: bytes,
    random_bytes: RandomBytes,
) -> str:
    """Encrypts `plaintext` under `key` and returns a `cb1` token naming `key_id`.

    Raises ValueError when the key id or key is malformed or `random_bytes` misbehaves.
    """
    _check_key(key_id, key)
    nonce = random_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the random source returned {len(nonce)} bytes for a {NONCE_BYTES}-byte nonce")
    sealed = aead.AESGCM(key).encrypt(nonce, plaintext, aad)
    return f"{FORMAT_PREFIX}.{key_id}.{_b64encode(nonce + sealed)}"


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != FORMAT_PREFIX or not is_key_id(parts[1]):
        return None
    return parts[1], parts[2]


def key_id_of(token: str) -> str | None:
    """Returns the key id a `cb1` token names, or None when `token` is not a `cb1` token."""
    split = _split(token)
    return None if split is None else split[0]


def open_envelope(token: str, keys: collections.abc.Mapping[str, bytes], aad: bytes) -> bytes:
    """Decrypts a `cb1` token with the key it names; raises EnvelopeError on any failure."""
    split = _split(token)
    if split is None:
        raise EnvelopeError()
    key_id, payload = split
    key = keys.get(key_id)
    if key is None or len(key) != KEY_BYTES:
        raise EnvelopeError()
    try:
        data = _b64decode(payload)
    except ValueError:
        raise EnvelopeError() from None
    if len(data) < NONCE_BYTES + TAG_BYTES:
        raise EnvelopeError()
    try:
        return aead.AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], aad)
    except crypto_exceptions.InvalidTag:
        raise EnvelopeError() from None


def _hmac_subkey(key: bytes) -> bytes:
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HMAC_INFO).derive(key)


def content_hmac(key_id: str, key: bytes, aad: bytes, plaintext: bytes) -> str:
    """Returns `<keyId>:<base64url HMAC-SHA256>` of the plaintext bound to its associated data.

    The HMAC key is derived from the keyring key with HKDF, so the annotation reveals nothing
    that could confirm a guessed short value, and it changes when the key rotates, which tells
    the operator to re-encrypt.
    """
    _check_key(key_id, key)
    digest = hmac.new(_hmac_subkey(key), aad + b"\x00" + plaintext, hashlib.sha256).digest()
    return f"{key_id}:{_b64encode(digest)}"


def verify_content_hmac(expected: str, keys: collections.abc.Mapping[str, bytes], aad: bytes, plaintext: bytes) -> bool:
    """Tells, in constant time, whether `expected` is the content HMAC of `plaintext`.

    The key is the one `expected` names; an unknown key id gives False.
    """
    key_id, separator, _ = expected.partition(":")
    key = keys.get(key_id)
    if not separator or key is None or not is_key_id(key_id) or len(key) != KEY_BYTES:
        return False
    return hmac.compare_digest(expected, content_hmac(key_id, key, aad, plaintext))
