"""Decisions of the workload read endpoint, as input → answer: what each caller is told, and that
no refusal reveals whether an object exists or what a value is."""

from __future__ import annotations

import json
import typing

import pytest

from credbridge.core import binding, envrefs, names, redaction, release, reviewcache, views, workload

CHAT = reviewcache.Identity(username="system:serviceaccount:team-b:chat", groups=("system:serviceaccounts",))
GRANTING = release.Policy(
    env=envrefs.EnvPolicy(namespace_rules=(("CRED_TEAM_B_*", ("team-b",)), ("CRED_TEAM_A_*", ("team-a",))))
)
CANARY = "sk-canary-workload-91c2"


def credential(
    name: str = "openai",
    namespace: str = "team-b",
    data: dict[str, str] | None = None,
    *,
    ready: bool = True,
    shared_from: tuple[str, str] | None = None,
) -> views.CredentialView:
    spec: dict[str, typing.Any] = {"type": "openAIApi", "data": data if data is not None else {"openAIApiKey": "x"}}
    if shared_from:
        spec = {"type": "openAIApi", "sharedFrom": {"namespace": shared_from[0], "name": shared_from[1]}}
    return views.CredentialView.from_object(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": spec,
            "status": {
                "keyId": "0a1b2c3d" if ready else None,
                "conditions": [
                    {"type": "Ready", "status": "True" if ready else "False", "reason": "Encrypted" if ready else "X"}
                ],
            },
        }
    )


TARGET = workload.Target("team-b", names.CREDENTIAL_PLURAL, "openai")


# ---- paths and tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/namespaces/team-b/credentials/openai", workload.Target("team-b", "credentials", "openai")),
        ("/v1/namespaces/team-b/credentials/team-a.openai", workload.Target("team-b", "credentials", "team-a.openai")),
        ("/v1/namespaces/team-b/credentialbindings/chat/", workload.Target("team-b", "credentialbindings", "chat")),
    ],
)
def test_read_paths_name_a_credential_or_binding(path: str, expected: workload.Target) -> None:
    assert workload.parse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/namespaces/team-b/secrets/openai",
        "/v1/namespaces/team-b/credentials",
        "/v1/namespaces/Team-B/credentials/openai",
        "/v1/namespaces/team-b/credentials/..",
        "/v1/namespaces/team-b/credentials/a/b",
        "/v2/namespaces/team-b/credentials/openai",
    ],
)
def test_anything_else_is_a_404_saying_which_paths_exist(path: str) -> None:
    answer = workload.parse_path(path)
    assert isinstance(answer, workload.Answer)
    assert answer.status == 404
    assert "/v1/namespaces/NAMESPACE/credentials/NAME" in answer.message


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  tok ", "tok"), (None, None), ("", None), ("Basic xyz", None)],
)
def test_bearer_tokens_are_taken_from_the_authorization_header(header: str | None, token: str | None) -> None:
    assert workload.bearer_token(header) == token


def test_no_token_is_a_401_saying_how_to_get_one() -> None:
    answer = workload.no_token()
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "--audience credbridge.io" in answer.message
    assert workload.TOKEN_PATH in answer.message


# ---- authentication ------------------------------------------------------------------------------


def test_a_refused_token_is_a_401_quoting_the_api_servers_reason() -> None:
    answer = workload.authenticate(reviewcache.TokenReview(authenticated=False, error="token has expired"))
    assert isinstance(answer, workload.Answer)
    assert answer.status == 401 and answer.result == "unauthenticated"
    assert "token has expired" in answer.message


def test_a_token_for_another_audience_is_refused_even_when_authenticated() -> None:
    review = reviewcache.TokenReview(authenticated=True, identity=CHAT, audiences=("https://kubernetes.default.svc",))
    answer = workload.authenticate(review)
    assert isinstance(answer, workload.Answer)
    assert answer.status == 401
    assert "audience credbridge.io" in answer.message and CHAT.username in answer.message


def test_a_token_for_our_audience_yields_the_identity() -> None:
    review = reviewcache.TokenReview(authenticated=True, identity=CHAT, audiences=("credbridge.io",))
    assert workload.authenticate(review) == CHAT


# ---- authorization and existence -----------------------------------------------------------------


def test_forbidden_names_the_identity_the_verb_the_object_and_the_fix() -> None:
    answer = workload.forbidden(CHAT, TARGET)
    assert answer.status == 403
    assert answer.message.startswith(f"{CHAT.username} may not use credentials/openai in namespace team-b")
    assert (
        "a Role in team-b holding the rule {apiGroups: [credbridge.io], resources: [credentials], "
        "resourceNames: [openai], verbs: [use]} and a RoleBinding to system:serviceaccount:team-b:chat"
    ) in answer.message


def test_a_missing_credential_answers_exactly_like_a_missing_permission() -> None:
    missing = workload.release_credential(CHAT, TARGET, TARGET, None, None, GRANTING)
    assert isinstance(missing, workload.Answer)
    assert (missing.status, missing.message, missing.body) == (
        workload.forbidden(CHAT, TARGET).status,
        workload.forbidden(CHAT, TARGET).message,
        workload.forbidden(CHAT, TARGET).body,
    )


def test_a_binding_naming_a_missing_credential_says_so_to_whoever_may_use_the_binding() -> None:
    binding = workload.Target("team-b", names.CREDENTIAL_BINDING_PLURAL, "chat")
    answer = workload.release_credential(CHAT, TARGET, binding, None, None, GRANTING)
    assert isinstance(answer, workload.Answer)
    assert answer.status == 503
    assert "names Credential openai, which does not exist" in answer.message


# ---- what may be released ------------------------------------------------------------------------


