"""Sealed values: one credential value encrypted to the cluster's public key, safe to commit to Git.

`credbridge seal` (anyone, offline, with the published public key) seals; only the operator, which
holds the private key in the keyring, opens. One pure module does both, with the random source
passed in, so the CLI and the operator share the code and the published test vectors are
reproducible. The format is

    cbs1.<keyId>.<scope>.<base64url-nopad(enc || ciphertext || tag)>

HPKE (RFC 9180) in base mode with the suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM, single-shot, with the token's header (`cbs1.<keyId>.<scope>`) as HPKE `info`. The
scope says where the value may be used — one namespace, Credential and field (strict), or any
Credential of one namespace — and is readable without the private key, so the admission webhook and
`credbridge validate` can refuse a value copied elsewhere; being in `info`, it is also bound into
the key schedule, so an edited scope makes the value fail to open.

Every failure to open raises the same opaque `SealedValueError`. What the reconciler reports
(`SealedForElsewhere`, `SealKeyUnknown`, `SealedValueInvalid`) is decided from the header alone,
before anything is decrypted: the header is public, the plaintext never is.
`docs/envelope.md` specifies the format for other implementations.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import hashlib
import hmac
import re
import typing

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.kdf import hkdf

from credbridge.core import envelope

FORMAT_PREFIX = "cbs1"
"""First part of every sealed value; a new format gets a new prefix."""
KEY_BYTES = 32
"""Length of an X25519 private or public key."""
ENC_BYTES = 32
"""Length of HPKE's encapsulated key (the ephemeral X25519 public key)."""
TAG_BYTES = 16
"""AES-GCM tag length."""
MAX_VALUE_BYTES = 64 * 1024
"""Largest value that can be sealed, in UTF-8 bytes (validation.MAX_VALUE_BYTES, repeated here so
the CLI refuses a larger value before sealing; a unit test keeps them equal)."""
MAX_TOKEN_CHARS = 90_000
"""Largest sealed value accepted, in characters: a 64 KiB value with the longest scope fits (a unit
test checks it). The CRD repeats it as `maxLength` of spec.sealedData values."""

# RFC 9180 identifiers of the one suite credbridge uses.
KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0002  # AES-256-GCM
_AEAD_KEY_BYTES = 32
_AEAD_NONCE_BYTES = 12
_HASH_BYTES = 32
_HPKE_VERSION = b"HPKE-v1"
_KEM_SUITE_ID = b"KEM" + KEM_ID.to_bytes(2, "big")
_HPKE_SUITE_ID = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
_MODE_BASE = b"\x00"

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_OPEN_FAILED = "the sealed value could not be opened"

RandomBytes = envelope.RandomBytes
"""Returns that many cryptographically random bytes (`os.urandom` outside tests)."""


class SealedValueError(Exception):
    """A sealed value could not be opened; the message is the same whatever the cause."""

    def __init__(self) -> None:
        """Uses the one opaque message, so no caller can put a detail (or a value) in it."""
        super().__init__(_OPEN_FAILED)


# ---- scope ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where a sealed value may be used: one field of one Credential (strict), or a whole namespace."""

    namespace: str
    name: str | None = None
    """The Credential's name; None for a namespace-wide value."""
    field: str | None = None
    """The field's name; None for a namespace-wide value."""

    def __post_init__(self) -> None:
        if (self.name is None) != (self.field is None):
            raise ValueError("a strict scope names both the Credential and the field; a namespace scope neither")
        problem = scope_problem(self.namespace, self.name, self.field)
        if problem is not None:
            raise ValueError(problem)

    @property
    def strict(self) -> bool:
        return self.name is not None

    def text(self) -> str:
        """The scope as written in the token: `<namespace>` or `<namespace>/<name>/<field>`."""
        return self.namespace if self.name is None else f"{self.namespace}/{self.name}/{self.field}"

    def describe(self) -> str:
        """The scope in a sentence: "Credential team-a/openai, field apiKey" or "namespace team-a"."""
        if self.name is None:
            return f"any Credential in namespace {self.namespace}"
        return f"Credential {self.namespace}/{self.name}, field {self.field!r}"

    def allows(self, namespace: str, name: str, field: str) -> bool:
        """Tells whether a value with this scope may be used in `field` of Credential `namespace/name`."""
        if self.name is None:
            return namespace == self.namespace
        return (namespace, name, field) == (self.namespace, self.name, self.field)


