"""Validation of Credentials against their types, as the webhook, reconciler and CLI run it."""

from __future__ import annotations

import json

import pytest

from credbridge.core import envelope, registry, validation

TYPES = registry.load_builtin_types()
OPENAI = TYPES["openAIApi"]
REDIS = TYPES["redisCacheApi"]
WATSONX = TYPES["ibmWatsonx"]
REDIS_URL = TYPES["redisCacheUrlApi"]
CANARY = "canary-value-7f3e"

JSON_TYPE = registry.CredentialTypeSpec(
    name="jsonType",
    label="JSON",
    version=1,
    inputs=(
        registry.InputField("config", "Config", "json"),
        registry.InputField("note", "Note", "string", optional=True),
    ),
)


def rules(problems: list[validation.Problem]) -> list[tuple[str | None, str]]:
    return [(problem.field, problem.rule) for problem in problems]


def redis_data(**overrides: str) -> dict[str, str]:
    data = {
        "redisCacheUser": "default",
        "redisCachePwd": "<<CRED_REDIS_PASSWORD>>",
        "redisCacheSslEnabled": "true",
    }
    data.update(overrides)
    return data


def _watsonx_required() -> dict[str, str]:
    return {field.name: "x" for field in WATSONX.inputs if field.required}


# check_spec


def test_complete_spec_with_references_has_no_problems() -> None:
    assert validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": "<<CRED_OPENAI_KEY>>"}, ()) == []
    assert validation.check_spec(REDIS, "redisCacheApi", redis_data(), ()) == []


def test_unknown_type_is_the_only_problem_reported() -> None:
    problems = validation.check_spec(None, "openAIApii", {"x": "y"}, ["z"])
    assert rules(problems) == [(None, "unknown-type")]
    assert "'openAIApii'" in problems[0].message


def test_empty_type_name_is_reported() -> None:
    assert rules(validation.check_spec(None, "", {}, ())) == [(None, "empty-name")]


def test_missing_required_field_names_field_type_and_both_ways_to_set_it() -> None:
    problems = validation.check_spec(OPENAI, "openAIApi", {}, ())
    assert rules(problems) == [("openAIApiKey", "required")]
    message = problems[0].message
    assert "field 'openAIApiKey' is required by type 'openAIApi'" in message
    assert "spec.data.openAIApiKey" in message
    assert "spec.valueFrom.openAIApiKey" in message


def test_required_field_may_come_from_value_from() -> None:
    assert validation.check_spec(OPENAI, "openAIApi", {}, ["openAIApiKey"]) == []


