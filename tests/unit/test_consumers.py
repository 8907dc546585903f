"""The consumers' routing and their use of the release rule, without a cluster.

Events go in (as the controller routes them: a stored Credential, a Secret's key and labels, a
share, a consumer's own objects), and the test looks at which keys are queued: each event costs
index lookups, and reaches exactly the objects it concerns. A mirror whose source is being deleted
is refused by every consumer before any plaintext is opened for it.
"""

from __future__ import annotations

import typing

import pytest

from credbridge.core import binding, names, planning, redaction, release, views, workload
from credbridge.core.flowise import target as flowise_target
from credbridge.operator import bindings, consumer, consumers, controller, flowise, oauth2
from credbridge.operator import settings as settings_module
from credbridge.testing import offline

RING = offline.RING


def credential_body(
    name: str, namespace: str = "team-a", version: int = 1, **extra: typing.Any
) -> dict[str, typing.Any]:
    spec: dict[str, typing.Any] = {"type": "openAIApi", "data": {"openAIApiKey": "literal"}}
    spec.update(extra.pop("spec", {}))
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "generation": 1,
            "labels": extra.pop("labels", {}),
        },
        "spec": spec,
        "status": extra.pop("status", {}),
    }


def binding_body(name: str, credential: str, secret: str | None = None, version: int = 1) -> dict[str, typing.Any]:
    spec: dict[str, typing.Any] = {"credential": credential}
    if secret:
        spec["secret"] = {"name": secret}
    return {
        "metadata": {"namespace": "team-a", "name": name, "uid": f"uid-{name}", "resourceVersion": str(version)},
        "spec": spec,
    }


def target_body(name: str, namespace: str = "team-a", api_key: str = "flowise-key") -> dict[str, typing.Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"url": "https://flowise.example", "apiKeySecretRef": {"name": api_key}},
    }


def drain(queue: typing.Any) -> set[typing.Any]:
    """The keys waiting in a (not started) queue, which are then forgotten."""
    keys = queue.waiting()
    queue._queued.clear()
    queue._ready.clear()
    queue._delayed.clear()
    return typing.cast(set[typing.Any], keys)


# ---- bindings ---------------------------------------------------------------------------------


@pytest.fixture
def binder(control: controller.Controller) -> bindings.BindingController:
    made = bindings.BindingController(control.context(), control.settings.bindings, workers=1)
    control.add_consumer(made)
    return made


def test_a_binding_event_queues_the_binding_and_its_credentials_usage(binder: bindings.BindingController) -> None:
    binder.object_changed("ADDED", binding_body("chat", "openai", "chat-secret"))
    assert drain(binder.queue) == {("team-a", "chat")}
    assert drain(binder.usage_queue) == {("team-a", "openai")}
    # The same version again (our own status write, written through) queues nothing.
    binder.object_changed("MODIFIED", binding_body("chat", "openai", "chat-secret"))
    assert drain(binder.queue) == set()


def test_a_credential_change_reaches_exactly_its_bindings(
    control: controller.Controller, binder: bindings.BindingController
) -> None:
    binder.object_changed("ADDED", binding_body("chat", "openai"))
    binder.object_changed("ADDED", binding_body("orders", "postgres"))
    drain(binder.queue)
    drain(binder.usage_queue)

    control.credential_changed("ADDED", credential_body("openai"))
    assert drain(binder.queue) == {("team-a", "chat")}

    ready = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Encrypted"}]}
    control.credential_changed("MODIFIED", credential_body("openai", version=2, status=ready))
    assert drain(binder.queue) == {("team-a", "chat")}

    # A change bindings do not depend on (who uses it) re-renders nothing.
    usage = {**ready, "usedBy": ["chat"], "usedByCount": 1}
    control.credential_changed("MODIFIED", credential_body("openai", version=3, status=usage))
    assert drain(binder.queue) == set()


