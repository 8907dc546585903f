"""Reconcile planning: from a Credential and what the cluster holds to the Secret and status it should have.

The operator gathers inputs (the object, its type, the environment, referenced Secrets, the managed
Secret, the keyring), calls `plan_credential` or `plan_mirror`, and applies the plan. Everything that
decides — validation order, failure reasons, when to write, what the status says — lives here,
where it runs without a cluster and is tested as plain input → output.

Level-based: the plan depends only on the inputs as they are now, so applying it twice changes
nothing the second time, and an unchanged Credential plans no writes at all.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import hmac
import typing

from credbridge.core import (
    conditions,
    envelope,
    envrefs,
    keyring,
    names,
    redaction,
    registry,
    sealing,
    validation,
    views,
)

Json = dict[str, typing.Any]
EnvLookup = collections.abc.Callable[[str], str | None]


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a Credential is not Ready: a condition reason and a message naming fields, never values."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Credential."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


CredentialView = views.CredentialView
"""Re-exported: planning reads Credentials through the view defined in core.views."""
SecretView = views.SecretView
"""Re-exported: planning reads Secrets through the view defined in core.views."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to do for one Credential.

    `secret` is the whole Secret to create (no current one) or replace (current one is ours), or
    None to leave the cluster's Secret untouched. `status` is the status the object should show; the
    operator patches it only when it differs from the current one. `content` is the plaintext that
    the Secret holds after the plan (for mirrors of this Credential), or None after a failure.
    """

    status: Json
    secret: Json | None = None
    failure: Failure | None = None
    event: Event | None = None
    content: redaction.SecretFields | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A Credential's plaintext, and what its sealed values say about the sealing key they used."""

    fields: redaction.SecretFields
    sealed_with_old_key: collections.abc.Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Field → sealed value (spec.sealedData) for values sealed with a key other than the active one."""
    opened: redaction.SecretFields = dataclasses.field(default_factory=redaction.SecretFields)
    """The opened sealed values by field (to check a re-sealed value against), never shown."""


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything besides the Credential itself that a plan depends on."""

    now: str
    """Current time, RFC 3339, used for createdDate/updatedDate/lastTransitionTime."""
    random_bytes: envelope.RandomBytes = dataclasses.field(repr=False)
    keyring: keyring.Keyring | None
    """None when the keyring could not be loaded: every plan then fails with KeyUnavailable."""
    current_secret: SecretView | None = None


def plan_credential(
    credential: CredentialView,
    inputs: Inputs,
    *,
    cred_type: registry.CredentialTypeSpec | None,
    env_lookup: EnvLookup,
    env_policy: envrefs.EnvPolicy,
    referenced_secrets: collections.abc.Mapping[str, collections.abc.Mapping[str, str] | None],
    duplicate_of: str | None = None,
) -> Plan:
    """Plan the managed Secret and status of a (non-mirror) Credential.

    `referenced_secrets` maps each Secret named in spec.valueFrom to its decoded data, or None when
    it does not exist. `duplicate_of` names an older Credential in the namespace with the same id.
    """
    content = _resolve_content(
        credential,
        cred_type=cred_type,
        env_lookup=env_lookup,
        env_policy=env_policy,
        referenced_secrets=referenced_secrets,
        duplicate_of=duplicate_of,
        ring=inputs.keyring,
    )
    if isinstance(content, Failure):
        return _failed(credential, inputs, content)
    assert cred_type is not None
    plan = _plan_encrypted(credential, inputs, content.fields, type_version=cred_type.version)
    if plan.failure is not None or not credential.sealed_data:
        return plan
    return _with_sealing_status(credential, inputs, plan, content)


def plan_mirror(
    mirror: CredentialView,
    inputs: Inputs,
    *,
    source_content: redaction.SecretFields | Failure,
    type_version: int | float | None,
) -> Plan:
    """Plan the Secret and status of a read-only mirror from its source's plaintext (or failure)."""
    if isinstance(source_content, Failure):
        return _failed(mirror, inputs, source_content)
    return _plan_encrypted(mirror, inputs, source_content, type_version=type_version)