def test_empty_literal_for_a_required_field_counts_as_missing() -> None:
    assert rules(validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": ""}, ())) == [("openAIApiKey", "required")]


def test_fields_with_defaults_or_optional_flag_are_not_required() -> None:
    assert validation.check_spec(TYPES["awsApi"], "awsApi", {}, ()) == []
    assert validation.check_spec(REDIS, "redisCacheApi", redis_data(), ()) == []


def test_unknown_fields_in_data_and_value_from_are_reported_with_the_known_fields() -> None:
    problems = validation.check_spec(
        OPENAI, "openAIApi", {"openAIApiKey": "<<CRED_K>>", "apiKey": "x"}, ["organization"]
    )
    assert rules(problems) == [("apiKey", "unknown-field"), ("organization", "unknown-field")]
    assert "field 'apiKey'" in problems[0].message
    assert "remove it from spec.data" in problems[0].message
    assert "remove it from spec.valueFrom" in problems[1].message
    assert "openAIApiKey" in problems[0].message


def test_field_in_both_data_and_value_from_is_reported() -> None:
    problems = validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": "<<CRED_K>>"}, ["openAIApiKey"])
    assert rules(problems) == [("openAIApiKey", "both-data-and-valueFrom")]


def test_empty_field_names_are_reported() -> None:
    problems = validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": "<<CRED_K>>", "": "x"}, [""])
    assert rules(problems) == [(None, "empty-name"), (None, "empty-name")]


@pytest.mark.parametrize(
    ("cred_type", "data", "expected"),
    [
        (REDIS, redis_data(redisCachePort="six"), [("redisCachePort", "number")]),
        (REDIS, redis_data(redisCacheSslEnabled="yes"), [("redisCacheSslEnabled", "boolean")]),
        (REDIS_URL, {"redisUrl": "localhost:6379"}, [("redisUrl", "url")]),
        (WATSONX, _watsonx_required() | {"watsonxAIAuthType": "oauth"}, [("watsonxAIAuthType", "options")]),
        (JSON_TYPE, {"config": "{broken"}, [("config", "json")]),
        (REDIS, redis_data(redisCachePort="6380", redisCacheSslEnabled="False"), []),
        (REDIS_URL, {"redisUrl": "rediss://user:pw@cache:6380/0"}, []),
        (JSON_TYPE, {"config": '{"a": [1]}'}, []),
    ],
)
def test_literal_values_are_checked_against_their_field_type(
    cred_type: registry.CredentialTypeSpec, data: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert rules(validation.check_spec(cred_type, cred_type.name, data, ())) == expected


def test_values_with_references_are_not_format_checked_before_resolution() -> None:
    data = redis_data(redisCachePort="<<CRED_PORT>>", redisCacheSslEnabled="<<CRED_SSL>>")
    assert validation.check_spec(REDIS, "redisCacheApi", data, ()) == []
    assert validation.check_spec(REDIS_URL, "redisCacheUrlApi", {"redisUrl": "redis://:<<CRED_PW>>@h:1"}, ()) == []


def test_escaped_literal_is_checked_after_decoding_escapes() -> None:
    assert validation.check_spec(JSON_TYPE, "jsonType", {"config": '{"t": "\\<<x>>"}'}, ()) == []


def test_empty_optional_literal_is_not_format_checked() -> None:
    number_type = registry.CredentialTypeSpec(
        "n", "N", 1, (registry.InputField("port", "Port", "number", optional=True),)
    )
    assert validation.check_spec(number_type, "n", {"port": ""}, ()) == []


def test_oversized_literal_is_reported_without_its_size_or_value() -> None:
    problems = validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": "k" * (validation.MAX_VALUE_BYTES + 1)}, ())
    assert rules(problems) == [("openAIApiKey", "max-value-size")]
    assert str(validation.MAX_VALUE_BYTES) in problems[0].message
    assert "kkkk" not in problems[0].message


def test_value_at_the_size_limit_is_accepted() -> None:
    assert (
        validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": "é" * (validation.MAX_VALUE_BYTES // 2)}, ()) == []
    )


def test_problem_messages_never_contain_literal_values() -> None:
    data = {
        "redisCacheHost": CANARY,
        "redisCachePort": CANARY,
        "redisCacheUser": CANARY,
        "redisCachePwd": CANARY,
        "redisCacheSslEnabled": CANARY,
        "nope": CANARY,
    }
    problems = validation.check_spec(REDIS, "redisCacheApi", data, ())
    assert {problem.rule for problem in problems} == {"number", "boolean", "unknown-field"}
    assert CANARY not in repr(problems)
    assert CANARY not in validation.summarize(problems)


# finalize


def test_finalize_applies_defaults_and_keeps_type_field_order() -> None:
    fields, problems = validation.finalize(
        REDIS, {"redisCacheUser": "u", "redisCachePwd": "p", "redisCacheSslEnabled": "true"}
    )
    assert problems == []
    assert dict(fields) == {
        "redisCacheHost": "127.0.0.1",
        "redisCachePort": "6379",
        "redisCacheUser": "u",
        "redisCachePwd": "p",
        "redisCacheSslEnabled": "true",
    }
    assert list(fields) == list(REDIS.field_names())


def test_finalize_keeps_supplied_values_over_defaults() -> None:
    fields, problems = validation.finalize(WATSONX, {"watsonxAIAuthType": "bearertoken"} | _watsonx_required())
    assert problems == []
    assert fields["watsonxAIAuthType"] == "bearertoken"


def test_finalize_leaves_absent_optional_fields_out() -> None:
    fields, problems = validation.finalize(TYPES["awsApi"], {"awsKey": "a", "awsSecret": "b"})
    assert problems == []
    assert set(fields) == {"awsKey", "awsSecret"}


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("redisCachePort", "not-a-port", "number"),
        ("redisCachePort", "inf", "number"),
        ("redisCacheSslEnabled", "1", "boolean"),
    ],
)
def test_finalize_checks_formats_of_resolved_values(field: str, value: str, rule: str) -> None:
    resolved = {"redisCacheUser": "u", "redisCachePwd": "p", "redisCacheSslEnabled": "true", field: value}
    _, problems = validation.finalize(REDIS, resolved)
    assert rules(problems) == [(field, rule)]
    assert "variable or Secret key" in problems[0].message


