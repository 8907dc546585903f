"""pytest fixtures for the OAuth2 tests: one real OAuth2 provider (oidc-provider from npm) per session.

- `oauth2_provider`: the session's provider (30-second access tokens, refresh tokens valid a day),
  with three clients: `rotating` (every refresh answer carries a new refresh token, the old one
  stops working), `fixed` (refresh answers carry no refresh token, as Google's: keep the one you
  have) and `machine` (client credentials, HTTP Basic client authentication). After each test it
  is up and without injected faults again, whatever the test did to it.
- Make it down with `oauth2_provider.stop_process()` and up with `start_process()` (same port,
  same grants); make its token endpoint fail with `set_fault("error", status=503)`,
  `set_fault("throttle", retry_after=N)` or `set_fault("hang")`; revoke a token with
  `revoke(token, client_id)`; count token requests with `token_requests()`.
- `authorize_tokens(provider, client_id)` runs the whole authorization-code flow (the test plays
  the browser) with credbridge's own core and token client, for tests that need tokens to start
  from.
- For cluster tests: `create_oauth2_type` puts a CredentialType for the test provider into the
  cluster, `credential_objects` makes a Credential of it (client secret from a Secret, token fields
  from a token Secret with `optional: true`), and `AuthorizeCommand` runs
  `credbridge oauth2 authorize` as a process, hands the test the authorization URL it prints, and
  takes the pasted redirect (`--no-browser`) or lets the test deliver it to the loopback listener.

Like the other fixtures they never skip: without Node or npm the tests that need the provider
error out with the reason.
"""

from __future__ import annotations

import base64
import os
import pathlib
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from credbridge.core import names, registry
from credbridge.core.oauth2 import authorization, outcomes, pkce, provider, tokens
from credbridge.local import oauth2provider
from credbridge.oauth2client import client as token_client

SCOPE = "mail.read"


@pytest.fixture(scope="session")
def oauth2_provider_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[oauth2provider.OAuth2Provider]:
    """The session's provider process."""
    started = oauth2provider.start_provider(tmp_path_factory.mktemp("oauth2-provider"))
    yield started
    started.stop_process()


@pytest.fixture
def oauth2_provider(oauth2_provider_process: oauth2provider.OAuth2Provider) -> Iterator[oauth2provider.OAuth2Provider]:
    """The session's provider, up and without faults after the test whatever the test did."""
    yield oauth2_provider_process
    if not oauth2_provider_process.alive():
        oauth2_provider_process.start_process()
    oauth2_provider_process.set_fault("none")


def provider_config(
    server: oauth2provider.OAuth2Provider, client_id: str, *, scope: str = SCOPE
) -> provider.ProviderConfig:
    """The client configuration a Credential for `client_id` of `server` resolves to."""
    client = server.clients[client_id]
    return provider.ProviderConfig(
        grant=client.grant,
        client_authentication=client.authentication,
        token_url=server.token_endpoint,
        client_id=client.client_id,
        client_secret=client.client_secret,
        scope=scope,
        authorization_url=server.authorization_endpoint if client.grant == "authorization_code" else "",
    )


def credential_fields(server: oauth2provider.OAuth2Provider, client_id: str, *, scope: str = SCOPE) -> dict[str, str]:
    """The fields (Flowise's names) of a Credential for `client_id` of `server`, secret included."""
    client = server.clients[client_id]
    fields = {
        "clientId": client.client_id,
        "clientSecret": client.client_secret.reveal(),
        "accessTokenUrl": server.token_endpoint,
        "scope": scope,
    }
    if client.grant == "authorization_code":
        fields["authorizationUrl"] = server.authorization_endpoint
    return fields


def oauth2_type(name: str, grant: str, authentication: str = "client_secret_post") -> registry.CredentialTypeSpec:
    """A custom OAuth2 CredentialType for the test provider (Flowise's field names, no Google defaults)."""
    inputs = [
        {"name": "accessTokenUrl", "label": "Access Token URL", "type": "string"},
        {"name": "clientId", "label": "Client ID", "type": "string"},
        {"name": "clientSecret", "label": "Client Secret", "type": "password"},
        {"name": "scope", "label": "Scope", "type": "string", "optional": True},
    ]
    if grant == "authorization_code":
        inputs.insert(0, {"name": "authorizationUrl", "label": "Authorization URL", "type": "string"})
    oauth2: dict[str, str] = {"grant": grant}
    if authentication != "client_secret_post":
        oauth2["clientAuthentication"] = authentication
    return registry.type_from_object(
        {"spec": {"name": name, "label": name, "version": 1, "inputs": inputs, "oauth2": oauth2}}
    )