def _resolve_content(
    credential: CredentialView,
    *,
    cred_type: registry.CredentialTypeSpec | None,
    env_lookup: EnvLookup,
    env_policy: envrefs.EnvPolicy,
    referenced_secrets: collections.abc.Mapping[str, collections.abc.Mapping[str, str] | None],
    duplicate_of: str | None,
    ring: keyring.Keyring | None,
) -> Resolved | Failure:
    """Validate and resolve a Credential's fields; return the plaintext or the first kind of failure."""
    where = f"Credential {credential.namespace}/{credential.name}"
    if duplicate_of:
        return Failure(
            "DuplicateId",
            (
                f"{where}: id '{credential.credential_id}' is already used by Credential '{duplicate_of}' in this "
                "namespace; set a different spec.id (or remove it to use the object's uid)"
            ),
        )
    data = {str(k): str(v) for k, v in (credential.spec.get("data") or {}).items()}
    value_from = credential.spec.get("valueFrom") or {}
    sealed = credential.sealed_data
    problems = validation.check_spec(cred_type, credential.type_name, data, list(value_from), sealed)
    if cred_type is None:
        return Failure("UnknownType", f"{where}: {validation.summarize(problems)}")
    if problems:
        return Failure("ValidationFailed", f"{where}: {validation.summarize(problems)}")
    sealed_failure = _sealed_placement_failure(credential, sealed, ring)
    if sealed_failure is not None:
        return sealed_failure

    resolved, reference_problems = envrefs.resolve_fields(data, env_lookup, env_policy, credential.namespace)
    forbidden = [p for p in reference_problems if p.kind == "forbidden"]
    if forbidden:
        return Failure("EnvReferenceForbidden", f"{where}: " + "; ".join(p.message for p in forbidden))
    if reference_problems:
        return Failure("EnvReferenceMissing", f"{where}: " + "; ".join(p.message for p in reference_problems))

    missing: list[str] = []
    for field, source in sorted(value_from.items()):
        ref = source.get("secretKeyRef") or {}
        secret_name, key = str(ref.get("name", "")), str(ref.get("key", ""))
        secret_data = referenced_secrets.get(secret_name)
        if ref.get("optional") is True and (secret_data is None or key not in secret_data):
            continue  # like a Pod's optional secretKeyRef: the field stays unset (OAuth2 tokens before authorization)
        if secret_data is None:
            missing.append(
                f"field '{field}' refers to Secret '{secret_name}', which does not exist in namespace "
                f"{credential.namespace}: create it or fix spec.valueFrom.{field}.secretKeyRef.name"
            )
        elif key not in secret_data:
            missing.append(
                f"field '{field}' refers to key '{key}' of Secret '{secret_name}', which has no such "
                f"key: add it or fix spec.valueFrom.{field}.secretKeyRef.key"
            )
        else:
            resolved[str(field)] = secret_data[key]
    if missing:
        return Failure("SecretReferenceMissing", f"{where}: " + "; ".join(missing))

    opened = _open_sealed(credential, sealed, ring)
    if isinstance(opened, Failure):
        return opened
    # Opened values are used literally: never scanned for <<NAME>> references, which would let a
    # tenant seal "<<CRED_OTHER_TEAM_KEY>>" and read another namespace's variable.
    resolved.update(opened)
    fields, problems = validation.finalize(cred_type, resolved, sealed_fields=sealed.keys())
    if problems:
        return Failure("ValidationFailed", f"{where}: {validation.summarize(problems)}")
    old_key = {field: token for field, token in sealed.items() if _sealing_key_id(token) != _active_sealing_id(ring)}
    return Resolved(fields, old_key, redaction.SecretFields(opened))


def _sealing_key_id(token: str) -> str | None:
    header = sealing.read_header(token)
    return None if header is None else header.key_id


def _active_sealing_id(ring: keyring.Keyring | None) -> str | None:
    return None if ring is None else ring.active_sealing_id


