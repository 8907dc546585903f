"""CredentialBinding planning as state transitions: a binding and what the cluster holds in, a plan out.

Applying a plan means feeding its Secret back as the current Secret and its status back as the
binding's status; each test asserts on what a user would see: the Secret written or not, the
conditions, the Events, the rollout.
"""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Callable

from credbridge.core import binding, keyring, names, planning, redaction, registry, views

NOW = "2024-05-01T10:00:00Z"
LATER = "2024-05-02T10:00:00Z"
KEY = "sk-binding-canary-7f3e"
TYPES = registry.Registry.builtin()


def seeded(seed: str) -> Callable[[int], bytes]:
    counter = {"n": 0}

    def random_bytes(length: int) -> bytes:
        out = b""
        while len(out) < length:
            counter["n"] += 1
            out += hashlib.sha256(f"{seed}:{counter['n']}".encode()).digest()
        return out[:length]

    return random_bytes


RING = keyring.new_keyring(seeded("ring"))
ROTATED = keyring.add_key(RING, seeded("rotated"))


def credential(name: str = "openai", *, shared_from: tuple[str, str] | None = None) -> views.CredentialView:
    spec: dict[str, typing.Any] = {"type": "openAIApi"}
    if shared_from:
        spec["sharedFrom"] = {"namespace": shared_from[0], "name": shared_from[1]}
    return views.CredentialView.from_object(
        {"metadata": {"namespace": "team-a", "name": name, "uid": "cred-uid"}, "spec": spec, "status": {}}
    )


def binding_view(
    spec: dict[str, typing.Any] | None = None, status: dict[str, typing.Any] | None = None
) -> binding.BindingView:
    return binding.BindingView.from_object(
        {
            "metadata": {"namespace": "team-a", "name": "chat", "uid": "binding-uid", "generation": 1},
            "spec": spec
            or {"credential": "openai", "template": {"OPENAI_API_KEY": "${openAIApiKey}"}, "secret": {"name": "chat"}},
            "status": status or {},
        }
    )


def inputs(
    *,
    content: dict[str, str] | None = None,
    current: dict[str, typing.Any] | None = None,
    ring: keyring.Keyring = RING,
    now: str = NOW,
    **extra: typing.Any,
) -> binding.Inputs:
    fields = redaction.SecretFields(content if content is not None else {"openAIApiKey": KEY})
    return binding.Inputs(
        now=now,
        keyring=ring,
        credential=extra.pop("credential", credential()),
        content=extra.pop("content_value", fields),
        cred_type=TYPES.get("openAIApi"),
        current_secret=views.SecretView.from_object(current) if current else None,
        **extra,
    )


def apply(view: binding.BindingView, plan: binding.Plan, current: dict[str, typing.Any] | None):  # type: ignore[no-untyped-def]
    """The binding and Secret after the operator applied `plan` (the rollout included, if any)."""
    status = {**view.status, **plan.status}
    if plan.rollout:
        status.update(plan.rollout_status)
    secret = plan.secret if plan.secret is not None else current
    if set(plan.delete_secrets) & {view.secret_name}:
        secret = None
    return binding_view(dict(view.spec), status), secret


def ready(plan: binding.Plan) -> dict[str, typing.Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == names.READY_CONDITION)


def test_a_binding_renders_a_plain_secret_owned_by_it() -> None:
    view = binding_view()
    plan = binding.plan_binding(view, inputs())
    assert plan.secret is not None
    secret = views.SecretView.from_object(plan.secret)
    assert secret.type == "Opaque"
    assert dict(secret.data) == {"OPENAI_API_KEY": KEY}
    assert secret.controller_uid == "binding-uid"
    assert secret.labels[names.BINDING_LABEL] == "chat"
    assert secret.labels[names.BOUND_CREDENTIAL_LABEL] == "openai"
    assert names.CREDENTIAL_LABEL not in secret.labels  # not mistaken for a Credential's own Secret
    assert secret.annotations[names.CONTENT_HMAC_ANNOTATION].startswith(RING.active_id + ":")
    assert ready(plan)["status"] == "True"
    assert plan.status["keys"] == ["OPENAI_API_KEY"]
    assert plan.status["contentHmac"] == secret.annotations[names.CONTENT_HMAC_ANNOTATION]
    assert KEY not in repr(plan) and KEY not in str(plan.status)