def test_finalize_checks_resolved_urls_of_any_scheme() -> None:
    for url in ("redis://localhost:6379", "postgres://app:pw@db:5432/app", "https://example.com"):
        assert validation.finalize(REDIS_URL, {"redisUrl": url})[1] == []
    assert rules(validation.finalize(REDIS_URL, {"redisUrl": "not a url"})[1]) == [("redisUrl", "url")]


def test_finalize_reports_missing_and_empty_required_fields() -> None:
    _, problems = validation.finalize(REDIS, {"redisCacheUser": "", "redisCachePwd": "p"})
    assert rules(problems) == [("redisCacheUser", "required"), ("redisCacheSslEnabled", "required")]


def test_finalize_reports_fields_the_type_does_not_define() -> None:
    _, problems = validation.finalize(OPENAI, {"openAIApiKey": "k", "extra": "x"})
    assert rules(problems) == [("extra", "unknown-field")]


def test_finalize_reports_oversized_values_and_plaintext() -> None:
    big = "x" * (validation.MAX_VALUE_BYTES + 1)
    assert rules(validation.finalize(OPENAI, {"openAIApiKey": big})[1]) == [("openAIApiKey", "max-value-size")]
    many = registry.CredentialTypeSpec(
        "many", "Many", 1, tuple(registry.InputField(f"f{index}", "F", "string") for index in range(10))
    )
    near_limit = "y" * validation.MAX_VALUE_BYTES
    _, problems = validation.finalize(many, {f"f{index}": near_limit for index in range(10)})
    assert rules(problems) == [(None, "max-plaintext-size")]
    assert str(validation.MAX_PLAINTEXT_BYTES) in problems[0].message


def test_plaintext_limit_counts_the_encoded_envelope_plaintext() -> None:
    many = registry.CredentialTypeSpec(
        "many", "Many", 1, tuple(registry.InputField(f"f{index}", "F", "string") for index in range(8))
    )
    # Eight values of exactly 64 KiB are 512 KiB of values, but the JSON framing pushes it over.
    fields, problems = validation.finalize(many, {f"f{index}": "z" * validation.MAX_VALUE_BYTES for index in range(8)})
    assert len(envelope.encode_plaintext(fields)) > validation.MAX_PLAINTEXT_BYTES
    assert rules(problems) == [(None, "max-plaintext-size")]


def test_finalize_reports_values_that_are_not_utf8_without_echoing_them() -> None:
    _, problems = validation.finalize(OPENAI, {"openAIApiKey": CANARY + "\udcff"})
    assert rules(problems) == [("openAIApiKey", "utf-8")]
    assert CANARY not in problems[0].message


def test_finalized_fields_are_redacted_when_printed() -> None:
    fields, problems = validation.finalize(OPENAI, {"openAIApiKey": CANARY})
    assert problems == []
    assert CANARY not in repr(fields)
    assert json.loads(envelope.encode_plaintext(fields)) == {"openAIApiKey": CANARY}


def test_finalize_never_puts_resolved_values_in_problems() -> None:
    resolved = {field.name: CANARY for field in REDIS.inputs} | {"unknown": CANARY}
    _, problems = validation.finalize(REDIS, resolved)
    assert problems
    assert CANARY not in repr(problems)


def test_every_builtin_type_accepts_its_own_defaults() -> None:
    for spec in TYPES.values():
        resolved = {field.name: _valid_value(field) for field in spec.inputs if field.required}
        _, problems = validation.finalize(spec, resolved)
        assert problems == [], spec.name


def _valid_value(field: registry.InputField) -> str:
    return {
        "number": "1",
        "boolean": "true",
        "url": "https://example.com",
        "options": field.options[0] if field.options else "",
        "json": "{}",
    }.get(field.type, "value")


# Literal secrets and summaries


def test_literal_secret_fields_lists_password_fields_given_literally() -> None:
    data = {"redisCacheUser": "default", "redisCachePwd": "hunter2", "redisCacheSslEnabled": "true"}
    assert validation.literal_secret_fields(REDIS, data) == ["redisCachePwd"]
    assert validation.literal_secret_fields(REDIS, redis_data()) == []
    assert validation.literal_secret_fields(REDIS, {"redisCachePwd": "\\<<escaped>>"}) == ["redisCachePwd"]


