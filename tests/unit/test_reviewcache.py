"""The TokenReview cache: keyed by a hash, bounded in time (ttl and the token's exp) and in size."""

from __future__ import annotations

import base64
import json

from credbridge.core import reviewcache

ALICE = reviewcache.TokenReview(
    authenticated=True,
    identity=reviewcache.Identity("system:serviceaccount:team-b:chat"),
    audiences=("credbridge.io",),
)


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_key_is_a_hash_and_never_the_token() -> None:
    token = jwt({"exp": 2_000_000_000, "sub": "x"})
    key = reviewcache.token_key(token)
    assert token not in key and len(key) == 64
    assert reviewcache.token_key(token) == key
    assert reviewcache.token_key(token + "x") != key


def test_an_answer_is_reused_until_the_ttl() -> None:
    cache = reviewcache.ReviewCache(ttl=10.0)
    cache.put("k", ALICE, now=100.0, token_expires=None)
    assert cache.get("k", 109.9) == ALICE
    assert cache.get("k", 110.0) is None
    assert len(cache) == 0


def test_an_answer_is_never_reused_past_the_tokens_expiry() -> None:
    cache = reviewcache.ReviewCache(ttl=10.0)
    cache.put("k", ALICE, now=100.0, token_expires=103.0)
    assert cache.get("k", 102.9) == ALICE
    assert cache.get("k", 103.0) is None


def test_an_already_expired_token_is_not_remembered() -> None:
    cache = reviewcache.ReviewCache(ttl=10.0)
    cache.put("k", ALICE, now=100.0, token_expires=99.0)
    assert cache.get("k", 100.0) is None


def test_ttl_zero_turns_caching_off() -> None:
    cache = reviewcache.ReviewCache(ttl=0.0)
    cache.put("k", ALICE, now=100.0, token_expires=None)
    assert cache.get("k", 100.0) is None


def test_refusals_are_remembered_too() -> None:
    refused = reviewcache.TokenReview(authenticated=False, error="token has expired")
    cache = reviewcache.ReviewCache(ttl=5.0)
    cache.put("bad", refused, now=0.0, token_expires=None)
    assert cache.get("bad", 4.0) == refused


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = reviewcache.ReviewCache(ttl=60.0, max_entries=2)
    cache.put("a", ALICE, 0.0, None)
    cache.put("b", ALICE, 0.0, None)
    assert cache.get("a", 1.0) == ALICE
    cache.put("c", ALICE, 2.0, None)
    assert len(cache) == 2
    assert cache.get("b", 3.0) is None
    assert cache.get("a", 3.0) == ALICE


def test_expiry_is_read_from_a_jwt_and_nothing_else() -> None:
    assert reviewcache.token_expiry(jwt({"exp": 1_700_000_000})) == 1_700_000_000.0
    assert reviewcache.token_expiry(jwt({"sub": "no exp"})) is None
    assert reviewcache.token_expiry(jwt({"exp": "soon"})) is None
    assert reviewcache.token_expiry(jwt({"exp": True})) is None
    assert reviewcache.token_expiry("not-a-jwt") is None
    assert reviewcache.token_expiry("a.%%%.c") is None
    assert reviewcache.token_expiry("a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c") is None