def scope_problem(namespace: str, name: str | None, field: str | None) -> str | None:
    """Why these cannot make a scope (naming the part, never a value), or None when they can."""
    if not _NAMESPACE.fullmatch(namespace):
        return f"namespace {namespace!r} is not a valid namespace name"
    if name is not None and not _OBJECT_NAME.fullmatch(name):
        return f"Credential name {name!r} is not a valid object name"
    if field is not None and not _FIELD.fullmatch(field):
        return f"field name {field!r} is not a valid field name"
    return None


def _parse_scope(text: str) -> Scope | None:
    parts = text.split("/")
    try:
        if len(parts) == 1:
            return Scope(parts[0])
        if len(parts) == 3:
            return Scope(parts[0], parts[1], parts[2])
    except ValueError:
        return None
    return None


# ---- keys ----------------------------------------------------------------------------------


def public_key_of(private_key: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a raw 32-byte private key."""
    if len(private_key) != KEY_BYTES:
        raise ValueError(f"a sealing private key is {KEY_BYTES} bytes long")
    return x25519.X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def key_id_for(public_key: bytes) -> str:
    """The key id of a public key: the first 4 bytes of its SHA-256, hex.

    Derived, not chosen: anyone holding the public key can check the id a certificate claims, and
    the bytes behind an id cannot change without the id changing too.
    """
    if len(public_key) != KEY_BYTES:
        raise ValueError(f"a sealing public key is {KEY_BYTES} bytes long")
    return hashlib.sha256(public_key).digest()[:4].hex()


def new_private_key(random_bytes: RandomBytes) -> bytes:
    """A new X25519 private key (32 random bytes; X25519 clamps them when used)."""
    key = random_bytes(KEY_BYTES)
    if len(key) != KEY_BYTES:
        raise ValueError(f"the random source returned {len(key)} bytes for a {KEY_BYTES}-byte key")
    return key


def public_key_pem(public_key: bytes) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), the certificate `credbridge seal --cert` reads."""
    loaded = x25519.X25519PublicKey.from_public_bytes(public_key)
    return loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class CertificateError(ValueError):
    """A sealing certificate file could not be read; the message says why and what to do."""


def parse_public_key_pem(text: str) -> bytes:
    """The raw X25519 public key in a PEM certificate file; CertificateError when it holds none."""
    try:
        loaded = serialization.load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError, crypto_exceptions.UnsupportedAlgorithm):
        raise CertificateError(
            "it is not a PEM public key: fetch the cluster's sealing certificate with "
            "`credbridge seal --fetch-cert FILE`"
        ) from None
    if not isinstance(loaded, x25519.X25519PublicKey):
        raise CertificateError("it holds a public key that is not X25519: use the certificate credbridge publishes")
    return loaded.public_bytes_raw()


