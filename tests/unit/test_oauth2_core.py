"""The pure OAuth2 pieces: PKCE, the state bound to a Credential, the authorization URL and redirect,
token answers in Flowise's field names, error classification, client configuration and requests,
and where a Credential keeps its tokens."""

from __future__ import annotations

import base64
import datetime
import hashlib
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbridge.core import redaction, registry, validation, views
from credbridge.core.oauth2 import authorization, outcomes, pkce, provider, store, tokens

NOW = datetime.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
TYPES = registry.Registry.builtin()
GMAIL = TYPES.get("gmailOAuth2")
ACCESS_CANARY = "ya29.access-canary-5e1f9a"
REFRESH_CANARY = "1//refresh-canary-8d2b4c"
SECRET_CANARY = "client-secret-canary-77a1"


def counter_bytes(count: int) -> bytes:
    return bytes(range(count))


def credential(value_from: dict[str, object] | None = None, data: dict[str, str] | None = None) -> views.CredentialView:
    return views.CredentialView.from_object(
        {
            "metadata": {"namespace": "team-a", "name": "gmail", "uid": "uid-1", "generation": 1},
            "spec": {"type": "gmailOAuth2", "data": data or {"clientId": "cid"}, "valueFrom": value_from or {}},
        }
    )


def token_refs(secret: str = "gmail-tokens", fields: tuple[str, ...] = ("refresh_token", "access_token", "expires_at")):
    return {field: {"secretKeyRef": {"name": secret, "key": field, "optional": True}} for field in fields}


# ---- PKCE and state ------------------------------------------------------------------------------


def test_pkce_challenge_is_the_s256_of_the_verifier_and_the_verifier_is_rfc7636_sized() -> None:
    verifier = pkce.make_verifier(counter_bytes)
    assert 43 <= len(verifier.reveal()) <= 128
    digest = hashlib.sha256(verifier.reveal().encode()).digest()
    assert pkce.challenge(verifier) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert verifier.reveal() not in repr(verifier)


def test_pkce_refuses_a_short_random_source() -> None:
    with pytest.raises(ValueError, match="bytes"):
        pkce.make_verifier(lambda count: b"\x00" * (count - 1))


def test_the_state_names_its_credential_and_only_the_exact_state_is_accepted() -> None:
    state = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", counter_bytes)
    state.verify(state.encode())
    forged = authorization.AuthorizationState("team-a", "gmail", "uid-1", redaction.Redacted("guessed"))
    with pytest.raises(authorization.StateMismatch, match="does not match"):
        state.verify(forged.encode())
    foreign = authorization.AuthorizationState.new("team-b", "slack", "uid-2", counter_bytes)
    with pytest.raises(authorization.StateMismatch, match="team-b/slack"):
        state.verify(foreign.encode())
    with pytest.raises(authorization.StateMismatch, match="no state"):
        state.verify(None)
    # Flowise's state is the bare credential id: never accepted.
    with pytest.raises(authorization.StateMismatch):
        state.verify("uid-1")


@given(st.text(max_size=200))
def test_no_returned_state_but_the_sent_one_is_accepted(returned: str) -> None:
    state = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", counter_bytes)
    if returned == state.encode():
        return
    with pytest.raises(authorization.StateMismatch):
        state.verify(returned)


# ---- authorization URL and redirect ----------------------------------------------------------------


def test_the_authorization_url_carries_pkce_state_scope_and_googles_extra_parameters() -> None:
    state = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", counter_bytes)
    url = authorization.authorization_url(
        "https://accounts.google.com/o/oauth2/v2/auth?hd=example.com",
        client_id="cid",
        redirect_uri=authorization.loopback_redirect_uri(8085),
        scope="https://www.googleapis.com/auth/gmail.readonly",
        state=state,
        code_challenge="challenge",
        additional_parameters="access_type=offline&prompt=consent",
    )
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert parts.netloc == "accounts.google.com"
    assert query == {
        "hd": "example.com",
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": "http://127.0.0.1:8085/callback",
        "state": state.encode(),
        "code_challenge": "challenge",
        "code_challenge_method": "S256",
        "scope": "https://www.googleapis.com/auth/gmail.readonly",
        "access_type": "offline",
        "prompt": "consent",
    }


def test_additional_parameters_cannot_replace_the_state_or_pkce() -> None:
    state = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", counter_bytes)
    with pytest.raises(authorization.AuthorizationError, match="code_challenge_method, state"):
        authorization.authorization_url(
            "https://idp.example/auth",
            client_id="c",
            redirect_uri="http://127.0.0.1:1/callback",
            scope="",
            state=state,
            code_challenge="x",
            additional_parameters="state=mine&code_challenge_method=plain",
        )