def _sealed_placement_failure(
    credential: CredentialView, sealed: collections.abc.Mapping[str, str], ring: keyring.Keyring | None
) -> Failure | None:
    """The first failure the headers of the sealed values show: form, then scope, then the key."""
    if not sealed:
        return None
    where = f"Credential {credential.namespace}/{credential.name}"
    placements = [
        sealing.placement(
            field,
            token,
            credential.namespace,
            credential.name,
            ring.sealing_keys if ring is not None else None,
            credential.type_name,
        )
        for field, token in sorted(sealed.items())
    ]
    for verdict, reason in (
        ("invalid", "SealedValueInvalid"),
        ("elsewhere", "SealedForElsewhere"),
        ("unknown-key", "SealKeyUnknown"),
    ):
        found = [placement.message for placement in placements if placement.verdict == verdict]
        if found:
            return Failure(reason, f"{where}: " + "; ".join(found))
    if ring is None:
        return Failure(
            "KeyUnavailable",
            f"{where}: the operator has no usable keyring to open spec.sealedData; see the operator log and the "
            "keyring Secret",
        )
    return None


def _open_sealed(
    credential: CredentialView, sealed: collections.abc.Mapping[str, str], ring: keyring.Keyring | None
) -> dict[str, str] | Failure:
    """Every sealed value opened, or SealedValueInvalid naming the fields that do not open."""
    if not sealed:
        return {}
    assert ring is not None
    opened: dict[str, str] = {}
    corrupted: list[str] = []
    for field, token in sorted(sealed.items()):
        try:
            opened[field] = sealing.open_value(token, ring.sealing_keys)
        except sealing.SealedValueError:
            corrupted.append(sealing.corrupted_message(field))
    if corrupted:
        return Failure(
            "SealedValueInvalid", f"Credential {credential.namespace}/{credential.name}: " + "; ".join(corrupted)
        )
    return opened


def _with_sealing_status(credential: CredentialView, inputs: Inputs, plan: Plan, content: Resolved) -> Plan:
    """The plan with the SealedWithOldKey hint and, for values on an older sealing key, the same values
    re-sealed with the active key in status.resealedData (ciphertext only), for `credbridge seal --reseal`."""
    ring = inputs.keyring
    assert ring is not None and ring.active_sealing_id is not None
    previous = credential.status.get("resealedData") or {}
    resealed: Json = {}
    for field, token in sorted(content.sealed_with_old_key.items()):
        digest = sealing.token_digest(token)
        kept = previous.get(field) if isinstance(previous, collections.abc.Mapping) else None
        if isinstance(kept, collections.abc.Mapping) and _still_good(kept, digest, token, content.opened[field], ring):
            resealed[field] = dict(kept)
            continue
        public_key = sealing.public_key_of(ring.sealing_keys[ring.active_sealing_id])
        header = sealing.read_header(token)
        assert header is not None
        value = sealing.seal_value(content.opened[field], public_key, header.scope, inputs.random_bytes)
        resealed[field] = {"from": digest, "value": value}
    if resealed:
        old_ids = sorted({str(_sealing_key_id(token)) for token in content.sealed_with_old_key.values()})
        hint = conditions.condition(
            credential.status,
            names.SEALED_WITH_OLD_KEY_CONDITION,
            "True",
            "SealingKeyRotated",
            (
                f"spec.sealedData field(s) {', '.join(sorted(resealed))} are sealed with sealing key(s) "
                f"{', '.join(old_ids)}, not the active key {ring.active_sealing_id}; status.resealedData holds them "
                "sealed with the active key: run `credbridge seal --reseal -f <your manifests>` and commit the result"
            ),
            inputs.now,
            credential.generation,
        )
    else:
        hint = conditions.condition(
            credential.status,
            names.SEALED_WITH_OLD_KEY_CONDITION,
            "False",
            "SealedWithActiveKey",
            f"every spec.sealedData value is sealed with the active sealing key {ring.active_sealing_id}",
            inputs.now,
            credential.generation,
        )
    status = {**plan.status, "conditions": conditions.merge(plan.status, [hint]), "resealedData": resealed or None}
    return dataclasses.replace(plan, status=status)