# ---- HPKE base mode, single shot (RFC 9180 §4, §5.1, §6.1) ---------------------------------


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\x00" * _HASH_BYTES, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return hkdf.HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, _HPKE_VERSION + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + _HPKE_VERSION + suite_id + label + info, length)


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 DeriveKeyPair for X25519: (private key, public key) from input keying material."""
    dkp_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm)
    private_key = _labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", KEY_BYTES)
    return private_key, public_key_of(private_key)


def _dh(private_key: bytes, public_key: bytes) -> bytes:
    try:
        return x25519.X25519PrivateKey.from_private_bytes(private_key).exchange(
            x25519.X25519PublicKey.from_public_bytes(public_key)
        )
    except ValueError:
        # A low-order public key gives the all-zero shared secret, which RFC 9180 §7.1.4 rejects.
        raise SealedValueError() from None


def _shared_secret(dh: bytes, enc: bytes, recipient_public: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", enc + recipient_public, _HASH_BYTES)


def _key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    psk_id_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE_ID, b"", b"info_hash", info)
    context = _MODE_BASE + psk_id_hash + info_hash
    secret = _labeled_extract(_HPKE_SUITE_ID, shared_secret, b"secret", b"")
    key = _labeled_expand(_HPKE_SUITE_ID, secret, b"key", context, _AEAD_KEY_BYTES)
    base_nonce = _labeled_expand(_HPKE_SUITE_ID, secret, b"base_nonce", context, _AEAD_NONCE_BYTES)
    return key, base_nonce


def hpke_seal(recipient_public: bytes, info: bytes, plaintext: bytes, ephemeral_ikm: bytes) -> bytes:
    """HPKE base-mode single-shot Seal with empty aad; returns enc || ciphertext || tag.

    The ephemeral key pair is derived from `ephemeral_ikm` (RFC 9180 DeriveKeyPair), which must be
    32 fresh random bytes for every seal.
    """
    ephemeral_private, enc = derive_key_pair(ephemeral_ikm)
    shared = _shared_secret(_dh(ephemeral_private, recipient_public), enc, recipient_public)
    key, nonce = _key_schedule(shared, info)
    return enc + aead.AESGCM(key).encrypt(nonce, plaintext, b"")


def hpke_open(recipient_private: bytes, info: bytes, sealed: bytes) -> bytes:
    """HPKE base-mode single-shot Open of enc || ciphertext || tag; SealedValueError on any failure."""
    if len(sealed) < ENC_BYTES + TAG_BYTES or len(recipient_private) != KEY_BYTES:
        raise SealedValueError()
    enc, ciphertext = sealed[:ENC_BYTES], sealed[ENC_BYTES:]
    recipient_public = public_key_of(recipient_private)
    shared = _shared_secret(_dh(recipient_private, enc), enc, recipient_public)
    key, nonce = _key_schedule(shared, info)
    try:
        return aead.AESGCM(key).decrypt(nonce, ciphertext, b"")
    except crypto_exceptions.InvalidTag:
        raise SealedValueError() from None


# ---- the token -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Header:
    """The public part of a sealed value: which key sealed it, for where, and how long the value is."""

    key_id: str
    scope: Scope
    payload: str = dataclasses.field(repr=False)
    """The base64url payload (enc || ciphertext || tag), not decoded yet."""

    @property
    def text(self) -> str:
        """`cbs1.<keyId>.<scope>`: the HPKE info the value is bound to."""
        return f"{FORMAT_PREFIX}.{self.key_id}.{self.scope.text()}"

    @property
    def value_bytes(self) -> int:
        """Length of the sealed value in bytes (the ciphertext is as long as the plaintext)."""
        decoded = (len(self.payload) * 3) // 4
        return max(decoded - ENC_BYTES - TAG_BYTES, 0)


def is_sealed(value: object) -> bool:
    """Tells whether `value` looks like a sealed value at all (starts with `cbs1.`)."""
    return isinstance(value, str) and value.startswith(FORMAT_PREFIX + ".")


def read_header(token: str) -> Header | None:
    """The header of a well-formed token, or None (without saying why: the form is wrong, full stop)."""
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(FORMAT_PREFIX + "."):
        return None
    rest = token[len(FORMAT_PREFIX) + 1 :]
    key_id, _, rest = rest.partition(".")
    scope_text, dot, payload = rest.rpartition(".")
    if not dot or not envelope.is_key_id(key_id) or not _BASE64URL.fullmatch(payload):
        return None
    scope = _parse_scope(scope_text)
    if scope is None:
        return None
    minimum = len(_b64encode(b"\x00" * (ENC_BYTES + TAG_BYTES)))
    if len(payload) < minimum or len(payload) % 4 == 1:
        return None
    return Header(key_id, scope, payload)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SealedValueError() from None
    if _b64encode(data) != text:
        raise SealedValueError()
    return data


def seal_value(value: str, public_key: bytes, scope: Scope, random_bytes: RandomBytes) -> str:
    """Seals one value (as UTF-8) for `scope` to `public_key`; returns the `cbs1` token.

    Raises ValueError when the value is too large or not UTF-8 text, or the key is malformed.
    """
    try:
        plaintext = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the value is not valid UTF-8 text (it holds an unpaired surrogate)") from None
    if len(plaintext) > MAX_VALUE_BYTES:
        raise ValueError(f"the value is larger than the limit of {MAX_VALUE_BYTES} bytes per value")
    if len(public_key) != KEY_BYTES:
        raise ValueError(f"a sealing public key is {KEY_BYTES} bytes long")
    ikm = random_bytes(KEY_BYTES)
    if len(ikm) != KEY_BYTES:
        raise ValueError(f"the random source returned {len(ikm)} bytes for a {KEY_BYTES}-byte ephemeral key")
    header = f"{FORMAT_PREFIX}.{key_id_for(public_key)}.{scope.text()}"
    sealed = hpke_seal(public_key, header.encode("ascii"), plaintext, ikm)
    return f"{header}.{_b64encode(sealed)}"


def open_value(token: str, private_keys: collections.abc.Mapping[str, bytes]) -> str:
    """Opens a sealed value with the private key its header names; SealedValueError on any failure.

    It checks only that the value opens. Whether it may be used where it was found is the caller's
    decision (`placement`), made from the header before opening.
    """
    header = read_header(token)
    if header is None:
        raise SealedValueError()
    private_key = private_keys.get(header.key_id)
    if private_key is None or len(private_key) != KEY_BYTES:
        raise SealedValueError()
    plaintext = hpke_open(private_key, header.text.encode("ascii"), _b64decode(header.payload))
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise SealedValueError() from None


def reseal_value(
    token: str,
    private_keys: collections.abc.Mapping[str, bytes],
    public_key: bytes,
    random_bytes: RandomBytes,
) -> str:
    """The same value, for the same scope, sealed to `public_key`; SealedValueError when it does not open."""
    header = read_header(token)
    if header is None:
        raise SealedValueError()
    return seal_value(open_value(token, private_keys), public_key, header.scope, random_bytes)


def token_digest(token: str) -> str:
    """SHA-256 of a token, hex: names a sealed value (which is public) without repeating it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---- decisions -----------------------------------------------------------------------------