def test_summarize_joins_messages_on_one_line() -> None:
    problems = validation.check_spec(REDIS, "redisCacheApi", {"redisCachePort": "x"}, ())
    summary = validation.summarize(problems)
    assert "\n" not in summary
    assert summary == "; ".join(problem.message for problem in problems)
    assert "'redisCacheUser'" in summary
    assert "'redisCachePort'" in summary
    assert validation.summarize([]) == ""


# one size limit: the webhook and `credbridge validate` (check_spec) agree with the reconciler (finalize)

EIGHT = registry.CredentialTypeSpec(
    "eight",
    "Eight",
    1,
    (
        *(registry.InputField(f"p{index}", "P", "password") for index in range(8)),
        registry.InputField("region", "Region", "string", default="eu-west-1"),
    ),
)


def values_totalling(total: int) -> dict[str, str]:
    """Eight literal values (plus the default) whose sealed plaintext is exactly `total` bytes."""
    framing = len(envelope.encode_plaintext({**{f"p{index}": "" for index in range(8)}, "region": "eu-west-1"}))
    payload = total - framing
    sizes = [payload // 8 + (1 if index < payload % 8 else 0) for index in range(8)]
    return {f"p{index}": "v" * size for index, size in enumerate(sizes)}


@pytest.mark.parametrize("total", [validation.MAX_PLAINTEXT_BYTES - 1, validation.MAX_PLAINTEXT_BYTES])
def test_literals_at_the_plaintext_limit_pass_everywhere(total: int) -> None:
    data = values_totalling(total)
    assert validation.check_spec(EIGHT, "eight", data, ()) == []
    fields, problems = validation.finalize(EIGHT, data)
    assert problems == []
    assert len(envelope.encode_plaintext(fields)) == total


def test_literals_one_byte_over_the_plaintext_limit_fail_everywhere_with_one_message() -> None:
    data = values_totalling(validation.MAX_PLAINTEXT_BYTES + 1)
    spec_problems = validation.check_spec(EIGHT, "eight", data, ())
    _, resolved_problems = validation.finalize(EIGHT, data)
    assert rules(spec_problems) == [(None, "max-plaintext-size")]
    assert spec_problems == resolved_problems


def test_eight_values_of_the_maximum_size_are_refused_before_resolution_too() -> None:
    # The webhook used to admit these and the reconciler to refuse them.
    data = {f"p{index}": "z" * validation.MAX_VALUE_BYTES for index in range(8)}
    assert rules(validation.check_spec(EIGHT, "eight", data, ())) == [(None, "max-plaintext-size")]


def test_plaintext_limit_before_resolution_counts_only_what_is_known() -> None:
    # References and valueFrom fields could resolve to anything, so only the literals count.
    data = values_totalling(validation.MAX_PLAINTEXT_BYTES)
    data["p0"] = "<<CRED_P0>>"
    assert validation.check_spec(EIGHT, "eight", data, ()) == []
    del data["p1"]
    assert validation.check_spec(EIGHT, "eight", data, ["p1"]) == []


def test_known_literals_over_the_limit_are_refused_whatever_the_references_hold() -> None:
    # Without the region (a reference now) the literals alone are still over the limit.
    data = values_totalling(validation.MAX_PLAINTEXT_BYTES + len(',"region":"eu-west-1"') + 1)
    data["region"] = "<<CRED_REGION>>"
    problems = validation.check_spec(EIGHT, "eight", data, ())
    assert rules(problems) == [(None, "max-plaintext-size")]


def test_a_value_is_measured_as_written_too() -> None:
    # Escapes shrink when decoded and references may resolve to less: the written form counts as well.
    escaped = "\\<<" * (validation.MAX_VALUE_BYTES // 3 + 1)
    assert rules(validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": escaped}, ())) == [
        ("openAIApiKey", "max-value-size")
    ]
    references = "<<CRED_A>>" * (validation.MAX_VALUE_BYTES // 10 + 1)
    assert rules(validation.check_spec(OPENAI, "openAIApi", {"openAIApiKey": references}, ())) == [
        ("openAIApiKey", "max-value-size")
    ]


def test_every_builtin_type_fits_the_field_limit() -> None:
    assert max(len(spec.inputs) for spec in TYPES.values()) <= validation.MAX_FIELDS
