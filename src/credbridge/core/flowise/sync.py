"""The sync plan of one FlowiseTarget: which credentials to create, update, revert or delete in a
Flowise server, and what the target's status says afterwards.

Inputs are what the operator gathered: the selected Credentials of the target's namespace (with
their Ready state and the tenancy decision), the target's status (what credbridge pushed before
and owns), and what the Flowise server lists now. The fields of a Credential are asked for only
when a push may be needed (`content_of`), so a resync where nothing changed decrypts nothing.

Rules:
- credbridge owns a Flowise credential only if its status entry says so (`owned`). Ownership is
  claimed in status before the first push (state `Pushing`), so a crash between the push and
  the status write does not turn credbridge's own credential into a "conflict".
- A Flowise credential credbridge does not own is never written or deleted: an id collision is a
  `Conflict`. (Flowise's POST with an existing id silently overwrites, so the look comes first.)
- Content is pushed only when it differs from what was pushed, compared by a keyed HMAC of the
  payload (`pushedHmac`); a key rotation re-keys that HMAC in status and pushes nothing.
- An edit made in Flowise shows as a changed `updatedDate`; credbridge reverts it by pushing its
  content again, with an Event. Except for OAuth2 Credentials: Flowise writes their token fields
  itself (its refresh route, called by its nodes near expiry), and its list API returns no data to
  tell those writes from an edit, so a new `updatedDate` is taken as it is and credbridge pushes
  only when its own content changed (each refresh of the operator). Reverting Flowise's refresh
  would put back an older access token and, with a rotating provider, a refresh token that no
  longer works.
- A Credential that is not Ready keeps whatever was pushed last (the last good output stays).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import re
import typing

from credbridge.core import envelope, keyring, redaction

Json = dict[str, typing.Any]

HMAC_AAD_PREFIX = "credbridge.io/flowise/v1"
"""First part of the associated data of `pushedHmac`; binds it to target and id."""

SYNCED, PENDING, PUSHING, FAILED, CONFLICT = "Synced", "Pending", "Pushing", "Failed", "Conflict"
STATES = (SYNCED, PENDING, PUSHING, FAILED, CONFLICT)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_flowise_id(credential_id: str) -> bool:
    """Tells whether Flowise can store a credential under `credential_id` (its column is a UUID)."""
    return _UUID.fullmatch(credential_id) is not None


@dataclasses.dataclass(frozen=True)
class Remote:
    """One credential as Flowise lists it (`GET /api/v1/credentials`): no data, only metadata."""

    id: str
    name: str
    credential_name: str
    updated_date: str


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A Credential of the target's namespace that its selector selects."""

    name: str
    """Credential object name."""
    id: str
    """`status.id`: the id it gets in Flowise."""
    display_name: str
    type_name: str
    revision: str
    """Changes whenever what would be pushed may have changed (generation and `status.updatedDate`)."""
    not_ready: str | None = None
    """Why the Credential is not Ready (its condition reason), or None when it is."""
    denial: str | None = None
    """Why its plaintext may not go to Flowise (the tenancy rule), or None."""
    oauth2: bool = False
    """An OAuth2 Credential: Flowise refreshes its tokens itself, so a change made in Flowise is not reverted."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of `status.credentials`: what credbridge knows about one id in Flowise."""

    name: str
    id: str
    state: str
    owned: bool = False
    """True once credbridge claimed the id (before its first push); only owned ids are written."""
    pushed_hmac: str | None = None
    flowise_updated_date: str | None = None
    """Flowise's `updatedDate` right after credbridge's last push: a different one means an edit."""
    revision: str | None = None
    last_push_time: str | None = None
    message: str | None = None

    @classmethod
    def from_status(cls, item: collections.abc.Mapping[str, typing.Any]) -> Entry:
        """Reads one `status.credentials` item."""
        return cls(
            name=str(item.get("name", "")),
            id=str(item.get("id", "")),
            state=str(item.get("state", PENDING)),
            owned=bool(item.get("owned", False)),
            pushed_hmac=item.get("pushedHmac"),
            flowise_updated_date=item.get("flowiseUpdatedDate"),
            revision=item.get("revision"),
            last_push_time=item.get("lastPushTime"),
            message=item.get("message"),
        )

    def to_status(self) -> Json:
        """The `status.credentials` item, without empty keys."""
        item: Json = {"name": self.name, "id": self.id, "state": self.state, "owned": self.owned}
        for key, value in (
            ("pushedHmac", self.pushed_hmac),
            ("flowiseUpdatedDate", self.flowise_updated_date),
            ("revision", self.revision),
            ("lastPushTime", self.last_push_time),
            ("message", self.message),
        ):
            if value is not None:
                item[key] = value
        return item