def _still_good(
    kept: collections.abc.Mapping[str, typing.Any], digest: str, token: str, value: str, ring: keyring.Keyring
) -> bool:
    """Whether a re-sealed value in the status still stands for `token`: made from it, for its scope, with the
    active key, and opening to the same value (the status is not trusted to hold what the operator wrote)."""
    resealed = kept.get("value")
    if kept.get("from") != digest or not isinstance(resealed, str):
        return False
    header, original = sealing.read_header(resealed), sealing.read_header(token)
    if header is None or original is None or header.key_id != ring.active_sealing_id or header.scope != original.scope:
        return False
    try:
        return hmac.compare_digest(sealing.open_value(resealed, ring.sealing_keys).encode(), value.encode())
    except sealing.SealedValueError:
        return False


def _plan_encrypted(
    credential: CredentialView,
    inputs: Inputs,
    content: redaction.SecretFields,
    *,
    type_version: int | float | None,
) -> Plan:
    where = f"Credential {credential.namespace}/{credential.name}"
    current = inputs.current_secret
    if current is not None and current.controller_uid != credential.uid:
        return _failed(
            credential,
            inputs,
            Failure(
                "SecretConflict",
                (
                    f"{where}: Secret '{credential.secret_name}' already exists and is not managed by this Credential; "
                    "delete or rename that Secret, or set spec.target.secretName to a free name"
                ),
            ),
        )
    if inputs.keyring is None:
        return _failed(
            credential,
            inputs,
            Failure(
                "KeyUnavailable",
                (f"{where}: the operator has no usable keyring; see the operator log and the keyring Secret"),
            ),
        )

    ring = inputs.keyring
    plaintext = envelope.encode_plaintext(content)
    aad = envelope.associated_data(
        credential.namespace, credential.secret_name, credential.credential_id, credential.type_name
    )
    wanted_hmac = envelope.content_hmac(ring.active_id, ring.active_key, aad, plaintext)
    wanted_meta = _secret_metadata(credential, wanted_hmac)

    if current is not None and _secret_is_current(current, ring, aad, plaintext, wanted_meta):
        key_id = envelope.key_id_of(current.data.get(names.SECRET_KEY_ENCRYPTED_DATA, "")) or ring.active_id
        secret = None
    else:
        token = envelope.seal(plaintext, ring.active_id, ring.active_key, aad, inputs.random_bytes)
        secret = _secret_object(credential, wanted_meta, token)
        key_id = ring.active_id

    previous = credential.status
    # updatedDate is when the content last changed: a Secret rewritten with the same plaintext (a key
    # rotation re-encrypts it; a tampered one is repaired) keeps it, so consumers that act on new content
    # (a verification check, a binding's rollout) are not woken by a new ciphertext.
    same_content = current is not None and envelope.verify_content_hmac(
        str(current.annotations.get(names.CONTENT_HMAC_ANNOTATION) or ""), ring.keys, aad, plaintext
    )
    content_changed = secret is not None and not same_content
    status: Json = {
        "id": credential.credential_id,
        "displayName": credential.display_name,
        "secretName": credential.secret_name,
        "keyId": key_id,
        "typeVersion": type_version,
        "fields": sorted(content),
        "shared": credential.shared_from is not None,
        "sharedFrom": "/".join(credential.shared_from) if credential.shared_from else None,
        "createdDate": previous.get("createdDate") or inputs.now,
        "updatedDate": inputs.now if content_changed or not previous.get("updatedDate") else previous["updatedDate"],
        "observedGeneration": credential.generation,
        "conditions": conditions.merge(
            previous,
            [
                conditions.condition(
                    previous,
                    names.READY_CONDITION,
                    "True",
                    "Encrypted",
                    (f"Secret {credential.secret_name} holds {len(content)} field(s) encrypted with key {key_id}"),
                    inputs.now,
                    credential.generation,
                )
            ],
        ),
    }
    event = None
    if conditions.reason(previous, names.READY_CONDITION) not in (None, "Encrypted"):
        event = Event("Normal", "Encrypted", f"{where} is Ready again: Secret {credential.secret_name} is up to date")
    return Plan(status=status, secret=secret, event=event, content=content)


