"""The cb1 envelope: sealing, opening, the opaque error, the content HMAC and the test vectors."""

from __future__ import annotations

import base64
import json
import pathlib
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import envelope, redaction

VECTORS_PATH = pathlib.Path(__file__).resolve().parents[2] / "docs" / "envelope-test-vectors.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
KEY_ID = "3fa9c2d1"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AAD = envelope.associated_data("team-a", "production-openai", "6f1c", "openAIApi")
OPEN_FAILED = "the envelope could not be opened"


def counter_random() -> typing.Callable[[int], bytes]:
    """A deterministic random source: distinct bytes on every call."""
    state = {"calls": 0}

    def random_bytes(length: int) -> bytes:
        state["calls"] += 1
        return bytes((state["calls"] + index) % 256 for index in range(length))

    return random_bytes


def fixed_random(data: bytes) -> typing.Callable[[int], bytes]:
    def random_bytes(length: int) -> bytes:
        assert length == len(data)
        return data

    return random_bytes


def sealed(plaintext: bytes = b'{"openAIApiKey":"sk-canary"}') -> str:
    return envelope.seal(plaintext, KEY_ID, KEY, AAD, counter_random())


def payload_of(token: str) -> bytes:
    text = token.split(".")[2]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_payload(token: str, payload: bytes) -> str:
    prefix, key_id, _ = token.split(".")
    return f"{prefix}.{key_id}.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}"


# Layout


def test_token_names_format_key_id_and_carries_nonce_ciphertext_and_tag() -> None:
    plaintext = b'{"a":"b"}'
    token = envelope.seal(plaintext, KEY_ID, KEY, AAD, fixed_random(b"\x07" * 12))
    prefix, key_id, payload_text = token.split(".")
    assert (prefix, key_id) == ("cb1", KEY_ID)
    assert "=" not in payload_text
    payload = payload_of(token)
    assert payload[:12] == b"\x07" * 12
    assert len(payload) == 12 + len(plaintext) + 16


def test_associated_data_binds_namespace_secret_id_and_type() -> None:
    assert envelope.associated_data("ns", "secret", "id", "openAIApi") == b"credbridge.io/v1|ns|secret|id|openAIApi"
    assert envelope.associated_data("ns", "s", "pipe|id", "t") == b"credbridge.io/v1|ns|s|pipe|id|t"
    with pytest.raises(ValueError, match=r"'\|'"):
        envelope.associated_data("ns", "s|x", "id", "t")


def test_plaintext_is_compact_sorted_utf8_json() -> None:
    encoded = envelope.encode_plaintext({"b": "ü", "a": "x y"})
    assert encoded == '{"a":"x y","b":"ü"}'.encode()
    assert envelope.decode_plaintext(encoded) == redaction.SecretFields({"a": "x y", "b": "ü"})


def test_plaintext_encoding_refuses_unpaired_surrogates_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="field 'token'") as raised:
        envelope.encode_plaintext({"token": "canary\udcff"})
    assert "canary" not in str(raised.value)


def test_decoded_plaintext_is_redacted_when_printed() -> None:
    fields = envelope.decode_plaintext(b'{"openAIApiKey":"sk-canary"}')
    assert "sk-canary" not in repr(fields)
    assert fields["openAIApiKey"] == "sk-canary"


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"a":1}', b"\xff", b'"text"'])
def test_malformed_plaintext_raises_the_opaque_error(data: bytes) -> None:
    with pytest.raises(envelope.EnvelopeError) as raised:
        envelope.decode_plaintext(data)
    assert str(raised.value) == OPEN_FAILED


def test_seal_uses_a_fresh_nonce_each_time() -> None:
    random_bytes = counter_random()
    first = envelope.seal(b"same", KEY_ID, KEY, AAD, random_bytes)
    second = envelope.seal(b"same", KEY_ID, KEY, AAD, random_bytes)
    assert first != second
    assert envelope.open_envelope(first, {KEY_ID: KEY}, AAD) == envelope.open_envelope(second, {KEY_ID: KEY}, AAD)


@pytest.mark.parametrize(
    ("key_id", "key", "message"),
    [
        ("3FA9C2D1", KEY, "8 lowercase hex"),
        ("3fa9c2d", KEY, "8 lowercase hex"),
        ("3fa9c2d1x", KEY, "8 lowercase hex"),
        (KEY_ID, KEY[:16], "32 bytes"),
    ],
)
def test_seal_refuses_malformed_key_ids_and_keys(key_id: str, key: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        envelope.seal(b"x", key_id, key, AAD, counter_random())
    assert key.hex() not in str(raised.value)


def test_seal_refuses_a_random_source_returning_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="nonce"):
        envelope.seal(b"x", KEY_ID, KEY, AAD, lambda length: b"\x00" * (length - 1))


