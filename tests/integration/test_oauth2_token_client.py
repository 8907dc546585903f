"""credbridge's token client against a real OAuth2 provider (oidc-provider from npm, 30-second tokens):
the authorization-code flow with PKCE played headless, refresh with and without rotation, revocation,
client credentials, an outage, throttling, a hanging endpoint and an untrusted certificate.

No cluster: these check what the CLI and the operator's refresh build on.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import urllib.parse

import pytest

from credbridge.core import redaction
from credbridge.core.oauth2 import authorization, outcomes, pkce
from credbridge.local import oauth2provider
from credbridge.oauth2client import client as token_client
from credbridge.testing import oauth2 as oauth2_testing


def client_for(server: oauth2provider.OAuth2Provider, **settings: float) -> token_client.TokenClient:
    return token_client.TokenClient(token_client.ClientSettings(**settings), ca_pem=server.ca_pem)


def test_the_authorization_code_flow_with_pkce_gives_tokens_that_expire_as_the_provider_says(
    oauth2_provider: oauth2provider.OAuth2Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = datetime.datetime.now(datetime.UTC)
    got = oauth2_testing.authorize_tokens(oauth2_provider, "rotating")
    assert got.refresh_token is not None and got.refresh_token_rotated
    assert got.token_type == "Bearer" and got.expires_in == 30 and got.granted_scope == oauth2_testing.SCOPE
    assert got.expires_at is not None
    assert before + datetime.timedelta(seconds=29) <= got.expires_at <= got.received_at + datetime.timedelta(seconds=30)
    for value in (got.access_token.reveal(), got.refresh_token.reveal()):
        assert value not in repr(got) and value not in caplog.text


def test_the_provider_refuses_an_authorization_without_pkce_and_a_code_with_the_wrong_verifier(
    oauth2_provider: oauth2provider.OAuth2Provider,
) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "fixed")
    state = authorization.AuthorizationState.new("test", "c", "uid", secrets.token_bytes)
    without_pkce = (
        oauth2_provider.authorization_endpoint
        + "?"
        + urllib.parse.urlencode(
            {
                "client_id": "fixed",
                "response_type": "code",
                "redirect_uri": "http://127.0.0.1:9/callback",
                "state": state.encode(),
                "scope": "mail.read",
            }
        )
    )
    redirect = oauth2_provider.sign_in_and_consent(without_pkce)
    with pytest.raises(authorization.AuthorizationDenied) as refused:
        authorization.parse_redirect(redirect, state)
    assert refused.value.error == "invalid_request"

    verifier = pkce.make_verifier(secrets.token_bytes)
    url = authorization.authorization_url(
        config.authorization_url,
        client_id="fixed",
        redirect_uri="http://127.0.0.1:9/callback",
        scope="mail.read",
        state=state,
        code_challenge=pkce.challenge(verifier),
    )
    code = authorization.parse_redirect(oauth2_provider.sign_in_and_consent(url), state)
    wrong = pkce.make_verifier(secrets.token_bytes)
    result = client_for(oauth2_provider).exchange_code(config, code, wrong, "http://127.0.0.1:9/callback")
    assert isinstance(result, outcomes.ReauthorizationRequired) and result.error == "invalid_grant"


def test_a_declined_consent_comes_back_as_access_denied(oauth2_provider: oauth2provider.OAuth2Provider) -> None:
    state = authorization.AuthorizationState.new("test", "c", "uid", secrets.token_bytes)
    url = authorization.authorization_url(
        oauth2_provider.authorization_endpoint,
        client_id="fixed",
        redirect_uri="http://127.0.0.1:9/callback",
        scope="mail.read",
        state=state,
        code_challenge=pkce.challenge(pkce.make_verifier(secrets.token_bytes)),
    )
    with pytest.raises(authorization.AuthorizationDenied) as denied:
        authorization.parse_redirect(oauth2_provider.sign_in_and_consent(url, approve=False), state)
    assert denied.value.error == "access_denied"


def test_a_rotating_provider_hands_out_a_new_refresh_token_and_refuses_the_used_one(
    oauth2_provider: oauth2provider.OAuth2Provider,
) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "rotating")
    first = oauth2_testing.authorize_tokens(oauth2_provider, "rotating")
    assert first.refresh_token is not None
    result = client_for(oauth2_provider).refresh(config, first.refresh_token)
    assert isinstance(result, outcomes.Refreshed)
    assert result.tokens.refresh_token_rotated and result.tokens.refresh_token != first.refresh_token
    assert result.tokens.access_token != first.access_token
    reused = client_for(oauth2_provider).refresh(config, first.refresh_token)
    assert isinstance(reused, outcomes.ReauthorizationRequired)


def test_a_provider_that_omits_the_refresh_token_lets_the_client_keep_and_reuse_its_own(
    oauth2_provider: oauth2provider.OAuth2Provider,
) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "fixed")
    first = oauth2_testing.authorize_tokens(oauth2_provider, "fixed")
    assert first.refresh_token is not None
    client = client_for(oauth2_provider)
    for _ in range(2):
        result = client.refresh(config, first.refresh_token)
        assert isinstance(result, outcomes.Refreshed)
        assert result.tokens.refresh_token == first.refresh_token and not result.tokens.refresh_token_rotated


def test_a_revoked_refresh_token_requires_reauthorization(oauth2_provider: oauth2provider.OAuth2Provider) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "fixed")
    got = oauth2_testing.authorize_tokens(oauth2_provider, "fixed")
    assert got.refresh_token is not None
    oauth2_provider.revoke(got.refresh_token, "fixed")
    result = client_for(oauth2_provider).refresh(config, got.refresh_token)
    assert isinstance(result, outcomes.ReauthorizationRequired)
    assert got.refresh_token.reveal() not in result.detail


def test_client_credentials_with_basic_authentication(oauth2_provider: oauth2provider.OAuth2Provider) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "machine")
    result = client_for(oauth2_provider).client_credentials(config)
    assert isinstance(result, outcomes.Refreshed)
    assert result.tokens.refresh_token is None and result.tokens.expires_in == 30
    wrong = dataclasses.replace(config, client_secret=redaction.Redacted("not-the-secret"))
    refused = client_for(oauth2_provider).client_credentials(wrong)
    assert isinstance(refused, outcomes.RefreshFailed) and not refused.transient
    assert "invalid_client" in refused.detail


def test_an_outage_is_transient_and_the_grant_survives_it(oauth2_provider: oauth2provider.OAuth2Provider) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "fixed")
    got = oauth2_testing.authorize_tokens(oauth2_provider, "fixed")
    assert got.refresh_token is not None
    oauth2_provider.stop_process()
    down = client_for(oauth2_provider, connect_timeout=2).refresh(config, got.refresh_token)
    assert isinstance(down, outcomes.RefreshFailed) and down.transient and "not reachable" in down.detail
    oauth2_provider.start_process()
    back = client_for(oauth2_provider).refresh(config, got.refresh_token)
    assert isinstance(back, outcomes.Refreshed)


def test_server_errors_throttling_and_a_hanging_endpoint_are_transient_failures(
    oauth2_provider: oauth2provider.OAuth2Provider,
) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "machine")
    oauth2_provider.set_fault("error", status=503)
    failed = client_for(oauth2_provider).client_credentials(config)
    assert isinstance(failed, outcomes.RefreshFailed) and failed.transient and "HTTP 503" in failed.detail
    oauth2_provider.set_fault("throttle", retry_after=42)
    throttled = client_for(oauth2_provider).client_credentials(config)
    assert isinstance(throttled, outcomes.RefreshFailed) and throttled.transient and throttled.retry_after == 42
    oauth2_provider.set_fault("hang")
    hung = client_for(oauth2_provider, request_timeout=2).client_credentials(config)
    assert isinstance(hung, outcomes.RefreshFailed) and hung.transient and "did not answer within 2s" in hung.detail
    oauth2_provider.set_fault("none")
    assert isinstance(client_for(oauth2_provider).client_credentials(config), outcomes.Refreshed)
    assert oauth2_provider.token_requests().get("fault/unknown/hang", 0) >= 1


def test_an_untrusted_certificate_and_a_plain_http_url_are_refused(
    oauth2_provider: oauth2provider.OAuth2Provider,
) -> None:
    config = oauth2_testing.provider_config(oauth2_provider, "machine")
    untrusted = token_client.TokenClient().client_credentials(config)
    assert isinstance(untrusted, outcomes.RefreshFailed) and "TLS" in untrusted.detail
    plain = dataclasses.replace(config, token_url=config.token_url.replace("https:", "http:"))
    refused = client_for(oauth2_provider).client_credentials(plain)
    assert isinstance(refused, outcomes.RefreshFailed) and not refused.transient and "not https" in refused.detail
