"""Flowise's stored credential format: `encryptedData` as crypto-js writes it.

Flowise encrypts a credential's fields with `CryptoJS.AES.encrypt(JSON.stringify(plainDataObj),
key).toString()`, where `key` is a passphrase string: the value of `FLOWISE_SECRETKEY_OVERWRITE`
or the content of its key file. crypto-js turns a passphrase into OpenSSL's "salted" format:

    base64("Salted__" || salt[8] || AES-256-CBC(PKCS#7-padded plaintext))

with key and IV derived from the passphrase's UTF-8 bytes and the salt by OpenSSL's
EVP_BytesToKey (one round of MD5). `credbridge import flowise` reads credentials out of a
Flowise database with this module. The passphrase is used byte for byte, as Flowise uses it: a
key file that ends in a newline is a different key than the same text without one.

Every failure to decrypt raises the same StoredDataError: a wrong key and a damaged row look
alike from one row, and neither message may carry data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from credbridge.core import redaction

SALTED_MAGIC = b"Salted__"
"""The 8 bytes OpenSSL (and crypto-js) put before the salt."""
SALT_BYTES = 8
KEY_BYTES = 32
"""AES-256."""
IV_BYTES = 16
_BLOCK_BITS = 128


class StoredDataError(Exception):
    """A stored credential could not be decrypted: wrong key or damaged data (one message for both)."""

    def __init__(self) -> None:
        """Uses one fixed message, so no caller can put a value in it."""
        super().__init__("the stored credential data could not be decrypted with this key")


def evp_bytes_to_key(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """Returns (key, iv) for AES-256-CBC as OpenSSL's EVP_BytesToKey with MD5 and one round derives them."""
    derived = b""
    block = b""
    while len(derived) < KEY_BYTES + IV_BYTES:
        block = hashlib.md5(block + passphrase + salt, usedforsecurity=False).digest()
        derived += block
    return derived[:KEY_BYTES], derived[KEY_BYTES : KEY_BYTES + IV_BYTES]


def decrypt(encrypted_data: str, passphrase: bytes) -> bytes:
    """Returns the plaintext bytes of one `encryptedData` value; raises StoredDataError on any failure."""
    try:
        raw = base64.b64decode(encrypted_data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StoredDataError() from None
    header = len(SALTED_MAGIC) + SALT_BYTES
    body = raw[header:]
    if not raw.startswith(SALTED_MAGIC) or not body or len(body) % IV_BYTES:
        raise StoredDataError()
    key, iv = evp_bytes_to_key(passphrase, raw[len(SALTED_MAGIC) : header])
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise StoredDataError() from None


def encrypt(plaintext: bytes, passphrase: bytes, salt: bytes) -> str:
    """Returns `plaintext` in crypto-js's passphrase format with the given 8-byte salt.

    The inverse of `decrypt`, for tests and for writing fixtures; the salt is an argument because
    this module takes no randomness of its own.
    """
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt must be {SALT_BYTES} bytes")
    key, iv = evp_bytes_to_key(passphrase, salt)
    padder = padding.PKCS7(_BLOCK_BITS).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = encryptor.update(padded) + encryptor.finalize()
    return base64.b64encode(SALTED_MAGIC + salt + body).decode("ascii")


def decrypt_fields(encrypted_data: str, passphrase: bytes) -> redaction.SecretFields:
    """Returns the fields of one stored credential, every value as a string.

    Flowise keeps `plainDataObj` as JSON, and a value may be a number, a boolean or an object
    (written by the API or an older version); credbridge fields are strings, so those are turned
    into their JSON text (`5432`, `true`, `{"a":1}`). Raises StoredDataError when the data does
    not decrypt to a JSON object — with a wrong key it almost never does.
    """
    plaintext = decrypt(encrypted_data, passphrase)
    try:
        document = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StoredDataError() from None
    if not isinstance(document, dict):
        raise StoredDataError()
    fields: dict[str, str] = {}
    for name, value in document.items():
        if value is None:
            continue
        fields[str(name)] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return redaction.SecretFields(fields)