Verdict = typing.Literal["ok", "invalid", "elsewhere", "unknown-key"]


@dataclasses.dataclass(frozen=True)
class Placement:
    """What the header of one sealed value says about using it in one field of one Credential."""

    field: str
    verdict: Verdict
    header: Header | None
    message: str
    """A sentence naming the field, the scope and the fix, never a value; empty when ok."""


def placement(
    field: str,
    token: str,
    namespace: str,
    name: str,
    known_key_ids: collections.abc.Container[str] | None = None,
    type_name: str = "TYPE",
) -> Placement:
    """Judge a sealed value found in `spec.sealedData.<field>` of Credential `namespace/name`.

    From the header only: the form, the scope and (when `known_key_ids` is given) whether the key
    is one the cluster has. Opening comes after, and may still find the value corrupted.
    """
    where = f"spec.sealedData.{field}"
    header = read_header(token) if isinstance(token, str) else None
    if header is None:
        return Placement(
            field,
            "invalid",
            None,
            f"field {field!r}: {where} is not a sealed value (cbs1.<keyId>.<scope>.<data>), or it was truncated or "
            "edited: seal the value again with `credbridge seal`",
        )
    if not header.scope.allows(namespace, name, field):
        here = f"Credential {namespace}/{name}, field {field!r}"
        return Placement(
            field,
            "elsewhere",
            header,
            f"field {field!r}: {where} was sealed for {header.scope.describe()}, not for {here}: a sealed value "
            "works only where it was sealed for; seal it for this place with `credbridge seal "
            f"-n {namespace} --name {name} --type {type_name} --field {field}`",
        )
    if known_key_ids is not None and header.key_id not in known_key_ids:
        return Placement(
            field,
            "unknown-key",
            header,
            f"field {field!r}: {where} is sealed with sealing key {header.key_id}, which this cluster's keyring does "
            "not hold (retired, or sealed for another cluster): import the key bundle that holds it "
            "(`credbridge keys import`), or seal the value again with this cluster's certificate "
            "(`credbridge seal --fetch-cert`)",
        )
    return Placement(field, "ok", header, "")


def corrupted_message(field: str) -> str:
    """The message for a value whose header is fine but which does not open (edited or corrupted)."""
    return (
        f"field {field!r}: spec.sealedData.{field} does not open with the sealing key it names: it was altered or "
        "corrupted; seal the value again with `credbridge seal`"
    )