def test_the_redirect_gives_the_code_only_after_the_state_matched() -> None:
    state = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", counter_bytes)
    good = f"http://127.0.0.1:8085/callback?code=the-code&state={urllib.parse.quote(state.encode())}&iss=x"
    assert authorization.parse_redirect(good, state).reveal() == "the-code"
    assert authorization.parse_redirect("?" + urllib.parse.urlsplit(good).query, state).reveal() == "the-code"
    other = authorization.AuthorizationState.new("team-a", "gmail", "uid-1", lambda n: b"\x01" * n)
    with pytest.raises(authorization.StateMismatch):
        authorization.parse_redirect(
            f"http://127.0.0.1:8085/callback?code=the-code&state={urllib.parse.quote(other.encode())}", state
        )
    denied = f"http://127.0.0.1:8085/callback?error=access_denied&state={urllib.parse.quote(state.encode())}"
    with pytest.raises(authorization.AuthorizationDenied, match="declined") as raised:
        authorization.parse_redirect(denied, state)
    assert raised.value.error == "access_denied"
    with pytest.raises(authorization.AuthorizationError, match="no authorization code"):
        authorization.parse_redirect(f"/callback?state={urllib.parse.quote(state.encode())}", state)


# ---- token answers -----------------------------------------------------------------------------------


def test_a_token_answer_becomes_flowise_fields_with_an_absolute_expiry() -> None:
    answer = {
        "access_token": ACCESS_CANARY,
        "refresh_token": REFRESH_CANARY,
        "expires_in": 3599,
        "token_type": "Bearer",
        "scope": "mail.read",
    }
    result = tokens.parse_token_response(answer, received_at=NOW, previous_refresh_token=None)
    assert result.expires_at == NOW + datetime.timedelta(seconds=3599)
    assert result.refresh_token_rotated
    values = {name: value.reveal() for name, value in result.field_values().items()}
    assert values == {
        "access_token": ACCESS_CANARY,
        "refresh_token": REFRESH_CANARY,
        "token_type": "Bearer",
        "expires_at": "2026-05-01T12:59:59.123Z",
        "expires_in": "3599",
        "token_received_at": "2026-05-01T12:00:00.123Z",
        "granted_scope": "mail.read",
    }
    assert ACCESS_CANARY not in repr(result) and REFRESH_CANARY not in repr(result)


def test_an_answer_without_a_refresh_token_keeps_the_previous_one() -> None:
    previous = redaction.Redacted(REFRESH_CANARY)
    result = tokens.parse_token_response(
        {"access_token": "new", "expires_in": "3600"}, received_at=NOW, previous_refresh_token=previous
    )
    assert result.refresh_token == previous and not result.refresh_token_rotated
    assert result.token_type == "Bearer" and result.expires_in == 3600
    same = tokens.parse_token_response(
        {"access_token": "new", "refresh_token": REFRESH_CANARY}, received_at=NOW, previous_refresh_token=previous
    )
    assert not same.refresh_token_rotated and same.expires_at is None


def test_an_answer_without_an_access_token_is_refused_without_quoting_it() -> None:
    with pytest.raises(tokens.TokenResponseError) as raised:
        tokens.parse_token_response({"refresh_token": REFRESH_CANARY}, received_at=NOW, previous_refresh_token=None)
    assert REFRESH_CANARY not in str(raised.value)


def test_stored_tokens_read_flowise_times_and_treat_unreadable_expiry_as_due() -> None:
    stored = tokens.StoredTokens.from_fields(
        {"access_token": "a", "refresh_token": "r", "expires_at": "2026-05-01T13:00:00.000Z"}
    )
    assert stored.expires_at == datetime.datetime(2026, 5, 1, 13, tzinfo=datetime.UTC)
    assert stored.access_token_valid(NOW)
    assert not stored.access_token_valid(NOW + datetime.timedelta(hours=2))
    broken = tokens.StoredTokens.from_fields({"access_token": "a", "expires_at": "soon"})
    assert broken.expires_at is None and not broken.access_token_valid(NOW)
    forever = tokens.StoredTokens.from_fields({"access_token": "xoxp-slack"})
    assert forever.access_token_valid(NOW)
    assert tokens.format_time(NOW) == "2026-05-01T12:00:00.123Z"
    assert tokens.parse_time("2026-05-01T14:00:00+02:00") == datetime.datetime(2026, 5, 1, 12, tzinfo=datetime.UTC)


# ---- error classification ------------------------------------------------------------------------------


def classify(status: int, body: dict[str, object] | None, retry_after: str | None = None) -> outcomes.Outcome:
    return outcomes.classify_answer(
        status, body, retry_after=retry_after, now=NOW, endpoint="idp.example", previous_refresh_token=None
    )


