"""The verify section of credential types: parsing, refusals with clear messages, the built-in checks."""

from __future__ import annotations

import typing

import pytest

from credbridge.core import names, registry, verifyspec


def type_with(verify: typing.Any, inputs: list[dict[str, typing.Any]] | None = None) -> dict[str, typing.Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_TYPE_KIND,
        "metadata": {"name": "acmeapi"},
        "spec": {
            "name": "acmeApi",
            "inputs": inputs
            or [{"name": "apiKey", "type": "password"}, {"name": "endpoint", "type": "url", "optional": True}],
            "verify": verify,
        },
    }


def refusal(verify: typing.Any) -> str:
    with pytest.raises(registry.TypeDefinitionError) as caught:
        registry.type_from_object(type_with(verify))
    return str(caught.value)


BUILTIN_CHECKS = {
    "openAIApi": ("api.openai.com", "/v1/models"),
    "anthropicApi": ("api.anthropic.com", "/v1/models"),
    "cohereApi": ("api.cohere.com", "/v1/models"),
    "huggingFaceApi": ("huggingface.co", "/api/whoami-v2"),
    "pineconeApi": ("api.pinecone.io", "/indexes"),
    "githubApi": ("api.github.com", "/user"),
    "notionApi": ("api.notion.com", "/v1/users/me"),
    "serpApi": ("serpapi.com", "/account.json"),
}


@pytest.mark.parametrize(("type_name", "expected"), sorted(BUILTIN_CHECKS.items()))
def test_builtin_http_checks_are_read_only_requests_to_the_vendor_host(
    type_name: str, expected: tuple[str, str]
) -> None:
    spec = registry.Registry.builtin().get(type_name)
    assert spec is not None and spec.verify is not None
    check = spec.verify.check
    assert isinstance(check, verifyspec.HttpCheck)
    assert check.method in verifyspec.READ_ONLY_METHODS
    assert check.fixed_host == expected[0]
    assert check.fields <= set(spec.field_names())


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        ("PostgresUrl", "postgres"),
        ("redisCacheApi", "redis"),
        ("redisCacheUrlApi", "redis"),
        ("mongoDBUrlApi", "mongodb"),
    ],
)
def test_builtin_database_types_log_in_natively(type_name: str, kind: str) -> None:
    spec = registry.Registry.builtin().get(type_name)
    assert spec is not None and spec.verify is not None
    assert isinstance(spec.verify.check, verifyspec.NativeCheck)
    assert spec.verify.check.kind == kind


def test_github_check_reads_the_token_expiry_header() -> None:
    spec = registry.Registry.builtin().get("githubApi")
    assert spec is not None and spec.verify is not None
    assert isinstance(spec.verify.check, verifyspec.HttpCheck)
    assert spec.verify.check.expiry_header == "GitHub-Authentication-Token-Expiration"


def test_every_builtin_type_survives_the_round_trip_through_its_cluster_object() -> None:
    builtins = registry.Registry.builtin()
    for name in builtins.names():
        spec = builtins.get(name)
        assert spec is not None
        assert registry.type_from_object(registry.type_to_object(spec)) == spec


def test_a_custom_type_declares_a_check_on_a_field_given_base_url() -> None:
    spec = registry.type_from_object(
        type_with(
            {
                "http": {
                    "baseURLField": "endpoint",
                    "path": "/v1/models",
                    "headers": {"Authorization": "Bearer ${apiKey}"},
                    "statuses": {"valid": [200, 204], "invalid": [401, 404]},
                }
            }
        )
    )
    assert spec.verify is not None
    check = spec.verify.check
    assert isinstance(check, verifyspec.HttpCheck)
    assert check.fixed_host is None
    assert check.path == "/v1/models"
    assert check.statuses.invalid == (401, 404)
    assert check.statuses.forbidden == (403,)


def test_a_host_built_from_a_field_is_not_a_fixed_host() -> None:
    spec = registry.type_from_object(
        type_with({"http": {"url": "https://${endpoint}.openai.azure.com/x", "headers": {"api-key": "${apiKey}"}}})
    )
    assert spec.verify is not None
    assert isinstance(spec.verify.check, verifyspec.HttpCheck)
    assert spec.verify.check.fixed_host is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_that_can_change_something_are_refused_at_definition_time(method: str) -> None:
    message = refusal({"http": {"method": method, "url": "https://acme.test/", "headers": {"X": "${apiKey}"}}})
    assert "'acmeApi'" in message
    assert "spec.verify.http.method" in message
    assert "GET or HEAD" in message


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        ({"http": {"url": "https://acme.test/", "headers": {"X": "${nope}"}}}, "reads field 'nope'"),
        ({"http": {"url": "https://acme.test/"}}, "sends none of the credential's fields"),
        ({"http": {"url": "ftp://acme.test/", "headers": {"X": "${apiKey}"}}}, "must use https://"),
        ({"http": {"url": "https://u:p@acme.test/", "headers": {"X": "${apiKey}"}}}, "user name or password"),
        (
            {"http": {"url": "https://a.test/", "baseURLField": "endpoint", "headers": {"X": "${apiKey}"}}},
            "exactly one",
        ),
        ({"http": {"url": "https://a.test/", "headers": {"Host": "${apiKey}"}}}, "set by credbridge itself"),
        (
            {
                "http": {
                    "url": "https://a.test/",
                    "headers": {"X": "${apiKey}"},
                    "statuses": {"valid": [200], "invalid": [200]},
                }
            },
            "both valid and invalid",
        ),
        ({"http": {"url": "https://a.test/", "headers": {"X": "${apiKey}"}, "statuses": {"valid": [302]}}}, "redirect"),
        ({"http": {"url": "https://a.test/", "headers": {"X": "${apiKey"}}}, "not closed"),
        (
            {"http": {"url": "https://a.test/", "headers": {"X": "${apiKey}"}}, "redis": {"url": "${endpoint}"}},
            "exactly one",
        ),
        ({"smtp": {}}, "not a kind of check"),
        ({"postgres": {"host": "${endpoint}", "user": "u"}}, "must set password"),
        ({"mysql": {"url": "${endpoint}", "host": "x"}}, "one or the other"),
    ],
)
def test_malformed_checks_are_refused_with_the_path_and_the_fix(verify: typing.Any, expected: str) -> None:
    message = refusal(verify)
    assert message.startswith("CredentialType 'acmeApi': spec.verify")
    assert expected in message
