"""The verification consumer without a cluster: what it hears, what it sends, what it writes.

A Controller with an API client that reaches nothing holds real Credentials and managed Secrets
(sealed by the real planner) in its cache; the consumer runs with a recording prober instead of
the network and a recording status writer. Tests look at which keys are queued, which checks
were sent, and the status patches and Events.
"""

from __future__ import annotations

import datetime
import secrets
import typing

import pytest

from credbridge.core import conditions, keyring, names, planning, registry, verification, views
from credbridge.operator import controller, metrics
from credbridge.operator import settings as settings_module
from credbridge.operator import verification as verification_module
from credbridge.testing import offline

RING = offline.RING
TICKS = [0.0]
"""The consumer's monotonic clock (seconds); a test moves it to let the global rate pass."""
ROTATED = keyring.add_key(RING, lambda count: b"\x03" * count)
"""RING after `credbridge keys rotate`: a new active key."""
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
Outcome = verification.Outcome
CANARY = "sk-proj-canary-consumer-" + "q" * 24


class Recorder:
    """Stands in for the network and the API server: records checks, status patches and Events."""

    def __init__(self) -> None:
        self.checks: list[verification.Probe] = []
        self.patches: list[tuple[views.Key, dict[str, typing.Any]]] = []
        self.events: list[tuple[views.Key, planning.Event]] = []
        self.outcome = Outcome.VALID

    def probe(self, request: verification.Probe, *_: typing.Any, **__: typing.Any) -> verification.ProbeResult:
        self.checks.append(request)
        return verification.ProbeResult(self.outcome, f"{request.host} answered")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def verifier(
    control: controller.Controller, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> verification_module.VerificationConsumer:
    settings = settings_module.VerificationSettings(debounce=0.0, per_second=1.0)
    TICKS[0] = 0.0
    made = verification_module.VerificationConsumer(
        control.context(), settings, clock=lambda: NOW, monotonic=lambda: TICKS[0], prober=recorder.probe
    )
    control.add_consumer(made)

    def write_status(view: views.CredentialView, patch: dict[str, typing.Any]) -> views.CredentialView:
        recorder.patches.append((view.key, patch))
        stored = views.CredentialView.from_object(
            {
                "metadata": {
                    "namespace": view.namespace,
                    "name": view.name,
                    "uid": view.uid,
                    "generation": view.generation,
                    "resourceVersion": str(int(view.resource_version) + 1),
                    "annotations": dict(view.annotations),
                },
                "spec": dict(view.spec),
                "status": {**view.status, **{k: v for k, v in patch.items() if v is not None}},
            }
        )
        control.cache.put_credential(stored)
        return stored

    monkeypatch.setattr(made, "write_status", write_status)
    monkeypatch.setattr(made, "event", lambda view, event: recorder.events.append((view.key, event)))
    return made


def ready_credential(
    control: controller.Controller,
    name: str,
    data: dict[str, str],
    type_name: str = "openAIApi",
    annotations: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    rotate: bool = False,
) -> views.CredentialView:
    """A Credential as its reconciler leaves it: its managed Secret sealed, its status Ready, both cached."""
    body = {
        "metadata": {
            "namespace": "team-a",
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "10",
            "annotations": annotations or {},
        },
        "spec": {"type": type_name, "data": data},
    }
    view = views.CredentialView.from_object(body)
    plan = planning.plan_credential(
        view,
        planning.Inputs(
            now="2026-03-01T11:00:00Z", random_bytes=secrets.token_bytes, keyring=ROTATED if rotate else RING
        ),
        cred_type=registry.Registry.builtin().get(type_name),
        env_lookup=(env or {}).get,
        env_policy=settings_module.env_policy(("CRED_*",), ()),
        referenced_secrets={},
    )
    if plan.secret is not None:
        control.cache.put_secret(views.SecretView.from_object(plan.secret))
    stored = views.CredentialView.from_object({**body, "status": plan.status})
    control.cache.put_credential(stored)
    return stored


def drain(verifier: verification_module.VerificationConsumer) -> set[views.Key]:
    keys = verifier.queue.waiting()
    verifier.queue._queued.clear()
    verifier.queue._ready.clear()
    verifier.queue._delayed.clear()
    return keys


def verified(control: controller.Controller, key: views.Key) -> typing.Mapping[str, typing.Any] | None:
    view = control.cache.credential(key)
    assert view is not None
    return conditions.find(view.status, verification.VERIFIED)


def test_a_ready_credential_is_checked_once_and_a_second_pass_sends_and_writes_nothing(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    view = ready_credential(control, "openai", {"openAIApiKey": CANARY})
    assert drain(verifier) == {view.key}
    result = verifier.reconcile(view.key)
    assert result.outcome == "checked:Valid" and result.requeue_after is not None
    assert [request.host for request in recorder.checks] == ["api.openai.com"]
    found = verified(control, view.key)
    assert found is not None and (found["status"], found["reason"]) == ("True", "Valid")
    assert [event.reason for _, event in recorder.events] == ["Valid"]
    # Our own write, written through, queues nothing; a second pass (a restart) sends and writes nothing.
    assert drain(verifier) == set()
    patches = len(recorder.patches)
    assert verifier.reconcile(view.key).outcome == "unchanged"
    assert len(recorder.checks) == 1 and len(recorder.patches) == patches
    assert CANARY not in repr(recorder.patches) and CANARY not in repr(recorder.events)


def test_a_secret_rewritten_with_the_same_content_is_not_checked_again_but_new_content_is(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    view = ready_credential(control, "openai", {"openAIApiKey": CANARY})
    verifier.reconcile(view.key)
    checked = control.cache.credential(view.key)
    assert checked is not None and len(recorder.checks) == 1
    patches = len(recorder.patches)

    def rewritten(value: str) -> views.CredentialView:
        """The Credential after its reconciler wrote its Secret again (a key rotation, or new content), in the
        second of the check (times have a resolution of one second)."""
        made = ready_credential(control, "openai", {"openAIApiKey": value}, rotate=True)
        status = {**checked.status, "updatedDate": checked.status["lastVerifiedTime"], "keyId": made.status["keyId"]}
        stored = views.CredentialView.from_object(
            {
                "metadata": {"namespace": "team-a", "name": "openai", "uid": made.uid, "generation": 1},
                "spec": dict(made.spec),
                "status": status,
            }
        )
        control.cache.put_credential(stored)
        return stored

    control.keyring_changed(ROTATED)
    same = rewritten(CANARY)
    assert verifier.reconcile(same.key).outcome == "unchanged"
    assert len(recorder.checks) == 1 and len(recorder.patches) == patches

    changed = rewritten("sk-proj-another-key-" + "z" * 24)
    TICKS[0] += 10.0  # past the global rate's spacing since the first check
    assert verifier.reconcile(changed.key).outcome == "checked:Valid"
    assert len(recorder.checks) == 2


def test_values_the_release_rule_keeps_in_are_never_opened_or_sent(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    view = ready_credential(
        control, "from-env", {"openAIApiKey": "<<CRED_TEAM_A_KEY>>"}, env={"CRED_TEAM_A_KEY": CANARY}
    )
    assert view.ready  # resolved and sealed; only no namespace rule grants the variable to team-a
    assert verifier.reconcile(view.key).outcome == "checked:NotReleased"
    assert recorder.checks == []
    found = verified(control, view.key)
    assert found is not None and (found["status"], found["reason"]) == ("Unknown", "NotReleased")
    assert "CRED_TEAM_A_KEY" in found["message"] and "--env-policy" in found["message"]


def test_a_type_without_a_check_is_not_verifiable_without_opening_anything(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    view = ready_credential(control, "tavily", {"tavilyApiKey": "tvly-" + "k" * 20}, type_name="tavilyApi")
    tavily = registry.Registry.builtin().get("tavilyApi")
    assert tavily is not None and tavily.verify is None
    assert verifier.reconcile(view.key).outcome == "checked:NotVerifiable"
    assert recorder.checks == []
    found = verified(control, view.key)
    assert found is not None and found["reason"] == "NotVerifiable"


def test_many_due_at_once_start_at_the_global_rate_and_a_request_does_not_wait(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    keys = [ready_credential(control, f"c{index}", {"openAIApiKey": f"sk-{index:030d}"}).key for index in range(5)]
    results = [verifier.reconcile(key) for key in keys]
    assert [result.outcome for result in results] == ["checked:Valid"] + ["paced"] * 4
    assert [result.requeue_after for result in results[1:]] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert len(recorder.checks) == 1
    assert metrics.VERIFICATION_WAITING._value.get() == 4

    requested = ready_credential(
        control,
        "asked",
        {"openAIApiKey": "sk-" + "r" * 30},
        annotations={verification.VERIFY_REQUESTED_ANNOTATION: "2026-03-01T12:00:00.000001Z"},
    )
    assert verifier.reconcile(requested.key).outcome == "checked:Valid"
    stored = control.cache.credential(requested.key)
    assert stored is not None and stored.status["lastVerifyRequest"] == "2026-03-01T12:00:00.000001Z"


def test_a_source_whose_outcome_changes_queues_its_mirrors_and_a_mirror_shows_it(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    source = ready_credential(control, "openai", {"openAIApiKey": CANARY})
    mirror_body = {
        "metadata": {
            "namespace": "team-b",
            "name": names.mirror_name("team-a", "openai"),
            "uid": "uid-mirror",
            "generation": 1,
            "resourceVersion": "5",
        },
        "spec": {"type": "openAIApi", "sharedFrom": {"namespace": "team-a", "name": "openai"}},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Encrypted"}]},
    }
    control.cache.put_credential(views.CredentialView.from_object(mirror_body))
    mirror_key = ("team-b", names.mirror_name("team-a", "openai"))
    drain(verifier)
    verifier.reconcile(source.key)
    assert drain(verifier) == {mirror_key}
    assert verifier.reconcile(mirror_key).outcome == "written"
    assert len(recorder.checks) == 1  # the source's only
    found = verified(control, mirror_key)
    assert found is not None and found["reason"] == "Valid" and "team-a/openai" in found["message"]


def test_a_credential_that_is_not_ready_is_not_verified(
    control: controller.Controller, verifier: verification_module.VerificationConsumer, recorder: Recorder
) -> None:
    view = ready_credential(control, "missing", {"openAIApiKey": "<<CRED_MISSING>>"})
    assert not view.ready
    assert verifier.reconcile(view.key).outcome == "not-ready"
    assert recorder.checks == [] and recorder.patches == []


def test_a_deleted_credential_leaves_the_gauges(
    control: controller.Controller, verifier: verification_module.VerificationConsumer
) -> None:
    view = ready_credential(control, "openai", {"openAIApiKey": CANARY})
    verifier.reconcile(view.key)

    def series() -> list[str]:
        return [
            sample.labels.get("name", "")
            for family in metrics.VERIFICATION.collect()
            for sample in family.samples
            if sample.labels.get("namespace") == "team-a"
        ]

    assert "openai" in series()
    control.credential_changed("DELETED", {"metadata": {"namespace": "team-a", "name": "openai"}})
    assert "openai" not in series()