@dataclasses.dataclass(frozen=True)
class Event:
    """An Event to post on the FlowiseTarget."""

    type: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Push:
    """Write one credential into Flowise (`POST /api/v1/credentials` with its id)."""

    id: str
    name: str
    action: str
    """`create`, `update`, `revert` or `recreate`: why the push happens (for logs and metrics)."""
    payload: Json = dataclasses.field(repr=False)
    """`{id, name, credentialName, plainDataObj}`; holds plaintext, never formatted."""
    entry: Entry
    """The status entry after a successful push (its `flowiseUpdatedDate` comes from the answer)."""
    before: Entry | None = None
    """The owned entry before the push, kept (marked failed) when the push fails."""


@dataclasses.dataclass(frozen=True)
class Delete:
    """Delete one credential credbridge owns from Flowise."""

    id: str
    name: str
    entry: Entry
    """The entry to keep when the delete fails."""


@dataclasses.dataclass
class SyncPlan:
    """What to do for one target. `entries` are the status entries of every id that is not
    pushed or deleted; pushes and deletes bring their own entry for after the write."""

    entries: dict[str, Entry]
    claims: list[Entry] = dataclasses.field(default_factory=list)
    """Entries to write to status before pushing: new ownership, claimed before the first POST."""
    pushes: list[Push] = dataclasses.field(default_factory=list)
    deletes: list[Delete] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)


ContentOf = collections.abc.Callable[[Candidate], "redaction.SecretFields | str"]
"""Returns a Candidate's decrypted fields, or a message saying why they cannot be read."""


def hmac_aad(namespace: str, target: str, credential_id: str) -> bytes:
    """The associated data of a `pushedHmac`: the same content pushed by another target, or under
    another id, has another HMAC."""
    return "|".join((HMAC_AAD_PREFIX, namespace, target, credential_id)).encode("utf-8")


def payload(candidate: Candidate, fields: collections.abc.Mapping[str, str]) -> Json:
    """The body of `POST /api/v1/credentials` for a Candidate: Flowise's own credential shape."""
    return {
        "id": candidate.id,
        "name": candidate.display_name,
        "credentialName": candidate.type_name,
        "plainDataObj": dict(fields),
    }