def test_key_id_of_reads_cb1_tokens_only() -> None:
    assert envelope.key_id_of(sealed()) == KEY_ID
    assert envelope.key_id_of("cb2.3fa9c2d1.AAAA") is None
    assert envelope.key_id_of("plain text") is None
    assert envelope.key_id_of("cb1.XYZ.AAAA") is None


# Opening and the one opaque error


def failing_opens() -> list[tuple[str, str, dict[str, bytes], bytes]]:
    token = sealed()
    payload = payload_of(token)
    return [
        (
            "wrong namespace",
            token,
            {KEY_ID: KEY},
            envelope.associated_data("team-b", "production-openai", "6f1c", "openAIApi"),
        ),
        (
            "wrong secret",
            token,
            {KEY_ID: KEY},
            envelope.associated_data("team-a", "copy", "6f1c", "openAIApi"),
        ),
        (
            "wrong id",
            token,
            {KEY_ID: KEY},
            envelope.associated_data("team-a", "production-openai", "x", "openAIApi"),
        ),
        (
            "wrong type",
            token,
            {KEY_ID: KEY},
            envelope.associated_data("team-a", "production-openai", "6f1c", "t"),
        ),
        ("unknown key id", token, {"00000000": KEY}, AAD),
        ("wrong key", token, {KEY_ID: OTHER_KEY}, AAD),
        ("short key in keyring", token, {KEY_ID: KEY[:16]}, AAD),
        ("tampered tag", with_payload(token, payload[:-1] + bytes([payload[-1] ^ 1])), {KEY_ID: KEY}, AAD),
        (
            "tampered ciphertext",
            with_payload(token, payload[:12] + bytes([payload[12] ^ 1]) + payload[13:]),
            {KEY_ID: KEY},
            AAD,
        ),
        ("tampered nonce", with_payload(token, bytes([payload[0] ^ 1]) + payload[1:]), {KEY_ID: KEY}, AAD),
        ("truncated", with_payload(token, payload[:27]), {KEY_ID: KEY}, AAD),
        ("padded", token + "==", {KEY_ID: KEY}, AAD),
        ("bad prefix", "cb0" + token[3:], {KEY_ID: KEY}, AAD),
        ("bad alphabet", token[:-1] + "*", {KEY_ID: KEY}, AAD),
        ("extra part", token + ".x", {KEY_ID: KEY}, AAD),
        ("two parts", "cb1." + KEY_ID, {KEY_ID: KEY}, AAD),
        ("empty", "", {KEY_ID: KEY}, AAD),
    ]


@pytest.mark.parametrize(("case", "token", "keys", "aad"), failing_opens(), ids=[case[0] for case in failing_opens()])
def test_every_failure_to_open_raises_the_same_opaque_error(
    case: str, token: str, keys: dict[str, bytes], aad: bytes
) -> None:
    with pytest.raises(envelope.EnvelopeError) as raised:
        envelope.open_envelope(token, keys, aad)
    assert str(raised.value) == OPEN_FAILED
    assert raised.value.args == (OPEN_FAILED,)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__ or raised.value.__context__ is None


def test_open_returns_the_sealed_plaintext() -> None:
    assert envelope.open_envelope(sealed(b"hello"), {KEY_ID: KEY, "00000000": OTHER_KEY}, AAD) == b"hello"


@given(
    st.dictionaries(st.text(max_size=10), st.text(max_size=40), max_size=5),
    st.binary(min_size=32, max_size=32),
    st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
    st.binary(min_size=12, max_size=12),
    st.text(max_size=30).filter(lambda text: "|" not in text),
)
def test_seal_then_open_round_trips_any_fields(
    fields: dict[str, str], key: bytes, key_id: str, nonce: bytes, namespace: str
) -> None:
    aad = envelope.associated_data(namespace, "secret", "id", "type")
    plaintext = envelope.encode_plaintext(fields)
    token = envelope.seal(plaintext, key_id, key, aad, fixed_random(nonce))
    assert envelope.key_id_of(token) == key_id
    assert envelope.decode_plaintext(envelope.open_envelope(token, {key_id: key}, aad)) == fields


