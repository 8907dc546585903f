"""Admission decisions: what the webhook answers to writes of Credentials and managed Secrets."""

from __future__ import annotations

import typing

import pytest

from credbridge.core import admission, names, registry

Json = dict[str, typing.Any]

OPERATOR = "system:serviceaccount:credbridge:credbridge"
USER = "alice@example.com"
TYPES = registry.Registry.builtin()
CANARY = "sk-canary-literal-3f9d"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"


def credential(
    *,
    namespace: str = "team-a",
    name: str = "production-openai",
    data: Json | None = None,
    type_name: str = "openAIApi",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: typing.Any,
) -> Json:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": {
            "type": type_name,
            "data": {"openAIApiKey": "<<CRED_OPENAI_API_KEY>>"} if data is None else data,
            **spec,
        },
    }


def mirror(**changes: typing.Any) -> Json:
    return credential(
        namespace="team-b",
        name="team-a.production-openai",
        data={},
        sharedFrom={"namespace": "team-a", "name": "production-openai"},
        labels={names.SHARED_FROM_LABEL: "team-a.production-openai"},
        **changes,
    )


def label_only_mirror() -> Json:
    return credential(namespace="team-b", name="sneaky", labels={names.SHARED_FROM_LABEL: "team-a.production-openai"})


def review(
    operation: str,
    new: Json | None,
    old: Json | None = None,
    *,
    username: str = USER,
    literal_secrets: str = "warn",
    pods: typing.Sequence[str] = (),
) -> admission.Decision:
    return admission.review_credential(
        operation,
        new,
        old,
        username=username,
        operator_username=OPERATOR,
        types=TYPES,
        literal_secrets=literal_secrets,
        pods_using_secret=pods,
    )


def writes_of(obj: Json) -> list[tuple[str, Json | None, Json | None]]:
    """CREATE, UPDATE and DELETE of `obj`, as (operation, new, old)."""
    return [("CREATE", obj, None), ("UPDATE", obj, obj), ("DELETE", None, obj)]


# The operator


@pytest.mark.parametrize(
    ("operation", "new", "old"),
    [
        *writes_of(mirror()),
        ("CREATE", credential(type_name="noSuchType"), None),
        ("CREATE", credential(data={"openAIApiKey": CANARY}), None),
    ],
)
def test_the_operator_is_always_allowed(operation: str, new: Json | None, old: Json | None) -> None:
    decision = review(operation, new, old, username=OPERATOR, literal_secrets="deny", pods=["web-1"])

    assert decision == admission.Decision(True)


def test_the_operator_may_delete_a_credential_in_use() -> None:
    assert review("DELETE", None, credential(), username=OPERATOR, pods=["web-1"]).allowed


# Mirrors are read-only


@pytest.mark.parametrize(("operation", "new", "old"), writes_of(mirror()))
def test_a_user_cannot_write_a_mirror_and_is_sent_to_the_owner_namespace(
    operation: str, new: Json | None, old: Json | None
) -> None:
    decision = review(operation, new, old)

    assert not decision.allowed
    assert "team-a/production-openai" in decision.message
    assert "namespace team-a" in decision.message


def test_a_change_to_a_mirror_says_it_is_read_only() -> None:
    decision = review("UPDATE", mirror(displayName="Mine now"), mirror())

    assert not decision.allowed
    assert "read-only mirror" in decision.message
    assert "cannot change" in decision.message


def test_dropping_shared_from_does_not_turn_a_mirror_into_a_plain_credential() -> None:
    plain = credential(namespace="team-b", name="team-a.production-openai")

    decision = review("UPDATE", plain, mirror())

    assert not decision.allowed


@pytest.mark.parametrize("username", sorted(admission.SYSTEM_CONTROLLERS))
def test_system_controllers_may_delete_mirrors(username: str) -> None:
    assert review("DELETE", None, mirror(), username=username).allowed


