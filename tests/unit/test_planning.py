"""Reconcile planning as state transitions: a Credential and what the cluster holds in, a plan out.

Each test builds a frozen state (the Credential view, its managed Secret, the keyring, the
environment), plans, and asserts on what a user would see change: the Secret written or not, the
status and its Ready condition, the Event. Applying a plan means feeding its Secret back as the
current Secret and its status back as the Credential's status.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credbridge.core import envelope, envrefs, keyring, names, planning, redaction, registry
from credbridge.testing.randomness import deterministic_random

NOW = "2024-05-01T10:00:00Z"
LATER = "2024-05-02T11:00:00Z"
MUCH_LATER = "2024-05-03T12:00:00Z"
CANARY = "sk-canary-5e1f9a7c3b"
OTHER_CANARY = "sk-canary-other-8d2b"
PG_CANARY = "pg-canary-4c3a2b1d"

TYPES = registry.Registry.builtin()
POLICY = envrefs.EnvPolicy()
UNSET: typing.Any = object()


RING = keyring.new_keyring(deterministic_random("ring"))
ROTATED = keyring.add_key(RING, deterministic_random("rotation"))

OPENAI_SPEC: dict[str, typing.Any] = {
    "type": "openAIApi",
    "displayName": "Production OpenAI",
    "data": {"openAIApiKey": "<<CRED_OPENAI_API_KEY>>"},
}
OPENAI_ENV = {"CRED_OPENAI_API_KEY": CANARY}

PG_SPEC: dict[str, typing.Any] = {
    "type": "PostgresApi",
    "data": {"user": "<<CRED_PG_USER>>"},
    "valueFrom": {"password": {"secretKeyRef": {"name": "pg-credentials", "key": "password"}}},
}
PG_ENV = {"CRED_PG_USER": "app-user"}
PG_REFERENCED: dict[str, collections.abc.Mapping[str, str] | None] = {"pg-credentials": {"password": PG_CANARY}}


def credential(
    spec: collections.abc.Mapping[str, typing.Any] = OPENAI_SPEC,
    *,
    namespace: str = "team-a",
    name: str = "production-openai",
    uid: str = "uid-0001",
    generation: int = 1,
    status: collections.abc.Mapping[str, typing.Any] | None = None,
) -> planning.CredentialView:
    return planning.CredentialView(namespace, name, uid, generation, spec, status or {})


def plan(
    view: planning.CredentialView,
    *,
    current: collections.abc.Mapping[str, typing.Any] | None = None,
    env: collections.abc.Mapping[str, str] = OPENAI_ENV,
    policy: envrefs.EnvPolicy = POLICY,
    ring: keyring.Keyring | None = RING,
    now: str = NOW,
    referenced: collections.abc.Mapping[str, collections.abc.Mapping[str, str] | None] | None = None,
    cred_type: registry.CredentialTypeSpec | None = UNSET,
    duplicate_of: str | None = None,
) -> planning.Plan:
    """Plan `view` against a current Secret given in its API (JSON) form, as the operator reads it."""
    inputs = planning.Inputs(
        now=now,
        random_bytes=deterministic_random(f"plan:{now}"),
        keyring=ring,
        current_secret=planning.SecretView.from_object(current) if current is not None else None,
    )
    return planning.plan_credential(
        view,
        inputs,
        cred_type=TYPES.get(view.type_name) if cred_type is UNSET else cred_type,
        env_lookup=env.get,
        env_policy=policy,
        referenced_secrets=referenced if referenced is not None else {},
        duplicate_of=duplicate_of,
    )


def applied(
    view: planning.CredentialView,
    result: planning.Plan,
    current: collections.abc.Mapping[str, typing.Any] | None,
) -> tuple[planning.CredentialView, collections.abc.Mapping[str, typing.Any] | None]:
    """The state after the operator applies `result`: the planned Secret (if any) and status."""
    return dataclasses.replace(view, status=result.status), result.secret if result.secret is not None else current


def ready_state(
    view: planning.CredentialView | None = None, **kwargs: typing.Any
) -> tuple[planning.CredentialView, collections.abc.Mapping[str, typing.Any]]:
    """A Credential that has been reconciled once and is Ready with its Secret written."""
    view = view or credential()
    result = plan(view, **kwargs)
    assert result.failure is None, result.failure
    assert result.secret is not None
    state, secret = applied(view, result, None)
    assert secret is not None
    return state, secret


def pg_ready_state(
    ring: keyring.Keyring = RING,
) -> tuple[planning.CredentialView, collections.abc.Mapping[str, typing.Any]]:
    return ready_state(credential(PG_SPEC, name="app-db"), env=PG_ENV, referenced=PG_REFERENCED, ring=ring)


def ready(status: collections.abc.Mapping[str, typing.Any]) -> collections.abc.Mapping[str, typing.Any]:
    (condition,) = [c for c in status["conditions"] if c["type"] == names.READY_CONDITION]
    return typing.cast(collections.abc.Mapping[str, typing.Any], condition)


def decoded_data(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def with_data(secret: collections.abc.Mapping[str, typing.Any], **changes: str | None) -> dict[str, typing.Any]:
    """A copy of `secret` with decoded data entries replaced (or removed, for None)."""
    data = decoded_data(secret)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    copy = json.loads(json.dumps(secret))
    copy["data"] = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return typing.cast(dict[str, typing.Any], copy)


def opened(
    view: planning.CredentialView, secret: collections.abc.Mapping[str, typing.Any], ring: keyring.Keyring = RING
) -> dict[str, str]:
    return dict(planning.open_managed_secret(view, planning.SecretView.from_object(secret), ring))


def key_id_of(secret: collections.abc.Mapping[str, typing.Any]) -> str | None:
    return envelope.key_id_of(decoded_data(secret)[names.SECRET_KEY_ENCRYPTED_DATA])


def assert_no_secret_values(result: planning.Plan, *values: str) -> None:
    """Status, Event, failure and the plan's repr carry no value; the Secret carries none in the clear."""
    emitted = [json.dumps(result.status), repr(result)]
    if result.event is not None:
        emitted.append(result.event.message)
    if result.failure is not None:
        emitted.append(result.failure.message)
    if result.secret is not None:
        emitted.append(json.dumps(result.secret))
        emitted.append(json.dumps(decoded_data(result.secret)))
    for value in values or (CANARY, PG_CANARY):
        for text in emitted:
            assert value not in text