def _failed(credential: CredentialView, inputs: Inputs, failure: Failure) -> Plan:
    """Keep everything the status said about the last good Secret; only the condition changes."""
    previous = credential.status
    status: Json = {
        key: previous[key]
        for key in ("id", "secretName", "keyId", "typeVersion", "fields", "createdDate", "updatedDate")
        if key in previous
    }
    status.update(
        {
            "displayName": credential.display_name,
            "shared": credential.shared_from is not None,
            "sharedFrom": "/".join(credential.shared_from) if credential.shared_from else None,
            "observedGeneration": credential.generation,
            "conditions": conditions.merge(
                previous,
                [
                    conditions.condition(
                        previous,
                        names.READY_CONDITION,
                        "False",
                        failure.reason,
                        failure.message,
                        inputs.now,
                        credential.generation,
                    )
                ],
            ),
        }
    )
    secret = _rewrapped_last_good_secret(credential, inputs)
    if secret is not None and inputs.keyring is not None:
        status["keyId"] = inputs.keyring.active_id
    old = conditions.find(previous, names.READY_CONDITION)
    changed = old is None or old.get("reason") != failure.reason or old.get("message") != failure.message
    event = Event("Warning", failure.reason, failure.message) if changed else None
    return Plan(status=status, secret=secret, failure=failure, event=event)


def plan_write_failure(credential: CredentialView, *, now: str, target: str, error: str) -> Plan:
    """The status after writing `target` failed several times in a row: Ready=False, WriteFailed.

    The status keeps what it said about the last good Secret; the Secret itself is not touched.
    The message stays the same from one failed attempt to the next (it names the error, not the
    count), so retrying does not rewrite the status or repeat the Event.
    """
    where = f"Credential {credential.namespace}/{credential.name}"
    failure = Failure(
        "WriteFailed",
        (
            f"{where}: could not write {target} ({error}); the operator keeps retrying with backoff, and "
            f"{target} keeps its last good content until a write succeeds: check the operator log, its RBAC "
            "and the admission webhooks and policies that apply to that Secret"
        ),
    )
    return _failed(credential, Inputs(now=now, random_bytes=_no_random_bytes, keyring=None), failure)


def _no_random_bytes(count: int) -> bytes:
    raise AssertionError("a failure plan seals nothing")


def _rewrapped_last_good_secret(credential: CredentialView, inputs: Inputs) -> Json | None:
    """The last good Secret re-sealed with the active key, when it is ours and on an older key.

    A failing Credential keeps its last good content, but a key rotation must still reach it:
    otherwise one broken Credential would pin an old key forever. The plaintext is taken from the
    Secret itself (as Fernet's rotate() does), never re-resolved.
    """
    current, ring = inputs.current_secret, inputs.keyring
    if current is None or ring is None or current.controller_uid != credential.uid:
        return None
    token = current.data.get(names.SECRET_KEY_ENCRYPTED_DATA, "")
    if envelope.key_id_of(token) in (None, ring.active_id):
        return None
    aad = envelope.associated_data(
        credential.namespace, credential.secret_name, credential.credential_id, credential.type_name
    )
    try:
        plaintext = envelope.open_envelope(token, ring.keys, aad)
    except envelope.EnvelopeError:
        return None
    meta = _secret_metadata(credential, envelope.content_hmac(ring.active_id, ring.active_key, aad, plaintext))
    return _secret_object(
        credential, meta, envelope.seal(plaintext, ring.active_id, ring.active_key, aad, inputs.random_bytes)
    )


def _secret_metadata(credential: CredentialView, content_hmac: str) -> Json:
    labels = {
        names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE,
        names.CREDENTIAL_LABEL: credential.name,
        names.TYPE_LABEL: credential.type_name,
    }
    if credential.shared_from:
        labels[names.SHARED_FROM_LABEL] = names.mirror_name(*credential.shared_from)
    return {
        "labels": labels,
        "annotations": {names.CONTENT_HMAC_ANNOTATION: content_hmac},
        "data": {
            names.SECRET_KEY_CREDENTIAL_NAME: credential.type_name,
            names.SECRET_KEY_NAME: credential.display_name,
            names.SECRET_KEY_ID: credential.credential_id,
        },
    }


