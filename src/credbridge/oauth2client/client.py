"""Sends token requests to OAuth2 providers and reads what they answered.

The requests are built by `core.oauth2.provider` (code exchange, refresh, client credentials),
the answers judged by `core.oauth2.outcomes`; this module only sends and decodes, through the one
transport function, so every rule stays testable without a network. The CLI (`credbridge oauth2
authorize`) and the operator's token refresh use the same client.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import json
import logging
import ssl
import typing
import urllib.parse

import credbridge
from credbridge.core import redaction
from credbridge.core.oauth2 import outcomes, provider
from credbridge.oauth2client import egress as egress_module
from credbridge.oauth2client import transport

logger = logging.getLogger(__name__)

Clock = collections.abc.Callable[[], datetime.datetime]
Transport = collections.abc.Callable[..., transport.Answer]
"""`transport.post_form`'s shape: (url, body, headers, *, limits, tls[, connect]) → Answer."""


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Limits of every request to a token endpoint."""

    connect_timeout: float = 5.0
    """Seconds to connect (TCP and TLS)."""
    request_timeout: float = 15.0
    """Seconds one token request may take in all, however slowly the provider answers."""
    max_response_bytes: int = 64 * 1024
    """Largest answer read (bytes); a larger one fails instead of filling memory."""
    allow_http: bool = False
    """Accept http:// token URLs (local development only: the client secret and tokens would cross the
    network in clear)."""

    @property
    def limits(self) -> transport.Limits:
        return transport.Limits(self.connect_timeout, self.request_timeout, self.max_response_bytes)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _decode(answer: transport.Answer) -> dict[str, typing.Any] | None:
    try:
        decoded = json.loads(answer.body) if answer.body else None
    except (ValueError, UnicodeDecodeError):
        decoded = None
    if decoded is None and answer.body and "x-www-form-urlencoded" in answer.content_type:
        decoded = dict(urllib.parse.parse_qsl(answer.body.decode("utf-8", "replace")))  # GitHub's old default
    return decoded if isinstance(decoded, dict) else None


class TokenClient:
    """Sends token requests; thread-safe (one connection per request, nothing shared but settings)."""

    def __init__(
        self,
        settings: ClientSettings = ClientSettings(),
        *,
        ca_pem: str | None = None,
        clock: Clock = _utcnow,
        send: Transport = transport.post_form,
        egress: egress_module.Egress | None = None,
    ) -> None:
        """`ca_pem`: CA certificates (PEM) to trust instead of the system store (a private provider, the
        tests). `send` is the transport (`transport.post_form`), the one way out to a provider. `egress`:
        the policy every request must pass (the operator's), None for none (the CLI, on a person's machine)."""
        self.settings = settings
        try:
            self._tls = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        except (ssl.SSLError, ValueError):
            raise ValueError("the CA bundle for OAuth2 providers is not valid PEM certificates") from None
        self._clock = clock
        self._send = send
        self._egress = egress

    def __repr__(self) -> str:
        return f"TokenClient(settings={self.settings!r})"

    def exchange_code(
        self,
        config: provider.ProviderConfig,
        code: redaction.Redacted,
        verifier: redaction.Redacted,
        redirect_uri: str,
    ) -> outcomes.Outcome:
        """Redeems an authorization code with its PKCE verifier (`credbridge oauth2 authorize`)."""
        return self.send(provider.code_exchange_request(config, code, verifier, redirect_uri))

    def refresh(self, config: provider.ProviderConfig, refresh_token: redaction.Redacted) -> outcomes.Outcome:
        """A new access token for `refresh_token`; a rotated refresh token comes with it, else the old one is kept."""
        return self.send(provider.refresh_request(config, refresh_token))

    def client_credentials(self, config: provider.ProviderConfig) -> outcomes.Outcome:
        """An access token for the client itself (the client-credentials grant)."""
        return self.send(provider.client_credentials_request(config))

    def send(self, request: provider.TokenRequest) -> outcomes.Outcome:
        """Sends one token request and judges the answer. Never raises for what a provider does."""
        parts = urllib.parse.urlsplit(request.url)
        host = parts.hostname or "the token endpoint"
        if parts.scheme != "https" and not (parts.scheme == "http" and self.settings.allow_http):
            return outcomes.transport_failure(
                host,
                "the token URL is not https: credbridge sends client secrets and tokens over TLS only",
                transient=False,
            )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": f"credbridge/{credbridge.__version__}",
        }
        authorization = request.authorization_header()
        if authorization is not None:
            headers["Authorization"] = authorization
        options: dict[str, typing.Any] = {}
        if self._egress is not None:
            refused = self._egress.host_refusal(request.url, host_declared=request.host_declared)
            if refused is not None:
                logger.debug("token request to %s refused by the egress policy", host)
                return outcomes.transport_failure(host, refused, transient=False)
            options["connect"] = self._egress.connector()
        try:
            answer = self._send(
                request.url,
                request.encoded_form(),
                headers,
                limits=self.settings.limits,
                tls=self._tls if parts.scheme == "https" else None,
                **options,
            )
        except transport.TransportError as error:
            logger.debug("token request to %s failed: %s", host, error)
            return outcomes.transport_failure(host, str(error), transient=error.transient)
        logger.debug("token request to %s answered HTTP %d", host, answer.status)
        if 300 <= answer.status < 400:
            return outcomes.transport_failure(
                host,
                f"answered with a redirect (HTTP {answer.status}), which credbridge does not follow: check the token "
                "URL (it must be the endpoint itself)",
                transient=False,
            )
        return outcomes.classify_answer(
            answer.status,
            _decode(answer),
            retry_after=answer.retry_after,
            now=self._clock(),
            endpoint=host,
            previous_refresh_token=request.refresh_token,
        )
