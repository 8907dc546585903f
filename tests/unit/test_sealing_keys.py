"""Sealing keys in the keyring (same integrity rules as the AES keys) and passphrase-protected key bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import typing

import pytest

from credbridge.core import keybundle, keyring, names, sealing

NOW = "2024-05-01T10:00:00Z"
PASSPHRASE = "correct horse battery staple"


def stream(seed: str) -> typing.Callable[[int], bytes]:
    state = {"counter": 0}

    def random_bytes(length: int) -> bytes:
        state["counter"] += 1
        return hashlib.sha256(f"{seed}:{state['counter']}".encode()).digest()[:length].ljust(length, b"\0")

    return random_bytes


BASE = keyring.new_keyring(stream("aes"))
RING = keyring.add_sealing_key(BASE, stream("sealing"), NOW)
SEALING_ID = str(RING.active_sealing_id)


def secret_fields(ring: keyring.Keyring) -> tuple[dict[str, str], dict[str, str]]:
    return keyring.keyring_to_secret_fields(ring)


def test_a_sealing_key_is_stored_in_the_keyring_secret_and_read_back() -> None:
    data, annotations = secret_fields(RING)
    assert f"{names.SEALING_KEY_PREFIX}{SEALING_ID}" in data
    assert annotations[names.ACTIVE_SEALING_KEY_ANNOTATION] == SEALING_ID
    assert annotations[names.SEALING_KEY_SINCE_ANNOTATION] == NOW
    assert f"{names.SEALING_KEY_PREFIX}{SEALING_ID}" in json.loads(annotations[names.KEY_FINGERPRINTS_ANNOTATION])
    parsed = keyring.parse_keyring("kr", data, annotations)
    assert parsed.sealing_keys == RING.sealing_keys and parsed.active_sealing_id == SEALING_ID
    assert parsed.sealing_since == NOW
    assert sealing.key_id_for(parsed.sealing_public_keys()[SEALING_ID]) == SEALING_ID


def test_the_repr_names_ids_only() -> None:
    text = repr(RING)
    assert SEALING_ID in text
    assert base64.b64encode(RING.sealing_keys[SEALING_ID]).decode() not in text
    assert RING.sealing_keys[SEALING_ID].hex() not in text


def test_a_keyring_from_before_sealing_parses_without_a_sealing_key() -> None:
    data, annotations = secret_fields(BASE)
    parsed = keyring.parse_keyring("kr", data, annotations)
    assert parsed.sealing_keys == {} and parsed.active_sealing_id is None


def _without_sealing_entries(
    data: dict[str, str], annotations: dict[str, str], *, keep_annotation: bool
) -> tuple[dict[str, str], dict[str, str]]:
    data = {key: value for key, value in data.items() if not key.startswith(names.SEALING_KEY_PREFIX)}
    if not keep_annotation:
        annotations = {key: value for key, value in annotations.items() if "sealing" not in key}
    return data, annotations


@pytest.mark.parametrize("keep_annotation", [True, False], ids=["annotation-kept", "annotation-removed-too"])
def test_a_removed_sealing_key_pair_fails_closed(keep_annotation: bool) -> None:
    data, annotations = _without_sealing_entries(*secret_fields(RING), keep_annotation=keep_annotation)
    with pytest.raises(keyring.KeyringError) as raised:
        keyring.parse_keyring("credbridge-keyring", data, annotations)
    message = str(raised.value)
    assert "sealing key pair" in message and SEALING_ID in message and "keys import" in message


def test_sealing_bytes_changed_under_the_same_id_are_refused() -> None:
    data, annotations = secret_fields(RING)
    data[f"{names.SEALING_KEY_PREFIX}{SEALING_ID}"] = base64.b64encode(bytes(range(32))).decode()
    with pytest.raises(keyring.KeyringError, match="holds the bytes of another key pair"):
        keyring.parse_keyring("kr", data, annotations)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda data, annotations: annotations.pop(names.ACTIVE_SEALING_KEY_ANNOTATION), "is missing"),
        (
            lambda data, annotations: annotations.__setitem__(names.ACTIVE_SEALING_KEY_ANNOTATION, "0000aaaa"),
            "'0000aaaa'",
        ),
        (
            lambda data, annotations: data.__setitem__(f"{names.SEALING_KEY_PREFIX}{SEALING_ID}", "%%"),
            "not valid base64",
        ),
    ],
    ids=["no-active-annotation", "active-names-missing-key", "not-base64"],
)
def test_a_malformed_sealing_part_is_refused_with_the_fix(
    change: typing.Callable[[dict[str, str], dict[str, str]], object], fragment: str
) -> None:
    data, annotations = secret_fields(RING)
    change(data, annotations)
    with pytest.raises(keyring.KeyringError, match=fragment):
        keyring.parse_keyring("kr", data, annotations)


def test_fingerprints_catch_a_sealing_key_swapped_with_its_fingerprint_record_intact() -> None:
    other = keyring.add_sealing_key(BASE, stream("other"), NOW)
    recorded = keyring.fingerprints(RING)
    check = keyring.check_key_material(other, recorded)
    assert check.changed == () and check.unrecorded == (f"{names.SEALING_KEY_PREFIX}{other.active_sealing_id}",)
    assert keyring.check_key_material(RING, recorded) == keyring.KeyMaterialCheck((), ())


def test_rotation_adds_an_active_key_and_keeps_the_old_one() -> None:
    rotated = keyring.add_sealing_key(RING, stream("rotation"), "2024-06-01T00:00:00Z")
    assert rotated.active_sealing_id != SEALING_ID and set(rotated.sealing_ids()) == {
        SEALING_ID,
        rotated.active_sealing_id,
    }
    assert rotated.sealing_since == "2024-06-01T00:00:00Z" and rotated.keys == RING.keys


def test_retiring_a_sealing_key_is_refused_while_active_or_in_use_naming_the_credentials() -> None:
    rotated = keyring.add_sealing_key(RING, stream("rotation"), NOW)
    with pytest.raises(keyring.KeyringError, match="active sealing key"):
        keyring.retire_sealing_key(rotated, str(rotated.active_sealing_id), [])
    users = [f"team-{index}/cred" for index in range(12)]
    with pytest.raises(keyring.KeyringError) as raised:
        keyring.retire_sealing_key(rotated, SEALING_ID, users)
    assert (
        "12 Credentials" in str(raised.value) and "team-0/cred" in str(raised.value) and "2 more" in str(raised.value)
    )
    with pytest.raises(keyring.KeyringError, match="not in the keyring"):
        keyring.retire_sealing_key(rotated, "0000aaaa", [])
    retired = keyring.retire_sealing_key(rotated, SEALING_ID, [])
    assert retired.sealing_ids() == [rotated.active_sealing_id]


def test_restoring_merges_keys_and_makes_the_backups_keys_active() -> None:
    fresh = keyring.add_sealing_key(keyring.new_keyring(stream("fresh")), stream("fresh-sealing"), NOW)
    restored = keyring.restore_keys(fresh, RING)
    assert set(restored.ids()) == set(fresh.ids()) | set(RING.ids())
    assert restored.active_id == RING.active_id and restored.active_sealing_id == SEALING_ID
    assert keyring.restore_keys(None, RING) == RING
    clash = keyring.Keyring(keys={RING.active_id: bytes(32)}, active_id=RING.active_id)
    with pytest.raises(keyring.KeyringError, match="nothing was imported"):
        keyring.restore_keys(clash, RING)


def test_a_bundle_round_trips_the_whole_keyring() -> None:
    text = keybundle.export_bundle(RING, PASSPHRASE, stream("bundle"), NOW)
    document = json.loads(text)
    assert document["format"] == keybundle.FORMAT and document["kdf"]["name"] == "scrypt"
    assert document["sealingKeyIds"] == [SEALING_ID] and document["activeKeyId"] == RING.active_id
    for key in [*RING.keys.values(), *RING.sealing_keys.values()]:
        assert base64.b64encode(key).decode() not in text and key.hex() not in text
    restored = keybundle.import_bundle(text, PASSPHRASE)
    assert restored.keys == RING.keys and restored.sealing_keys == RING.sealing_keys
    assert restored.active_sealing_id == SEALING_ID and restored.sealing_since == NOW


def test_a_wrong_passphrase_or_an_altered_bundle_imports_nothing() -> None:
    text = keybundle.export_bundle(RING, PASSPHRASE, stream("bundle"), NOW)
    with pytest.raises(keybundle.BundleError, match="passphrase is wrong"):
        keybundle.import_bundle(text, PASSPHRASE + "!")
    document = json.loads(text)
    document["activeKeyId"] = "00000000"
    with pytest.raises(keybundle.BundleError, match="altered"):
        keybundle.import_bundle(json.dumps(document), PASSPHRASE)
    document = json.loads(text)
    document["kdf"]["n"] = 2**30
    with pytest.raises(keybundle.BundleError, match="out of range"):
        keybundle.import_bundle(json.dumps(document), PASSPHRASE)
    with pytest.raises(keybundle.BundleError, match="not JSON"):
        keybundle.import_bundle("-----BEGIN", PASSPHRASE)
    with pytest.raises(keybundle.BundleError, match="format"):
        keybundle.import_bundle(json.dumps({"format": "other"}), PASSPHRASE)


def test_a_short_passphrase_is_refused() -> None:
    with pytest.raises(keybundle.BundleError, match="shorter than 12"):
        keybundle.export_bundle(RING, "short", stream("bundle"), NOW)


def test_rotating_or_retiring_encryption_keys_keeps_the_sealing_keys() -> None:
    rotated = keyring.add_key(RING, stream("aes-rotation"))
    assert rotated.sealing_keys == RING.sealing_keys and rotated.active_sealing_id == SEALING_ID
    retired = keyring.retire_key(rotated, RING.active_id, in_use=[])
    assert retired.sealing_keys == RING.sealing_keys and retired.sealing_since == NOW
    data, annotations = keyring.keyring_to_secret_fields(retired)
    assert keyring.parse_keyring("kr", data, annotations).sealing_keys == RING.sealing_keys


@pytest.mark.parametrize(
    ("since", "now", "interval", "due"),
    [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:59Z", 60, False),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z", 60, True),
        ("2024-05-01T10:00:00Z", "2025-05-01T10:00:00Z", 0, False),
        ("not a time", "2025-05-01T10:00:00Z", 60, False),
    ],
)
def test_a_scheduled_sealing_rotation_is_due_after_its_interval(
    since: str, now: str, interval: float, due: bool
) -> None:
    assert keyring.sealing_rotation_due(since, now, interval) is due
