"""The sync plan of a FlowiseTarget as state transitions: a frozen input (candidates, status
entries, what Flowise lists) in, the writes and the next status out."""

from __future__ import annotations

import dataclasses

from credbridge.core import keyring, redaction
from credbridge.core.flowise import sync

RING = keyring.Keyring({"aaaaaaaa": b"a" * 32}, "aaaaaaaa")
ROTATED = keyring.Keyring({"aaaaaaaa": b"a" * 32, "bbbbbbbb": b"b" * 32}, "bbbbbbbb")
ID = "0b6d3f1e-1d8e-4a47-9a53-5e4a3f0b9c11"
VALUE = "sk-canary-value"
CANDIDATE = sync.Candidate(name="openai", id=ID, display_name="OpenAI", type_name="openAIApi", revision="g1-s10")


def content(value: str = VALUE) -> sync.ContentOf:
    return lambda candidate: redaction.SecretFields({"openAIApiKey": value})


def plan(
    candidates: list[sync.Candidate] | None = None,
    previous: list[sync.Entry] | None = None,
    remote: dict[str, sync.Remote] | None = None,
    *,
    ring: keyring.Keyring = RING,
    content_of: sync.ContentOf | None = None,
    known_types: set[str] | None = None,
    prune: bool = True,
) -> sync.SyncPlan:
    return sync.plan_sync(
        namespace="team-a",
        target="flowise",
        candidates=[CANDIDATE] if candidates is None else candidates,
        previous=previous or [],
        remote=remote or {},
        known_types={"openAIApi"} if known_types is None else known_types,
        content_of=content_of or content(),
        ring=ring,
        prune=prune,
        now="2026-01-01T00:00:00Z",
    )


def synced(first: sync.SyncPlan, updated: str = "t1") -> tuple[sync.Entry, dict[str, sync.Remote]]:
    """The entry and listing after the first plan's push succeeded."""
    entry = sync.entries_after(first, {ID: sync.PushResult(ID, True, updated_date=updated)})[0]
    return entry, {ID: sync.Remote(ID, "OpenAI", "openAIApi", updated)}


def test_a_new_credential_is_claimed_then_created_with_its_id_and_nothing_is_in_the_status_but_an_hmac() -> None:
    first = plan()
    assert [claim.state for claim in first.claims] == ["Pushing"] and first.claims[0].owned
    assert [(push.action, push.payload) for push in first.pushes] == [
        ("create", {"id": ID, "name": "OpenAI", "credentialName": "openAIApi", "plainDataObj": {"openAIApiKey": VALUE}})
    ]
    entry, _ = synced(first)
    assert entry.state == "Synced" and entry.owned and entry.flowise_updated_date == "t1"
    assert entry.pushed_hmac is not None and entry.pushed_hmac.startswith("aaaaaaaa:")
    assert VALUE not in repr(first) and VALUE not in str(entry.to_status())


def test_nothing_changed_means_no_push_and_no_decryption() -> None:
    entry, listing = synced(plan())

    def refuse(candidate: sync.Candidate) -> str:
        raise AssertionError("decrypted although nothing changed")

    again = plan(previous=[entry], remote=listing, content_of=refuse)
    assert again.pushes == [] and again.claims == [] and again.entries == {ID: entry}


def test_changed_content_is_pushed_as_an_update_and_a_same_content_new_revision_is_not() -> None:
    entry, listing = synced(plan())
    moved = [dataclasses.replace(CANDIDATE, revision="g1-s11")]
    same = plan(moved, [entry], listing)
    assert same.pushes == [] and same.entries[ID].revision == "g1-s11"
    changed = plan(moved, [entry], listing, content_of=content("sk-new"))
    assert [push.action for push in changed.pushes] == ["update"] and changed.claims == []


def test_a_key_rotation_rekeys_the_hmac_without_pushing() -> None:
    entry, listing = synced(plan())
    after = plan([dataclasses.replace(CANDIDATE, revision="g1-s12")], [entry], listing, ring=ROTATED)
    assert after.pushes == []
    assert after.entries[ID].pushed_hmac.startswith("bbbbbbbb:")  # type: ignore[union-attr]
    assert after.entries[ID].last_push_time == entry.last_push_time


def test_an_edit_in_flowise_is_reverted_and_a_deletion_there_recreated() -> None:
    entry, _ = synced(plan())
    edited = plan(previous=[entry], remote={ID: sync.Remote(ID, "changed", "openAIApi", "t2")})
    assert [push.action for push in edited.pushes] == ["revert"]
    assert [event.reason for event in edited.events] == ["RevertedFlowiseEdit"]
    gone = plan(previous=[entry], remote={})
    assert [push.action for push in gone.pushes] == ["recreate"] and gone.claims == []


def test_an_id_taken_by_someone_else_is_a_conflict_and_never_written() -> None:
    hand_made = {ID: sync.Remote(ID, "by hand", "openAIApi", "t0")}
    result = plan(remote=hand_made)
    assert result.pushes == [] and result.deletes == [] and result.claims == []
    assert result.entries[ID].state == "Conflict" and not result.entries[ID].owned
    assert [event.reason for event in result.events] == ["Conflict"]
    again = plan(previous=[result.entries[ID]], remote=hand_made)
    assert again.events == [], "the Event is posted once, not on every resync"