# A new Credential


def test_a_new_credential_plans_an_owned_typed_labelled_secret() -> None:
    view = credential()

    result = plan(view)

    secret = result.secret
    assert secret is not None
    assert secret["type"] == "credbridge.io/credential"
    assert secret["metadata"]["name"] == "production-openai"
    assert secret["metadata"]["namespace"] == "team-a"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "credbridge",
        "credbridge.io/credential": "production-openai",
        "credbridge.io/type": "openAIApi",
    }
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "credbridge.io/v1alpha1",
            "kind": "Credential",
            "name": "production-openai",
            "uid": "uid-0001",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    data = decoded_data(secret)
    assert set(data) == {"encryptedData", "credentialName", "name", "id"}
    assert data["credentialName"] == "openAIApi"
    assert data["name"] == "Production OpenAI"
    assert data["id"] == "uid-0001"
    assert data["encryptedData"].startswith(f"cb1.{RING.active_id}.")
    assert secret["metadata"]["annotations"]["credbridge.io/content-hmac"].startswith(f"{RING.active_id}:")
    assert_no_secret_values(result)


def test_a_new_credential_secret_opens_to_the_resolved_fields() -> None:
    view = credential()

    result = plan(view)

    assert result.secret is not None
    assert opened(view, result.secret) == {"openAIApiKey": CANARY}
    assert dict(result.content or {}) == {"openAIApiKey": CANARY}


def test_a_new_credential_becomes_ready_encrypted_with_fields_id_key_and_dates() -> None:
    view = credential(generation=3)

    result = plan(view)

    assert result.failure is None
    assert result.event is None
    status = result.status
    assert status["id"] == "uid-0001"
    assert status["displayName"] == "Production OpenAI"
    assert status["secretName"] == "production-openai"
    assert status["keyId"] == RING.active_id
    assert status["typeVersion"] == 1
    assert status["fields"] == ["openAIApiKey"]
    assert status["shared"] is False
    assert status["sharedFrom"] is None
    assert status["createdDate"] == NOW
    assert status["updatedDate"] == NOW
    assert status["observedGeneration"] == 3
    condition = ready(status)
    assert condition["status"] == "True"
    assert condition["reason"] == "Encrypted"
    assert condition["lastTransitionTime"] == NOW
    assert condition["observedGeneration"] == 3
    assert_no_secret_values(result)


