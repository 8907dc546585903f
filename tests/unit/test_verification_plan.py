"""Verification as pure steps: the request built from a Credential, and the Verified condition after a check."""

from __future__ import annotations

import datetime
import typing

import pytest

from credbridge.core import redaction, registry, verification

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(hours=1)
CANARY = "canary-9f8e7d6c5b4a"
BUILTINS = registry.Registry.builtin()


def builtin(name: str) -> registry.CredentialTypeSpec:
    spec = BUILTINS.get(name)
    assert spec is not None
    return spec


def custom(verify: dict[str, typing.Any], inputs: list[dict[str, typing.Any]]) -> registry.CredentialTypeSpec:
    return registry.type_from_object(
        {"metadata": {"name": "acme"}, "spec": {"name": "acme", "inputs": inputs, "verify": verify}}
    )


def test_an_openai_credential_becomes_a_get_with_a_bearer_header_whose_value_is_redacted() -> None:
    probe = verification.build_probe(builtin("openAIApi"), {"openAIApiKey": CANARY})
    assert isinstance(probe, verification.HttpProbe)
    assert (probe.method, probe.scheme, probe.host, probe.port) == ("GET", "https", "api.openai.com", 443)
    assert probe.target.reveal() == "/v1/models"
    assert dict(probe.headers)["Authorization"].reveal() == f"Bearer {CANARY}"
    assert not probe.host_from_field
    assert CANARY not in repr(probe)


def test_a_query_key_is_url_encoded_into_the_redacted_target() -> None:
    probe = verification.build_probe(builtin("serpApi"), {"serpApiKey": "a b&c"})
    assert isinstance(probe, verification.HttpProbe)
    assert probe.target.reveal() == "/account.json?api_key=a+b%26c"


def test_a_base_url_field_gives_the_host_and_the_path_is_appended_once() -> None:
    spec = custom(
        {
            "http": {
                "baseURLField": "endpoint",
                "path": "/v1/models",
                "basicAuth": {"username": "${user}", "password": "${pw}"},
            }
        },
        [{"name": "endpoint", "type": "url"}, {"name": "user", "type": "string"}, {"name": "pw", "type": "password"}],
    )
    probe = verification.build_probe(spec, {"endpoint": "https://qdrant.internal:6333/", "user": "u", "pw": CANARY})
    assert isinstance(probe, verification.HttpProbe)
    assert (probe.host, probe.port, probe.target.reveal()) == ("qdrant.internal", 6333, "/v1/models")
    assert probe.host_from_field
    assert dict(probe.headers)["Authorization"].reveal().startswith("Basic ")


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("ftp://host/", "needs an http(s) URL"),
        ("https://user:pw@host/", "user name or password"),
        ("https://host:99999/", "no valid host or port"),
    ],
)
def test_a_base_url_that_cannot_be_used_is_not_verifiable(endpoint: str, expected: str) -> None:
    spec = custom(
        {"http": {"baseURLField": "endpoint", "headers": {"X-Key": "${key}"}}},
        [{"name": "endpoint", "type": "url"}, {"name": "key", "type": "password"}],
    )
    result = verification.build_probe(spec, {"endpoint": endpoint, "key": CANARY})
    assert isinstance(result, verification.ProbeResult)
    assert result.outcome is verification.Outcome.NOT_VERIFIABLE
    assert expected in result.message


def test_a_line_break_in_a_header_value_is_not_sent() -> None:
    result = verification.build_probe(builtin("openAIApi"), {"openAIApiKey": CANARY + "\r\nX-Evil: 1"})
    assert isinstance(result, verification.ProbeResult)
    assert result.outcome is verification.Outcome.NOT_VERIFIABLE
    assert "line break" in result.message and CANARY not in result.message


def test_a_type_without_a_check_and_a_missing_field_are_not_verifiable() -> None:
    for spec, fields in ((builtin("PostgresApi"), {"user": "u", "password": CANARY}), (builtin("openAIApi"), {})):
        result = verification.build_probe(spec, fields)
        assert isinstance(result, verification.ProbeResult)
        assert result.outcome is verification.Outcome.NOT_VERIFIABLE


def test_database_urls_become_native_logins() -> None:
    probe = verification.build_probe(
        builtin("PostgresUrl"), {"postgresUrl": f"postgresql://app:{CANARY}@db.example:6543/app?sslmode=require"}
    )
    assert isinstance(probe, verification.DatabaseProbe)
    assert (probe.kind, probe.host, probe.port, probe.database, probe.tls) == (
        "postgres",
        "db.example",
        6543,
        "app",
        True,
    )
    assert probe.password.reveal() == CANARY and probe.user.reveal() == "app"
    assert probe.host_from_field
    assert CANARY not in repr(probe)
    redis = verification.build_probe(
        builtin("redisCacheApi"),
        {"redisCacheHost": "cache", "redisCachePort": "6380", "redisCachePwd": CANARY, "redisCacheSslEnabled": "true"},
    )
    assert isinstance(redis, verification.DatabaseProbe)
    assert (redis.host, redis.port, redis.tls, redis.user.reveal()) == ("cache", 6380, True, "")
    srv = verification.build_probe(
        builtin("mongoDBUrlApi"), {"mongoDBConnectUrl": "mongodb+srv://u:p@cluster.example/db"}
    )
    assert isinstance(srv, verification.ProbeResult) and "mongodb+srv" in srv.message


