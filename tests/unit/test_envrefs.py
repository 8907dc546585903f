"""`<<NAME>>` references: syntax, escaping, the env policy and resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import envrefs, names

POLICY = envrefs.EnvPolicy()
NO_ENV: dict[str, str] = {}

variable_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
allowed_names = st.from_regex(r"CRED_[A-Za-z0-9_]{1,12}", fullmatch=True)
# Text rich in the characters the syntax cares about.
tricky_text = st.text(alphabet=st.sampled_from(["<", ">", "\\", "A", "_", "1", " ", "é", "$", "{"]), max_size=30)
any_text = st.one_of(tricky_text, st.text(max_size=30))


def resolve(value: str, env: dict[str, str], policy: envrefs.EnvPolicy = POLICY) -> str:
    resolved, problems = envrefs.resolve_value(value, env.get, policy, "team-a", "field")
    assert problems == []
    return resolved


# Syntax


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<<CRED_A>>", ("CRED_A",)),
        ("postgres://app:<<CRED_PG_PASSWORD>>@db:5432/<<CRED_DB>>", ("CRED_PG_PASSWORD", "CRED_DB")),
        ("<<CRED_A>>-<<CRED_B>>-<<CRED_A>>", ("CRED_A", "CRED_B")),
        ("<<_x1>>", ("_x1",)),
        ("<<<CRED_A>>", ("CRED_A",)),
        ("\\<<CRED_A>>", ()),
        ("\\\\<<CRED_A>>", ("CRED_A",)),
        ("\\\\\\<<CRED_A>>", ()),
        ("<<not valid>>", ()),
        ("<<1ABC>>", ()),
        ("<<>>", ()),
        ("<<CRED_A>", ()),
        ("<CRED_A>>", ()),
        ("a << b >> c", ()),
        ("no references", ()),
        ("", ()),
    ],
)
def test_references_finds_valid_names_in_order_once(value: str, expected: tuple[str, ...]) -> None:
    assert envrefs.references(value) == expected
    assert envrefs.has_references(value) is bool(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("\\<<CRED_A>>", "<<CRED_A>>"),
        ("a\\<<b", "a<<b"),
        ("\\\\\\<<CRED_A>>", "\\<<CRED_A>>"),
        ("C:\\keys\\file", "C:\\keys\\file"),
        ("<<not valid>>", "<<not valid>>"),
        ("x<<y", "x<<y"),
        ("ends with \\", "ends with \\"),
    ],
)
def test_literal_values_decode_escapes_and_keep_everything_else(value: str, expected: str) -> None:
    assert envrefs.decode_literal(value) == expected
    assert resolve(value, NO_ENV) == expected


def test_decode_literal_refuses_a_value_with_references() -> None:
    with pytest.raises(ValueError, match="resolve_value"):
        envrefs.decode_literal("<<CRED_A>>")


def test_even_backslashes_before_a_reference_give_half_as_many_and_resolve() -> None:
    assert resolve("CORP\\\\<<CRED_USER>>", {"CRED_USER": "alice"}) == "CORP\\alice"


def test_reference_resolves_anywhere_in_a_value() -> None:
    env = {"CRED_PG_PASSWORD": "pw", "CRED_HOST": "db"}
    value = "postgres://app:<<CRED_PG_PASSWORD>>@<<CRED_HOST>>:5432/app?x=<<CRED_HOST>>"
    assert resolve(value, env) == "postgres://app:pw@db:5432/app?x=db"


def test_variable_values_are_inserted_verbatim_without_rescanning() -> None:
    env = {"CRED_A": "<<CRED_B>> and \\<<", "CRED_B": "never"}
    assert resolve("<<CRED_A>>", env) == "<<CRED_B>> and \\<<"


def test_empty_variable_value_resolves_to_empty_text() -> None:
    assert resolve("x<<CRED_A>>y", {"CRED_A": ""}) == "xy"


@given(any_text)
def test_escaped_text_has_no_references_and_decodes_to_itself(text: str) -> None:
    escaped = envrefs.escape_literal(text)
    assert not envrefs.has_references(escaped)
    assert envrefs.decode_literal(escaped) == text
    assert resolve(escaped, NO_ENV) == text


@given(any_text, allowed_names, any_text, st.text(max_size=20))
def test_allowed_present_variable_is_always_replaced(prefix: str, name: str, suffix: str, secret: str) -> None:
    value = envrefs.escape_literal(prefix, before_reference=True) + f"<<{name}>>" + envrefs.escape_literal(suffix)
    assert envrefs.references(value) == (name,)
    assert resolve(value, {name: secret}) == prefix + secret + suffix


@pytest.mark.parametrize("text", ["CORP\\", "a\\<", "\\\\<", "x<", "<<", "\\<<"])
def test_escaping_before_a_reference_keeps_the_text_literal(text: str) -> None:
    value = envrefs.escape_literal(text, before_reference=True) + "<<CRED_USER>>"
    assert envrefs.references(value) == ("CRED_USER",)
    assert resolve(value, {"CRED_USER": "alice"}) == text + "alice"


parts = st.lists(st.one_of(st.tuples(st.just("text"), any_text), st.tuples(st.just("ref"), allowed_names)), max_size=6)


@given(parts)
def test_resolution_never_leaves_a_placeholder_for_allowed_present_variables(
    pieces: list[tuple[str, str]],
) -> None:
    merged: list[tuple[str, str]] = []
    for kind, text in pieces:
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + text)
        else:
            merged.append((kind, text))
    env = {text: f"value of {text}" for kind, text in merged if kind == "ref"}
    value = ""
    expected = ""
    for index, (kind, text) in enumerate(merged):
        if kind == "ref":
            value += f"<<{text}>>"
            expected += env[text]
        else:
            next_is_reference = index + 1 < len(merged) and merged[index + 1][0] == "ref"
            value += envrefs.escape_literal(text, before_reference=next_is_reference)
            expected += text
    assert envrefs.references(value) == tuple(dict.fromkeys(env))
    resolved = resolve(value, env)
    assert resolved == expected
    if "<<" not in "".join(text for kind, text in pieces if kind == "text"):
        assert "<<" not in resolved


@given(variable_names, st.text(min_size=1, max_size=20))
def test_problems_never_contain_the_value_of_a_variable(name: str, secret: str) -> None:
    canary = f"canary{secret}canary"
    env = {name: canary}
    for policy in (
        envrefs.EnvPolicy(allow=()),
        envrefs.EnvPolicy(allow=("*",), namespace_rules=(("*", ("elsewhere",)),)),
        envrefs.EnvPolicy(allow=("*",), reserved_prefixes=("",)),
    ):
        _, problems = envrefs.resolve_value(f"<<{name}>>", env.get, policy, "team-a", "field")
        assert problems
        for problem in problems:
            assert canary not in repr(problem)


# Policy


def test_default_policy_allows_cred_variables_only() -> None:
    assert POLICY.allow == names.DEFAULT_ENV_ALLOW
    assert POLICY.check("CRED_OPENAI", "team-a") is None
    reason = POLICY.check("OPENAI_KEY", "team-a")
    assert reason is not None
    assert "'OPENAI_KEY'" in reason
    assert "does not match the allow-list CRED_*" in reason
    assert "--env-allow" in reason


def test_operator_settings_are_never_resolvable_even_when_allowed() -> None:
    policy = envrefs.EnvPolicy(allow=("*",), reserved_names=frozenset({"KUBECONFIG"}))
    for name in ("CREDBRIDGE_KEYRING_SECRET", "KUBECONFIG"):
        reason = policy.check(name, "team-a")
        assert reason is not None
        assert "is one of the operator's own settings and is never resolvable" in reason


def test_allow_globs_match_case_sensitively() -> None:
    assert POLICY.check("cred_lower", "team-a") is not None


def test_namespace_rule_limits_matching_variables_to_its_namespaces() -> None:
    policy = envrefs.EnvPolicy(namespace_rules=(("CRED_TEAM_A_*", ("team-a", "team-a-*")),))
    assert policy.check("CRED_TEAM_A_KEY", "team-a") is None
    assert policy.check("CRED_TEAM_A_KEY", "team-a-dev") is None
    assert policy.check("CRED_SHARED", "team-b") is None
    reason = policy.check("CRED_TEAM_A_KEY", "team-b")
    assert reason is not None
    assert "is not allowed in namespace 'team-b' by the env policy" in reason


def test_every_matching_namespace_rule_must_allow_the_namespace() -> None:
    policy = envrefs.EnvPolicy(
        namespace_rules=(("CRED_*", ("team-a", "team-b")), ("CRED_PROD_*", ("team-a",))),
    )
    assert policy.check("CRED_PROD_KEY", "team-a") is None
    assert policy.check("CRED_PROD_KEY", "team-b") is not None
    assert policy.check("CRED_DEV_KEY", "team-b") is None


def test_forbidden_variables_are_reported_and_never_looked_up() -> None:
    looked_up: list[str] = []

    def lookup(name: str) -> str | None:
        looked_up.append(name)
        return "value"

    resolved, problems = envrefs.resolve_value("<<HOME>>", lookup, POLICY, "team-a", "apiKey")
    assert looked_up == []
    assert [(p.field, p.variable, p.kind) for p in problems] == [("apiKey", "HOME", "forbidden")]
    assert "'apiKey'" in problems[0].message
    assert "<<HOME>>" not in resolved


def test_missing_variable_is_reported_once_per_field() -> None:
    _, problems = envrefs.resolve_value("<<CRED_X>>:<<CRED_X>>", NO_ENV.get, POLICY, "team-a", "url")
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.field, problem.variable, problem.kind) == ("url", "CRED_X", "missing")
    assert "'CRED_X'" in problem.message
    assert "not set in the operator's environment" in problem.message


def test_resolve_fields_resolves_all_and_collects_every_problem() -> None:
    data = {
        "key": "<<CRED_KEY>>",
        "url": "https://<<CRED_HOST>>",
        "org": "literal \\<<x>>",
        "bad": "<<PATH>>",
    }
    resolved, problems = envrefs.resolve_fields(data, {"CRED_KEY": "k"}.get, POLICY, "team-a")
    assert resolved["key"] == "k"
    assert resolved["org"] == "literal <<x>>"
    assert sorted((p.field, p.kind) for p in problems) == [("bad", "forbidden"), ("url", "missing")]


# parse_policy


def test_parse_policy_reads_allow_globs_and_namespace_rules() -> None:
    policy = envrefs.parse_policy(["CRED_*, DB_*", " ", "API_*"], ["CRED_TEAM_A_*=team-a, team-a-*"])
    assert policy.allow == ("CRED_*", "DB_*", "API_*")
    assert policy.namespace_rules == (("CRED_TEAM_A_*", ("team-a", "team-a-*")),)
    assert policy.reserved_prefixes == ("CREDBRIDGE_",)


@pytest.mark.parametrize("rule", ["CRED_*", "=team-a", "CRED_*=", "CRED_*= , ", "A=b=c"])
def test_parse_policy_refuses_malformed_namespace_rules(rule: str) -> None:
    with pytest.raises(ValueError, match="namespace rule") as raised:
        envrefs.parse_policy(["CRED_*"], [rule])
    assert repr(rule) in str(raised.value)


def test_variable_name_check_follows_the_reference_syntax() -> None:
    assert envrefs.is_variable_name("CRED_A1")
    assert not envrefs.is_variable_name("1CRED")
    assert not envrefs.is_variable_name("CRED-A")