@pytest.mark.parametrize("username", [GC, NAMESPACE_CONTROLLER])
def test_system_controllers_may_not_create_or_change_mirrors(username: str) -> None:
    assert not review("CREATE", mirror(), None, username=username).allowed
    assert not review("UPDATE", mirror(displayName="x"), mirror(), username=username).allowed


@pytest.mark.parametrize(("operation", "new", "old"), writes_of(label_only_mirror()))
def test_a_credential_claiming_to_be_a_mirror_by_label_only_is_treated_as_one(
    operation: str, new: Json | None, old: Json | None
) -> None:
    decision = review(operation, new, old)

    assert not decision.allowed
    assert "team-a/production-openai" in decision.message


def test_refusing_a_label_only_mirror_claim_names_the_label() -> None:
    decision = review("CREATE", label_only_mirror())

    assert not decision.allowed
    assert names.SHARED_FROM_LABEL in decision.message


def test_adding_the_shared_from_label_to_a_plain_credential_is_refused() -> None:
    plain = credential(namespace="team-b", name="mine")
    labelled = credential(namespace="team-b", name="mine", labels={names.SHARED_FROM_LABEL: "team-a.x"})

    assert not review("UPDATE", labelled, plain).allowed


# Deleting a Credential in use


def test_deleting_a_credential_in_use_is_refused_naming_the_pods() -> None:
    decision = review("DELETE", None, credential(), pods=["web-2", "web-1"])

    assert not decision.allowed
    assert "Pod(s) web-1, web-2;" in decision.message
    assert "more" not in decision.message
    assert 'credbridge.io/allow-delete-in-use="true"' in decision.message


def test_deleting_a_credential_used_by_many_pods_names_ten_and_counts_the_rest() -> None:
    pods = [f"web-{index:02d}" for index in range(12)]

    decision = review("DELETE", None, credential(), pods=pods)

    assert not decision.allowed
    assert ", ".join(pods[:10]) + " and 2 more;" in decision.message
    assert "web-10" not in decision.message


def test_exactly_ten_pods_are_all_named() -> None:
    pods = [f"web-{index}" for index in range(10)]

    decision = review("DELETE", None, credential(), pods=pods)

    assert "more" not in decision.message
    assert all(pod in decision.message for pod in pods)


def test_the_allow_delete_in_use_annotation_lets_a_credential_in_use_go() -> None:
    annotated = credential(annotations={names.ALLOW_DELETE_IN_USE_ANNOTATION: "true"})

    assert review("DELETE", None, annotated, pods=["web-1"]).allowed


@pytest.mark.parametrize("value", ["false", "yes", "True", ""])
def test_only_the_exact_annotation_value_true_overrides_the_in_use_check(value: str) -> None:
    annotated = credential(annotations={names.ALLOW_DELETE_IN_USE_ANNOTATION: value})

    assert not review("DELETE", None, annotated, pods=["web-1"]).allowed


def test_deleting_an_unused_credential_is_allowed_even_if_it_is_invalid() -> None:
    assert review("DELETE", None, credential(type_name="noSuchType")).allowed


# Validation


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
@pytest.mark.parametrize(
    ("obj", "named"),
    [
        pytest.param(credential(type_name="noSuchType"), "'noSuchType'", id="unknown-type"),
        pytest.param(credential(data={}), "'openAIApiKey' is required", id="missing-required-field"),
        pytest.param(credential(data={"openAIApiKey": "<<CRED_A>>", "bogus": "x"}), "'bogus'", id="unknown-field"),
        pytest.param(
            credential(type_name="PostgresUrl", data={"postgresUrl": CANARY}), "'postgresUrl'", id="bad-url-format"
        ),
    ],
)
def test_an_invalid_credential_is_refused_naming_the_problem_not_the_value(
    operation: str, obj: Json, named: str
) -> None:
    # An UPDATE that changes a valid spec into this one (a metadata-only update is not re-judged).
    decision = review(operation, obj, credential() if operation == "UPDATE" else None, literal_secrets="allow")

    assert not decision.allowed
    assert decision.message.startswith("Credential team-a/production-openai: ")
    assert named in decision.message
    assert CANARY not in decision.message


