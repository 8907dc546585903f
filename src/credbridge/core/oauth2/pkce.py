"""PKCE (RFC 7636): the proof that the program redeeming an authorization code is the one that asked.

A loopback redirect can be read by other programs on the machine, so the code alone must not be
enough: the authorization request carries `S256(verifier)`, the code exchange the verifier, which
never left this process. The randomness comes in as an argument (core is pure).
"""

from __future__ import annotations

import base64
import collections.abc
import hashlib

from credbridge.core import redaction

VERIFIER_BYTES = 32
"""Random bytes of a verifier: 256 bits, 43 characters once encoded (RFC 7636 asks for 43 to 128)."""
METHOD = "S256"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_verifier(random_bytes: collections.abc.Callable[[int], bytes]) -> redaction.Redacted:
    """A new code verifier made of `random_bytes(32)`, base64url without padding."""
    raw = random_bytes(VERIFIER_BYTES)
    if len(raw) != VERIFIER_BYTES:
        raise ValueError(f"the random source gave {len(raw)} bytes instead of {VERIFIER_BYTES}")
    return redaction.Redacted(_b64url(raw))


def challenge(verifier: redaction.Redacted) -> str:
    """The S256 code challenge of `verifier`: base64url(SHA-256(verifier)) without padding."""
    return _b64url(hashlib.sha256(verifier.reveal().encode("ascii")).digest())
