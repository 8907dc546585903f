"""The release rule (core.release): whether a Credential's plaintext may leave to an output, fail closed.

Every consumer asks this rule before it opens a managed Secret; these tests state the rule once,
for every kind of output a consumer produces.
"""

from __future__ import annotations

import typing

import pytest

from credbridge.core import envrefs, release, views

OUTPUTS = {
    "binding Secret": release.binding_secret("team-b"),
    "workload read": release.workload_read("team-b"),
    "Flowise": release.external("Flowise", "team-b"),
    "verification probe": release.external("a verification probe", "team-b"),
}
"""One output per consumer kind: plain Secrets in the cluster, reads over TLS, pushes and probes."""


def policy(*rules: str, allow: tuple[str, ...] = ("CRED_*",), plain_secrets: bool = True) -> release.Policy:
    return release.Policy(env=envrefs.parse_policy(allow, rules), plain_secrets=plain_secrets)


def credential(
    name: str = "openai",
    namespace: str = "team-b",
    data: dict[str, str] | None = None,
    shared_from: tuple[str, str] | None = None,
) -> views.CredentialView:
    spec: dict[str, typing.Any] = {"type": "openAIApi", "data": data or {}}
    if shared_from is not None:
        spec["sharedFrom"] = {"namespace": shared_from[0], "name": shared_from[1]}
    return views.CredentialView.from_object({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


def share(name: str, allow: bool | None, namespaces: list[str]) -> views.ShareView:
    spec: dict[str, typing.Any] = {"credential": "openai", "namespaces": namespaces}
    if allow is not None:
        spec["allowPlaintextBindings"] = allow
    return views.ShareView.from_object({"metadata": {"name": name, "namespace": "team-a"}, "spec": spec})


TEAM_B = views.NamespaceView.from_object({"metadata": {"name": "team-b", "labels": {}}})
MIRROR = credential("team-a.openai", "team-b", shared_from=("team-a", "openai"))


@pytest.mark.parametrize("output", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_a_mirror_whose_source_cannot_be_seen_releases_nothing(output: release.Output) -> None:
    denial = release.denial(release.Facts(credential=MIRROR, source=None), output, policy("CRED_*=*"))
    assert denial is not None and denial.reason == release.SOURCE_NOT_VISIBLE
    assert "team-a/openai" in denial.message and "cannot see" in denial.message


@pytest.mark.parametrize("output", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_a_source_that_is_not_the_mirrors_or_is_being_deleted_counts_as_invisible(output: release.Output) -> None:
    other = credential("other", "team-a")
    deleting = views.CredentialView.from_object(
        {"metadata": {"name": "openai", "namespace": "team-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    )
    for source in (other, deleting):
        denial = release.denial(release.Facts(credential=MIRROR, source=source), output, policy("CRED_*=*"))
        assert denial is not None and denial.reason == release.SOURCE_NOT_VISIBLE


@pytest.mark.parametrize("output", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_a_mirror_is_judged_by_its_source_data_in_the_source_namespace(output: release.Output) -> None:
    source = credential("openai", "team-a", {"openAIApiKey": "<<CRED_TEAM_A_KEY>>"})
    shares = [share("to-b", True, ["team-b"])]
    facts = release.Facts(credential=MIRROR, source=source, shares=shares, consumer_namespace=TEAM_B)
    assert release.denial(facts, output, policy("CRED_TEAM_A_*=team-a")) is None
    # Granted to the mirror's namespace only: the values were resolved in team-a, so no.
    denial = release.denial(facts, output, policy("CRED_TEAM_A_*=team-b"))
    assert denial is not None and denial.reason == release.ENV_NOT_GRANTED
    assert "a mirror of Credential team-a/openai" in denial.message


@pytest.mark.parametrize("output", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_the_allow_list_alone_does_not_grant_plaintext_release(output: release.Output) -> None:
    stolen = credential(data={"openAIApiKey": "<<CRED_TEAM_A_OPENAI_KEY>>"})
    denial = release.denial(release.Facts(credential=stolen), output, policy())
    assert denial is not None and denial.reason == release.ENV_NOT_GRANTED
    assert "CRED_TEAM_A_OPENAI_KEY" in denial.message
    assert "--env-policy 'CRED_TEAM_A_OPENAI_KEY=team-b'" in denial.message


def test_a_credential_without_references_may_always_be_released() -> None:
    data = {"apiKey": "literal", "host": "db.example"}
    for output in OUTPUTS.values():
        assert release.denial(release.Facts(credential=credential(data=data)), output, policy()) is None


def test_the_cluster_switch_and_share_consent_govern_plain_secrets_only() -> None:
    plain = credential(data={"openAIApiKey": "literal"})
    off = policy(plain_secrets=False)
    denial = release.denial(release.Facts(credential=plain), OUTPUTS["binding Secret"], off)
    assert denial is not None and denial.reason == release.PLAINTEXT_DENIED
    assert "--binding-secrets=deny" in denial.message
    assert release.denial(release.Facts(credential=plain), OUTPUTS["workload read"], off) is None

    source = credential("openai", "team-a", {"openAIApiKey": "literal"})
    unconsented = release.Facts(MIRROR, source, [share("to-b", None, ["team-b"])], TEAM_B)
    denial = release.denial(unconsented, OUTPUTS["binding Secret"], policy())
    assert denial is not None and denial.reason == release.SHARE_FORBIDS_BINDING
    assert "to-b" in denial.message and "allowPlaintextBindings" in denial.message
    assert release.denial(unconsented, OUTPUTS["Flowise"], policy()) is None


def test_a_share_must_allow_plain_bindings_of_its_mirrors_in_that_namespace() -> None:
    assert release.share_denial("team-b", MIRROR, [share("to-b", True, ["team-b"])], TEAM_B) is None
    # A share that allows it but covers another namespace does not count.
    assert release.share_denial("team-b", MIRROR, [share("to-c", True, ["team-c"])], TEAM_B) is not None


def test_a_namespace_rule_grants_release_only_in_its_namespaces() -> None:
    rules = policy("CRED_TEAM_A_*=team-a").env
    data = {"openAIApiKey": "<<CRED_TEAM_A_OPENAI_KEY>>"}
    assert release.env_denial(data, "team-a", rules, output="x") is None
    assert release.env_denial(data, "team-b", rules, output="x") is not None


def test_every_referenced_variable_needs_a_grant() -> None:
    rules = policy("CRED_A_*=team-a").env
    data = {"url": "postgres://<<CRED_A_USER>>:<<CRED_OTHER_PASSWORD>>@db/app"}
    denial = release.env_denial(data, "team-a", rules, output="x")
    assert denial is not None
    assert "CRED_OTHER_PASSWORD" in denial
    assert "CRED_A_USER" not in denial


def test_escaped_references_are_literals_and_need_no_grant() -> None:
    data = {"note": "\\<<CRED_NOT_A_REFERENCE>>"}
    assert release.env_denial(data, "team-b", policy().env, output="x") is None


def test_a_reserved_variable_is_never_granted_even_by_a_matching_rule() -> None:
    rules = envrefs.EnvPolicy(
        allow=("*",), namespace_rules=(("*", ("team-a",)),), reserved_names=frozenset({"KUBECONFIG"})
    )
    assert not rules.grants_explicitly("KUBECONFIG", "team-a")
    assert rules.grants_explicitly("CRED_X", "team-a")
    assert not rules.grants_explicitly("CREDBRIDGE_SETTING", "team-a")
