"""Sealed values in reconcile planning: opened like any other source, refused where they do not belong,
never parsed for <<NAME>> references, and re-sealed into status.resealedData after a sealing key rotation."""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

import pytest

from credbridge.core import admission, envelope, envrefs, keyring, names, planning, registry, release, sealing
from credbridge.testing.randomness import deterministic_random

NOW = "2024-05-01T10:00:00Z"
LATER = "2024-05-02T10:00:00Z"
CANARY = "sk-sealed-canary-7f3e2a"
TYPES = registry.Registry.builtin()


RING = keyring.add_sealing_key(keyring.new_keyring(deterministic_random("ring")), deterministic_random("s1"), NOW)
ROTATED = keyring.add_sealing_key(RING, deterministic_random("s2"), LATER)
OTHER_CLUSTER = keyring.add_sealing_key(keyring.new_keyring(deterministic_random("x")), deterministic_random("x2"), NOW)


def public(ring: keyring.Keyring) -> bytes:
    assert ring.active_sealing_id is not None
    return ring.sealing_public_keys()[ring.active_sealing_id]


def sealed(
    value: str,
    *,
    namespace: str = "team-a",
    name: str | None = "production-openai",
    field: str | None = "openAIApiKey",
    ring: keyring.Keyring = RING,
) -> str:
    scope = sealing.Scope(namespace, name, field)
    return sealing.seal_value(value, public(ring), scope, deterministic_random(f"seal:{value}:{namespace}:{name}"))


def credential(
    sealed_data: dict[str, str],
    *,
    namespace: str = "team-a",
    name: str = "production-openai",
    type_name: str = "openAIApi",
    data: dict[str, str] | None = None,
    status: collections.abc.Mapping[str, typing.Any] | None = None,
) -> planning.CredentialView:
    spec: dict[str, typing.Any] = {"type": type_name, "sealedData": sealed_data}
    if data:
        spec["data"] = data
    return planning.CredentialView(namespace, name, "uid-1", 1, spec, status or {})


def plan(
    view: planning.CredentialView,
    *,
    ring: keyring.Keyring | None = RING,
    env: collections.abc.Mapping[str, str] | None = None,
    policy: envrefs.EnvPolicy | None = None,
    now: str = NOW,
    current: collections.abc.Mapping[str, typing.Any] | None = None,
) -> planning.Plan:
    inputs = planning.Inputs(
        now=now,
        random_bytes=deterministic_random(f"plan:{now}"),
        keyring=ring,
        current_secret=planning.SecretView.from_object(current) if current is not None else None,
    )
    return planning.plan_credential(
        view,
        inputs,
        cred_type=TYPES.get(view.type_name),
        env_lookup=(env or {}).get,
        env_policy=policy or envrefs.EnvPolicy(),
        referenced_secrets={},
    )


def condition(status: collections.abc.Mapping[str, typing.Any], kind: str) -> collections.abc.Mapping[str, typing.Any]:
    (found,) = [c for c in status["conditions"] if c["type"] == kind]
    return typing.cast(collections.abc.Mapping[str, typing.Any], found)


def opened(result: planning.Plan, view: planning.CredentialView, ring: keyring.Keyring = RING) -> dict[str, str]:
    assert result.secret is not None
    secret = planning.SecretView.from_object(result.secret)
    return dict(planning.open_managed_secret(view, secret, ring))


def test_a_sealed_value_is_opened_into_the_managed_secret() -> None:
    view = credential({"openAIApiKey": sealed(CANARY)})
    result = plan(view)
    assert result.failure is None
    assert opened(result, view) == {"openAIApiKey": CANARY}
    assert condition(result.status, names.READY_CONDITION)["reason"] == "Encrypted"
    hint = condition(result.status, names.SEALED_WITH_OLD_KEY_CONDITION)
    assert hint["status"] == "False" and hint["reason"] == "SealedWithActiveKey"
    assert result.status["resealedData"] is None
    assert CANARY not in repr(result) and CANARY not in str(result.status)


def test_sealed_plaintext_is_used_literally_never_as_an_env_reference() -> None:
    # The attack: a tenant of team-b seals "<<CRED_TEAM_A_KEY>>" for its own Credential, hoping the
    # operator resolves it from its environment and hands team-a's key to team-b's binding.
    attack = sealed("<<CRED_TEAM_A_KEY>>", namespace="team-b", name="attack")
    view = credential({"openAIApiKey": attack}, namespace="team-b", name="attack")
    policy = envrefs.parse_policy(["CRED_*"], ["CRED_TEAM_A_*=team-a"])
    result = plan(view, env={"CRED_TEAM_A_KEY": "team-a-secret-canary"}, policy=policy)
    assert result.failure is None
    assert opened(result, view) == {"openAIApiKey": "<<CRED_TEAM_A_KEY>>"}
    # And the release rule lets it out as what it is: team-b's own (literal) value, not team-a's variable.
    assert release.env_denial(view.data, "team-b", policy, output="a binding") is None
    escaped = sealed("\\<<x>>", namespace="team-b", name="attack")
    assert opened(plan(credential({"openAIApiKey": escaped}, namespace="team-b", name="attack")), view) == {
        "openAIApiKey": "\\<<x>>"
    }


