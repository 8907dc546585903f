"""Share planning as state transitions: a source, its shares, namespaces and mirrors in; writes and statuses out."""

from __future__ import annotations

import collections.abc
import copy
import typing

import pytest

from credbridge.core import names, sharing, views

Json = dict[str, typing.Any]
MIRROR = "team-a.production-openai"


def source(**spec_changes: typing.Any) -> Json:
    return {
        "metadata": {"namespace": "team-a", "name": "production-openai", "uid": "uid-source"},
        "spec": {
            "type": "openAIApi",
            "displayName": "Production OpenAI",
            "data": {"openAIApiKey": "<<CRED_OPENAI_API_KEY>>"},
            **spec_changes,
        },
    }


def namespace(
    name: str,
    *,
    accepts: str | None = "team-a",
    labels: collections.abc.Mapping[str, str] | None = None,
    terminating: bool = False,
) -> Json:
    metadata: Json = {"name": name, "labels": dict(labels or {})}
    if accepts is not None:
        metadata["annotations"] = {names.ACCEPT_SHARES_ANNOTATION: accepts}
    if terminating:
        metadata["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    return {"metadata": metadata}


def share(
    name: str = "openai-share",
    *,
    to: collections.abc.Sequence[str] = (),
    selector: collections.abc.Mapping[str, typing.Any] | None = None,
) -> Json:
    spec: Json = {"credential": "production-openai"}
    if to:
        spec["namespaces"] = list(to)
    if selector is not None:
        spec["namespaceSelector"] = dict(selector)
    return {"metadata": {"namespace": "team-a", "name": name}, "spec": spec}


def existing_mirror(target: str, **spec_changes: typing.Any) -> Json:
    mirror = sharing.mirror_object(views.CredentialView.from_object(source()), target)
    mirror["spec"].update(spec_changes)
    return mirror


def plan(
    shares: collections.abc.Sequence[Json],
    namespaces: collections.abc.Sequence[Json],
    mirrors: collections.abc.Sequence[Json] = (),
    src: Json | None = None,
    *,
    missing_source: bool = False,
) -> sharing.SharePlan:
    return plan_views(None if missing_source else (src or source()), shares, namespaces, mirrors)


def plan_views(
    src: Json | None,
    shares: collections.abc.Sequence[Json],
    namespaces: collections.abc.Sequence[Json],
    mirrors: collections.abc.Sequence[Json],
) -> sharing.SharePlan:
    """Plans from objects in their JSON form, read through the views the operator uses."""
    return sharing.plan_source_shares(
        "team-a",
        "production-openai",
        None if src is None else views.CredentialView.from_object(src),
        [views.ShareView.from_object(item) for item in shares],
        [views.NamespaceView.from_object(item) for item in namespaces],
        [views.CredentialView.from_object(item) for item in mirrors],
    )


def created_in(result: sharing.SharePlan) -> list[str]:
    return sorted(mirror["metadata"]["namespace"] for mirror in result.create)


def states(result: sharing.SharePlan, share_name: str = "openai-share") -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in result.share_statuses[share_name]["namespaces"]}


def ready(status: Json) -> Json:
    (condition,) = status["conditions"]
    assert condition["type"] == "Ready"
    return typing.cast(Json, condition)


# Consent


@pytest.mark.parametrize(
    ("annotation", "accepted"),
    [
        pytest.param("team-a", True, id="exact"),
        pytest.param("team-c,team-a", True, id="in-a-list"),
        pytest.param(" team-c , team-a ", True, id="list-with-whitespace"),
        pytest.param("*", True, id="wildcard"),
        pytest.param(" * ", True, id="wildcard-with-whitespace"),
        pytest.param(None, False, id="no-annotation"),
        pytest.param("", False, id="empty"),
        pytest.param("team-c", False, id="another-source"),
        pytest.param("team-ab,team", False, id="no-prefix-or-substring-match"),
    ],
)
def test_a_target_namespace_gets_a_mirror_only_with_its_consent(annotation: str | None, accepted: bool) -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b", accepts=annotation)])

    assert created_in(result) == (["team-b"] if accepted else [])
    assert states(result) == {"team-b": "Shared" if accepted else "NotAccepted"}
    assert result.shared_with == (["team-b"] if accepted else [])


def test_a_namespace_without_consent_is_told_how_to_accept() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b", accepts=None)])

    (entry,) = result.share_statuses["openai-share"]["namespaces"]
    assert "credbridge.io/accept-shares-from=team-a" in entry["message"]


def test_withdrawn_consent_deletes_the_mirror() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b", accepts="team-c")], [existing_mirror("team-b")])

    assert result.delete == [("team-b", MIRROR)]
    assert result.create == []
    assert result.shared_with == []


# Targets


def test_explicit_namespaces_each_get_one_mirror() -> None:
    result = plan([share(to=["team-b", "team-c"])], [namespace("team-b"), namespace("team-c"), namespace("team-d")])

    assert created_in(result) == ["team-b", "team-c"]
    assert result.shared_with == ["team-b", "team-c"]
    assert result.update == []
    assert result.delete == []