def test_invalid_grant_requires_reauthorization_and_names_no_description() -> None:
    result = classify(400, {"error": "invalid_grant", "error_description": f"token {REFRESH_CANARY} revoked"})
    assert isinstance(result, outcomes.ReauthorizationRequired)
    assert result.error == "invalid_grant"
    assert REFRESH_CANARY not in result.detail and "revoked" in result.detail
    slack = classify(200, {"ok": False, "error": "invalid_refresh_token"})
    assert isinstance(slack, outcomes.ReauthorizationRequired)


def test_server_errors_and_throttling_are_transient_and_honour_retry_after() -> None:
    down = classify(503, None)
    assert isinstance(down, outcomes.RefreshFailed) and down.transient and "HTTP 503" in down.detail
    throttled = classify(429, {"error": "slow_down"}, retry_after="120")
    assert isinstance(throttled, outcomes.RefreshFailed) and throttled.transient and throttled.retry_after == 120
    dated = outcomes.parse_retry_after("Fri, 01 May 2026 12:01:00 GMT", NOW)
    assert dated is not None and 59 < dated < 60
    assert outcomes.parse_retry_after("soon", NOW) is None


def test_a_refused_client_is_not_transient_and_a_strange_error_code_is_not_echoed() -> None:
    refused = classify(401, {"error": "invalid_client"})
    assert isinstance(refused, outcomes.RefreshFailed) and not refused.transient
    assert "invalid_client" in refused.detail and "client secret" in refused.detail
    odd = classify(400, {"error": f"<script>{SECRET_CANARY}</script>"})
    assert isinstance(odd, outcomes.RefreshFailed) and SECRET_CANARY not in odd.detail


def test_a_200_that_is_not_a_token_answer_is_a_failure() -> None:
    assert isinstance(classify(200, None), outcomes.RefreshFailed)
    assert isinstance(classify(200, {"token": "x"}), outcomes.RefreshFailed)
    ok = classify(200, {"access_token": ACCESS_CANARY, "expires_in": 60})
    assert isinstance(ok, outcomes.Refreshed) and ok.tokens.expires_at == NOW + datetime.timedelta(seconds=60)


# ---- types, validation, client configuration ------------------------------------------------------------


def test_flowise_oauth2_types_declare_their_grant_and_accept_token_fields() -> None:
    oauth2_types = sorted(name for name in TYPES.names() if TYPES.get(name).oauth2 is not None)
    assert oauth2_types == [
        "gmailOAuth2",
        "googleCalendarOAuth2",
        "googleDocsOAuth2",
        "googleDriveOAuth2",
        "googleSheetsOAuth2",
        "microsoftOutlookOAuth2",
        "microsoftTeamsOAuth2",
        "slackOAuth2",
    ]
    assert all(TYPES.get(name).oauth2.grant == "authorization_code" for name in oauth2_types)
    assert GMAIL.field("refresh_token").type == "password" and GMAIL.field("expires_at").type == "string"
    assert TYPES.get("openAIApi").field("access_token") is None
    fields, problems = validation.finalize(
        GMAIL, {"clientId": "c", "clientSecret": "s", "refresh_token": REFRESH_CANARY, "expires_at": "x"}
    )
    assert problems == [] and fields["refresh_token"] == REFRESH_CANARY
    assert validation.check_spec(GMAIL, "gmailOAuth2", {"clientId": "c"}, ["clientSecret", *tokens.TOKEN_FIELDS]) == []
    assert validation.literal_secret_fields(GMAIL, {"refresh_token": "literal"}) == ["refresh_token"]


def custom_type(oauth2: object, inputs: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "metadata": {"name": "machineapi"},
        "spec": {
            "name": "machineApi",
            "label": "Machine API",
            "inputs": inputs
            or [
                {"name": "accessTokenUrl", "type": "url"},
                {"name": "clientId", "type": "string"},
                {"name": "clientSecret", "type": "password"},
            ],
            "oauth2": oauth2,
        },
    }


def test_a_custom_type_declares_client_credentials_and_round_trips() -> None:
    declared = {"grant": "client_credentials", "clientAuthentication": "client_secret_basic"}
    spec = registry.type_from_object(custom_type(declared))
    assert spec.oauth2 == registry.OAuth2Spec("client_credentials", "client_secret_basic")
    assert registry.type_from_object(registry.type_to_object(spec)) == spec
    with pytest.raises(registry.TypeDefinitionError, match=r"spec.oauth2.grant"):
        registry.type_from_object(custom_type({"grant": "implicit"}))
    with pytest.raises(registry.TypeDefinitionError, match="authorizationUrl"):
        registry.type_from_object(custom_type({"grant": "authorization_code"}))