def test_a_namespace_wide_value_opens_in_any_credential_and_field_of_its_namespace() -> None:
    token = sealed("pw-canary", name=None, field=None)
    view = credential({"password": token}, name="orders-db", type_name="PostgresApi", data={"user": "app"})
    result = plan(view)
    assert result.failure is None
    assert opened(result, view)["password"] == "pw-canary"


@pytest.mark.parametrize(
    ("view", "where"),
    [
        (credential({"openAIApiKey": sealed(CANARY)}, namespace="team-b"), "namespace"),
        (credential({"openAIApiKey": sealed(CANARY)}, name="staging-openai"), "credential"),
        (
            credential({"password": sealed(CANARY, field="user")}, type_name="PostgresApi", data={"user": "u"}),
            "field",
        ),
        (credential({"openAIApiKey": sealed(CANARY, name=None, field=None)}, namespace="team-b"), "namespace-wide"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_value_moved_elsewhere_is_refused_naming_where_it_was_sealed_for(
    view: planning.CredentialView, where: str
) -> None:
    result = plan(view)
    assert result.failure is not None and result.failure.reason == "SealedForElsewhere"
    assert "was sealed for" in result.failure.message and "credbridge seal" in result.failure.message
    assert CANARY not in result.failure.message and result.secret is None
    assert result.event is not None and result.event.reason == "SealedForElsewhere"


def test_unknown_retired_and_foreign_keys_are_seal_key_unknown() -> None:
    foreign = credential({"openAIApiKey": sealed(CANARY, ring=OTHER_CLUSTER)})
    result = plan(foreign)
    assert result.failure is not None and result.failure.reason == "SealKeyUnknown"
    assert str(OTHER_CLUSTER.active_sealing_id) in result.failure.message
    old_id = str(RING.active_sealing_id)
    retired = keyring.retire_sealing_key(ROTATED, old_id, users=[])
    result = plan(credential({"openAIApiKey": sealed(CANARY)}), ring=retired)
    assert result.failure is not None and result.failure.reason == "SealKeyUnknown" and old_id in result.failure.message


@pytest.mark.parametrize(
    "damage",
    [
        lambda token: token[:-8],
        lambda token: token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],
        lambda token: token[:30],
        lambda token: "not-sealed-at-all",
    ],
    ids=["truncated", "flipped", "cut-to-the-header", "plain-text"],
)
def test_corrupted_values_are_sealed_value_invalid(damage: collections.abc.Callable[[str], str]) -> None:
    result = plan(credential({"openAIApiKey": damage(sealed(CANARY))}))
    assert result.failure is not None and result.failure.reason == "SealedValueInvalid"
    assert "spec.sealedData.openAIApiKey" in result.failure.message and CANARY not in result.failure.message


def test_a_failure_keeps_the_last_good_secret() -> None:
    view = credential({"openAIApiKey": sealed(CANARY)})
    good = plan(view)
    state = dataclasses.replace(view, status=good.status)
    broken = dataclasses.replace(state, spec={**state.spec, "sealedData": {"openAIApiKey": sealed(CANARY)[:-9]}})
    inputs = planning.Inputs(
        now=LATER,
        random_bytes=deterministic_random("x"),
        keyring=RING,
        current_secret=planning.SecretView.from_object(dict(good.secret or {})),
    )
    result = planning.plan_credential(
        broken,
        inputs,
        cred_type=TYPES.get("openAIApi"),
        env_lookup={}.get,
        env_policy=envrefs.EnvPolicy(),
        referenced_secrets={},
    )
    assert result.failure is not None and result.secret is None
    assert result.status["keyId"] == good.status["keyId"] and result.status["fields"] == ["openAIApiKey"]


def test_the_plaintext_is_checked_against_the_type_after_opening() -> None:
    view = credential(
        {"redisCachePort": sealed("not-a-number", name="cache", field="redisCachePort")},
        name="cache",
        type_name="redisCacheApi",
        data={"redisCacheHost": "h", "redisCacheUser": "u", "redisCachePwd": "p", "redisCacheSslEnabled": "true"},
    )
    result = plan(view)
    assert result.failure is not None and result.failure.reason == "ValidationFailed"
    assert "spec.sealedData.redisCachePort" in result.failure.message and "not-a-number" not in result.failure.message


def test_without_a_keyring_sealed_values_wait_with_key_unavailable() -> None:
    result = plan(credential({"openAIApiKey": sealed(CANARY)}), ring=None)
    assert result.failure is not None and result.failure.reason == "KeyUnavailable"


def test_after_rotation_the_hint_shows_and_resealed_data_holds_the_value_for_the_active_key() -> None:
    token = sealed(CANARY)
    view = credential({"openAIApiKey": token})
    first = plan(view, ring=ROTATED)
    assert first.failure is None
    hint = condition(first.status, names.SEALED_WITH_OLD_KEY_CONDITION)
    assert hint["status"] == "True" and hint["reason"] == "SealingKeyRotated"
    assert str(RING.active_sealing_id) in hint["message"] and "--reseal" in hint["message"]
    entry = first.status["resealedData"]["openAIApiKey"]
    assert entry["from"] == sealing.token_digest(token)
    header = sealing.read_header(entry["value"])
    assert header is not None and header.key_id == ROTATED.active_sealing_id
    assert header.scope == sealing.Scope("team-a", "production-openai", "openAIApiKey")
    assert sealing.open_value(entry["value"], ROTATED.sealing_keys) == CANARY
    assert CANARY not in str(first.status)

    # Planning again keeps the same re-sealed value: no status write on every reconcile.
    state = dataclasses.replace(view, status=first.status)
    again = plan(state, ring=ROTATED, now=LATER, current=first.secret)
    assert again.status["resealedData"] == first.status["resealedData"]
    assert planning.status_patch(state.status, again.status) is None

    # A re-sealed value planted in the status that does not open to the same value is replaced.
    forged = sealing.seal_value("attacker-value", public(ROTATED), header.scope, deterministic_random("forged"))
    planted = dataclasses.replace(
        view, status={**first.status, "resealedData": {"openAIApiKey": {"from": entry["from"], "value": forged}}}
    )
    fixed = plan(planted, ring=ROTATED)
    assert fixed.status["resealedData"]["openAIApiKey"]["value"] != forged

    # Applying the re-sealed manifest clears the hint and the status entry.
    resealed_view = dataclasses.replace(state, spec={**state.spec, "sealedData": {"openAIApiKey": entry["value"]}})
    done = plan(resealed_view, ring=ROTATED, now=LATER, current=first.secret)
    assert done.secret is None  # the same plaintext: the managed Secret is not rewritten
    assert condition(done.status, names.SEALED_WITH_OLD_KEY_CONDITION)["status"] == "False"
    assert planning.status_patch(state.status, done.status) is not None
    assert done.status["resealedData"] is None


def test_validation_counts_sealed_fields_as_given_and_refuses_the_same_field_twice() -> None:
    cred_type = TYPES.get("openAIApi")
    token = sealed(CANARY)
    from credbridge.core import validation

    assert validation.check_spec(cred_type, "openAIApi", {}, (), {"openAIApiKey": token}) == []
    twice = validation.check_spec(cred_type, "openAIApi", {"openAIApiKey": "x"}, (), {"openAIApiKey": token})
    assert [problem.rule for problem in twice] == ["set-twice"]
    unknown = validation.check_spec(cred_type, "openAIApi", {}, (), {"openAIApiKey": token, "nope": token})
    assert [problem.rule for problem in unknown] == ["unknown-field"] and "spec.sealedData" in unknown[0].message
    assert validation.literal_secret_fields(cred_type, {}) == []  # sealed values are not literal secrets


def test_the_webhook_refuses_malformed_and_misplaced_values_at_apply_time() -> None:
    def review(namespace: str, name: str, sealed_data: dict[str, str]) -> admission.Decision:
        obj = {
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"type": "openAIApi", "sealedData": sealed_data},
        }
        return admission.review_credential(
            "CREATE", obj, None, username="alice", operator_username="op", types=TYPES, literal_secrets="deny"
        )

    token = sealed(CANARY)
    assert review("team-a", "production-openai", {"openAIApiKey": token}).allowed
    moved = review("team-b", "production-openai", {"openAIApiKey": token})
    assert not moved.allowed and "was sealed for Credential team-a/production-openai" in moved.message
    copied = review("team-a", "staging", {"openAIApiKey": token})
    assert not copied.allowed and "staging" in copied.message
    garbage = review("team-a", "production-openai", {"openAIApiKey": "cbs1.zz"})
    assert not garbage.allowed and "is not a sealed value" in garbage.message
    assert CANARY not in moved.message + copied.message + garbage.message


def test_envelope_of_the_managed_secret_is_unchanged_by_sealing() -> None:
    # A sealed source makes the same cb1 envelope as the same value given any other way.
    view = credential({"openAIApiKey": sealed(CANARY)})
    literal = planning.CredentialView(
        "team-a", "production-openai", "uid-1", 1, {"type": "openAIApi", "data": {"openAIApiKey": CANARY}}, {}
    )
    assert opened(plan(view), view) == opened(plan(literal), literal)
    assert envelope.FORMAT_PREFIX == "cb1"
