"""What `credbridge import flowise` makes of Flowise credentials: valid Credentials with the same
ids, names and types, values only in the Secret, and skipped rows with a reason."""

from __future__ import annotations

import base64

from credbridge.core import redaction, registry, validation, views
from credbridge.core.flowise import migration
from credbridge.core.oauth2 import store

TYPES = registry.Registry.builtin()
ID = "0b6d3f1e-1d8e-4a47-9a53-5e4a3f0b9c11"


def stored(
    name: str, type_name: str, fields: dict[str, str] | None, field_names: tuple[str, ...] = ()
) -> migration.StoredCredential:
    return migration.StoredCredential(
        ID, name, type_name, redaction.SecretFields(fields) if fields is not None else None, field_names
    )


def test_a_credential_keeps_id_name_and_type_and_its_values_go_to_a_secret() -> None:
    result = migration.import_credential(
        stored("Prod OpenAI", "openAIApi", {"openAIApiKey": "sk-1"}),
        namespace="team-a",
        name="prod-openai",
        types=TYPES,
        source="test",
    )
    assert isinstance(result, migration.Imported)
    spec = result.credential["spec"]
    assert spec == {
        "type": "openAIApi",
        "displayName": "Prod OpenAI",
        "id": ID,
        "valueFrom": {"openAIApiKey": {"secretKeyRef": {"name": "prod-openai-values", "key": "openAIApiKey"}}},
    }
    assert validation.check_spec(TYPES.get("openAIApi"), "openAIApi", {}, list(spec["valueFrom"])) == []
    assert result.secret is not None
    assert base64.b64decode(result.secret["data"]["openAIApiKey"]) == b"sk-1"
    assert "sk-1" not in repr(result)


def test_unknown_types_and_invalid_values_are_skipped_with_field_names_only() -> None:
    unknown = migration.import_credential(
        stored("x", "noSuchType", {"a": "secret-a"}), namespace="n", name="x", types=TYPES, source="t"
    )
    assert isinstance(unknown, migration.Skipped) and "noSuchType" in unknown.reason
    missing = migration.import_credential(
        stored("x", "openAIApi", {}), namespace="n", name="x", types=TYPES, source="t"
    )
    assert isinstance(missing, migration.Skipped) and "openAIApiKey" in missing.reason


def test_fields_the_type_does_not_define_are_dropped_with_a_note() -> None:
    result = migration.import_credential(
        stored("x", "openAIApi", {"openAIApiKey": "k", "legacyField": "old-secret"}),
        namespace="n",
        name="x",
        types=TYPES,
        source="t",
    )
    assert isinstance(result, migration.Imported) and "legacyField" in result.warnings[0]
    assert result.secret is not None and set(result.secret["data"]) == {"openAIApiKey"}
    assert "old-secret" not in " ".join(result.warnings)


def test_api_only_imports_names_and_the_fields_to_fill_in() -> None:
    result = migration.import_credential(
        stored("db", "PostgresApi", None, ("user", "password")), namespace="n", name="db", types=TYPES, source="t"
    )
    assert isinstance(result, migration.Imported) and result.secret is None
    assert {"user", "password"} <= set(result.credential["spec"]["valueFrom"])


def test_names_are_dns_labels_and_unique_within_a_batch() -> None:
    rows = [
        migration.StoredCredential(
            "11111111-aaaa", "Prod OpenAI!", "openAIApi", redaction.SecretFields({"openAIApiKey": "a"})
        ),
        migration.StoredCredential(
            "22222222-bbbb", "prod openai", "openAIApi", redaction.SecretFields({"openAIApiKey": "b"})
        ),
        migration.StoredCredential("33333333-cccc", "42", "openAIApi", redaction.SecretFields({"openAIApiKey": "c"})),
    ]
    imported, skipped = migration.import_all(rows, namespace="n", types=TYPES, source="t")
    assert skipped == []
    assert sorted(item.credential["metadata"]["name"] for item in imported) == [
        "cred-42",
        "prod-openai",
        "prod-openai-22222222",
    ]


def test_an_oauth2_credential_keeps_its_tokens_where_authorize_and_the_refresh_write() -> None:
    refresh, access = "1//refresh-canary-from-flowise", "ya29.access-canary-from-flowise"
    fields = {
        "clientId": "cid",
        "clientSecret": "client-secret-canary",
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": "3599",
        "expires_at": "2026-05-01T12:59:59.123Z",
        "token_received_at": "2026-05-01T12:00:00.123Z",
        "scope": "https://www.googleapis.com/auth/gmail.readonly",
    }
    result = migration.import_credential(
        stored("Team Gmail", "gmailOAuth2", fields), namespace="team-a", name="team-gmail", types=TYPES, source="t"
    )
    assert isinstance(result, migration.Imported) and result.warnings == ()
    assert result.secret is not None
    data = {key: base64.b64decode(value).decode() for key, value in result.secret["data"].items()}
    assert data["refresh_token"] == refresh and data["access_token"] == access
    assert data["expires_at"] == "2026-05-01T12:59:59.123Z"
    value_from = result.credential["spec"]["valueFrom"]
    assert value_from["refresh_token"] == {"secretKeyRef": {"name": "team-gmail-values", "key": "refresh_token"}}
    gmail = TYPES.get("gmailOAuth2")
    assert validation.check_spec(gmail, "gmailOAuth2", {}, list(value_from)) == []
    view = views.CredentialView.from_object(result.credential)
    assert store.token_store(view, gmail).secret_name == "team-gmail-values"
    assert refresh not in repr(result) and access not in repr(result)


def test_an_oauth2_credential_never_authorized_in_flowise_can_be_authorized_after_the_import() -> None:
    result = migration.import_credential(
        stored("New Gmail", "gmailOAuth2", {"clientId": "cid", "clientSecret": "s"}),
        namespace="team-a",
        name="new-gmail",
        types=TYPES,
        source="t",
    )
    assert isinstance(result, migration.Imported)
    value_from = result.credential["spec"]["valueFrom"]
    for field in ("refresh_token", "access_token", "expires_at", "token_received_at"):
        assert value_from[field] == {"secretKeyRef": {"name": "new-gmail-values", "key": field, "optional": True}}
    view = views.CredentialView.from_object(result.credential)
    assert store.token_store(view, TYPES.get("gmailOAuth2")).keys["refresh_token"] == "refresh_token"