def test_client_configuration_comes_from_flowise_field_names_and_refuses_placeholders_and_http() -> None:
    fields = {
        "clientId": "cid",
        "clientSecret": SECRET_CANARY,
        "authorizationUrl": "https://accounts.google.com/o/oauth2/v2/auth",
        "accessTokenUrl": "https://oauth2.googleapis.com/token",
        "scope": "a b",
        "additionalParameters": "access_type=offline",
    }
    config = provider.config_from_fields(GMAIL, fields, where="Credential team-a/gmail")
    assert config.token_host == "oauth2.googleapis.com" and config.scope == "a b"
    assert SECRET_CANARY not in repr(config)
    outlook = TYPES.get("microsoftOutlookOAuth2")
    defaults = {field.name: field.default for field in outlook.inputs if field.default is not None}
    with pytest.raises(provider.ConfigurationError, match="tenantId"):
        provider.config_from_fields(outlook, {**defaults, "clientId": "c"}, where="Credential x/y")
    with pytest.raises(provider.ConfigurationError, match="https"):
        provider.config_from_fields(GMAIL, {**fields, "accessTokenUrl": "http://idp.example/token"}, where="x")
    with pytest.raises(provider.ConfigurationError, match="clientId"):
        provider.config_from_fields(GMAIL, {**fields, "clientId": ""}, where="x")
    with pytest.raises(provider.ConfigurationError, match="not an OAuth2 type"):
        provider.config_from_fields(TYPES.get("openAIApi"), fields, where="x")


def test_requests_authenticate_the_client_as_the_type_says_and_print_no_value() -> None:
    post = provider.ProviderConfig(
        "authorization_code",
        "client_secret_post",
        "https://idp.example/token",
        "cid",
        redaction.Redacted(SECRET_CANARY),
        scope="mail.read",
    )
    refresh = provider.refresh_request(post, redaction.Redacted(REFRESH_CANARY))
    form = dict(urllib.parse.parse_qsl(refresh.encoded_form().decode()))
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_CANARY,
        "scope": "mail.read",
        "client_id": "cid",
        "client_secret": SECRET_CANARY,
    }
    assert refresh.authorization_header() is None
    assert SECRET_CANARY not in repr(refresh) and REFRESH_CANARY not in repr(refresh)
    basic = provider.ProviderConfig(
        "client_credentials",
        "client_secret_basic",
        "https://idp.example/token",
        "c id",
        redaction.Redacted("s:ecret"),
    )
    request = provider.client_credentials_request(basic)
    assert dict(urllib.parse.parse_qsl(request.encoded_form().decode())) == {"grant_type": "client_credentials"}
    header = request.authorization_header()
    assert header is not None and base64.b64decode(header.split()[1]) == b"c+id:s%3Aecret"
    exchange = provider.code_exchange_request(
        post, redaction.Redacted("code"), redaction.Redacted("verifier"), "http://127.0.0.1:9/callback"
    )
    assert dict(urllib.parse.parse_qsl(exchange.encoded_form().decode()))["code_verifier"] == "verifier"


# ---- where tokens are stored ---------------------------------------------------------------------------------


def test_the_token_store_is_the_secret_valuefrom_names() -> None:
    fields = (*store.required_fields("authorization_code"), "token_received_at")
    found = store.token_store(credential(token_refs(fields=fields)), GMAIL)
    assert found.secret_name == "gmail-tokens"
    written = found.secret_data({"access_token": redaction.Redacted("a"), "id_token": redaction.Redacted("i")})
    assert list(written) == ["access_token"]
    assert found.fields_from({"access_token": "a", "other": "x"}) == {"access_token": "a"}


def test_a_credential_without_token_references_is_told_exactly_what_to_add() -> None:
    with pytest.raises(store.TokenStoreError) as raised:
        store.token_store(credential(), GMAIL)
    message = str(raised.value)
    assert "spec.valueFrom.refresh_token: {secretKeyRef: {name: gmail-oauth2-tokens, key: refresh_token" in message
    with pytest.raises(store.TokenStoreError, match="several Secrets"):
        refs = {**token_refs("a", ("refresh_token", "access_token")), **token_refs("b", ("expires_at",))}
        store.token_store(credential(refs), GMAIL)
    with pytest.raises(store.TokenStoreError, match=r"spec\.data"):
        store.token_store(credential(token_refs(), data={"clientId": "c", "access_token": "x"}), GMAIL)
    with pytest.raises(store.TokenStoreError, match="managed Secret"):
        store.token_store(credential(token_refs("gmail")), GMAIL)