def test_secret_and_share_events_reach_the_bindings_they_concern(
    control: controller.Controller, binder: bindings.BindingController
) -> None:
    binder.object_changed("ADDED", binding_body("chat", "openai", "chat-secret"))
    binder.object_changed("ADDED", binding_body("mirror-user", names.mirror_name("team-x", "openai")))
    drain(binder.queue)

    binder.secret_changed("MODIFIED", ("team-a", "chat-secret"), {})
    assert drain(binder.queue) == {("team-a", "chat")}
    managed = {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.CREDENTIAL_LABEL: "openai"}
    binder.secret_changed("MODIFIED", ("team-a", "openai"), managed)
    assert drain(binder.queue) == {("team-a", "chat")}
    binder.secret_changed("MODIFIED", ("team-a", "unrelated"), {})
    assert drain(binder.queue) == set()

    share = {"metadata": {"namespace": "team-x", "name": "to-a"}, "spec": {"credential": "openai"}}
    control.share_changed("ADDED", share)
    assert drain(binder.queue) == {("team-a", "mirror-user")}


def test_a_pod_reading_a_bound_secret_queues_the_usage_of_its_credential(binder: bindings.BindingController) -> None:
    binder.object_changed("ADDED", binding_body("chat", "openai", "chat-secret"))
    drain(binder.usage_queue)
    binder._usage_pending.clear()  # as if the usage update had run
    pod = {
        "metadata": {"namespace": "team-a", "name": "web"},
        "spec": {"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "chat-secret"}}]}]},
    }
    binder.pod_changed("ADDED", pod)
    assert drain(binder.usage_queue) == {("team-a", "openai")}


# ---- external syncs (Flowise) -------------------------------------------------------------------


@pytest.fixture
def syncer(control: controller.Controller) -> flowise.FlowiseSync:
    made = flowise.FlowiseSync(control.context(), control.settings.flowise)
    control.add_consumer(made)
    return made


def test_flowise_targets_hear_of_their_namespace_and_their_secrets_only(
    control: controller.Controller, syncer: flowise.FlowiseSync
) -> None:
    syncer.object_changed("ADDED", target_body("a1"))
    syncer.object_changed("ADDED", target_body("b1", namespace="team-b", api_key="other-key"))
    assert drain(syncer.queue) == {("team-a", "a1"), ("team-b", "b1")}

    control.credential_changed("ADDED", credential_body("openai", "team-a"))
    assert drain(syncer.queue) == {("team-a", "a1")}
    # A status write of another writer (usage, a check's time) changes nothing pushed: no sync.
    checked = {"usedBy": ["chat"], "lastVerifiedTime": "2026-01-01T00:00:00Z"}
    control.credential_changed("MODIFIED", credential_body("openai", "team-a", version=2, status=checked))
    assert drain(syncer.queue) == set()
    relabelled = credential_body("openai", "team-a", version=3, status=checked, labels={"flowise": "yes"})
    control.credential_changed("MODIFIED", relabelled)
    assert drain(syncer.queue) == {("team-a", "a1")}

    syncer.secret_changed("MODIFIED", ("team-b", "other-key"), {})
    assert drain(syncer.queue) == {("team-b", "b1")}
    managed = {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.CREDENTIAL_LABEL: "x"}
    syncer.secret_changed("MODIFIED", ("team-b", "x"), managed)
    assert drain(syncer.queue) == {("team-b", "b1")}

    syncer.object_changed("DELETED", target_body("a1"))
    control.credential_changed("MODIFIED", credential_body("openai", "team-a", version=4, labels={"x": "y"}))
    assert drain(syncer.queue) == set()


# ---- the release rule, consumer by consumer -------------------------------------------------------


def ready_mirror(control: controller.Controller) -> views.CredentialView:
    """A Ready mirror in team-a whose source team-x/openai is being deleted, with a Secret that opens."""
    status = {
        "observedGeneration": 1,
        "keyId": RING.active_id,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Encrypted"}],
    }
    body = credential_body(
        names.mirror_name("team-x", "openai"),
        spec={"data": {}, "sharedFrom": {"namespace": "team-x", "name": "openai"}},
        status=status,
    )
    mirror = views.CredentialView.from_object(body)
    plan = planning.plan_mirror(
        mirror,
        planning.Inputs(now="2026-01-01T00:00:00Z", random_bytes=lambda n: b"\x02" * n, keyring=RING),
        source_content=redaction.SecretFields({"openAIApiKey": "sk-canary-mirror"}),
        type_version=1,
    )
    assert plan.secret is not None
    control.cache.put_secret(
        views.SecretView.from_object({**plan.secret, "metadata": {**plan.secret["metadata"], "resourceVersion": "1"}})
    )
    control.credential_changed("ADDED", body)
    source = credential_body("openai", "team-x", spec={"data": {"openAIApiKey": "<<CRED_TEAM_X_KEY>>"}})
    source["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    control.credential_changed("ADDED", source)
    return mirror


def test_every_consumer_refuses_a_mirror_whose_source_is_going_away(
    control: controller.Controller, binder: bindings.BindingController, syncer: flowise.FlowiseSync
) -> None:
    mirror = ready_mirror(control)
    # The mirror's own Secret opens: the refusal is the rule's, not a missing input.
    assert isinstance(control.reader.open(mirror), redaction.SecretFields)

    bound = binding.BindingView.from_object(binding_body("steal", mirror.name, "steal-secret"))
    # The binding's earlier Secret, as the watch cache holds it (the plan decides to withdraw it).
    earlier = {"metadata": {"namespace": "team-a", "name": "steal-secret", "resourceVersion": "1"}, "data": {}}
    control.cache.put_secret(views.SecretView.from_object(earlier))
    inputs = binder._gather(bound, from_api=False)
    assert inputs is not None and inputs.plain_output_denial is not None
    assert inputs.plain_output_denial.reason == release.SOURCE_NOT_VISIBLE
    plan = binding.plan_binding(bound, inputs)
    assert plan.secret is None and plan.failure is not None and plan.failure.reason == release.SOURCE_NOT_VISIBLE

    selected = syncer.selected(flowise_target.TargetView.from_object(target_body("f")))
    denials = {item.view.name: item.denial for item in selected}
    assert denials[mirror.name] is not None and denials[mirror.name].reason == release.SOURCE_NOT_VISIBLE

    source = control.cache.credential(("team-x", "openai"))
    target = workload.Target("team-a", names.CREDENTIAL_PLURAL, mirror.name)
    identity = typing.cast(typing.Any, None)
    answer = workload.release_credential(identity, target, target, mirror, source, control.release_policy)
    assert isinstance(answer, workload.Answer) and answer.status == 503 and "cannot see" in answer.message


def test_the_consumer_registry_names_every_consumer_once() -> None:
    assert [registration.name for registration in consumers.REGISTRY] == [
        "bindings",
        "flowise",
        "oauth2",
        "verification",
    ]
    for registration in consumers.REGISTRY:
        assert hasattr(settings_module.OperatorSettings(), registration.name)
    assert issubclass(flowise.FlowiseSync, consumer.ExternalSync)


# ---- the OAuth2 refresh ---------------------------------------------------------------------------


def test_the_oauth2_refresh_hears_of_oauth2_credentials_and_their_token_secrets_only(
    control: controller.Controller,
) -> None:
    refresher = oauth2.OAuth2Refresher(control.context(), control.settings.oauth2, holder="test")
    control.add_consumer(refresher)
    token_ref = {"secretKeyRef": {"name": "gmail-tokens", "key": "access_token", "optional": True}}
    gmail_spec = {"type": "gmailOAuth2", "data": {"clientId": "id"}, "valueFrom": {"access_token": token_ref}}
    control.credential_changed("ADDED", credential_body("gmail", spec=gmail_spec))
    control.credential_changed("ADDED", credential_body("openai"))
    assert drain(refresher.queue) == {("team-a", "gmail")}
    assert refresher.resync_keys() == [("team-a", "gmail")]

    # Its own status write (status.oauth2, OAuth2Ready) brings nothing back; new content does.
    own = {"oauth2": {"grant": "authorization_code"}, "conditions": [{"type": "OAuth2Ready", "status": "False"}]}
    control.credential_changed("MODIFIED", credential_body("gmail", version=2, spec=gmail_spec, status=own))
    assert drain(refresher.queue) == set()
    content = {**own, "updatedDate": "2026-05-01T12:00:00Z"}
    control.credential_changed("MODIFIED", credential_body("gmail", version=3, spec=gmail_spec, status=content))
    assert drain(refresher.queue) == {("team-a", "gmail")}

    # A new authorization writes the token Secret: the Credential reading it is looked at again.
    refresher.secret_changed("MODIFIED", ("team-a", "gmail-tokens"), {})
    refresher.secret_changed("MODIFIED", ("team-a", "unrelated"), {})
    assert drain(refresher.queue) == {("team-a", "gmail")}