def test_a_crash_after_the_claim_is_not_mistaken_for_a_conflict() -> None:
    claim = plan().claims[0]
    after_crash = plan(previous=[claim], remote={ID: sync.Remote(ID, "OpenAI", "openAIApi", "t1")})
    assert [push.action for push in after_crash.pushes] == ["update"]
    assert all(entry.state != "Conflict" for entry in after_crash.entries.values())


def test_blocked_candidates_are_reported_and_keep_what_was_pushed() -> None:
    entry, listing = synced(plan())
    not_ready = plan([dataclasses.replace(CANDIDATE, not_ready="EnvReferenceMissing")], [entry], listing)
    assert not_ready.pushes == [] and not_ready.entries[ID].state == "Pending"
    assert not_ready.entries[ID].pushed_hmac == entry.pushed_hmac
    denied = plan([dataclasses.replace(CANDIDATE, denial="not granted")])
    assert denied.pushes == [] and [e.reason for e in denied.events] == ["PlaintextDenied"]
    bad_id = plan([dataclasses.replace(CANDIDATE, id="my-openai")])
    assert bad_id.pushes == [] and [e.reason for e in bad_id.events] == ["InvalidId"]
    unknown = plan(known_types={"somethingElse"})
    assert unknown.pushes == [] and [e.reason for e in unknown.events] == ["UnknownType"]
    unreadable = plan(content_of=lambda candidate: "its Secret is not available yet")
    assert unreadable.pushes == [] and unreadable.entries[ID].state == "Failed"


def test_unselected_or_deleted_credentials_are_pruned_or_released() -> None:
    entry, listing = synced(plan())
    pruned = plan([], [entry], listing)
    assert [delete.id for delete in pruned.deletes] == [ID] and pruned.entries == {}
    released = plan([], [entry], listing, prune=False)
    assert released.deletes == [] and released.entries == {}
    already_gone = plan([], [entry], {})
    assert already_gone.deletes == []


def test_failed_pushes_keep_the_previous_entry_and_the_counts_and_condition_say_so() -> None:
    entry, listing = synced(plan())
    moved = [dataclasses.replace(CANDIDATE, revision="g1-s11")]
    update = plan(moved, [entry], listing, content_of=content("sk-new"))
    assert [push.action for push in update.pushes] == ["update"]
    entries = sync.entries_after(update, {ID: sync.PushResult(ID, False, message="HTTP 500")})
    assert entries[0].state == "Failed" and entries[0].pushed_hmac == entry.pushed_hmac
    assert sync.counts(entries) == {"synced": 0, "pending": 0, "failed": 1, "conflicts": 0}
    assert sync.ready_condition(entries)[:2] == ("False", "PushFailed")
    assert sync.ready_condition([entry])[:2] == ("True", "Synced")


def test_of_two_credentials_with_one_id_the_ready_one_speaks_for_it() -> None:
    duplicate = dataclasses.replace(CANDIDATE, name="a-duplicate", not_ready="DuplicateId")
    result = plan([duplicate, CANDIDATE])
    assert [push.name for push in result.pushes] == ["openai"]


def test_flowise_refreshing_an_oauth2_credential_is_not_reverted_and_the_next_refresh_is_pushed() -> None:
    gmail = dataclasses.replace(CANDIDATE, type_name="gmailOAuth2", oauth2=True)

    def tokens(token: str) -> sync.ContentOf:
        fields = {"clientId": "id", "access_token": token, "expires_at": "2026-01-01T01:00:00.000Z"}
        return lambda candidate: redaction.SecretFields(fields)

    first = plan([gmail], known_types={"gmailOAuth2"}, content_of=tokens("ya29.first"))
    entry, _ = synced(first, "t1")

    def refuse(candidate: sync.Candidate) -> str:
        raise AssertionError("decrypted although only Flowise wrote")

    # Flowise refreshed the token itself (its updatedDate moved): taken as it is, nothing pushed or decrypted.
    refreshed_in_flowise = {ID: sync.Remote(ID, "OpenAI", "gmailOAuth2", "t2")}
    kept = plan([gmail], [entry], refreshed_in_flowise, known_types={"gmailOAuth2"}, content_of=refuse)
    assert kept.pushes == [] and kept.events == [] and kept.entries[ID].flowise_updated_date == "t2"
    # The operator's next refresh is a new revision with new content: pushed as an update, not a revert.
    moved = dataclasses.replace(gmail, revision="g1-s11")
    pushed = plan(
        [moved], [kept.entries[ID]], refreshed_in_flowise, known_types={"gmailOAuth2"}, content_of=tokens("ya29.next")
    )
    assert [push.action for push in pushed.pushes] == ["update"] and pushed.events == []
    # The same content under a new revision while Flowise wrote: nothing pushed either.
    same = plan([moved], [entry], refreshed_in_flowise, known_types={"gmailOAuth2"}, content_of=tokens("ya29.first"))
    assert same.pushes == [] and same.entries[ID].flowise_updated_date == "t2"


def test_an_edit_in_flowise_of_other_credentials_is_still_reverted() -> None:
    entry, _ = synced(plan(), "t1")
    edited = {ID: sync.Remote(ID, "OpenAI", "openAIApi", "t2")}
    reverted = plan(previous=[entry], remote=edited)
    assert [push.action for push in reverted.pushes] == ["revert"]
    assert [event.reason for event in reverted.events] == ["RevertedFlowiseEdit"]