def test_an_applied_plan_plans_no_writes() -> None:
    view = binding_view()
    first = binding.plan_binding(view, inputs())
    view, secret = apply(view, first, None)
    second = binding.plan_binding(view, inputs(current=secret, now=LATER))
    assert second.secret is None
    assert planning.status_patch(view.status, second.status) is None
    assert second.events == () and second.rollout == ()


def test_a_key_rotation_writes_nothing() -> None:
    view = binding_view(
        {"credential": "openai", "secret": {"name": "chat"}, "rollout": [{"kind": "Deployment", "name": "app"}]}
    )
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    after = binding.plan_binding(view, inputs(current=secret, ring=ROTATED, now=LATER))
    assert after.secret is None
    assert after.rollout == ()
    assert planning.status_patch(view.status, after.status) is None


def test_a_content_change_rewrites_the_secret_and_makes_a_rollout_due() -> None:
    spec = {"credential": "openai", "secret": {"name": "chat"}, "rollout": [{"kind": "Deployment", "name": "app"}]}
    view = binding_view(spec)
    first = binding.plan_binding(view, inputs())
    assert first.rollout == ()  # the first render rolls nothing out
    view, secret = apply(view, first, None)
    changed = binding.plan_binding(view, inputs(content={"openAIApiKey": "new"}, current=secret, now=LATER))
    assert changed.secret is not None
    assert changed.status["renderedDate"] == LATER
    assert changed.rollout == (binding.RolloutTarget("Deployment", "app"),)
    view, secret = apply(view, changed, secret)
    settled = binding.plan_binding(view, inputs(content={"openAIApiKey": "new"}, current=secret, now=LATER))
    assert settled.rollout == () and settled.secret is None


def test_content_changed_and_changed_back_before_the_rollout_needs_none() -> None:
    spec = {"credential": "openai", "secret": {"name": "chat"}, "rollout": [{"kind": "Deployment", "name": "app"}]}
    view = binding_view(spec)
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    changed = binding.plan_binding(view, inputs(content={"openAIApiKey": "new"}, current=secret))
    # The operator waits for the debounce: status and Secret are applied, the rollout is not.
    view = binding_view(spec, {**view.status, **changed.status})
    secret = changed.secret
    back = binding.plan_binding(view, inputs(current=secret))
    assert back.secret is not None
    assert back.rollout == ()


def test_a_foreign_secret_is_never_touched() -> None:
    foreign = {"metadata": {"name": "chat", "namespace": "team-a"}, "type": "Opaque", "data": {}}
    plan = binding.plan_binding(binding_view(), inputs(current=foreign))
    assert plan.secret is None and plan.delete_secrets == ()
    assert ready(plan)["reason"] == "SecretConflict"
    assert plan.events[0].type == "Warning"


def test_bad_templates_keep_the_last_good_secret() -> None:
    view = binding_view()
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    broken = binding_view({**view.spec, "template": {"OPENAI_API_KEY": "${openAIApiKey"}}, dict(view.status))
    plan = binding.plan_binding(broken, inputs(current=secret))
    assert ready(plan)["reason"] == "InvalidTemplate"
    assert "character 1" in ready(plan)["message"]
    assert plan.secret is None and plan.delete_secrets == ()
    assert plan.status["secretName"] == "chat"


def test_unknown_fields_name_the_fields_of_the_type() -> None:
    view = binding_view({"credential": "openai", "template": {"K": "${apiKey}"}, "secret": {"name": "chat"}})
    plan = binding.plan_binding(view, inputs())
    assert ready(plan)["reason"] == "UnknownField"
    assert "'apiKey'" in ready(plan)["message"] and "openAIApiKey" in ready(plan)["message"]


def test_a_credential_that_is_not_ready_keeps_the_last_good_secret() -> None:
    view = binding_view()
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    failure = planning.Failure("SourceNotReady", "the Credential is not Ready")
    plan = binding.plan_binding(view, inputs(current=secret, content_value=failure))
    assert ready(plan)["reason"] == "CredentialNotReady"
    assert plan.secret is None and plan.delete_secrets == ()


