"""The keyring: parsing its Secret, rotation, retirement, and never printing key material."""

from __future__ import annotations

import base64
import hashlib
import typing

import pytest

from credbridge.core import envelope, keyring, names

KEY_A = bytes([0xA1]) * 32
KEY_B = bytes([0xB2]) * 32
ACTIVE = names.ACTIVE_KEY_ANNOTATION


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scripted_random(*chunks: bytes) -> typing.Callable[[int], bytes]:
    """Returns the given chunks in order, checking each has the requested length."""
    remaining = list(chunks)

    def random_bytes(length: int) -> bytes:
        chunk = remaining.pop(0)
        assert len(chunk) == length
        return chunk

    return random_bytes


def two_key_ring() -> keyring.Keyring:
    return keyring.Keyring(keys={"aaaaaaaa": KEY_A, "bbbbbbbb": KEY_B}, active_id="bbbbbbbb")


def test_parse_keyring_reads_keys_and_active_id() -> None:
    ring = keyring.parse_keyring(
        "credbridge-keyring", {"aaaaaaaa": b64(KEY_A), "bbbbbbbb": b64(KEY_B)}, {ACTIVE: "aaaaaaaa"}
    )
    assert ring.ids() == ["aaaaaaaa", "bbbbbbbb"]
    assert ring.active_id == "aaaaaaaa"
    assert ring.active_key == KEY_A
    assert ring.keys["bbbbbbbb"] == KEY_B