def test_a_selector_shares_with_every_matching_namespace_and_adds_explicit_ones() -> None:
    namespaces = [
        namespace("ml-1", labels={"workspace": "ml"}),
        namespace("ml-2", labels={"workspace": "ml", "tier": "prod"}),
        namespace("web", labels={"workspace": "web"}),
        namespace("team-b"),
    ]

    result = plan([share(to=["team-b"], selector={"matchLabels": {"workspace": "ml"}})], namespaces)

    assert created_in(result) == ["ml-1", "ml-2", "team-b"]


LABELLED = [
    namespace("prod", labels={"env": "prod", "pci": "yes"}),
    namespace("staging", labels={"env": "staging"}),
    namespace("unlabelled"),
]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param({"key": "env", "operator": "In", "values": ["prod", "staging"]}, ["prod", "staging"], id="In"),
        pytest.param({"key": "env", "operator": "In", "values": ["dev"]}, [], id="In-no-match"),
        pytest.param(
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            ["staging", "unlabelled"],
            id="NotIn-absent-matches",
        ),
        pytest.param({"key": "pci", "operator": "Exists"}, ["prod"], id="Exists"),
        pytest.param({"key": "pci", "operator": "DoesNotExist"}, ["staging", "unlabelled"], id="DoesNotExist"),
    ],
)
def test_match_expressions_select_namespaces_with_kubernetes_semantics(expression: Json, expected: list[str]) -> None:
    result = plan([share(selector={"matchExpressions": [expression]})], LABELLED)

    assert created_in(result) == expected


def test_match_labels_and_match_expressions_are_anded() -> None:
    selector = {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "pci", "operator": "DoesNotExist"}],
    }

    result = plan([share(selector=selector)], LABELLED)

    assert created_in(result) == []


def test_a_missing_target_namespace_fails_that_target_only() -> None:
    result = plan([share(to=["team-b", "ghost"])], [namespace("team-b")])

    assert created_in(result) == ["team-b"]
    assert states(result) == {"ghost": "Failed", "team-b": "Shared"}
    status = result.share_statuses["openai-share"]
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "Failed")
    assert "ghost" in ready(status)["message"]
    assert "does not exist" in ready(status)["message"]


def test_a_terminating_namespace_fails_and_gets_no_mirror() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b", terminating=True)])

    assert result.create == []
    assert states(result) == {"team-b": "Failed"}
    assert result.shared_with == []


def test_the_source_namespace_itself_is_a_failed_target() -> None:
    result = plan([share(to=["team-a"])], [namespace("team-a", accepts="*")])

    assert result.create == []
    (entry,) = result.share_statuses["openai-share"]["namespaces"]
    assert entry["state"] == "Failed"
    assert "source namespace" in entry["message"]


def test_a_selector_that_also_matches_the_source_namespace_skips_it() -> None:
    result = plan(
        [share(selector={"matchLabels": {"tier": "llm"}})],
        [namespace("team-a", labels={"tier": "llm"}), namespace("team-b", labels={"tier": "llm"})],
    )

    assert states(result) == {"team-b": "Shared"}
    assert result.share_statuses["openai-share"]["conditions"][0]["status"] == "True"


# Several shares of one source


def test_two_shares_naming_the_same_namespace_make_one_mirror() -> None:
    result = plan([share("first", to=["team-b"]), share("second", to=["team-b"])], [namespace("team-b")])

    assert created_in(result) == ["team-b"]
    assert states(result, "first") == {"team-b": "Shared"}
    assert states(result, "second") == {"team-b": "Shared"}


def test_deleting_one_of_two_shares_keeps_the_mirror_the_other_wants() -> None:
    result = plan([share("second", to=["team-b"])], [namespace("team-b")], [existing_mirror("team-b")])

    assert result.create == []
    assert result.update == []
    assert result.delete == []
    assert result.shared_with == ["team-b"]
    assert set(result.share_statuses) == {"second"}


def test_mirrors_no_share_wants_any_more_are_deleted() -> None:
    mirrors = [existing_mirror("team-b"), existing_mirror("team-c")]

    result = plan([share(to=["team-b"])], [namespace("team-b"), namespace("team-c")], mirrors)

    assert result.delete == [("team-c", MIRROR)]
    assert result.create == []


def test_with_no_shares_left_every_mirror_is_deleted() -> None:
    result = plan([], [namespace("team-b")], [existing_mirror("team-b")])

    assert result.delete == [("team-b", MIRROR)]
    assert result.share_statuses == {}
    assert result.shared_with == []


# Source gone


@pytest.mark.parametrize(
    "deleted_source",
    [
        pytest.param(None, id="absent"),
        pytest.param(
            {**source(), "metadata": {**source()["metadata"], "deletionTimestamp": "now"}}, id="being-deleted"
        ),
    ],
)
def test_a_missing_source_fails_every_target_and_deletes_every_mirror(deleted_source: Json | None) -> None:
    result = plan_views(
        deleted_source,
        [share(to=["team-b", "team-c"])],
        [namespace("team-b"), namespace("team-c")],
        [existing_mirror("team-b"), existing_mirror("team-c")],
    )

    assert result.create == []
    assert result.update == []
    assert result.delete == [("team-b", MIRROR), ("team-c", MIRROR)]
    assert result.shared_with == []
    assert states(result) == {"team-b": "Failed", "team-c": "Failed"}
    status = result.share_statuses["openai-share"]
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "SourceNotFound")
    assert (status["sharedCount"], status["pendingCount"]) == (0, 0)


