"""The tenancy rule for plaintext outputs (core.tenancy): env values leave only where granted."""

from __future__ import annotations

from credbridge.core import envrefs, tenancy


def policy(*rules: str, allow: tuple[str, ...] = ("CRED_*",)) -> envrefs.EnvPolicy:
    return envrefs.parse_policy(allow, rules)


def test_a_credential_without_references_may_always_be_released() -> None:
    data = {"apiKey": "literal", "host": "db.example"}
    assert tenancy.plaintext_denial(data, "team-b", policy(), output="a CredentialBinding Secret") is None


def test_the_allow_list_alone_does_not_grant_plaintext_release() -> None:
    data = {"openAIApiKey": "<<CRED_TEAM_A_OPENAI_KEY>>"}
    denial = tenancy.plaintext_denial(data, "team-b", policy(), output="a CredentialBinding Secret")
    assert denial is not None
    assert "CRED_TEAM_A_OPENAI_KEY" in denial
    assert "--env-policy 'CRED_TEAM_A_OPENAI_KEY=team-b'" in denial


def test_a_namespace_rule_grants_release_only_in_its_namespaces() -> None:
    rules = policy("CRED_TEAM_A_*=team-a")
    data = {"openAIApiKey": "<<CRED_TEAM_A_OPENAI_KEY>>"}
    assert tenancy.plaintext_denial(data, "team-a", rules, output="x") is None
    # In team-b the variable is not even resolvable, and certainly not releasable.
    assert tenancy.plaintext_denial(data, "team-b", rules, output="x") is not None


def test_every_referenced_variable_needs_a_grant() -> None:
    rules = policy("CRED_A_*=team-a")
    data = {"url": "postgres://<<CRED_A_USER>>:<<CRED_OTHER_PASSWORD>>@db/app"}
    denial = tenancy.plaintext_denial(data, "team-a", rules, output="x")
    assert denial is not None
    assert "CRED_OTHER_PASSWORD" in denial
    assert "CRED_A_USER" not in denial


def test_escaped_references_are_literals_and_need_no_grant() -> None:
    data = {"note": "\\<<CRED_NOT_A_REFERENCE>>"}
    assert tenancy.plaintext_denial(data, "team-b", policy(), output="x") is None


def test_a_reserved_variable_is_never_granted_even_by_a_matching_rule() -> None:
    rules = envrefs.EnvPolicy(
        allow=("*",), namespace_rules=(("*", ("team-a",)),), reserved_names=frozenset({"KUBECONFIG"})
    )
    assert not rules.grants_explicitly("KUBECONFIG", "team-a")
    assert rules.grants_explicitly("CRED_X", "team-a")
    assert not rules.grants_explicitly("CREDBRIDGE_SETTING", "team-a")