def test_a_valid_credential_with_references_is_allowed_without_warnings() -> None:
    for mode in admission.LITERAL_SECRET_MODES:
        assert review("CREATE", credential(), literal_secrets=mode) == admission.Decision(True)


# Literal secrets


def literal() -> Json:
    return credential(data={"openAIApiKey": CANARY})


def test_a_literal_password_is_allowed_with_a_warning_by_default() -> None:
    decision = review("CREATE", literal(), literal_secrets="warn")

    assert decision.allowed
    (warning,) = decision.warnings
    assert "openAIApiKey" in warning
    assert "<<CRED_...>>" in warning
    assert CANARY not in warning


def test_a_literal_password_is_refused_in_deny_mode() -> None:
    decision = review("UPDATE", literal(), credential(), literal_secrets="deny")

    assert not decision.allowed
    assert "openAIApiKey" in decision.message
    assert CANARY not in decision.message


def test_a_literal_password_passes_silently_in_allow_mode() -> None:
    assert review("CREATE", literal(), literal_secrets="allow") == admission.Decision(True)


def test_an_escaped_reference_is_a_literal_secret() -> None:
    escaped = credential(data={"openAIApiKey": "\\<<CRED_OPENAI_API_KEY>>"})

    assert not review("CREATE", escaped, literal_secrets="deny").allowed


def test_an_empty_optional_password_is_not_a_literal_secret() -> None:
    no_password = credential(type_name="openSearchUrl", data={"openSearchUrl": "https://search:9200", "password": ""})

    assert review("CREATE", no_password, literal_secrets="deny") == admission.Decision(True)


def test_a_literal_in_a_non_password_field_is_no_literal_secret() -> None:
    pg = credential(type_name="PostgresApi", data={"user": "app", "password": "<<CRED_PG_PASSWORD>>"})

    assert review("CREATE", pg, literal_secrets="deny") == admission.Decision(True)


# Managed Secrets


def managed_secret(labels: dict[str, str]) -> Json:
    return {"metadata": {"namespace": "team-b", "name": "team-a.production-openai", "labels": labels}}


MIRROR_SECRET = managed_secret(
    {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.SHARED_FROM_LABEL: "team-a.production-openai"}
)
SOURCE_SECRET = managed_secret({names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.CREDENTIAL_LABEL: "x"})


def review_secret(operation: str, obj: Json, username: str = USER) -> admission.Decision:
    new, old = (None, obj) if operation == "DELETE" else (obj, obj)
    return admission.review_managed_secret(operation, new, old, username=username, operator_username=OPERATOR)


@pytest.mark.parametrize(("operation", "verb"), [("UPDATE", "change"), ("DELETE", "delete")])
def test_a_user_cannot_touch_a_mirror_secret(operation: str, verb: str) -> None:
    decision = review_secret(operation, MIRROR_SECRET)

    assert not decision.allowed
    assert f"cannot {verb} it" in decision.message
    assert "Secret team-b/team-a.production-openai" in decision.message
    assert "owned by namespace team-a" in decision.message


@pytest.mark.parametrize("username", [OPERATOR, *sorted(admission.SYSTEM_CONTROLLERS)])
@pytest.mark.parametrize("operation", ["UPDATE", "DELETE"])
def test_the_operator_and_system_controllers_may_touch_a_mirror_secret(operation: str, username: str) -> None:
    assert review_secret(operation, MIRROR_SECRET, username).allowed


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE"])
def test_a_source_credentials_secret_is_left_to_its_namespace(operation: str) -> None:
    assert review_secret(operation, SOURCE_SECRET).allowed