def test_spec_id_and_target_secret_name_replace_the_uid_and_the_object_name() -> None:
    spec = {**OPENAI_SPEC, "id": "6f1c-stable", "target": {"secretName": "openai-secret"}}
    view = credential(spec)

    result = plan(view)

    assert result.secret is not None
    assert result.secret["metadata"]["name"] == "openai-secret"
    assert decoded_data(result.secret)["id"] == "6f1c-stable"
    assert result.status["id"] == "6f1c-stable"
    assert result.status["secretName"] == "openai-secret"
    assert opened(view, result.secret) == {"openAIApiKey": CANARY}


def test_display_name_defaults_to_the_object_name() -> None:
    spec = {key: value for key, value in OPENAI_SPEC.items() if key != "displayName"}

    result = plan(credential(spec))

    assert result.status["displayName"] == "production-openai"
    assert result.secret is not None
    assert decoded_data(result.secret)["name"] == "production-openai"


# Level-based: applying a plan makes the next plan empty


def test_applying_the_plan_then_planning_again_writes_nothing_and_keeps_the_status() -> None:
    view, secret = ready_state()

    again = plan(view, current=secret, now=LATER)

    assert again.secret is None
    assert again.event is None
    assert again.failure is None
    assert planning.status_patch(view.status, again.status) is None
    assert again.status["updatedDate"] == NOW
    assert dict(again.content or {}) == {"openAIApiKey": CANARY}


def test_a_credential_with_secret_references_is_level_based_too() -> None:
    view, secret = pg_ready_state()

    again = plan(view, current=secret, env=PG_ENV, referenced=PG_REFERENCED, now=LATER)

    assert opened(view, secret) == {"user": "app-user", "password": PG_CANARY}
    assert again.secret is None
    assert planning.status_patch(view.status, again.status) is None


@settings(max_examples=60, deadline=None)
@given(
    user=st.text(min_size=1, max_size=40),
    password=st.text(min_size=0, max_size=40),
)
def test_planning_is_level_based_for_any_field_values(user: str, password: str) -> None:
    """Whatever the values (some even fail: an empty password, a literal that looks like a reference),
    planning the applied state again writes nothing, changes no status and emits no event."""
    spec = {"type": "PostgresApi", "data": {"user": user, "password": "<<CRED_PG_PASSWORD>>"}}
    env = {"CRED_PG_PASSWORD": password}
    view = credential(spec, name="db")

    first = plan(view, env=env)
    state, secret = applied(view, first, None)
    second = plan(state, current=secret, env=env, now=LATER)

    assert second.secret is None
    assert second.event is None
    assert planning.status_patch(state.status, second.status) is None
    if first.failure is None:
        assert first.secret is not None
        assert opened(view, first.secret) == {"user": envrefs.decode_literal(user), "password": password}


# Changes that must reach the Secret


def test_a_changed_env_value_rewrites_the_secret_and_moves_updated_date_only() -> None:
    view, secret = ready_state()

    result = plan(view, current=secret, env={"CRED_OPENAI_API_KEY": OTHER_CANARY}, now=LATER)

    assert result.secret is not None
    assert opened(view, result.secret) == {"openAIApiKey": OTHER_CANARY}
    assert result.status["createdDate"] == NOW
    assert result.status["updatedDate"] == LATER
    assert ready(result.status)["status"] == "True"
    assert ready(result.status)["lastTransitionTime"] == NOW
    assert result.event is None
    assert planning.status_patch(view.status, result.status) == {"updatedDate": LATER}
    assert_no_secret_values(result, CANARY, OTHER_CANARY)


def test_a_changed_display_name_rewrites_the_secret_metadata() -> None:
    view, secret = ready_state()
    renamed = dataclasses.replace(view, spec={**OPENAI_SPEC, "displayName": "Renamed"}, generation=2)

    result = plan(renamed, current=secret, now=LATER)

    assert result.secret is not None
    assert decoded_data(result.secret)["name"] == "Renamed"
    assert result.status["displayName"] == "Renamed"
    assert result.status["observedGeneration"] == 2