@given(st.binary(max_size=200), st.integers(min_value=0))
def test_any_single_bit_flip_in_the_payload_fails_to_open(plaintext: bytes, position: int) -> None:
    token = sealed(plaintext)
    payload = bytearray(payload_of(token))
    bit = position % (len(payload) * 8)
    payload[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(envelope.EnvelopeError):
        envelope.open_envelope(with_payload(token, bytes(payload)), {KEY_ID: KEY}, AAD)


# Content HMAC


def test_content_hmac_is_keyed_and_names_its_key() -> None:
    plaintext = b'{"pin":"1234"}'
    value = envelope.content_hmac(KEY_ID, KEY, AAD, plaintext)
    key_id, digest = value.split(":")
    assert key_id == KEY_ID
    assert len(base64.urlsafe_b64decode(digest + "=")) == 32
    assert value == envelope.content_hmac(KEY_ID, KEY, AAD, plaintext)
    assert value != envelope.content_hmac(KEY_ID, OTHER_KEY, AAD, plaintext)
    assert value != envelope.content_hmac("00000000", KEY, AAD, plaintext)
    assert value != envelope.content_hmac(KEY_ID, KEY, AAD + b"x", plaintext)
    assert value != envelope.content_hmac(KEY_ID, KEY, AAD, b'{"pin":"1235"}')


def test_content_hmac_is_not_a_bare_hash_of_the_plaintext() -> None:
    import hashlib

    plaintext = b'{"pin":"1234"}'
    digest = envelope.content_hmac(KEY_ID, KEY, AAD, plaintext).split(":")[1]
    for bare in (hashlib.sha256(plaintext).digest(), hashlib.sha256(AAD + b"\x00" + plaintext).digest()):
        assert digest != base64.urlsafe_b64encode(bare).rstrip(b"=").decode()


def test_verify_content_hmac_accepts_only_the_matching_value() -> None:
    value = envelope.content_hmac(KEY_ID, KEY, AAD, b"p")
    assert envelope.verify_content_hmac(value, {KEY_ID: KEY}, AAD, b"p")
    assert not envelope.verify_content_hmac(value, {KEY_ID: KEY}, AAD, b"q")
    assert not envelope.verify_content_hmac(value, {"00000000": KEY}, AAD, b"p")
    assert not envelope.verify_content_hmac("garbage", {KEY_ID: KEY}, AAD, b"p")


# Published test vectors


def test_vectors_file_has_enough_valid_and_invalid_cases() -> None:
    assert len(VECTORS["valid"]) >= 6
    assert len(VECTORS["invalid"]) >= 3
    covered = " ".join(vector["name"] for vector in VECTORS["valid"])
    assert "unicode" in covered
    assert "empty" in covered
    assert any(not vector["fields"] for vector in VECTORS["valid"])


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=[vector["name"] for vector in VECTORS["valid"]])
def test_valid_vector_seals_opens_and_hmacs_as_published(vector: dict[str, typing.Any]) -> None:
    key = bytes.fromhex(vector["keyHex"])
    aad = envelope.associated_data(vector["namespace"], vector["secretName"], vector["id"], vector["type"])
    assert aad.decode() == vector["associatedData"]
    plaintext = envelope.encode_plaintext(vector["fields"])
    assert plaintext.hex() == vector["plaintextHex"]
    token = envelope.seal(plaintext, vector["keyId"], key, aad, fixed_random(bytes.fromhex(vector["nonceHex"])))
    assert token == vector["token"]
    assert envelope.open_envelope(vector["token"], {vector["keyId"]: key}, aad) == plaintext
    assert envelope.decode_plaintext(plaintext) == vector["fields"]
    assert envelope.content_hmac(vector["keyId"], key, aad, plaintext) == vector["contentHmac"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=[vector["name"] for vector in VECTORS["invalid"]])
def test_invalid_vector_fails_to_open_with_the_opaque_error(vector: dict[str, typing.Any]) -> None:
    keys = {key_id: bytes.fromhex(key_hex) for key_id, key_hex in vector["keys"].items()}
    aad = envelope.associated_data(vector["namespace"], vector["secretName"], vector["id"], vector["type"])
    with pytest.raises(envelope.EnvelopeError) as raised:
        envelope.open_envelope(vector["token"], keys, aad)
    assert str(raised.value) == OPEN_FAILED