def test_a_deleted_credential_withdraws_the_output() -> None:
    view = binding_view()
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    plan = binding.plan_binding(view, inputs(current=secret, credential=None))
    assert ready(plan)["reason"] == "CredentialNotFound"
    assert plan.delete_secrets == ("chat",)
    assert plan.status["secretName"] is None


def test_a_policy_denial_withdraws_the_output_and_says_why() -> None:
    view = binding_view()
    view, secret = apply(view, binding.plan_binding(view, inputs()), None)
    denial = planning.Failure("PlaintextDenied", "plain Secret output is turned off in this cluster")
    plan = binding.plan_binding(view, inputs(current=secret, plain_output_denial=denial))
    assert ready(plan)["reason"] == "PlaintextDenied"
    assert plan.delete_secrets == ("chat",)


def test_without_secret_output_no_policy_applies_and_nothing_is_written() -> None:
    view = binding_view({"credential": "openai"})
    denial = planning.Failure("PlaintextDenied", "off")
    plan = binding.plan_binding(view, inputs(plain_output_denial=denial))
    assert plan.secret is None
    assert ready(plan)["status"] == "True"


def test_renaming_the_output_removes_the_old_secret() -> None:
    view = binding_view()
    view, _ = apply(view, binding.plan_binding(view, inputs()), None)
    renamed = binding_view({**view.spec, "secret": {"name": "chat-v2"}}, dict(view.status))
    plan = binding.plan_binding(renamed, inputs())
    assert plan.secret is not None and plan.secret["metadata"]["name"] == "chat-v2"
    assert plan.delete_secrets == ("chat",)


def test_missing_and_unsupported_rollout_targets_are_reported() -> None:
    missing = binding.RolloutTarget("Deployment", "gone")
    view = binding_view({"credential": "openai", "rollout": [{"kind": "Deployment", "name": "gone"}]})
    plan = binding.plan_binding(view, inputs(missing_targets=frozenset({missing})))
    rollout = next(c for c in plan.status["conditions"] if c["type"] == binding.ROLLOUT_CONDITION)
    assert rollout["reason"] == "TargetNotFound" and "Deployment gone" in rollout["message"]
    assert [event.reason for event in plan.events] == ["TargetNotFound"]
    cronjob = binding_view({"credential": "openai", "rollout": [{"kind": "CronJob", "name": "x"}]})
    plan = binding.plan_binding(cronjob, inputs())
    rollout = next(c for c in plan.status["conditions"] if c["type"] == binding.ROLLOUT_CONDITION)
    assert rollout["reason"] == "UnsupportedKind" and "Deployment, StatefulSet, DaemonSet" in rollout["message"]


def test_with_rollouts_turned_off_nothing_is_patched_and_the_binding_says_so() -> None:
    spec = {"credential": "openai", "secret": {"name": "chat"}, "rollout": [{"kind": "Deployment", "name": "app"}]}
    view = binding_view(spec)
    view, secret = apply(view, binding.plan_binding(view, inputs(rollouts_enabled=False)), None)
    changed = binding.plan_binding(
        view, inputs(content={"openAIApiKey": "new"}, current=secret, rollouts_enabled=False)
    )
    assert changed.secret is not None and changed.rollout == ()
    rollout = next(c for c in changed.status["conditions"] if c["type"] == binding.ROLLOUT_CONDITION)
    assert rollout["reason"] == "RolloutsDisabled"


def test_a_reference_to_another_namespace_is_refused() -> None:
    assert binding.reference_problem("team-b/openai") is not None
    assert binding.reference_problem("team-b.openai") is None


def test_usage_status_lists_bindings_and_counts_them() -> None:
    assert binding.usage_status(["b", "a", "b"], ["web-2", "web-1"]) == {
        "usedBy": ["a", "b"],
        "usedByCount": 2,
        "usedByPods": ["web-1", "web-2"],
    }
    assert binding.usage_status([f"b{i}" for i in range(150)])["usedByCount"] == 150
    assert len(binding.usage_status([f"b{i}" for i in range(150)])["usedBy"]) == 100


