"""Sealed values (cbs1): the published test vectors, opened by an independent implementation; scope and
key decisions; the one opaque error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pathlib
import re

import pytest
from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.kdf import hkdf
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import sealing

VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sealed-value-test-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
OPEN_FAILED = "the sealed value could not be opened"
PRIVATE = hashlib.sha256(b"unit test recipient").digest()
PUBLIC = sealing.public_key_of(PRIVATE)
KEY_ID = sealing.key_id_for(PUBLIC)
STRICT = sealing.Scope("team-a", "production-openai", "openAIApiKey")


def fixed(data: bytes):  # type: ignore[no-untyped-def]
    def random_bytes(length: int) -> bytes:
        assert length == len(data)
        return data

    return random_bytes


# ---- an independent implementation, written from RFC 9180 and the format in docs/envelope.md ------------
# It shares no code with credbridge.core.sealing: its own token parsing, its own labeled HKDF, its own key
# schedule, parameterized by AEAD so that it can first be checked against the RFC's own vectors.


class Independent:
    def __init__(self, aead_id: int, key_length: int) -> None:
        self.kem_suite = b"KEM\x00\x20"
        self.hpke_suite = b"HPKE\x00\x20\x00\x01" + aead_id.to_bytes(2, "big")
        self.key_length = key_length

    @staticmethod
    def _extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt if salt else bytes(32), ikm, hashlib.sha256).digest()

    def _lextract(self, suite: bytes, salt: bytes, label: str, ikm: bytes) -> bytes:
        return self._extract(salt, b"HPKE-v1" + suite + label.encode() + ikm)

    def _lexpand(self, suite: bytes, prk: bytes, label: str, info: bytes, size: int) -> bytes:
        labeled = size.to_bytes(2, "big") + b"HPKE-v1" + suite + label.encode() + info
        return hkdf.HKDFExpand(hashes.SHA256(), size, labeled).derive(prk)

    def derive(self, ikm: bytes) -> tuple[bytes, bytes]:
        sk = self._lexpand(self.kem_suite, self._lextract(self.kem_suite, b"", "dkp_prk", ikm), "sk", b"", 32)
        return sk, x25519.X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()

    def _context(self, dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> tuple[bytes, bytes]:
        prk = self._lextract(self.kem_suite, b"", "eae_prk", dh)
        shared = self._lexpand(self.kem_suite, prk, "shared_secret", enc + pk_r, 32)
        context = (
            b"\x00"
            + self._lextract(self.hpke_suite, b"", "psk_id_hash", b"")
            + self._lextract(self.hpke_suite, b"", "info_hash", info)
        )
        secret = self._lextract(self.hpke_suite, shared, "secret", b"")
        key = self._lexpand(self.hpke_suite, secret, "key", context, self.key_length)
        return key, self._lexpand(self.hpke_suite, secret, "base_nonce", context, 12)

    def seal(self, pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
        sk_e, enc = self.derive(ikm_e)
        dh = x25519.X25519PrivateKey.from_private_bytes(sk_e).exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
        key, nonce = self._context(dh, enc, pk_r, info)
        return enc, aead.AESGCM(key).encrypt(nonce, plaintext, aad)

    def open(self, sk_r: bytes, info: bytes, enc: bytes, ciphertext: bytes) -> bytes:
        private = x25519.X25519PrivateKey.from_private_bytes(sk_r)
        dh = private.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        key, nonce = self._context(dh, enc, private.public_key().public_bytes_raw(), info)
        return aead.AESGCM(key).decrypt(nonce, ciphertext, b"")


TOKEN = re.compile(
    r"cbs1\.(?P<kid>[0-9a-f]{8})\.(?P<scope>[a-z0-9][-a-z0-9]*(/[a-z0-9][-a-z0-9.]*/[A-Za-z_][A-Za-z0-9_]*)?)"
    r"\.(?P<payload>[A-Za-z0-9_-]+)"
)


def independent_open(token: str, private_keys: dict[str, bytes]) -> str:
    """Opens a token the way docs/envelope.md describes it; raises ValueError on any failure."""
    match = TOKEN.fullmatch(token)
    if match is None:
        raise ValueError("malformed")
    payload = match["payload"]
    if len(payload) % 4 == 1:
        raise ValueError("malformed")
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != payload or len(data) < 48:
        raise ValueError("malformed")
    private_key = private_keys.get(match["kid"])
    if private_key is None:
        raise ValueError("unknown key")
    info = token[: -len(payload) - 1].encode()
    try:
        return Independent(0x0002, 32).open(private_key, info, data[:32], data[32:]).decode("utf-8")
    except (crypto_exceptions.InvalidTag, ValueError, UnicodeDecodeError):
        raise ValueError("does not open") from None


def test_the_independent_implementation_reproduces_rfc_9180_appendix_a_1() -> None:
    # RFC 9180 A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode, first encryption.
    rfc = Independent(0x0001, 16)
    sk_r, pk_r = rfc.derive(bytes.fromhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037"))
    assert sk_r.hex() == "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8"
    assert pk_r.hex() == "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    enc, ciphertext = rfc.seal(
        pk_r,
        bytes.fromhex("4f6465206f6e2061204772656369616e2055726e"),
        bytes.fromhex("436f756e742d30"),
        bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479"),
        bytes.fromhex("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234"),
    )
    assert enc.hex() == "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"
    assert ciphertext.hex() == (
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )


def test_the_derived_key_pair_matches_rfc_9180() -> None:
    private_key, public_key = sealing.derive_key_pair(
        bytes.fromhex("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234")
    )
    assert private_key.hex() == "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736"
    assert public_key.hex() == "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda vector: vector["name"])
def test_valid_vectors_open_with_the_independent_implementation(vector: dict[str, object]) -> None:
    private_key = bytes.fromhex(str(vector["privateKeyHex"]))
    opened = independent_open(str(vector["token"]), {str(vector["keyId"]): private_key})
    assert opened.encode().hex() == vector["valueHex"]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda vector: vector["name"])
def test_valid_vectors_open_with_pyca_hpke(vector: dict[str, object]) -> None:
    # pyca/cryptography's own HPKE (OpenSSL underneath) is a third implementation; the token's header is
    # HPKE's info, so its public single-shot API opens the payload as it is.
    from cryptography.hazmat.primitives import hpke

    token = str(vector["token"])
    info, _, payload = token.rpartition(".")
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    private_key = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(str(vector["privateKeyHex"])))
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert suite.decrypt(data, private_key, info=info.encode()).hex() == vector["valueHex"]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda vector: vector["name"])
def test_sealing_reproduces_each_valid_vector_and_opens_it(vector: dict[str, object]) -> None:
    scope_fields = vector["scope"]
    assert isinstance(scope_fields, dict)
    scope = sealing.Scope(scope_fields["namespace"], scope_fields["name"], scope_fields["field"])
    public_key = bytes.fromhex(str(vector["publicKeyHex"]))
    assert sealing.public_key_of(bytes.fromhex(str(vector["privateKeyHex"]))) == public_key
    assert sealing.key_id_for(public_key) == vector["keyId"]
    token = sealing.seal_value(
        str(vector["value"]), public_key, scope, fixed(bytes.fromhex(str(vector["ephemeralIkmHex"])))
    )
    assert token == vector["token"]
    header = sealing.read_header(token)
    assert header is not None and header.text == vector["info"] and header.scope == scope
    assert header.value_bytes == len(bytes.fromhex(str(vector["valueHex"])))
    keys = {str(vector["keyId"]): bytes.fromhex(str(vector["privateKeyHex"]))}
    assert sealing.open_value(token, keys) == vector["value"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda vector: vector["name"])
def test_invalid_vectors_fail_with_the_one_opaque_error(vector: dict[str, object]) -> None:
    keys_hex = vector["privateKeysHex"]
    assert isinstance(keys_hex, dict)
    keys = {key_id: bytes.fromhex(value) for key_id, value in keys_hex.items()}
    with pytest.raises(sealing.SealedValueError) as raised:
        sealing.open_value(str(vector["token"]), keys)
    assert str(raised.value) == OPEN_FAILED
    with pytest.raises(ValueError):
        independent_open(str(vector["token"]), keys)


def test_the_vectors_cover_every_documented_case() -> None:
    names = {vector["name"] for vector in VECTORS["invalid"]}
    assert {"scope moved to another namespace", "truncated payload", "unknown key id", "empty token"} <= names
    assert len(VECTORS["valid"]) >= 5


# ---- scope, keys and decisions -----------------------------------------------------------------------


def test_scope_text_and_what_it_allows() -> None:
    assert STRICT.text() == "team-a/production-openai/openAIApiKey"
    assert STRICT.allows("team-a", "production-openai", "openAIApiKey")
    assert not STRICT.allows("team-a", "production-openai", "organizationId")
    assert not STRICT.allows("team-a", "staging-openai", "openAIApiKey")
    assert not STRICT.allows("team-b", "production-openai", "openAIApiKey")
    wide = sealing.Scope("team-a")
    assert wide.text() == "team-a" and not wide.strict
    assert wide.allows("team-a", "anything", "anyField") and not wide.allows("team-b", "anything", "anyField")


@pytest.mark.parametrize(
    ("namespace", "name", "field", "fragment"),
    [
        ("Team_A", None, None, "namespace"),
        ("team-a", "Bad/Name", "f", "Credential name"),
        ("team-a", "ok", "bad-field", "field name"),
        ("team-a", "ok", None, "both"),
    ],
)
def test_a_scope_refuses_names_that_cannot_be_kubernetes_names(
    namespace: str, name: str | None, field: str | None, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        sealing.Scope(namespace, name, field)


def test_key_ids_derive_from_the_public_key() -> None:
    assert hashlib.sha256(PUBLIC).digest()[:4].hex() == KEY_ID
    pem = sealing.public_key_pem(PUBLIC)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert sealing.parse_public_key_pem(pem) == PUBLIC
    loaded = serialization.load_pem_public_key(pem.encode())
    assert isinstance(loaded, x25519.X25519PublicKey)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hello", "not a PEM public key"),
        (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            "not X25519",
        ),
    ],
)
def test_a_certificate_that_is_not_an_x25519_public_key_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(sealing.CertificateError, match=fragment):
        sealing.parse_public_key_pem(text)


@given(st.text(max_size=300))
def test_any_text_round_trips(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    token = sealing.seal_value(value, PUBLIC, STRICT, lambda size: hashlib.sha256(value.encode()).digest()[:size])
    assert sealing.open_value(token, {KEY_ID: PRIVATE}) == value


def test_each_seal_is_different_and_the_header_shows_key_and_scope() -> None:
    counter = iter(range(1, 100))
    first = sealing.seal_value("same", PUBLIC, STRICT, lambda size: bytes([next(counter)]) * size)
    second = sealing.seal_value("same", PUBLIC, STRICT, lambda size: bytes([next(counter)]) * size)
    assert first != second
    assert first.startswith(f"cbs1.{KEY_ID}.team-a/production-openai/openAIApiKey.")


def test_values_too_large_or_not_text_are_refused_before_sealing_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="65536 bytes") as raised:
        sealing.seal_value("canary" + "x" * sealing.MAX_VALUE_BYTES, PUBLIC, STRICT, bytes)
    assert "canary" not in str(raised.value)
    with pytest.raises(ValueError, match="UTF-8"):
        sealing.seal_value("canary\udcff", PUBLIC, STRICT, bytes)


def test_reseal_keeps_the_scope_and_moves_to_the_new_key() -> None:
    new_private = hashlib.sha256(b"new").digest()
    new_public = sealing.public_key_of(new_private)
    token = sealing.seal_value("sk-canary", PUBLIC, STRICT, lambda size: b"\x01" * size)
    resealed = sealing.reseal_value(token, {KEY_ID: PRIVATE}, new_public, lambda size: b"\x02" * size)
    header = sealing.read_header(resealed)
    assert header is not None and header.key_id == sealing.key_id_for(new_public) and header.scope == STRICT
    assert sealing.open_value(resealed, {header.key_id: new_private}) == "sk-canary"
    with pytest.raises(sealing.SealedValueError):
        sealing.reseal_value(token, {}, new_public, bytes)


def test_placement_judges_form_scope_and_key_from_the_header_alone() -> None:
    token = sealing.seal_value("sk-canary", PUBLIC, STRICT, lambda size: b"\x03" * size)
    ok = sealing.placement("openAIApiKey", token, "team-a", "production-openai", {KEY_ID})
    assert ok.verdict == "ok" and ok.message == ""
    moved_field = sealing.placement("organizationId", token, "team-a", "production-openai", {KEY_ID})
    assert moved_field.verdict == "elsewhere"
    assert "Credential team-a/production-openai, field 'openAIApiKey'" in moved_field.message
    assert "field 'organizationId'" in moved_field.message
    assert sealing.placement("openAIApiKey", token, "team-b", "production-openai").verdict == "elsewhere"
    assert sealing.placement("openAIApiKey", token, "team-a", "other").verdict == "elsewhere"
    unknown = sealing.placement("openAIApiKey", token, "team-a", "production-openai", {"00000000"})
    assert unknown.verdict == "unknown-key" and KEY_ID in unknown.message and "keys import" in unknown.message
    truncated = sealing.placement("openAIApiKey", token[:-10], "team-a", "production-openai")
    assert truncated.verdict == "ok"  # the form holds; opening finds the damage
    assert sealing.placement("openAIApiKey", token[:60], "team-a", "production-openai").verdict == "invalid"
    assert sealing.placement("openAIApiKey", "sk-plain-value", "team-a", "x").verdict == "invalid"
    wide = sealing.seal_value("v", PUBLIC, sealing.Scope("team-a"), lambda size: b"\x04" * size)
    assert sealing.placement("anyField", wide, "team-a", "any-name").verdict == "ok"
    assert sealing.placement("anyField", wide, "team-b", "any-name").verdict == "elsewhere"
    for placement in (moved_field, unknown, truncated):
        assert "sk-canary" not in placement.message and token not in placement.message


def test_a_low_order_public_key_cannot_be_used_to_open() -> None:
    token = sealing.seal_value("v", PUBLIC, STRICT, lambda size: b"\x05" * size)
    header, _, payload = token.rpartition(".")
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    forged = header + "." + base64.urlsafe_b64encode(bytes(32) + data[32:]).rstrip(b"=").decode()
    with pytest.raises(sealing.SealedValueError):
        sealing.open_value(forged, {KEY_ID: PRIVATE})
