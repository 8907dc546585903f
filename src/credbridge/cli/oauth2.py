"""`credbridge oauth2 authorize`: the one step of an OAuth2 Credential that needs a person.

An OAuth2 Credential (Gmail, Outlook, Slack, ...) works only once someone has signed in at the
provider and consented. This command runs the authorization-code flow from a terminal, the way
`gcloud auth login` and kubelogin do: PKCE, a random `state` bound to the Credential, a redirect
to a listener on 127.0.0.1 (or, with `--no-browser`, the redirect address pasted back), then the
code exchange. The refresh token, the first access token and its expiry go into the Secret the
Credential reads its token fields from (`spec.valueFrom`), and only into the keys it names; from
there the operator encrypts them and keeps the access token fresh.

Everything that can refuse is checked before the browser opens: the Credential and its type, where
its tokens go, the client configuration, and — with a SelfSubjectAccessReview, as `kubectl auth
can-i` — whether the caller may write that Secret. No token, code or secret is ever printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import http.server
import pathlib
import secrets
import socket
import sys
import threading
import time
import urllib.parse
import webbrowser

from credbridge.core import envrefs, registry, views
from credbridge.core.oauth2 import authorization, outcomes, pkce, provider, store, tokens
from credbridge.kube import credentials as kube_credentials
from credbridge.oauth2client import client as token_client

EXIT_REFUSED = 1
CLIENT_FIELDS = (
    provider.AUTHORIZATION_URL,
    provider.TOKEN_URL,
    provider.CLIENT_ID,
    provider.CLIENT_SECRET,
    provider.SCOPE,
    provider.ADDITIONAL_PARAMETERS,
)
TOKENS_ANNOTATION = store.TOKENS_ANNOTATION
"""On a token Secret the command creates or updates: the Credential whose tokens it holds."""


@dataclasses.dataclass(frozen=True)
class AuthorizeDefaults:
    """Defaults of `credbridge oauth2 authorize`."""

    port: int = 0
    """Port of the loopback redirect on 127.0.0.1; 0 picks a free one (providers accept any port on the
    loopback address for desktop clients; register http://127.0.0.1:PORT/callback where one must be fixed)."""
    timeout: float = 300.0
    """Seconds to wait for the browser's redirect (or the pasted address)."""
    namespace: str = "default"


class AuthorizeError(Exception):
    """The command cannot go on; the message names the object, field or verb and the fix, never a value."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = AuthorizeDefaults()
    parser = subparsers.add_parser(
        "oauth2",
        help="OAuth2 Credentials: authorize once, the operator keeps the access token fresh",
        description="Commands for OAuth2 Credentials (types with an oauth2 section, such as gmailOAuth2).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    authorize = actions.add_parser(
        "authorize",
        help="sign in at the provider and store the Credential's refresh token",
        description=(
            "Run the OAuth2 authorization-code flow (PKCE, loopback redirect) for an OAuth2 Credential and store "
            "its refresh token, first access token and expiry in the Secret the Credential reads its token fields "
            "from (spec.valueFrom). Needs get on the Credential and on the Secrets it reads, and get plus patch "
            "(or create, when it does not exist yet) on that Secret. Tokens are never printed."
        ),
    )
    authorize.add_argument("credential", metavar="CREDENTIAL", help="the OAuth2 Credential")
    authorize.add_argument(
        "-n", "--namespace", default=defaults.namespace, metavar="NS", help="its namespace (default: %(default)s)"
    )
    authorize.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help="port of the redirect listener on 127.0.0.1 (default: a free one)",
    )
    authorize.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser or listen: print the URL, then read the address the browser was sent to from stdin",
    )
    authorize.add_argument(
        "--redirect-uri",
        metavar="URL",
        help=(
            "with --no-browser: the redirect URI to send instead of http://127.0.0.1:PORT/callback, for providers "
            "that accept only registered https URLs (Slack); copy the address the browser lands on from its "
            "address bar, even if the page does not load"
        ),
    )
    authorize.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        metavar="SECONDS",
        help="how long to wait for the redirect (default: %(default)gs)",
    )
    authorize.add_argument(
        "--ca-file", type=pathlib.Path, metavar="FILE", help="CA bundle that signs the provider's certificate"
    )
    authorize.set_defaults(handler=handle_authorize)


def handle_authorize(args: argparse.Namespace) -> int:
    try:
        return authorize(args)
    except (
        AuthorizeError,
        authorization.AuthorizationError,
        kube_credentials.ApiError,
        store.TokenStoreError,
        provider.ConfigurationError,
    ) as error:
        print(f"credbridge oauth2 authorize: {error}", file=sys.stderr)
        return EXIT_REFUSED


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything checked before the browser opens."""

    credential: views.CredentialView
    cred_type: registry.CredentialTypeSpec
    token_store: store.TokenStore
    config: provider.ProviderConfig
    secret_exists: bool


def authorize(args: argparse.Namespace) -> int:
    api = kube_credentials.connect()
    prepared = prepare(api, args.namespace, args.credential)
    ca_pem = _read_ca(args.ca_file)
    client = token_client.TokenClient(ca_pem=ca_pem)
    view = prepared.credential
    state = authorization.AuthorizationState.new(view.namespace, view.name, view.uid, secrets.token_bytes)
    verifier = pkce.make_verifier(secrets.token_bytes)
    if args.redirect_uri and not args.no_browser:
        raise AuthorizeError("--redirect-uri needs --no-browser: only the loopback redirect can be listened for")
    if args.no_browser:
        redirect_uri = args.redirect_uri or authorization.loopback_redirect_uri(args.port or _free_port())
        url = provider.authorization_url(prepared.config, redirect_uri=redirect_uri, state=state, verifier=verifier)
        redirect = _read_pasted(url, args.timeout)
    else:
        with _Listener(args.port, state) as listener:
            redirect_uri = authorization.loopback_redirect_uri(listener.port)
            url = provider.authorization_url(prepared.config, redirect_uri=redirect_uri, state=state, verifier=verifier)
            _say("Opening the provider's sign-in page in your browser. If it does not open, open this address:")
            print(url, file=sys.stderr, flush=True)
            if not webbrowser.open(url):
                _say("(no browser could be started: open the address above yourself)")
            redirect = listener.wait(args.timeout)
    code = authorization.parse_redirect(redirect, state)
    outcome = client.exchange_code(prepared.config, code, verifier, redirect_uri)
    if isinstance(outcome, outcomes.ReauthorizationRequired):
        raise AuthorizeError(
            f"{prepared.config.token_host} refused the authorization code ({outcome.error}): it expired or was "
            "already used; run the command again"
        )
    if isinstance(outcome, outcomes.RefreshFailed):
        raise AuthorizeError(f"the code exchange failed: {outcome.detail}")
    got = outcome.tokens
    if got.refresh_token is None and got.expires_at is not None:
        raise AuthorizeError(
            f"{prepared.config.token_host} issued an access token that expires but no refresh token, so the operator "
            "could not keep it fresh; nothing was stored. Ask for offline access: Google needs "
            "access_type=offline&prompt=consent in additionalParameters (the built-in Google types have it), "
            "Microsoft the offline_access scope, Slack token rotation turned on"
        )
    values = prepared.token_store.secret_data(got.field_values())
    secret = prepared.token_store.secret_name
    created = kube_credentials.write_secret_keys(
        api, view.namespace, secret, values, annotations={TOKENS_ANNOTATION: view.name}
    )
    written = ", ".join(sorted(values))
    print(f"Authorized Credential {view.namespace}/{view.name} at {prepared.config.token_host}.")
    print(f"Stored in Secret {view.namespace}/{secret} ({'created' if created else 'updated'}): {written}.")
    if got.expires_at is None:
        print("The access token does not expire: there is nothing to refresh.")
    else:
        until = tokens.format_time(got.expires_at)
        print(f"The access token is valid until {until}; the operator refreshes it from now on.")
    if tokens.TOKEN_RECEIVED_AT not in prepared.token_store.keys:
        print(
            f"Note: add spec.valueFrom.{tokens.TOKEN_RECEIVED_AT} (key {tokens.TOKEN_RECEIVED_AT} of the same Secret) "
            "so the refresh schedule knows each token's lifetime exactly."
        )
    return 0


def prepare(api: kube_credentials.ApiClient, namespace: str, name: str) -> Prepared:
    """Reads and checks everything the flow needs, so nothing fails after the person has signed in."""
    obj = kube_credentials.read_credential(api, namespace, name)
    if obj is None:
        raise AuthorizeError(f"Credential {namespace}/{name} does not exist: check the name and -n")
    view = views.CredentialView.from_object(obj)
    where = f"Credential {namespace}/{name}"
    if view.shared_from is not None:
        source = "/".join(view.shared_from)
        raise AuthorizeError(f"{where} is a read-only mirror of {source}: authorize {source} instead")
    cred_type = _credential_type(api, view.type_name, where)
    if cred_type.oauth2 is None:
        raise AuthorizeError(
            f"{where} has type {cred_type.name!r}, which is not an OAuth2 type (its CredentialType has no spec.oauth2)"
        )
    if cred_type.oauth2.grant != "authorization_code":
        raise AuthorizeError(
            f"{where} uses the {cred_type.oauth2.grant} grant: there is nothing to authorize, the operator gets its "
            "access tokens with the client id and secret"
        )
    token_store = store.token_store(view, cred_type)
    secret_exists = _check_rights(api, namespace, token_store.secret_name)
    fields = _client_fields(api, view, cred_type)
    config = provider.config_from_fields(cred_type, fields, where=where)
    return Prepared(view, cred_type, token_store, config, secret_exists)


def _credential_type(api: kube_credentials.ApiClient, type_name: str, where: str) -> registry.CredentialTypeSpec:
    builtin = registry.Registry.builtin().get(type_name)
    try:
        obj = kube_credentials.read_credential_type(api, registry.type_object_name(type_name))
    except kube_credentials.ApiError as error:
        if error.forbidden and builtin is not None:
            return builtin
        raise
    if obj is None:
        if builtin is None:
            raise AuthorizeError(f"{where} has type {type_name!r}, which is not a known CredentialType")
        return builtin
    try:
        return registry.type_from_object(obj)
    except registry.TypeDefinitionError as error:
        raise AuthorizeError(str(error)) from None


def _check_rights(api: kube_credentials.ApiClient, namespace: str, secret: str) -> bool:
    """Whether the token Secret exists; refuses unless the caller may read and write it."""
    if not kube_credentials.may_i(api, "get", namespace, "secrets", secret):
        raise _refusal(namespace, secret, "get")
    exists = kube_credentials.read_secret(api, namespace, secret) is not None
    verb = "patch" if exists else "create"
    if not kube_credentials.may_i(api, verb, namespace, "secrets", secret if exists else ""):
        raise _refusal(namespace, secret, verb)
    return exists


def _refusal(namespace: str, secret: str, verb: str) -> AuthorizeError:
    what = "it does not exist yet and must be created" if verb == "create" else "the tokens are written into it"
    return AuthorizeError(
        f"you may not {verb} Secret {namespace}/{secret} ({what}; RBAC verb {verb!r} on secrets in namespace "
        f"{namespace}): ask for a Role granting get and {'create' if verb == 'create' else 'patch'} on that Secret, "
        "or run the command as someone who has it. Nothing was changed"
    )


def _client_fields(
    api: kube_credentials.ApiClient, view: views.CredentialView, cred_type: registry.CredentialTypeSpec
) -> dict[str, str]:
    """The client configuration as the operator would resolve it: literals, Secrets, defaults."""
    where = f"Credential {view.namespace}/{view.name}"
    data = view.data
    secrets_read: dict[str, dict[str, str] | None] = {}
    fields: dict[str, str] = {}
    for name in CLIENT_FIELDS:
        input_field = cred_type.field(name)
        if input_field is None:
            continue
        if name in data:
            if envrefs.has_references(data[name]):
                raise AuthorizeError(
                    f"{where}: field {name!r} comes from the operator's environment (a <<NAME>> reference), which "
                    f"this command cannot read: take spec.data.{name} from a Secret with spec.valueFrom instead"
                )
            fields[name] = envrefs.decode_literal(data[name])
        elif name in view.value_from:
            ref = view.value_from[name].get("secretKeyRef") or {}
            secret, key = str(ref.get("name", "")), str(ref.get("key", ""))
            if secret not in secrets_read:
                secrets_read[secret] = _secret_data(api, view.namespace, secret)
            found = secrets_read[secret]
            if found is None or key not in found:
                raise AuthorizeError(
                    f"{where}: field {name!r} comes from key {key!r} of Secret {view.namespace}/{secret}, which "
                    "does not exist: create it or fix spec.valueFrom"
                )
            fields[name] = found[key]
        elif input_field.default is not None:
            fields[name] = input_field.default
    return fields


def _secret_data(api: kube_credentials.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    try:
        obj = kube_credentials.read_secret(api, namespace, name)
    except kube_credentials.ApiError as error:
        if error.forbidden:
            raise AuthorizeError(
                f"you may not get Secret {namespace}/{name}, which holds part of the Credential's client "
                "configuration (RBAC verb 'get' on secrets): ask for it, or run the command as someone who has it"
            ) from None
        raise
    return None if obj is None else dict(views.SecretView.from_object(obj).data)


def _read_ca(path: pathlib.Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as error:
        raise AuthorizeError(f"cannot read the CA file {path}: {error.strerror}") from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_pasted(url: str, timeout: float) -> str:
    _say("Open this address in a browser, sign in and consent:")
    print(url, file=sys.stderr, flush=True)
    _say(
        "The browser then goes to http://127.0.0.1:.../callback?... (the page may fail to load: that is expected). "
        "Paste that whole address here and press Enter:"
    )
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(sys.stdin.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise AuthorizeError(f"no address was pasted within {timeout:g}s; run the command again")
    if not result[0].strip():
        raise AuthorizeError("no address was pasted (empty input); run the command again")
    return result[0]


_RECEIVED_PAGE = (
    "<!doctype html><meta charset=utf-8><title>credbridge</title>"
    "<p>credbridge received the authorization{detail}. You can close this window and return to the terminal.</p>"
)


class _Listener:
    """The loopback redirect: an HTTP listener on 127.0.0.1 that waits for the one request with the right state.

    A request with another state (a stale tab, another program on the machine) is answered with an
    error page and otherwise ignored, so it cannot end the flow. The request line carries the code:
    nothing here logs it.
    """

    def __init__(self, port: int, state: authorization.AuthorizationState) -> None:
        self._state = state
        self._received: str | None = None
        self._done = threading.Event()
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                if parts.path != authorization.CALLBACK_PATH:
                    self.send_error(404)
                    return
                params = dict(urllib.parse.parse_qsl(parts.query))
                try:
                    listener._state.verify(params.get("state"))
                except authorization.StateMismatch:
                    self._page(400, " request of another authorization, and ignored it")
                    _say("(ignored a redirect that belongs to another authorization)")
                    return
                self._page(200, "")
                listener._received = self.path
                listener._done.set()

            def _page(self, status: int, detail: str) -> None:
                body = _RECEIVED_PAGE.format(detail=html.escape(detail)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # the request line holds the authorization code

        try:
            self._server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        except OSError as error:
            raise AuthorizeError(
                f"cannot listen on 127.0.0.1:{port} for the redirect ({error.strerror}): choose another --port"
            ) from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)

    def __enter__(self) -> _Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self._done.wait(0.5):
            if time.monotonic() > deadline:
                raise AuthorizeError(f"no redirect arrived within {timeout:g}s; run the command again")
        assert self._received is not None
        return self._received