def authorize_tokens(
    server: oauth2provider.OAuth2Provider, client_id: str, *, scope: str = SCOPE, port: int = 8765
) -> tokens.TokenSet:
    """Tokens for `client_id` from a whole authorization-code flow with PKCE, the test playing the browser."""
    config = provider_config(server, client_id, scope=scope)
    state = authorization.AuthorizationState.new("test", "test", "uid", secrets.token_bytes)
    verifier = pkce.make_verifier(secrets.token_bytes)
    redirect_uri = authorization.loopback_redirect_uri(port)
    url = provider.authorization_url(config, redirect_uri=redirect_uri, state=state, verifier=verifier)
    code = authorization.parse_redirect(server.sign_in_and_consent(url), state)
    result = token_client.TokenClient(ca_pem=server.ca_pem).exchange_code(config, code, verifier, redirect_uri)
    if not isinstance(result, outcomes.Refreshed):
        raise AssertionError(f"the test provider did not issue tokens: {result}")
    return result.tokens


TOKEN_FIELDS_STORED = ("refresh_token", "access_token", "expires_at", "token_received_at")
"""The token fields the test Credentials read from their token Secret (optional references)."""


def create_oauth2_type(api: client.ApiClient, spec: registry.CredentialTypeSpec) -> None:
    """Creates the CredentialType `spec` in the cluster (cluster-scoped: name it uniquely)."""
    body = registry.type_to_object(spec)
    body["metadata"]["labels"] = {"created-by": "credbridge-tests"}
    client.CustomObjectsApi(api).create_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, body
    )


def delete_oauth2_type(api: client.ApiClient, spec: registry.CredentialTypeSpec) -> None:
    client.CustomObjectsApi(api).delete_cluster_custom_object(
        names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, registry.type_object_name(spec.name)
    )