# ---- OAuth2 Credentials -------------------------------------------------------------------------------------

ACCESS = "ya29.binding-canary-1"
OAUTH2_SPEC = {
    "credential": "gmail",
    "template": {"AUTHORIZATION": "Bearer ${access_token}", "CLIENT_ID": "${clientId}"},
    "secret": {"name": "chat"},
    "rollout": [{"kind": "Deployment", "name": "app"}],
}


def gmail(oauth2_condition: dict[str, typing.Any] | None = None) -> views.CredentialView:
    status = {"conditions": [oauth2_condition]} if oauth2_condition else {}
    return views.CredentialView.from_object(
        {
            "metadata": {"namespace": "team-a", "name": "gmail", "uid": "gmail-uid"},
            "spec": {"type": "gmailOAuth2"},
            "status": status,
        }
    )


def gmail_inputs(
    access: str = ACCESS,
    client: str = "client-1",
    *,
    credential: views.CredentialView | None = None,
    **extra: typing.Any,
) -> binding.Inputs:
    return binding.Inputs(
        now=extra.pop("now", NOW),
        keyring=RING,
        credential=credential or gmail(),
        content=redaction.SecretFields({"clientId": client, "access_token": access, "refresh_token": "1//r"}),
        cred_type=TYPES.get("gmailOAuth2"),
        current_secret=views.SecretView.from_object(extra.pop("current")) if extra.get("current") else None,
        **{key: value for key, value in extra.items() if key != "current"},
    )


def test_a_refreshed_access_token_rewrites_the_secret_but_rolls_nothing_out_unless_asked() -> None:
    view = binding_view(dict(OAUTH2_SPEC))
    view, secret = apply(view, binding.plan_binding(view, gmail_inputs()), None)
    refreshed = binding.plan_binding(view, gmail_inputs("ya29.next", current=secret, now=LATER))
    assert refreshed.secret is not None and refreshed.rollout == ()
    view, secret = apply(view, refreshed, secret)
    # A change of a field that is not a token rolls out.
    reconfigured = binding.plan_binding(view, gmail_inputs("ya29.next", "client-2", current=secret, now=LATER))
    assert reconfigured.rollout == (binding.RolloutTarget("Deployment", "app"),)
    # With rolloutOnTokenRefresh, a refresh rolls out too.
    asked = binding_view({**OAUTH2_SPEC, "rolloutOnTokenRefresh": True})
    asked, secret = apply(asked, binding.plan_binding(asked, gmail_inputs()), None)
    rolled = binding.plan_binding(asked, gmail_inputs("ya29.next", current=secret, now=LATER))
    assert rolled.rollout == (binding.RolloutTarget("Deployment", "app"),)
    assert ACCESS not in repr(refreshed) and ACCESS not in str(refreshed.status)


def test_a_binding_reports_its_oauth2_credential_needing_a_new_authorization() -> None:
    valid = {"type": "OAuth2Ready", "status": "True", "reason": "TokenValid", "message": "works until 11:00"}
    view = binding_view(dict(OAUTH2_SPEC))
    first = binding.plan_binding(view, gmail_inputs(credential=gmail(valid)))
    oauth2 = next(c for c in first.status["conditions"] if c["type"] == "OAuth2Ready")
    assert oauth2["status"] == "True" and first.events == ()
    view, secret = apply(view, first, None)
    revoked = {
        "type": "OAuth2Ready",
        "status": "False",
        "reason": "ReauthorizationRequired",
        "message": "run `credbridge oauth2 authorize gmail -n team-a` (its access token works until 11:00)",
    }
    after = binding.plan_binding(view, gmail_inputs(credential=gmail(revoked), current=secret, now=LATER))
    oauth2 = next(c for c in after.status["conditions"] if c["type"] == "OAuth2Ready")
    ready = next(c for c in after.status["conditions"] if c["type"] == "Ready")
    assert oauth2["reason"] == "ReauthorizationRequired" and "credbridge oauth2 authorize" in oauth2["message"]
    assert ready["status"] == "True" and after.secret is None  # the last access token stays in the Secret
    assert [(event.type, event.reason) for event in after.events] == [("Warning", "ReauthorizationRequired")]
