"""A Credential's OAuth2 client configuration, and the token requests made from it.

The configuration lives in the Credential's own fields, under Flowise's names (`authorizationUrl`,
`accessTokenUrl`, `clientId`, `clientSecret`, `scope`, `additionalParameters`), and the grant and
client authentication come from its CredentialType's `oauth2` section. Requests are built here,
as data (`TokenRequest`), so the one module that sends them (`credbridge.oauth2client`) has no
OAuth2 rules of its own and the rules are tested without a network.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import urllib.parse

from credbridge.core import redaction, registry
from credbridge.core.oauth2 import authorization, pkce

AUTHORIZATION_URL = "authorizationUrl"
TOKEN_URL = "accessTokenUrl"
CLIENT_ID = "clientId"
CLIENT_SECRET = "clientSecret"
SCOPE = "scope"
ADDITIONAL_PARAMETERS = "additionalParameters"


class ConfigurationError(ValueError):
    """The Credential's OAuth2 configuration cannot be used; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """What a token request needs, read from one Credential's fields."""

    grant: str
    client_authentication: str
    token_url: str
    client_id: str
    client_secret: redaction.Redacted | None
    scope: str = ""
    authorization_url: str = ""
    """Empty for the client-credentials grant."""
    additional_parameters: str = ""
    """Extra query parameters of the authorization URL (Google's `access_type=offline&prompt=consent`)."""
    token_host_declared: bool = False
    """The token URL's host is the one the CredentialType itself declares (its `accessTokenUrl` default, such as
    `oauth2.googleapis.com`), not one a Credential's field chose: the operator's egress policy lets requests
    go there without the admin's allow-list."""

    @property
    def token_host(self) -> str:
        """The token endpoint's host, for messages (never the whole URL: a query could hold anything)."""
        return urllib.parse.urlsplit(self.token_url).hostname or "the token endpoint"


def _url(fields: collections.abc.Mapping[str, str], name: str, where: str, allow_http: bool) -> str:
    value = (fields.get(name) or "").strip()
    if not value:
        raise ConfigurationError(f"{where}: field {name!r} is empty: set it to the provider's URL")
    if "<" in value or ">" in value:
        raise ConfigurationError(
            f"{where}: field {name!r} still holds a placeholder such as <tenantId>: replace it with your own value"
        )
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{where}: field {name!r} must be an https:// URL with a host")
    if parts.scheme == "http" and not allow_http:
        raise ConfigurationError(
            f"{where}: field {name!r} must use https: tokens and the client secret would cross the network in clear"
        )
    return value


def config_from_fields(
    cred_type: registry.CredentialTypeSpec,
    fields: collections.abc.Mapping[str, str],
    *,
    where: str,
    allow_http: bool = False,
) -> ProviderConfig:
    """The OAuth2 configuration of a Credential of `cred_type` from its resolved `fields`.

    `where` names the Credential in messages (`Credential team-a/gmail`). Raises ConfigurationError
    when the type has no `oauth2` section or a needed field is empty or not an https URL.
    """
    if cred_type.oauth2 is None:
        raise ConfigurationError(
            f"{where}: type {cred_type.name!r} is not an OAuth2 type (its CredentialType has no spec.oauth2)"
        )
    grant = cred_type.oauth2.grant
    client_id = (fields.get(CLIENT_ID) or "").strip()
    if not client_id:
        raise ConfigurationError(f"{where}: field {CLIENT_ID!r} is empty: set it to the client id the provider gave")
    secret = fields.get(CLIENT_SECRET) or ""
    token_url = _url(fields, TOKEN_URL, where, allow_http)
    return ProviderConfig(
        grant=grant,
        client_authentication=cred_type.oauth2.client_authentication,
        token_url=token_url,
        client_id=client_id,
        client_secret=redaction.Redacted(secret) if secret else None,
        scope=(fields.get(SCOPE) or "").strip(),
        authorization_url=_url(fields, AUTHORIZATION_URL, where, allow_http) if grant == "authorization_code" else "",
        additional_parameters=fields.get(ADDITIONAL_PARAMETERS) or "",
        token_host_declared=_declared_host(cred_type, token_url),
    )


def _declared_host(cred_type: registry.CredentialTypeSpec, token_url: str) -> bool:
    """Whether `token_url` goes to the host the type's own `accessTokenUrl` default names."""
    declared = cred_type.field(TOKEN_URL)
    default = declared.default if declared is not None else None
    if not default:
        return False
    declared_host = urllib.parse.urlsplit(str(default)).hostname
    return bool(declared_host) and declared_host == urllib.parse.urlsplit(token_url).hostname


def authorization_url(
    config: ProviderConfig,
    *,
    redirect_uri: str,
    state: authorization.AuthorizationState,
    verifier: redaction.Redacted,
) -> str:
    """The URL a person opens to authorize `config`'s client: PKCE challenge of `verifier`, `state`,
    the configured scope and additional parameters."""
    return authorization.authorization_url(
        config.authorization_url,
        client_id=config.client_id,
        redirect_uri=redirect_uri,
        scope=config.scope,
        state=state,
        code_challenge=pkce.challenge(verifier),
        additional_parameters=config.additional_parameters,
    )


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint, as data: every value wrapped, so printing it shows none."""

    url: str
    form: collections.abc.Mapping[str, redaction.Redacted]
    basic_auth: tuple[str, redaction.Redacted] | None = None
    """(client id, client secret) for an HTTP Basic header (client_secret_basic), else None."""
    refresh_token: redaction.Redacted | None = None
    """The refresh token the request uses, kept when the answer brings no new one."""
    host_declared: bool = False
    """The URL's host is the one the Credential's type declares (`ProviderConfig.token_host_declared`)."""

    def encoded_form(self) -> bytes:
        """The form body, `application/x-www-form-urlencoded` (reveals the values: for the transport only)."""
        return urllib.parse.urlencode({name: value.reveal() for name, value in self.form.items()}).encode("ascii")

    def authorization_header(self) -> str | None:
        """The Basic header value for client_secret_basic (RFC 6749 §2.3.1: both parts form-encoded first)."""
        if self.basic_auth is None:
            return None
        client_id, secret = self.basic_auth
        pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret.reveal())}"
        return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def _request(
    config: ProviderConfig,
    form: dict[str, str | redaction.Redacted],
    refresh_token: redaction.Redacted | None = None,
) -> TokenRequest:
    wrapped = {
        name: value if isinstance(value, redaction.Redacted) else redaction.Redacted(value)
        for name, value in form.items()
    }
    basic = None
    secret = config.client_secret or redaction.Redacted("")
    if config.client_authentication == "client_secret_basic":
        basic = (config.client_id, secret)
    else:
        wrapped["client_id"] = redaction.Redacted(config.client_id)
        if config.client_secret is not None:
            wrapped["client_secret"] = config.client_secret
    return TokenRequest(config.token_url, wrapped, basic, refresh_token, config.token_host_declared)


def code_exchange_request(
    config: ProviderConfig, code: redaction.Redacted, verifier: redaction.Redacted, redirect_uri: str
) -> TokenRequest:
    """Redeems an authorization code (RFC 6749 §4.1.3) with its PKCE verifier (RFC 7636 §4.5)."""
    return _request(
        config,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier},
    )


def refresh_request(config: ProviderConfig, refresh_token: redaction.Redacted) -> TokenRequest:
    """Asks for a new access token with a refresh token (RFC 6749 §6); sends the configured scope, as
    Flowise does (Microsoft's v2 endpoint wants it)."""
    form: dict[str, str | redaction.Redacted] = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if config.scope:
        form["scope"] = config.scope
    return _request(config, form, refresh_token)


def client_credentials_request(config: ProviderConfig) -> TokenRequest:
    """Asks for an access token with the client's own credentials (RFC 6749 §4.4)."""
    form: dict[str, str | redaction.Redacted] = {"grant_type": "client_credentials"}
    if config.scope:
        form["scope"] = config.scope
    return _request(config, form)