def test_removing_the_shared_from_label_from_a_mirror_secret_is_refused() -> None:
    decision = admission.review_managed_secret(
        "UPDATE", SOURCE_SECRET, MIRROR_SECRET, username=USER, operator_username=OPERATOR
    )

    assert not decision.allowed


# Which Pods use a Secret


def pod(name: str, spec: Json, *, deleting: bool = False) -> Json:
    metadata: Json = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    return {"metadata": metadata, "spec": spec}


def env_ref(secret: str) -> Json:
    return {"name": "c", "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"containers": [env_ref("creds")]}, id="env-secretKeyRef"),
        pytest.param({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "creds"}}]}]}, id="envFrom"),
        pytest.param({"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "creds"}}]}, id="volume"),
        pytest.param(
            {
                "volumes": [
                    {
                        "name": "v",
                        "projected": {"sources": [{"configMap": {"name": "x"}}, {"secret": {"name": "creds"}}]},
                    }
                ]
            },
            id="projected-volume",
        ),
        pytest.param({"containers": [{"name": "app"}], "initContainers": [env_ref("creds")]}, id="init-container"),
        pytest.param({"containers": [{"name": "app"}], "ephemeralContainers": [env_ref("creds")]}, id="ephemeral"),
        pytest.param(
            {
                "containers": [
                    {"name": "a"},
                    {"name": "b", "envFrom": [{"configMapRef": {"name": "x"}}, {"secretRef": {"name": "creds"}}]},
                ]
            },
            id="second-container-second-source",
        ),
    ],
)
def test_a_pod_referencing_the_secret_is_found(spec: Json) -> None:
    assert admission.pods_using_secret([pod("web-1", spec)], "creds") == ["web-1"]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"containers": [env_ref("other")]}, id="env-of-another-secret"),
        pytest.param({"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "creds"}}]}]}, id="configmap"),
        pytest.param({"volumes": [{"name": "v", "configMap": {"name": "creds"}}]}, id="configmap-volume"),
        pytest.param(
            {"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "other"}}]}}]},
            id="other-projected",
        ),
        pytest.param({}, id="empty-spec"),
    ],
)
def test_a_pod_not_referencing_the_secret_is_not_found(spec: Json) -> None:
    assert admission.pods_using_secret([pod("web-1", spec)], "creds") == []


def test_pods_being_deleted_do_not_count() -> None:
    pods = [
        pod("leaving", {"containers": [env_ref("creds")]}, deleting=True),
        pod("staying", {"containers": [env_ref("creds")]}),
        pod("unrelated", {"containers": [env_ref("other")]}),
    ]

    assert admission.pods_using_secret(pods, "creds") == ["staying"]


def test_a_metadata_only_update_of_an_invalid_credential_is_allowed() -> None:
    invalid = credential(type_name="openAIApi", data={"unknownField": "x"})
    annotated = credential(
        type_name="openAIApi", data={"unknownField": "x"}, annotations={names.ALLOW_DELETE_IN_USE_ANNOTATION: "true"}
    )

    assert not review("CREATE", invalid).allowed
    assert review("UPDATE", annotated, invalid).allowed


# Deleting a Credential that CredentialBindings render


def test_deleting_a_credential_used_by_bindings_is_refused_naming_them() -> None:
    decision = admission.review_credential(
        "DELETE",
        None,
        credential(),
        username=USER,
        operator_username=OPERATOR,
        types=TYPES,
        literal_secrets="warn",
        bindings_using=["chat-api", "batch"],
    )
    assert not decision.allowed
    assert "CredentialBinding(s) batch, chat-api" in decision.message
    assert names.ALLOW_DELETE_IN_USE_ANNOTATION in decision.message


def test_an_annotated_credential_may_be_deleted_while_bound() -> None:
    annotated = credential(annotations={names.ALLOW_DELETE_IN_USE_ANNOTATION: "true"})
    decision = admission.review_credential(
        "DELETE",
        None,
        annotated,
        username=USER,
        operator_username=OPERATOR,
        types=TYPES,
        literal_secrets="warn",
        bindings_using=["chat-api"],
    )
    assert decision.allowed


# CredentialBindings


def binding_object(**spec: typing.Any) -> Json:
    return {
        "metadata": {"namespace": "team-a", "name": "chat-api"},
        "spec": {"credential": "production-openai", "secret": {"name": "chat-api"}, **spec},
    }


def review_binding(new: Json, *, cred: Json | None = None, secrets: str = "allow", old: Json | None = None):  # type: ignore[no-untyped-def]
    return admission.review_binding(
        "UPDATE" if old else "CREATE",
        new,
        old,
        credential=credential() if cred is None else cred,
        types=TYPES,
        binding_secrets=secrets,
    )


def test_a_binding_naming_known_fields_is_allowed() -> None:
    decision = review_binding(binding_object(template={"OPENAI_API_KEY": "${openAIApiKey}"}))
    assert decision.allowed and decision.warnings == ()


def test_a_binding_naming_unknown_fields_is_refused_with_the_fields_of_the_type() -> None:
    decision = review_binding(binding_object(template={"OPENAI_API_KEY": "${apiKey}"}))
    assert not decision.allowed
    assert "'apiKey'" in decision.message and "openAIApiKey" in decision.message
    assert "CredentialBinding team-a/chat-api" in decision.message


def test_a_binding_with_bad_syntax_or_keys_is_refused_naming_key_and_position() -> None:
    decision = review_binding(binding_object(template={"OPENAI API KEY": "x", "URL": "https://${host"}))
    assert not decision.allowed
    assert "'OPENAI API KEY' is not a valid Secret key" in decision.message
    assert "spec.template.URL, character 9" in decision.message


def test_a_binding_to_another_namespace_is_refused() -> None:
    decision = review_binding({**binding_object(), "spec": {"credential": "team-b/production-openai"}})
    assert not decision.allowed
    assert "another namespace" in decision.message


def test_a_binding_with_an_unsupported_rollout_kind_is_refused() -> None:
    decision = review_binding(binding_object(rollout=[{"kind": "CronJob", "name": "nightly"}]))
    assert not decision.allowed
    assert "'CronJob' is not supported" in decision.message


def test_a_binding_to_a_credential_that_does_not_exist_yet_is_allowed_with_a_warning() -> None:
    decision = admission.review_binding(
        "CREATE", binding_object(), None, credential=None, types=TYPES, binding_secrets="allow"
    )
    assert decision.allowed
    assert "does not exist" in decision.warnings[0]


def test_plain_output_denied_by_the_cluster_is_a_warning_at_apply() -> None:
    decision = review_binding(binding_object(), secrets="deny")
    assert decision.allowed
    assert "--binding-secrets=deny" in decision.warnings[0]


def test_a_metadata_only_change_of_a_binding_is_not_judged_again() -> None:
    broken = binding_object(template={"K": "${apiKey}"})
    labelled = {**broken, "metadata": {**broken["metadata"], "labels": {"x": "y"}}}
    assert review_binding(labelled, old=broken).allowed


def test_troubleshooting_lint_warns_without_refusing_and_without_the_value() -> None:
    anthropic_key = "sk-ant-api03-" + CANARY
    decision = review("CREATE", credential(data={"openAIApiKey": anthropic_key + "\n"}), None, literal_secrets="allow")
    assert decision.allowed
    assert len(decision.warnings) == 2
    assert any("line break" in warning for warning in decision.warnings)
    assert any("anthropicApi" in warning for warning in decision.warnings)
    assert not [warning for warning in decision.warnings if CANARY in warning]


def test_an_env_reference_with_a_stray_space_is_a_warning() -> None:
    decision = review("CREATE", credential(data={"openAIApiKey": " <<CRED_OPENAI_API_KEY>>"}), None)
    assert decision.allowed
    assert [warning for warning in decision.warnings if "leading whitespace" in warning]
