"""Flowise's stored format, checked against vectors made by the crypto-js that Flowise ships
(tests/unit/data/flowise-cryptojs-vectors.json, from hack/flowise/cryptojs-vectors.js)."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core.flowise import stored

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" / "flowise-cryptojs-vectors.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[str(index) for index in range(len(VECTORS))])
def test_decrypts_what_crypto_js_encrypted(vector: dict[str, str]) -> None:
    assert stored.decrypt(vector["encryptedData"], vector["key"].encode()) == vector["plaintext"].encode()


def test_fields_come_back_as_strings() -> None:
    numbers = next(v for v in VECTORS if v["key"] == "numbers")
    fields = stored.decrypt_fields(numbers["encryptedData"], b"numbers")
    assert dict(fields) == {"port": "5432", "ssl": "true", "nested": '{"a":[1,2]}'}
    assert "5432" not in repr(fields)


def test_a_trailing_newline_is_another_key() -> None:
    with_newline = next(v for v in VECTORS if v["key"].endswith("\n"))
    with pytest.raises(stored.StoredDataError):
        stored.decrypt_fields(with_newline["encryptedData"], with_newline["key"].rstrip("\n").encode())


@pytest.mark.parametrize(
    "damaged",
    [
        "",
        "not base64!",
        "U2FsdGVkX1/damaged",
        "QUJD",
        "U2FsdGVkX19I9YRmwmLB862lCC/7zKB1QaaHB3+PyLp3Fi/hlCyHvA+ryuzPihm",
    ],
)
def test_damage_and_wrong_keys_raise_one_opaque_error(damaged: str) -> None:
    with pytest.raises(stored.StoredDataError) as raised:
        stored.decrypt_fields(damaged, b"k3y with space")
    assert str(raised.value) == "the stored credential data could not be decrypted with this key"
    for vector in VECTORS[:3]:
        with pytest.raises(stored.StoredDataError):
            stored.decrypt_fields(vector["encryptedData"], b"wrong key")


@given(st.binary(max_size=300), st.binary(min_size=1, max_size=64), st.binary(min_size=8, max_size=8))
def test_encrypt_and_decrypt_are_inverse(plaintext: bytes, passphrase: bytes, salt: bytes) -> None:
    token = stored.encrypt(plaintext, passphrase, salt)
    assert token.startswith("U2FsdGVkX1")  # base64 of "Salted__", as Flowise's rows start
    assert stored.decrypt(token, passphrase) == plaintext