# Drift


def test_a_mirror_whose_spec_drifted_is_updated_back() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b")], [existing_mirror("team-b", displayName="Hacked")])

    assert result.update == [("team-b", MIRROR, sharing.mirror_spec(views.CredentialView.from_object(source())))]
    assert result.update[0][2]["displayName"] == "Production OpenAI"
    assert result.create == []
    assert result.delete == []


def test_a_renamed_source_display_name_reaches_its_mirrors() -> None:
    result = plan(
        [share(to=["team-b"])], [namespace("team-b")], [existing_mirror("team-b")], source(displayName="Renamed")
    )

    assert [(target, name, spec["displayName"]) for target, name, spec in result.update] == [
        ("team-b", MIRROR, "Renamed")
    ]


def test_a_mirror_in_line_with_its_source_plans_no_write() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b")], [existing_mirror("team-b")])

    assert (result.create, result.update, result.delete) == ([], [], [])


# Status


def test_share_status_counts_shared_and_pending_targets() -> None:
    namespaces = [namespace("team-b"), namespace("team-c"), namespace("team-d", accepts=None)]

    result = plan([share(to=["team-b", "team-c", "team-d"])], namespaces)

    status = result.share_statuses["openai-share"]
    assert (status["sharedCount"], status["pendingCount"]) == (2, 1)
    assert (ready(status)["status"], ready(status)["reason"]) == ("True", "Pending")


def test_a_share_with_every_target_accepted_is_ready_shared() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b")])

    status = result.share_statuses["openai-share"]
    assert (status["sharedCount"], status["pendingCount"]) == (1, 0)
    assert (ready(status)["status"], ready(status)["reason"]) == ("True", "Shared")
    assert status["namespaces"] == [
        {"name": "team-b", "state": "Shared", "message": f"mirrored as Credential {MIRROR}"}
    ]


def test_a_failed_target_outranks_pending_ones() -> None:
    result = plan([share(to=["team-b", "ghost"])], [namespace("team-b", accepts=None)])

    status = result.share_statuses["openai-share"]
    assert (status["sharedCount"], status["pendingCount"]) == (0, 1)
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "Failed")


def test_mark_failed_turns_shared_targets_that_could_not_be_written_to_failed() -> None:
    result = plan([share(to=["team-b", "team-c", "team-d"])], [namespace(n) for n in ("team-b", "team-c")])
    before = copy.deepcopy(result.share_statuses)

    statuses = sharing.mark_failed(
        result.share_statuses, {"team-b": "a Credential named team-a.production-openai already exists there"}
    )

    assert result.share_statuses == before
    status = statuses["openai-share"]
    assert {e["name"]: e["state"] for e in status["namespaces"]} == {
        "team-b": "Failed",
        "team-c": "Shared",
        "team-d": "Failed",
    }
    (team_b,) = [e for e in status["namespaces"] if e["name"] == "team-b"]
    assert "already exists" in team_b["message"]
    assert status["sharedCount"] == 1
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "Failed")


def test_mark_failed_leaves_targets_that_were_not_shared_as_they_were() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b", accepts=None)])

    statuses = sharing.mark_failed(result.share_statuses, {"team-b": "write refused"})

    assert statuses == result.share_statuses


def test_mark_failed_with_nothing_failed_changes_nothing() -> None:
    result = plan([share(to=["team-b"])], [namespace("team-b")])

    assert sharing.mark_failed(result.share_statuses, {}) == result.share_statuses


# The mirror object


def test_a_mirror_carries_no_data_only_where_it_comes_from() -> None:
    mirror = sharing.mirror_object(
        views.CredentialView.from_object(source(id="6f1c-stable", valueFrom={"x": {}})), "team-b"
    )

    assert mirror["apiVersion"] == "credbridge.io/v1alpha1"
    assert mirror["kind"] == "Credential"
    assert mirror["metadata"]["name"] == MIRROR
    assert mirror["metadata"]["namespace"] == "team-b"
    assert mirror["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "credbridge",
        "credbridge.io/shared-from": MIRROR,
    }
    assert mirror["spec"] == {
        "type": "openAIApi",
        "displayName": "Production OpenAI",
        "id": "6f1c-stable",
        "sharedFrom": {"namespace": "team-a", "name": "production-openai"},
    }


def test_a_mirror_defaults_its_id_to_the_source_uid_and_its_display_name_to_the_source_name() -> None:
    bare = source()
    del bare["spec"]["displayName"]

    spec = sharing.mirror_object(views.CredentialView.from_object(bare), "team-b")["spec"]

    assert spec["id"] == "uid-source"
    assert spec["displayName"] == "production-openai"