def credential_objects(
    server: oauth2provider.OAuth2Provider,
    client_id: str,
    *,
    name: str,
    type_name: str,
    token_fields: tuple[str, ...] = TOKEN_FIELDS_STORED,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Credential, client Secret) for `client_id` of `server`: the client secret in Secret `<name>-client`,
    the token fields from Secret `<name>-tokens` (optional, so the Credential is Ready before authorizing)."""
    fields = credential_fields(server, client_id)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-client", "labels": {"created-by": "credbridge-tests"}},
        "data": {"clientSecret": base64.b64encode(fields.pop("clientSecret").encode()).decode()},
    }
    value_from: dict[str, Any] = {"clientSecret": {"secretKeyRef": {"name": f"{name}-client", "key": "clientSecret"}}}
    for field in token_fields:
        value_from[field] = {"secretKeyRef": {"name": f"{name}-tokens", "key": field, "optional": True}}
    credential = {
        "apiVersion": names.API_VERSION,
        "kind": names.CREDENTIAL_KIND,
        "metadata": {"name": name, "labels": {"created-by": "credbridge-tests"}},
        "spec": {"type": type_name, "data": fields, "valueFrom": value_from},
    }
    return credential, secret


class AuthorizeCommand:
    """`credbridge oauth2 authorize` as a process, its output collected as it comes."""

    def __init__(self, kubeconfig: pathlib.Path, namespace: str, name: str, *args: str, ca_file: pathlib.Path) -> None:
        """Starts the command for Credential `namespace/name` with `args` (e.g. `--no-browser`)."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "BROWSER": "true"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "credbridge.cli.main",
                "oauth2",
                "authorize",
                name,
                "-n",
                namespace,
                "--ca-file",
                str(ca_file),
                "--timeout",
                "120",
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, into), daemon=True)
            for stream, into in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def authorization_url(self, timeout: float = 60.0) -> str:
        """The authorization URL the command printed; fails when it exits or prints none in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr):
                if line.startswith("https://"):
                    return line.strip()
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.finish()
        raise AssertionError(f"credbridge oauth2 authorize printed no URL: {''.join(self.stderr)}")

    def finish(self, pasted: str | None = None, timeout: float = 120.0) -> tuple[int, str, str]:
        """Pastes `pasted` (with a newline) when given, waits for the exit; (exit code, stdout, stderr)."""
        if pasted is not None and self.process.stdin is not None:
            self.process.stdin.write(pasted + "\n")
            self.process.stdin.flush()
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(10)
        return code, "".join(self.stdout), "".join(self.stderr)


# ---- the operator's refresh ----------------------------------------------------------------------------


def refresh_args(server: oauth2provider.OAuth2Provider) -> list[str]:
    """`credbridge run` flags that let the operator refresh tokens at the test provider (and at every provider
    `private_provider` starts, which share its CA): its CA, its loopback host and address allowed, short backoff."""
    return [
        "--oauth2-ca-file",
        str(server.ca_file),
        "--oauth2-allow-host",
        "127.0.0.1",
        "--oauth2-allow-network",
        "127.0.0.1/32",
        "--oauth2-backoff-initial",
        "1",
        "--oauth2-backoff-max",
        "4",
    ]


@pytest.fixture
def private_provider(oauth2_provider_process: oauth2provider.OAuth2Provider, tmp_path: pathlib.Path) -> Iterator[Any]:
    """Starts providers of the test's own (`private_provider(access_token_seconds=60)`): their token counts,
    faults and downtime concern the test alone. They share the session provider's CA, so an operator started
    with `refresh_args(oauth2_provider)` trusts them."""
    started: list[oauth2provider.OAuth2Provider] = []

    def start(access_token_seconds: int = 30) -> oauth2provider.OAuth2Provider:
        server = oauth2provider.start_provider(
            tmp_path / f"provider-{len(started)}",
            access_token_seconds=access_token_seconds,
            root=oauth2_provider_process.root,
            ca=oauth2_provider_process.ca,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop_process()


def store_tokens(api: client.ApiClient, namespace: str, name: str, got: tokens.TokenSet) -> None:
    """Writes tokens into the token Secret of Credential `name` (made by `credential_objects`), as
    `credbridge oauth2 authorize` would."""
    values = got.field_values()
    data = {field: base64.b64encode(values[field].reveal().encode()).decode() for field in TOKEN_FIELDS_STORED}
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-tokens", "labels": {"created-by": "credbridge-tests"}},
        "data": data,
    }
    client.CoreV1Api(api).create_namespaced_secret(namespace, body)


def token_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    """The token Secret of Credential `name`, decoded ({} when it does not exist)."""
    try:
        found = client.CoreV1Api(api).read_namespaced_secret(f"{name}-tokens", namespace)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return {key: base64.b64decode(value).decode() for key, value in (found.data or {}).items()}


def oauth2_state(api: client.ApiClient, namespace: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the OAuth2Ready condition or {}, status.oauth2 or {}) of a Credential."""
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name
    )
    status = found.get("status") or {}
    condition: dict[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == "OAuth2Ready"), {})
    return condition, status.get("oauth2") or {}


def wait_for_oauth2(
    api: client.ApiClient,
    namespace: str,
    name: str,
    predicate: Any,
    *,
    timeout: float = 120.0,
    what: str = "the OAuth2 state",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Polls `oauth2_state` until `predicate(condition, block)` holds; fails naming `what` and the last state."""
    deadline = time.monotonic() + timeout
    state: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    while time.monotonic() < deadline:
        state = oauth2_state(api, namespace, name)
        if predicate(*state):
            return state
        time.sleep(0.5)
    condition, block = state
    raise AssertionError(
        f"{what} did not happen within {timeout:.0f}s; OAuth2Ready: {condition.get('reason')} "
        f"({condition.get('message')}); status.oauth2: {block}"
    )


def requests_of(server: oauth2provider.OAuth2Provider, grant: str, client_id: str) -> int:
    """How many `grant` token requests of `client_id` the provider answered, whatever the outcome."""
    prefix = f"{grant}/{client_id}/"
    return sum(count for key, count in server.token_requests().items() if key.startswith(prefix))