def tampered_encrypted_data(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    token = decoded_data(secret)["encryptedData"]
    last = "A" if token[-1] != "A" else "B"
    return with_data(secret, encryptedData=token[:-1] + last)


def foreign_ciphertext(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    """Our Secret carrying the ciphertext of another Credential with the very same content."""
    _, other_secret = ready_state(credential(name="other-openai", uid="uid-0002"))
    return with_data(secret, encryptedData=decoded_data(other_secret)["encryptedData"])


def relabelled(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    copy = json.loads(json.dumps(secret))
    copy["metadata"]["labels"]["credbridge.io/type"] = "PostgresApi"
    return typing.cast(dict[str, typing.Any], copy)


def unlabelled(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    copy = json.loads(json.dumps(secret))
    del copy["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    return typing.cast(dict[str, typing.Any], copy)


def retyped(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    copy = json.loads(json.dumps(secret))
    copy["type"] = "Opaque"
    return typing.cast(dict[str, typing.Any], copy)


def without_hmac(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    copy = json.loads(json.dumps(secret))
    copy["metadata"]["annotations"] = {}
    return typing.cast(dict[str, typing.Any], copy)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(tampered_encrypted_data, id="edited-encryptedData"),
        pytest.param(lambda s: with_data(s, encryptedData="not-a-token"), id="garbage-encryptedData"),
        pytest.param(lambda s: with_data(s, id=None), id="missing-id-key"),
        pytest.param(lambda s: with_data(s, encryptedData=None), id="missing-encryptedData-key"),
        pytest.param(lambda s: with_data(s, name="Someone Else"), id="edited-name-key"),
        pytest.param(lambda s: with_data(s, extra="x"), id="extra-data-key"),
        pytest.param(foreign_ciphertext, id="ciphertext-of-another-credential"),
        pytest.param(relabelled, id="wrong-type-label"),
        pytest.param(unlabelled, id="missing-managed-by-label"),
        pytest.param(retyped, id="wrong-secret-type"),
        pytest.param(without_hmac, id="missing-content-hmac"),
    ],
)
def test_a_damaged_managed_secret_is_rewritten_with_the_right_content(
    damage: collections.abc.Callable[[collections.abc.Mapping[str, typing.Any]], dict[str, typing.Any]],
) -> None:
    view, secret = ready_state()

    result = plan(view, current=damage(secret), now=LATER)

    assert result.secret is not None
    assert result.secret["metadata"]["labels"] == secret["metadata"]["labels"]
    assert result.secret["metadata"]["annotations"] == secret["metadata"]["annotations"]
    assert result.secret["type"] == "credbridge.io/credential"
    assert {k: v for k, v in decoded_data(result.secret).items() if k != "encryptedData"} == {
        "credentialName": "openAIApi",
        "name": "Production OpenAI",
        "id": "uid-0001",
    }
    assert opened(view, result.secret) == {"openAIApiKey": CANARY}
    assert ready(result.status)["status"] == "True"
    assert_no_secret_values(result)


def test_an_older_ciphertext_of_the_same_credential_put_back_is_rewritten() -> None:
    """A rollback of encryptedData to a previous value opens fine; only comparing the content catches it."""
    view, old_secret = ready_state()
    new_env = {"CRED_OPENAI_API_KEY": OTHER_CANARY}
    state, new_secret = applied(view, plan(view, current=old_secret, env=new_env, now=LATER), old_secret)
    assert new_secret is not None
    rolled_back = with_data(new_secret, encryptedData=decoded_data(old_secret)["encryptedData"])

    result = plan(state, current=rolled_back, env=new_env, now=MUCH_LATER)

    assert result.secret is not None
    assert opened(view, result.secret) == {"openAIApiKey": OTHER_CANARY}


def test_extra_labels_and_annotations_on_the_secret_do_not_cause_a_rewrite() -> None:
    view, secret = ready_state()
    decorated = json.loads(json.dumps(secret))
    decorated["metadata"]["labels"]["argocd.argoproj.io/instance"] = "team-a"
    decorated["metadata"]["annotations"]["note"] = "added by a human"

    result = plan(view, current=decorated, now=LATER)

    assert result.secret is None


def test_key_rotation_rewrites_the_secret_with_the_new_key() -> None:
    view, secret = ready_state()

    result = plan(view, current=secret, ring=ROTATED, now=LATER)

    assert ROTATED.active_id != RING.active_id
    assert result.secret is not None
    assert key_id_of(result.secret) == ROTATED.active_id
    assert result.secret["metadata"]["annotations"]["credbridge.io/content-hmac"].startswith(f"{ROTATED.active_id}:")
    assert opened(view, result.secret, ROTATED) == {"openAIApiKey": CANARY}
    assert result.status["keyId"] == ROTATED.active_id
    assert ready(result.status)["status"] == "True"

    state, rotated_secret = applied(view, result, secret)
    assert plan(state, current=rotated_secret, ring=ROTATED, now=MUCH_LATER).secret is None


# Failures


FailureCase = collections.abc.Callable[
    [planning.CredentialView, collections.abc.Mapping[str, typing.Any], str], planning.Plan
]


def pg_plan(
    view: planning.CredentialView,
    secret: collections.abc.Mapping[str, typing.Any] | None,
    now: str,
    **overrides: typing.Any,
) -> planning.Plan:
    kwargs: dict[str, typing.Any] = {"env": PG_ENV, "referenced": PG_REFERENCED, "current": secret, "now": now}
    kwargs.update(overrides)
    return plan(view, **kwargs)


def with_spec(view: planning.CredentialView, **changes: typing.Any) -> planning.CredentialView:
    return dataclasses.replace(view, spec={**view.spec, **changes}, generation=view.generation + 1)


def foreign_owner(secret: collections.abc.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    copy = json.loads(json.dumps(secret))
    copy["metadata"]["ownerReferences"][0]["uid"] = "uid-of-someone-else"
    return typing.cast(dict[str, typing.Any], copy)


FAILURES: list[typing.Any] = [
    pytest.param("UnknownType", "PostgresApi", lambda v, s, now: pg_plan(v, s, now, cred_type=None), id="UnknownType"),
    pytest.param(
        "ValidationFailed",
        "'port'",
        lambda v, s, now: pg_plan(with_spec(v, data={**PG_SPEC["data"], "port": "5432"}), s, now),
        id="ValidationFailed",
    ),
    pytest.param("EnvReferenceMissing", "CRED_PG_USER", lambda v, s, now: pg_plan(v, s, now, env={}), id="EnvMissing"),
    pytest.param(
        "EnvReferenceForbidden",
        "CRED_PG_USER",
        lambda v, s, now: pg_plan(v, s, now, policy=envrefs.EnvPolicy(allow=("OTHER_*",))),
        id="EnvForbidden",
    ),
    pytest.param(
        "SecretReferenceMissing",
        "pg-credentials",
        lambda v, s, now: pg_plan(v, s, now, referenced={"pg-credentials": None}),
        id="SecretMissing",
    ),
    pytest.param(
        "SecretReferenceMissing",
        "key 'password'",
        lambda v, s, now: pg_plan(v, s, now, referenced={"pg-credentials": {"passwd": PG_CANARY}}),
        id="SecretKeyMissing",
    ),
    pytest.param("SecretConflict", "app-db", lambda v, s, now: pg_plan(v, foreign_owner(s), now), id="SecretConflict"),
    pytest.param("KeyUnavailable", "keyring", lambda v, s, now: pg_plan(v, s, now, ring=None), id="KeyUnavailable"),
    pytest.param(
        "DuplicateId", "older-db", lambda v, s, now: pg_plan(v, s, now, duplicate_of="older-db"), id="DuplicateId"
    ),
]


@pytest.mark.parametrize(("reason", "named", "fail"), FAILURES)
def test_a_failure_keeps_the_last_good_secret_and_status_and_reports_the_reason(
    reason: str, named: str, fail: FailureCase
) -> None:
    view, secret = pg_ready_state()

    result = fail(view, secret, LATER)

    assert result.secret is None
    assert result.failure is not None
    assert result.failure.reason == reason
    for kept in ("id", "secretName", "keyId", "typeVersion", "fields", "createdDate", "updatedDate"):
        assert result.status[kept] == view.status[kept], kept
    condition = ready(result.status)
    assert condition["status"] == "False"
    assert condition["reason"] == reason
    assert condition["lastTransitionTime"] == LATER
    assert named in condition["message"]
    assert result.event == planning.Event("Warning", reason, condition["message"])
    assert_no_secret_values(result)


@pytest.mark.parametrize(("reason", "named", "fail"), FAILURES)
def test_the_same_failure_again_emits_no_event_and_changes_no_status(
    reason: str, named: str, fail: FailureCase
) -> None:
    view, secret = pg_ready_state()
    failed_state, secret_after = applied(view, fail(view, secret, LATER), secret)
    assert secret_after is secret

    again = fail(failed_state, secret, MUCH_LATER)

    assert again.secret is None
    assert again.failure is not None and again.failure.reason == reason
    assert again.event is None
    assert planning.status_patch(failed_state.status, again.status) is None
    assert ready(again.status)["lastTransitionTime"] == LATER


def test_a_new_credential_that_fails_has_no_secret_fields_in_its_status() -> None:
    view = credential()

    result = plan(view, env={})

    assert result.secret is None
    assert result.failure is not None and result.failure.reason == "EnvReferenceMissing"
    assert "keyId" not in result.status
    assert "fields" not in result.status
    assert "createdDate" not in result.status
    assert ready(result.status)["status"] == "False"
    assert result.event is not None and result.event.type == "Warning"


def test_a_different_failure_after_a_failure_emits_a_new_warning() -> None:
    view, secret = pg_ready_state()
    failed_state, _ = applied(view, pg_plan(view, secret, LATER, env={}), secret)

    result = pg_plan(failed_state, secret, MUCH_LATER, ring=None)

    assert result.event is not None
    assert (result.event.type, result.event.reason) == ("Warning", "KeyUnavailable")
    assert ready(result.status)["lastTransitionTime"] == LATER


def test_recovery_from_a_failure_reports_ready_with_a_normal_event() -> None:
    view, secret = pg_ready_state()
    failed_state, _ = applied(view, pg_plan(view, secret, LATER, env={}), secret)

    result = pg_plan(failed_state, secret, MUCH_LATER)

    assert result.event == planning.Event(
        "Normal", "Encrypted", "Credential team-a/app-db is Ready again: Secret app-db is up to date"
    )
    condition = ready(result.status)
    assert (condition["status"], condition["reason"]) == ("True", "Encrypted")
    assert condition["lastTransitionTime"] == MUCH_LATER
    # The content did not change while it failed: nothing to write, and the dates stay.
    assert result.secret is None
    assert result.status["updatedDate"] == NOW
    assert result.status["createdDate"] == NOW


def test_a_value_that_fails_validation_is_not_echoed_in_the_message() -> None:
    spec = {"type": "PostgresUrl", "data": {"postgresUrl": "<<CRED_PG_URL>>"}}

    result = plan(credential(spec, name="pg-url"), env={"CRED_PG_URL": CANARY})

    assert result.failure is not None
    assert result.failure.reason == "ValidationFailed"
    assert "postgresUrl" in result.failure.message
    assert_no_secret_values(result)


# Re-wrapping a failing Credential's last good Secret on key rotation


def test_a_failing_credential_on_an_old_key_gets_its_last_good_secret_rewrapped() -> None:
    view, secret = pg_ready_state(RING)

    result = pg_plan(view, secret, LATER, env={}, ring=ROTATED)

    assert result.failure is not None and result.failure.reason == "EnvReferenceMissing"
    assert result.secret is not None
    assert key_id_of(result.secret) == ROTATED.active_id
    # Same plaintext as before (not re-resolved), now under the new key.
    assert opened(view, result.secret, ROTATED) == {"user": "app-user", "password": PG_CANARY}
    assert result.secret["metadata"]["annotations"]["credbridge.io/content-hmac"].startswith(f"{ROTATED.active_id}:")
    assert result.status["keyId"] == ROTATED.active_id
    assert ready(result.status)["status"] == "False"
    assert result.status["updatedDate"] == NOW
    assert_no_secret_values(result)


def test_a_failing_credential_whose_secret_is_on_the_active_key_is_not_rewrapped() -> None:
    view, secret = pg_ready_state(RING)
    failed_state, rewrapped = applied(view, pg_plan(view, secret, LATER, env={}, ring=ROTATED), secret)
    assert rewrapped is not None and key_id_of(rewrapped) == ROTATED.active_id

    result = pg_plan(failed_state, rewrapped, MUCH_LATER, env={}, ring=ROTATED)

    assert result.secret is None
    assert result.status["keyId"] == ROTATED.active_id
    assert planning.status_patch(failed_state.status, result.status) is None


def test_a_secret_owned_by_someone_else_is_never_rewrapped() -> None:
    view, secret = pg_ready_state(RING)

    result = pg_plan(view, foreign_owner(secret), LATER, ring=ROTATED)

    assert result.failure is not None and result.failure.reason == "SecretConflict"
    assert result.secret is None
    assert result.status["keyId"] == RING.active_id


# Mirrors


def mirror_view(status: collections.abc.Mapping[str, typing.Any] | None = None) -> planning.CredentialView:
    spec = {
        "type": "openAIApi",
        "displayName": "Production OpenAI",
        "id": "uid-0001",
        "sharedFrom": {"namespace": "team-a", "name": "production-openai"},
    }
    return credential(spec, namespace="team-b", name="team-a.production-openai", uid="uid-mirror", status=status)


def plan_mirror(
    view: planning.CredentialView,
    content: redaction.SecretFields | planning.Failure,
    current: collections.abc.Mapping[str, typing.Any] | None = None,
    now: str = NOW,
) -> planning.Plan:
    inputs = planning.Inputs(
        now=now,
        random_bytes=deterministic_random(f"mirror:{now}"),
        keyring=RING,
        current_secret=planning.SecretView.from_object(current) if current is not None else None,
    )
    return planning.plan_mirror(view, inputs, source_content=content, type_version=1)


def test_a_mirror_gets_its_own_secret_sealed_for_the_target_namespace() -> None:
    view = mirror_view()
    _, source_secret = ready_state()

    result = plan_mirror(view, redaction.SecretFields({"openAIApiKey": CANARY}))

    assert result.secret is not None
    assert result.secret["metadata"]["namespace"] == "team-b"
    assert result.secret["metadata"]["name"] == "team-a.production-openai"
    assert result.secret["metadata"]["labels"]["credbridge.io/shared-from"] == "team-a.production-openai"
    assert result.secret["metadata"]["ownerReferences"][0]["uid"] == "uid-mirror"
    assert opened(view, result.secret) == {"openAIApiKey": CANARY}
    mirror_token = decoded_data(result.secret)["encryptedData"]
    assert mirror_token != decoded_data(source_secret)["encryptedData"]
    with pytest.raises(envelope.EnvelopeError):
        opened(view, with_data(result.secret, encryptedData=decoded_data(source_secret)["encryptedData"]))
    assert result.status["shared"] is True
    assert result.status["sharedFrom"] == "team-a/production-openai"
    assert result.status["id"] == "uid-0001"
    assert ready(result.status)["reason"] == "Encrypted"
    assert_no_secret_values(result)


def test_an_applied_mirror_plan_plans_nothing_more() -> None:
    view = mirror_view()
    content = redaction.SecretFields({"openAIApiKey": CANARY})
    state, secret = applied(view, plan_mirror(view, content), None)

    again = plan_mirror(state, content, secret, now=LATER)

    assert again.secret is None
    assert planning.status_patch(state.status, again.status) is None


def test_a_mirror_of_a_failed_source_keeps_its_secret_and_reports_the_source_failure() -> None:
    view = mirror_view()
    content = redaction.SecretFields({"openAIApiKey": CANARY})
    state, secret = applied(view, plan_mirror(view, content), None)
    failure = planning.Failure("SourceNotFound", "Credential team-a/production-openai does not exist")

    result = plan_mirror(state, failure, secret, now=LATER)

    assert result.secret is None
    assert result.failure == failure
    assert result.event == planning.Event("Warning", "SourceNotFound", failure.message)
    assert (ready(result.status)["status"], ready(result.status)["reason"]) == ("False", "SourceNotFound")
    assert result.status["shared"] is True
    assert result.status["sharedFrom"] == "team-a/production-openai"
    assert result.status["keyId"] == RING.active_id
    assert result.status["fields"] == ["openAIApiKey"]


# find_duplicate_id


def credential_object(
    name: str,
    *,
    created: str,
    spec_id: str = "shared-id",
    established: bool = False,
) -> dict[str, typing.Any]:
    status = {"id": spec_id, "keyId": RING.active_id} if established else {}
    return {
        "metadata": {"namespace": "team-a", "name": name, "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": {"type": "openAIApi", "id": spec_id},
        "status": status,
    }


def duplicate_of(obj: collections.abc.Mapping[str, typing.Any], group: list[dict[str, typing.Any]]) -> str | None:
    return planning.find_duplicate_id(
        planning.CredentialView.from_object(obj), [planning.CredentialView.from_object(other) for other in group]
    )


def test_a_credential_with_a_unique_id_is_no_duplicate() -> None:
    alone = credential_object("alone", created="2024-01-01T00:00:00Z", spec_id="unique")
    other = credential_object("other", created="2023-01-01T00:00:00Z", spec_id="another")

    assert duplicate_of(alone, [alone, other]) is None


def test_the_oldest_of_non_established_duplicates_keeps_the_id() -> None:
    old = credential_object("zz-old", created="2024-01-01T00:00:00Z")
    new = credential_object("aa-new", created="2024-02-01T00:00:00Z")
    group = [new, old]

    assert duplicate_of(old, group) is None
    assert duplicate_of(new, group) == "zz-old"


def test_an_established_credential_keeps_its_id_against_an_older_newcomer() -> None:
    older = credential_object("older", created="2023-01-01T00:00:00Z")
    established = credential_object("established", created="2024-01-01T00:00:00Z", established=True)
    group = [older, established]

    assert duplicate_of(established, group) is None
    assert duplicate_of(older, group) == "established"


def test_duplicates_created_at_the_same_time_are_ranked_by_name() -> None:
    beta = credential_object("beta", created="2024-01-01T00:00:00Z")
    alpha = credential_object("alpha", created="2024-01-01T00:00:00Z")
    group = [beta, alpha]

    assert duplicate_of(alpha, group) is None
    assert duplicate_of(beta, group) == "alpha"


def test_an_id_equal_to_another_credentials_uid_is_a_duplicate() -> None:
    by_uid: dict[str, typing.Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": "first",
            "uid": "uid-x",
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"type": "openAIApi"},
        "status": {},
    }
    by_spec = credential_object("second", created="2024-02-01T00:00:00Z", spec_id="uid-x")

    assert duplicate_of(by_spec, [by_uid, by_spec]) == "first"


@settings(max_examples=80, deadline=None)
@given(
    members=st.lists(
        st.tuples(st.integers(min_value=1, max_value=3), st.booleans()),
        min_size=2,
        max_size=6,
    )
)
def test_exactly_one_of_a_group_of_duplicates_keeps_the_id(members: list[tuple[int, bool]]) -> None:
    group = [
        credential_object(f"cred-{index}", created=f"2024-0{day}-01T00:00:00Z", established=established)
        for index, (day, established) in enumerate(members)
    ]
    unrelated = credential_object("unrelated", created="2020-01-01T00:00:00Z", spec_id="other-id")
    everyone = [*group, unrelated]

    holders = [obj["metadata"]["name"] for obj in group if duplicate_of(obj, everyone) is None]
    named = {duplicate_of(obj, everyone) for obj in group} - {None}

    assert len(holders) == 1
    assert named == set(holders)
    assert duplicate_of(unrelated, everyone) is None
    if any(established for _, established in members):
        holder = next(obj for obj in group if obj["metadata"]["name"] == holders[0])
        assert holder["status"], "an established credential must win over non-established ones"


# status_patch


def test_status_patch_holds_only_the_changed_keys_and_leaves_unmentioned_keys_alone() -> None:
    view, _ = ready_state()
    current = {**view.status, "sharedWith": ["team-b"]}
    desired = {**view.status, "updatedDate": LATER}

    assert planning.status_patch(current, dict(view.status)) is None
    assert planning.status_patch(current, desired) == {"updatedDate": LATER}


def test_status_patch_adds_keys_the_current_status_lacks() -> None:
    assert planning.status_patch({}, {"keyId": "aaaaaaaa"}) == {"keyId": "aaaaaaaa"}


def test_conditions_of_other_writers_are_kept_and_ready_stays_first() -> None:
    view, secret = ready_state()
    verified = {"type": "Verified", "status": "False", "reason": "Invalid", "message": "401"}
    with_verified = credential(status={**view.status, "conditions": [verified, *view.status["conditions"]]})

    again = plan(with_verified, current=secret, now=LATER)
    assert [condition["type"] for condition in again.status["conditions"]] == ["Ready", "Verified"]
    assert again.status["conditions"][1] == verified

    failed = plan(with_verified, current=secret, now=LATER, env={})
    assert failed.failure is not None
    assert [condition["type"] for condition in failed.status["conditions"]] == ["Ready", "Verified"]


def test_a_key_rotation_rewrites_the_secret_but_not_updated_date() -> None:
    view, secret = ready_state()
    rotated = plan(view, current=secret, ring=ROTATED, now=LATER)
    assert rotated.secret is not None and rotated.status["keyId"] == ROTATED.active_id
    assert rotated.status["updatedDate"] == NOW, "the content did not change, only its ciphertext"

    changed = plan(view, current=secret, ring=ROTATED, now=LATER, env={"CRED_OPENAI_API_KEY": "sk-other"})
    assert changed.secret is not None and changed.status["updatedDate"] == LATER