def test_expiry_headers_in_github_rfc3339_and_http_date_forms() -> None:
    expected = datetime.datetime(2031, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    assert verification.parse_expiry_header("2031-02-03 04:05:06 UTC") == expected
    assert verification.parse_expiry_header("2031-02-03T04:05:06Z") == expected
    assert verification.parse_expiry_header("Mon, 03 Feb 2031 04:05:06 GMT") == expected
    assert verification.parse_expiry_header("soon") is None


def result(outcome: verification.Outcome, expires: datetime.datetime | None = None) -> verification.ProbeResult:
    return verification.ProbeResult(outcome, "api.example answered", expires)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (verification.Outcome.VALID, "True"),
        (verification.Outcome.INVALID, "False"),
        (verification.Outcome.FORBIDDEN, "False"),
        (verification.Outcome.RATE_LIMITED, "False"),
        (verification.Outcome.UNREACHABLE, "Unknown"),
        (verification.Outcome.NOT_VERIFIABLE, "Unknown"),
        (verification.Outcome.BLOCKED, "Unknown"),
    ],
)
def test_each_outcome_maps_to_its_condition_and_the_first_check_posts_an_event(
    outcome: verification.Outcome, status: str
) -> None:
    plan = verification.plan_verification({}, result(outcome), now=NOW, generation=3)
    assert plan.condition["type"] == "Verified"
    assert (plan.condition["status"], plan.condition["reason"]) == (status, outcome.value)
    assert plan.condition["observedGeneration"] == 3
    assert plan.status["lastVerifiedTime"] == "2026-03-01T12:00:00Z"
    assert plan.event is not None
    assert plan.event.type == ("Normal" if outcome is verification.Outcome.VALID else "Warning")


def test_the_same_outcome_again_posts_no_event_and_keeps_the_transition_time() -> None:
    first = verification.plan_verification({}, result(verification.Outcome.INVALID), now=NOW, generation=1)
    previous = {"conditions": [first.condition], **first.status}
    again = verification.plan_verification(previous, result(verification.Outcome.INVALID), now=LATER, generation=1)
    assert again.event is None
    assert again.condition["lastTransitionTime"] == first.condition["lastTransitionTime"]
    assert again.status["lastVerifiedTime"] == "2026-03-01T13:00:00Z"
    fixed = verification.plan_verification(previous, result(verification.Outcome.VALID), now=LATER, generation=1)
    assert fixed.event is not None and fixed.event.reason == "Valid"
    assert fixed.condition["lastTransitionTime"] == "2026-03-01T13:00:00Z"


def test_a_discovered_expiry_is_kept_when_a_later_check_learns_nothing() -> None:
    expires = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
    found = verification.plan_verification({}, result(verification.Outcome.VALID, expires), now=NOW, generation=1)
    assert found.status["discoveredExpiresAt"] == "2031-01-01T00:00:00Z"
    unreachable = verification.plan_verification(
        found.status, result(verification.Outcome.UNREACHABLE), now=LATER, generation=1
    )
    assert unreachable.status["discoveredExpiresAt"] == "2031-01-01T00:00:00Z"


def test_a_verify_request_is_acted_on_once() -> None:
    annotations = {verification.VERIFY_REQUESTED_ANNOTATION: "2026-03-01T12:00:00Z"}
    assert verification.verify_requested(annotations, {}) == "2026-03-01T12:00:00Z"
    plan = verification.plan_verification(
        {}, result(verification.Outcome.VALID), now=NOW, generation=1, request="2026-03-01T12:00:00Z"
    )
    assert verification.verify_requested(annotations, plan.status) is None
    assert verification.verify_requested(None, {}) is None


def test_merging_conditions_replaces_by_type_and_keeps_the_others() -> None:
    ready = {"type": "Ready", "status": "True"}
    old = {"type": "Verified", "status": "False"}
    new = {"type": "Verified", "status": "True"}
    merged = verification.merge_conditions({"conditions": [ready, old, {"type": "Expired"}]}, [new], drop=["Expired"])
    assert merged == [ready, new]


def test_redacted_values_stay_redacted_in_every_result() -> None:
    wrapped = redaction.Redacted(CANARY)
    assert CANARY not in f"{wrapped} {wrapped!r}"