def test_a_ready_credential_with_granted_or_no_references_is_released() -> None:
    for data in ({"openAIApiKey": "<<CRED_TEAM_B_OPENAI>>"}, {"openAIApiKey": "literal"}):
        released = workload.release_credential(CHAT, TARGET, TARGET, credential(data=data), None, GRANTING)
        assert isinstance(released, workload.Release)
        assert released.credential.name == "openai"


def test_a_credential_that_is_not_ready_is_a_503_with_retry() -> None:
    answer = workload.release_credential(CHAT, TARGET, TARGET, credential(ready=False), None, GRANTING)
    assert isinstance(answer, workload.Answer)
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    assert "is not Ready (X)" in answer.message


def test_env_values_not_granted_to_the_namespace_are_not_released() -> None:
    stolen = credential(data={"openAIApiKey": "<<CRED_TEAM_A_OPENAI>>"})
    answer = workload.release_credential(CHAT, TARGET, TARGET, stolen, None, GRANTING)
    assert isinstance(answer, workload.Answer)
    assert answer.status == 403 and answer.result == "not_plaintext"
    assert "CRED_TEAM_A_OPENAI" in answer.message and "--env-policy 'CRED_TEAM_A_OPENAI=team-b'" in answer.message


def test_the_allow_list_alone_is_no_grant() -> None:
    no_rules = release.Policy(env=envrefs.EnvPolicy())
    answer = workload.release_credential(
        CHAT, TARGET, TARGET, credential(data={"openAIApiKey": "<<CRED_X>>"}), None, no_rules
    )
    assert isinstance(answer, workload.Answer) and answer.result == "not_plaintext"


def test_a_mirror_is_judged_by_its_source_in_the_source_namespace() -> None:
    mirror = credential("team-a.openai", "team-b", shared_from=("team-a", "openai"))
    target = workload.Target("team-b", names.CREDENTIAL_PLURAL, "team-a.openai")
    granted_source = credential("openai", "team-a", {"openAIApiKey": "<<CRED_TEAM_A_OPENAI>>"})
    released = workload.release_credential(CHAT, target, target, mirror, granted_source, GRANTING)
    assert isinstance(released, workload.Release) and released.credential.name == "team-a.openai"

    ungranted_source = credential("openai", "team-a", {"openAIApiKey": "<<CRED_TEAM_B_OPENAI>>"})
    answer = workload.release_credential(CHAT, target, target, mirror, ungranted_source, GRANTING)
    assert isinstance(answer, workload.Answer) and answer.result == "not_plaintext"
    assert "a mirror of Credential team-a/openai" in answer.message

    gone = workload.release_credential(CHAT, target, target, mirror, None, GRANTING)
    assert isinstance(gone, workload.Answer) and gone.status == 503


# ---- answers -------------------------------------------------------------------------------------


def test_values_go_only_into_the_body_of_a_200_answer_that_is_never_cached() -> None:
    released = workload.release_credential(CHAT, TARGET, TARGET, credential(), None, GRANTING)
    assert isinstance(released, workload.Release)
    answer = workload.values_answer(
        TARGET, redaction.SecretFields({"openAIApiKey": CANARY}), credential=released.credential
    )
    assert answer.status == 200 and answer.result == "ok"
    assert answer.headers["Cache-Control"] == "no-store"
    assert json.loads(answer.body)["data"] == {"openAIApiKey": CANARY}
    assert CANARY not in repr(answer) and CANARY not in answer.message


def test_every_refusal_is_json_with_a_reason_and_the_message_and_no_store() -> None:
    for answer in (
        workload.no_token(),
        workload.forbidden(CHAT, TARGET),
        workload.rate_limited(CHAT, 0.3, 10.0),
        workload.review_unavailable("TokenReview"),
    ):
        document = json.loads(answer.body)
        assert document["message"] == answer.message
        assert document["reason"]
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.result in workload.RESULTS


def test_rate_limited_carries_retry_after() -> None:
    answer = workload.rate_limited(CHAT, 0.3, 10.0)
    assert answer.status == 429 and answer.headers["Retry-After"] == "1"
    assert "10 reads per second" in answer.message


def test_a_binding_names_a_credential_in_its_own_namespace() -> None:
    bound = binding.BindingView.from_object(
        {"metadata": {"name": "chat", "namespace": "team-b"}, "spec": {"credential": "team-a.openai"}}
    )
    assert workload.binding_credential(bound) == workload.Target("team-b", "credentials", "team-a.openai")


def test_a_binding_read_renders_its_template_as_its_secret_would_hold_it() -> None:
    fields = redaction.SecretFields({"user": "app", "password": "p@ss word"})
    templated = binding.BindingView.from_object(
        {
            "metadata": {"name": "db", "namespace": "team-b"},
            "spec": {
                "credential": "pg",
                "template": {"DATABASE_URL": "postgres://${user}:${password|urlencode}@db/app"},
            },
        }
    )
    rendered = workload.render_binding(templated, fields, where="Credential team-b/pg")
    assert dict(rendered) == {"DATABASE_URL": "postgres://app:p%40ss%20word@db/app"}
    plain = binding.BindingView.from_object(
        {"metadata": {"name": "db", "namespace": "team-b"}, "spec": {"credential": "pg"}}
    )
    assert dict(workload.render_binding(plain, fields, where="x")) == {"user": "app", "password": "p@ss word"}
    missing = binding.BindingView.from_object(
        {"metadata": {"name": "db", "namespace": "team-b"}, "spec": {"credential": "pg", "template": {"K": "${nope}"}}}
    )
    with pytest.raises(ValueError, match="nope") as refused:
        workload.render_binding(missing, fields, where="Credential team-b/pg")
    assert "p@ss" not in str(refused.value)