def payload_bytes(body: collections.abc.Mapping[str, typing.Any]) -> bytes:
    """The canonical bytes of a payload that its HMAC covers (sorted keys, compact)."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def plan_sync(
    *,
    namespace: str,
    target: str,
    candidates: collections.abc.Sequence[Candidate],
    previous: collections.abc.Sequence[Entry],
    remote: collections.abc.Mapping[str, Remote],
    known_types: collections.abc.Container[str] | None,
    content_of: ContentOf,
    ring: keyring.Keyring,
    prune: bool,
    now: str,
) -> SyncPlan:
    """Plans one sync of a target against what its Flowise lists now (`remote`, by id).

    `candidates` are the selected Credentials (none when the target is being deleted);
    `previous` is `status.credentials`; `known_types` the credential types this Flowise knows
    (None when it could not be asked).
    """
    before = {entry.id: entry for entry in previous}
    plan = SyncPlan(entries={})
    # Two Credentials with one id: only one of them is Ready (the other reports DuplicateId). It speaks for the id.
    by_id: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: (c.not_ready is not None, c.name)):
        by_id.setdefault(candidate.id, candidate)
    candidates = list(by_id.values())
    for candidate in candidates:
        _plan_candidate(
            plan, candidate, before.get(candidate.id), remote, known_types, content_of, ring, now, namespace, target
        )
    wanted = {candidate.id for candidate in candidates}
    for entry in previous:
        if entry.id in wanted or not entry.owned:
            continue
        if not prune:
            continue  # released: Flowise keeps it, credbridge forgets it
        if entry.id in remote:
            plan.deletes.append(Delete(entry.id, entry.name, entry))
        # owned and already gone from Flowise: nothing to do, the entry is dropped
    return plan


def _blocked(
    candidate: Candidate,
    where: str,
    owned: bool,
    found: Remote | None,
    known_types: collections.abc.Container[str] | None,
) -> tuple[str, str, str | None] | None:
    """Why a Candidate cannot be pushed now: (state, message, Event reason or None), or None."""
    if found is not None and not owned:
        message = (
            f"{where}: Flowise already has a credential with this id ({found.name!r}, type {found.credential_name}) "
            "that credbridge did not create; credbridge leaves it alone: delete or rename it in Flowise, or give "
            "the Credential another spec.id"
        )
        return CONFLICT, message, "Conflict"
    if candidate.not_ready is not None:
        suffix = "; Flowise keeps what was pushed last" if owned else ""
        return PENDING, f"{where} is not Ready ({candidate.not_ready}){suffix}", None
    if candidate.denial is not None:
        return FAILED, f"{where}: {candidate.denial}", "PlaintextDenied"
    if not is_flowise_id(candidate.id):
        message = (
            f"{where}: Flowise stores credential ids as UUIDs and this id is not one, so the credential cannot "
            "keep its id there: set spec.id to a UUID (or remove it to use the object's uid)"
        )
        return FAILED, message, "InvalidId"
    if known_types is not None and candidate.type_name not in known_types:
        message = (
            f"{where}: this Flowise does not know the credential type {candidate.type_name!r}; upgrade Flowise or "
            "leave the Credential out with spec.selector"
        )
        return FAILED, message, "UnknownType"
    return None


def _plan_candidate(
    plan: SyncPlan,
    candidate: Candidate,
    entry: Entry | None,
    remote: collections.abc.Mapping[str, Remote],
    known_types: collections.abc.Container[str] | None,
    content_of: ContentOf,
    ring: keyring.Keyring,
    now: str,
    namespace: str,
    target: str,
) -> None:
    where = f"Credential {candidate.name} (id {candidate.id})"
    owned = entry is not None and entry.owned
    found = remote.get(candidate.id)

    def keep(state: str, message: str, event: Event | None = None) -> None:
        """Record a state without writing to Flowise; an owned entry keeps what it pushed."""
        base = entry if entry is not None and entry.owned else Entry(candidate.name, candidate.id, state)
        changed = entry is None or entry.state != state or entry.message != message
        plan.entries[candidate.id] = dataclasses.replace(base, name=candidate.name, state=state, message=message)
        if event is not None and changed:
            plan.events.append(event)

    blocked = _blocked(candidate, where, owned, found, known_types)
    if blocked is not None:
        state, message, reason = blocked
        keep(state, message, Event("Warning", reason, message) if reason else None)
        return
    mine = entry if owned else None  # an entry that never owned its id only reported on it
    # Flowise's own writes to an OAuth2 credential (its token refresh) are taken as they are.
    untouched = (
        mine is not None and found is not None and (mine.flowise_updated_date == found.updated_date or candidate.oauth2)
    )
    if (
        mine is not None
        and found is not None
        and untouched
        and mine.state == SYNCED
        and mine.revision == candidate.revision
        and (mine.pushed_hmac or "").partition(":")[0] == ring.active_id
    ):
        # Nothing changed on our side (and nothing that is drift on Flowise's): nothing to decrypt.
        plan.entries[candidate.id] = dataclasses.replace(mine, flowise_updated_date=found.updated_date)
        return

    fields = content_of(candidate)
    if isinstance(fields, str):
        keep(FAILED, f"{where}: {fields}")
        return
    body = payload(candidate, fields)
    content = payload_bytes(body)
    aad = hmac_aad(namespace, target, candidate.id)
    wanted_hmac = envelope.content_hmac(ring.active_id, ring.active_key, aad, content)
    same = (
        mine is not None
        and mine.pushed_hmac is not None
        and (envelope.verify_content_hmac(mine.pushed_hmac, ring.keys, aad, content))
    )
    if mine is not None and found is not None and same and untouched:
        # Same content, untouched in Flowise: only the HMAC key or the revision moved. No push.
        plan.entries[candidate.id] = dataclasses.replace(
            mine,
            name=candidate.name,
            state=SYNCED,
            pushed_hmac=wanted_hmac,
            revision=candidate.revision,
            message=None,
            flowise_updated_date=found.updated_date,
        )
        return

    if mine is None:
        action = "create"
    elif found is None:
        action = "create" if mine.pushed_hmac is None else "recreate"
    elif mine.pushed_hmac is not None and not untouched:
        action = "revert"
    else:
        action = "update"
    after = Entry(
        name=candidate.name,
        id=candidate.id,
        state=SYNCED,
        owned=True,
        pushed_hmac=wanted_hmac,
        revision=candidate.revision,
        last_push_time=now,
    )
    if mine is None:
        plan.claims.append(Entry(candidate.name, candidate.id, PUSHING, owned=True))
    plan.pushes.append(Push(candidate.id, candidate.name, action, body, after, mine))
    if action == "revert":
        plan.events.append(
            Event(
                "Normal",
                "RevertedFlowiseEdit",
                f"{where} was changed in Flowise (updatedDate {found.updated_date if found else '?'}); "
                "credbridge pushed its content again. Change the Credential instead of the copy in Flowise",
            )
        )
    elif action == "recreate":
        plan.events.append(
            Event(
                "Normal", "Recreated", f"{where} was missing from Flowise (deleted there?); credbridge pushed it again"
            )
        )


@dataclasses.dataclass(frozen=True)
class PushResult:
    """How one push or delete went: the new `updatedDate` on success, else a message (no values)."""

    id: str
    ok: bool
    updated_date: str | None = None
    message: str | None = None
    reason: str | None = None
    """The failure's reason (the Flowise client error's), when not ok."""


def entries_after(plan: SyncPlan, results: collections.abc.Mapping[str, PushResult]) -> list[Entry]:
    """The status entries once the plan's writes were tried; a write without a result did not happen."""
    entries = dict(plan.entries)
    for push in plan.pushes:
        result = results.get(push.id)
        if result is not None and result.ok:
            entries[push.id] = dataclasses.replace(push.entry, flowise_updated_date=result.updated_date)
            continue
        claim = next((c for c in plan.claims if c.id == push.id), None)
        kept = push.before or claim or Entry(push.name, push.id, FAILED, owned=True)
        message = (result.message if result else None) or "not pushed yet"
        entries[push.id] = dataclasses.replace(
            kept, name=push.name, state=FAILED if result else PENDING, message=message
        )
    for delete in plan.deletes:
        result = results.get(delete.id)
        if result is None or not result.ok:
            message = (result.message if result else None) or "not deleted yet"
            entries[delete.id] = dataclasses.replace(delete.entry, state=FAILED, message=message)
    return sorted(entries.values(), key=lambda entry: (entry.name, entry.id))