def _secret_is_current(current: SecretView, ring: keyring.Keyring, aad: bytes, plaintext: bytes, wanted: Json) -> bool:
    """True when the Secret already holds this plaintext, under the active key, with the right metadata.

    The HMAC annotation alone is not trusted: the ciphertext is opened too, so an edited or
    truncated Secret is rewritten (tamper repair), not skipped.
    """
    if current.type != names.SECRET_TYPE:
        return False
    if any(current.labels.get(k) != v for k, v in wanted["labels"].items()):
        return False
    if current.annotations.get(names.CONTENT_HMAC_ANNOTATION) != wanted["annotations"][names.CONTENT_HMAC_ANNOTATION]:
        return False
    expected_keys = {names.SECRET_KEY_ENCRYPTED_DATA, *wanted["data"]}
    if set(current.data) != expected_keys:
        return False
    if any(current.data.get(k) != v for k, v in wanted["data"].items()):
        return False
    token = current.data.get(names.SECRET_KEY_ENCRYPTED_DATA, "")
    if envelope.key_id_of(token) != ring.active_id:
        return False
    try:
        opened = envelope.open_envelope(token, ring.keys, aad)
    except envelope.EnvelopeError:
        return False
    return hmac.compare_digest(opened, plaintext)


def _secret_object(credential: CredentialView, meta: Json, token: str) -> Json:
    data = {names.SECRET_KEY_ENCRYPTED_DATA: token, **meta["data"]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": names.SECRET_TYPE,
        "metadata": {
            "name": credential.secret_name,
            "namespace": credential.namespace,
            "labels": meta["labels"],
            "annotations": meta["annotations"],
            "ownerReferences": [
                {
                    "apiVersion": names.API_VERSION,
                    "kind": names.CREDENTIAL_KIND,
                    "name": credential.name,
                    "uid": credential.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def status_patch(current: collections.abc.Mapping[str, typing.Any], desired: Json) -> Json | None:
    """The merge patch that turns `current` status into `desired`, or None when nothing differs.

    Keys the desired status does not mention (like `sharedWith`, owned by the share controller)
    are left alone.
    """
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    return patch or None


def open_managed_secret(
    credential: CredentialView, secret: SecretView, ring: keyring.Keyring
) -> redaction.SecretFields:
    """Decrypt a managed Secret's content (for mirrors and `credbridge reveal`).

    Raises envelope.EnvelopeError, with its one opaque message, when it cannot be opened.
    """
    aad = envelope.associated_data(
        credential.namespace, credential.secret_name, credential.credential_id, credential.type_name
    )
    token = secret.data.get(names.SECRET_KEY_ENCRYPTED_DATA, "")
    return envelope.decode_plaintext(envelope.open_envelope(token, ring.keys, aad))


def find_duplicate_id(
    credential: CredentialView,
    same_id: collections.abc.Iterable[CredentialView],
) -> str | None:
    """Name of the Credential in the namespace that holds this Credential's id first, if not this one.

    `same_id` are the Credentials of the namespace with this Credential's id (it may be among
    them; others are ignored). Among Credentials sharing an id, the one whose status already shows
    that id with a key (it had a good Secret) keeps it; then the oldest by creationTimestamp; then
    the first by name. So exactly one of a group of duplicates stays Ready, and a newcomer never
    takes an established id.
    """

    def rank(view: CredentialView) -> tuple[bool, str, str]:
        return (not view.established_id, view.creation_timestamp, view.name)

    group = {view.name: view for view in same_id if view.credential_id == credential.credential_id}
    group[credential.name] = credential
    if len(group) < 2:
        return None
    holder = min(group.values(), key=rank)
    return None if holder.name == credential.name else holder.name