@pytest.mark.parametrize(
    ("data", "annotations", "fragments"),
    [
        ({}, {ACTIVE: "aaaaaaaa"}, ["has no keys", "restore it from a backup"]),
        ({"aaaaaaaa": b64(KEY_A)}, {}, [ACTIVE, "missing", "aaaaaaaa"]),
        ({"aaaaaaaa": b64(KEY_A)}, {ACTIVE: "cccccccc"}, ["'cccccccc'", "not in the Secret's data"]),
        ({"aaaaaaaa": b64(KEY_A[:16])}, {ACTIVE: "aaaaaaaa"}, ["'aaaaaaaa'", "16 bytes", "not 32"]),
        ({"aaaaaaaa": "not base64!"}, {ACTIVE: "aaaaaaaa"}, ["'aaaaaaaa'", "not valid base64"]),
        ({"AAAAAAAA": b64(KEY_A)}, {ACTIVE: "AAAAAAAA"}, ["'AAAAAAAA'", "not a key id"]),
        ({"key-one": b64(KEY_A)}, {ACTIVE: "key-one"}, ["'key-one'", "8 lowercase hex"]),
    ],
)
def test_malformed_keyring_secret_is_refused_with_name_and_fix(
    data: dict[str, str], annotations: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(keyring.KeyringError) as raised:
        keyring.parse_keyring("credbridge-keyring", data, annotations)
    message = str(raised.value)
    assert "'credbridge-keyring'" in message
    for fragment in fragments:
        assert fragment in message
    for value in data.values():
        assert value not in message or value == ""


def test_keyring_error_lists_every_problem_at_once() -> None:
    with pytest.raises(keyring.KeyringError) as raised:
        keyring.parse_keyring("kr", {"aaaaaaaa": "!!", "bbbbbbbb": b64(b"short")}, {})
    message = str(raised.value)
    assert "'aaaaaaaa' is not valid base64" in message
    assert "'bbbbbbbb' is 5 bytes long" in message
    assert ACTIVE in message


def test_keyring_repr_shows_ids_but_no_key_material() -> None:
    ring = two_key_ring()
    for rendered in (repr(ring), str(ring), f"{ring}", repr([ring])):
        assert "aaaaaaaa" in rendered
        for key in (KEY_A, KEY_B):
            assert repr(key) not in rendered
            assert key.hex() not in rendered
            assert b64(key) not in rendered
    assert repr(ring) == "Keyring(ids=['aaaaaaaa', 'bbbbbbbb'], active_id='bbbbbbbb')"


def test_keyring_cannot_be_changed_through_the_mapping_it_was_given() -> None:
    keys = {"aaaaaaaa": KEY_A}
    ring = keyring.Keyring(keys=keys, active_id="aaaaaaaa")
    keys["bbbbbbbb"] = KEY_B
    assert ring.ids() == ["aaaaaaaa"]
    with pytest.raises(TypeError):
        ring.keys["cccccccc"] = KEY_A  # type: ignore[index]


@pytest.mark.parametrize(
    ("keys", "active_id"),
    [({"aaaaaaaa": KEY_A}, "bbbbbbbb"), ({"aaaaaaaa": KEY_A[:31]}, "aaaaaaaa"), ({"xyz": KEY_A}, "xyz")],
)
def test_keyring_refuses_inconsistent_contents(keys: dict[str, bytes], active_id: str) -> None:
    with pytest.raises(keyring.KeyringError):
        keyring.Keyring(keys=keys, active_id=active_id)


def test_new_keyring_holds_one_active_random_key() -> None:
    ring = keyring.new_keyring(scripted_random(b"\x3f\xa9\xc2\xd1", KEY_A))
    assert ring.ids() == ["3fa9c2d1"]
    assert ring.active_key == KEY_A


def test_add_key_makes_the_new_key_active_and_keeps_the_old_ones() -> None:
    ring = keyring.add_key(two_key_ring(), scripted_random(b"\xcc\xcc\xcc\xcc", bytes(32)))
    assert ring.ids() == ["aaaaaaaa", "bbbbbbbb", "cccccccc"]
    assert ring.active_id == "cccccccc"
    assert ring.keys["aaaaaaaa"] == KEY_A


def test_add_key_draws_a_new_id_when_the_random_one_is_taken() -> None:
    ring = keyring.add_key(two_key_ring(), scripted_random(b"\xaa" * 4, b"\xbb" * 4, b"\xdd" * 4, bytes(32)))
    assert ring.active_id == "dddddddd"
    assert len(ring.ids()) == 3


def test_rotated_keyring_opens_old_envelopes_and_seals_with_the_new_key() -> None:
    aad = envelope.associated_data("ns", "s", "id", "t")
    old = keyring.new_keyring(scripted_random(b"\x01\x02\x03\x04", KEY_A))
    token = envelope.seal(b"payload", old.active_id, old.active_key, aad, bytes)
    rotated = keyring.add_key(old, scripted_random(b"\x05\x06\x07\x08", KEY_B))
    assert envelope.open_envelope(token, rotated.keys, aad) == b"payload"
    assert rotated.active_key == KEY_B


def test_retire_key_removes_an_unused_inactive_key() -> None:
    ring = keyring.retire_key(two_key_ring(), "aaaaaaaa", in_use=["bbbbbbbb", "bbbbbbbb"])
    assert ring.ids() == ["bbbbbbbb"]
    assert ring.active_id == "bbbbbbbb"


def test_retire_key_refuses_the_active_key() -> None:
    with pytest.raises(keyring.KeyringError, match=r"'bbbbbbbb' is the active key.*rotate"):
        keyring.retire_key(two_key_ring(), "bbbbbbbb", in_use=[])


def test_retire_key_refuses_an_unknown_key() -> None:
    with pytest.raises(keyring.KeyringError, match="'cccccccc' is not in the keyring"):
        keyring.retire_key(two_key_ring(), "cccccccc", in_use=[])


def test_retire_key_refuses_a_key_still_in_use_and_says_how_many_use_it() -> None:
    with pytest.raises(keyring.KeyringError, match="still used by 3 credentials"):
        keyring.retire_key(two_key_ring(), "aaaaaaaa", in_use=["aaaaaaaa", "bbbbbbbb", "aaaaaaaa", "aaaaaaaa"])
    with pytest.raises(keyring.KeyringError, match="still used by 1 credential:"):
        keyring.retire_key(two_key_ring(), "aaaaaaaa", in_use=["aaaaaaaa"])


def test_keyring_secret_fields_parse_back_to_the_same_keyring() -> None:
    ring = two_key_ring()
    data, annotations = keyring.keyring_to_secret_fields(ring)
    assert data == {"aaaaaaaa": b64(KEY_A), "bbbbbbbb": b64(KEY_B)}
    assert annotations[ACTIVE] == "bbbbbbbb"
    assert keyring.parse_fingerprints("kr", annotations) == keyring.fingerprints(ring)
    assert keyring.parse_keyring("kr", data, annotations) == ring


# fingerprints: key material is immutable per key id

FINGERPRINTS = names.KEY_FINGERPRINTS_ANNOTATION


def test_a_fingerprint_is_neither_the_key_nor_a_bare_hash_of_it() -> None:
    fingerprint = keyring.key_fingerprint("aaaaaaaa", KEY_A)
    decoded = base64.urlsafe_b64decode(fingerprint + "=" * (-len(fingerprint) % 4))
    assert len(decoded) == 32
    assert KEY_A not in decoded
    for digest in (hashlib.sha256(KEY_A), hashlib.sha256(b"aaaaaaaa" + KEY_A), hashlib.sha256(KEY_A + b"aaaaaaaa")):
        assert decoded != digest.digest()
    # The envelope's and the content HMAC's key are not exposed by it either: its own HKDF label.
    assert fingerprint != envelope.content_hmac("aaaaaaaa", KEY_A, b"", b"aaaaaaaa").partition(":")[2]


def test_a_fingerprint_depends_on_every_bit_of_the_key_and_on_the_key_id() -> None:
    flipped = bytes([KEY_A[0] ^ 1]) + KEY_A[1:]
    assert keyring.key_fingerprint("aaaaaaaa", KEY_A) != keyring.key_fingerprint("aaaaaaaa", flipped)
    assert keyring.key_fingerprint("aaaaaaaa", KEY_A) != keyring.key_fingerprint("cccccccc", KEY_A)
    assert keyring.key_fingerprint("aaaaaaaa", KEY_A) == keyring.key_fingerprint("aaaaaaaa", bytes(KEY_A))


def test_a_fingerprint_needs_a_real_key() -> None:
    with pytest.raises(ValueError):
        keyring.key_fingerprint("aaaaaaaa", KEY_A[:16])


def test_matching_fingerprints_find_nothing_to_do() -> None:
    ring = two_key_ring()
    check = keyring.check_key_material(ring, keyring.fingerprints(ring), in_use=ring)
    assert check == keyring.KeyMaterialCheck(changed=(), unrecorded=())


def test_swapped_bytes_are_caught_by_the_recorded_fingerprint() -> None:
    recorded = keyring.fingerprints(two_key_ring())
    swapped = keyring.Keyring(keys={"aaaaaaaa": KEY_A, "bbbbbbbb": bytes(32)}, active_id="bbbbbbbb")
    assert keyring.check_key_material(swapped, recorded).changed == ("bbbbbbbb",)


def test_swapped_bytes_are_caught_by_the_keyring_in_use_when_the_fingerprints_were_rewritten() -> None:
    swapped = keyring.Keyring(keys={"aaaaaaaa": bytes(32), "bbbbbbbb": KEY_B}, active_id="bbbbbbbb")
    rewritten = keyring.fingerprints(swapped)
    assert keyring.check_key_material(swapped, rewritten, in_use=two_key_ring()).changed == ("aaaaaaaa",)
    assert keyring.check_key_material(swapped, {}, in_use=two_key_ring()).changed == ("aaaaaaaa",)


def test_keys_without_a_fingerprint_are_reported_for_recording() -> None:
    ring = two_key_ring()
    recorded = {"aaaaaaaa": keyring.key_fingerprint("aaaaaaaa", KEY_A)}
    assert keyring.check_key_material(ring, recorded) == keyring.KeyMaterialCheck(changed=(), unrecorded=("bbbbbbbb",))
    assert keyring.check_key_material(ring, {}).unrecorded == ("aaaaaaaa", "bbbbbbbb")


def test_a_rotated_key_is_new_not_changed() -> None:
    ring = two_key_ring()
    rotated = keyring.add_key(ring, scripted_random(bytes.fromhex("cccccccc"), bytes([0xC3]) * 32))
    check = keyring.check_key_material(rotated, keyring.fingerprints(ring), in_use=ring)
    assert check == keyring.KeyMaterialCheck(changed=(), unrecorded=("cccccccc",))


def test_the_refusal_names_the_key_id_and_the_fix_never_the_bytes() -> None:
    error = keyring.refuse_changed_keys("credbridge-system/credbridge-keyring", ["bbbbbbbb"])
    message = str(error)
    assert "bbbbbbbb" in message and "immutable" in message and "credbridge keys rotate" in message
    assert b64(KEY_B) not in message and keyring.key_fingerprint("bbbbbbbb", KEY_B) not in message


def test_recorded_fingerprints_of_keys_removed_by_hand_are_kept() -> None:
    ring = two_key_ring()
    recorded = {"dddddddd": "fingerprint-of-a-key-removed-by-hand"}
    _, annotations = keyring.keyring_to_secret_fields(ring, recorded)
    parsed = keyring.parse_fingerprints("kr", annotations)
    assert parsed == {**recorded, **keyring.fingerprints(ring)}


@pytest.mark.parametrize("value", ["not json", "[]", '{"aaaaaaaa": 1}'])
def test_a_malformed_fingerprints_annotation_is_refused_with_the_fix(value: str) -> None:
    with pytest.raises(keyring.KeyringError, match="remove it"):
        keyring.parse_fingerprints("kr", {FINGERPRINTS: value})


def test_a_keyring_from_before_fingerprints_has_none_recorded() -> None:
    assert keyring.parse_fingerprints("kr", {ACTIVE: "aaaaaaaa"}) == {}