def claimed_entries(previous: collections.abc.Sequence[Entry], plan: SyncPlan) -> list[Entry]:
    """The status entries to write before pushing: the previous ones plus the plan's claims."""
    entries = {entry.id: entry for entry in previous}
    for claim in plan.claims:
        entries[claim.id] = claim
    return sorted(entries.values(), key=lambda entry: (entry.name, entry.id))


def counts(entries: collections.abc.Iterable[Entry]) -> Json:
    """`status.counts`: synced, pending (including pushes in flight), failed, conflicts."""
    tally = {"synced": 0, "pending": 0, "failed": 0, "conflicts": 0}
    for entry in entries:
        key = {SYNCED: "synced", PENDING: "pending", PUSHING: "pending", FAILED: "failed", CONFLICT: "conflicts"}
        tally[key.get(entry.state, "pending")] += 1
    return tally


def ready_condition(entries: collections.abc.Sequence[Entry]) -> tuple[str, str, str]:
    """(status, reason, message) of the Ready condition after a sync that reached Flowise."""
    tally = counts(entries)
    problems = [entry for entry in entries if entry.state in (CONFLICT, FAILED)]
    first = f": {problems[0].message}" if problems and problems[0].message else ""
    if tally["conflicts"]:
        return (
            "False",
            "Conflict",
            f"{tally['conflicts']} credential id(s) collide with credentials credbridge did not create{first}",
        )
    if tally["failed"]:
        return "False", "PushFailed", f"{tally['failed']} credential(s) could not be synced{first}"
    if tally["pending"]:
        waiting = next((entry.message for entry in entries if entry.state in (PENDING, PUSHING) and entry.message), "")
        return (
            "False",
            "Pending",
            f"{tally['pending']} credential(s) wait to be synced" + (f": {waiting}" if waiting else ""),
        )
    return "True", "Synced", f"{tally['synced']} credential(s) in sync with Flowise"
