"""A real OAuth 2.0 provider as a local process, for the OAuth2 tests, benchmarks and trying by hand.

credbridge's OAuth2 support is about what real providers do: PKCE, refresh tokens that rotate or
are left out of refresh answers, `invalid_grant` after a revocation, throttling, outages. So the
tests run a standards-complete authorization server, the `oidc-provider` npm package (an OpenID
Certified implementation), not a hand-written stand-in. Why that one and not a Python server
such as Authlib's: Authlib gives the building blocks (grants, token models) and leaves the
endpoints, storage, login and consent pages to the application — a test server made with it
would be mostly our own code, the thing the tests must not trust. oidc-provider is the whole
server, with sign-in and consent pages for development, PKCE enforcement, refresh-token rotation,
the client-credentials grant and RFC 7009 revocation as configuration; it is small (40 packages,
~4 MB, seconds to install) and Node is already needed for Flowise.

- `ensure_installed()` runs `npm install oidc-provider@<version> --ignore-scripts` once into
  `${XDG_CACHE_HOME:-~/.cache}/credbridge/oidc-provider/<version>/` (`make oauth2-provider`).
- `OAuth2Provider` runs `hack/oauth2/provider.mjs` on a free port over HTTPS (its own CA), with
  short token lifetimes and three clients (`CLIENTS`): refresh tokens rotated, refresh tokens
  left out of refresh answers (as Google does), and client credentials. Grants live in a state
  file, so `stop_process()`/`start_process()` is an outage that loses nothing.
- `OAuth2Provider.sign_in_and_consent()` plays the browser: it follows the authorization URL
  through the provider's sign-in and consent pages with plain HTTP requests and returns the
  redirect the provider sends back to the client, which the test then delivers (or pastes).
- `set_fault()` makes the token endpoint answer 5xx, 429 with Retry-After, or hang;
  `token_requests()` counts what the token endpoint answered (one refresh per expiry, no extra
  refresh after a restart); `revoke()` revokes a token at the RFC 7009 endpoint.
"""

from __future__ import annotations

import dataclasses
import html.parser
import http.client
import http.cookiejar
import json
import os
import pathlib
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from credbridge import tls
from credbridge.core import redaction
from credbridge.local import controlplane, npm

OIDC_PROVIDER_VERSION = "9.13.3"
"""The oidc-provider release the tests run."""
SCRIPT = controlplane.REPO_ROOT / "hack" / "oauth2" / "provider.mjs"
SCOPES = ("openid", "offline_access", "mail.read", "mail.send")
"""Scopes the provider knows; the tests ask for the mail.* ones."""
REDIRECT_URI = "http://127.0.0.1/callback"
"""The redirect URI registered for the authorization-code clients. They are native clients, so
the provider accepts any port on the loopback address (RFC 8252 §7.3), as Google does."""
HTTPS_REDIRECT_URI = "https://app.example/oauth2/callback"
"""A second registered redirect URI, an https page that does not exist: what `--redirect-uri` is for
(providers such as Slack that take only registered https URLs; the person copies the address)."""


class LocalOAuth2Error(RuntimeError):
    """The provider could not be installed, started or driven; the message says what to do."""


def _package(version: str) -> npm.NpmPackage:
    return npm.NpmPackage(
        "oidc-provider",
        version,
        cache_name="oidc-provider",
        marker="node_modules/oidc-provider/package.json",
        size_hint="seconds, ~4 MB",
    )


def ensure_installed(version: str = OIDC_PROVIDER_VERSION, *, progress: bool = True) -> pathlib.Path:
    """The npm prefix of the cached `oidc-provider@version`, installed first if it is missing."""
    try:
        return npm.ensure_package(_package(version), progress=progress)
    except npm.NpmInstallError as error:
        raise LocalOAuth2Error(str(error)) from None


@dataclasses.dataclass(frozen=True)
class Client:
    """One client registered at the provider."""

    client_id: str
    client_secret: redaction.Redacted
    grant: str
    """`authorization_code` (with refresh tokens) or `client_credentials`."""
    authentication: str
    """How it authenticates at the token endpoint: `client_secret_post` or `client_secret_basic`."""
    rotates_refresh_tokens: bool = False
    """A refresh answer carries a new refresh token and the old one stops working."""
    omits_refresh_token_on_refresh: bool = False
    """A refresh answer carries no refresh token: the client keeps the one it has (Google's way)."""

    def registration(self) -> dict[str, object]:
        """The client as oidc-provider's configuration takes it."""
        body: dict[str, object] = {
            "client_id": self.client_id,
            "client_secret": self.client_secret.reveal(),
            "token_endpoint_auth_method": self.authentication,
            "rotateRefreshToken": self.rotates_refresh_tokens,
            "omitRefreshTokenOnRefresh": self.omits_refresh_token_on_refresh,
        }
        if self.grant == "client_credentials":
            body.update(grant_types=["client_credentials"], response_types=[], redirect_uris=[])
        else:
            body.update(
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                redirect_uris=[REDIRECT_URI, HTTPS_REDIRECT_URI],
                application_type="native",
            )
        return body


def _secret() -> redaction.Redacted:
    return redaction.Redacted(secrets.token_urlsafe(24))


def default_clients() -> dict[str, Client]:
    """The three clients every test provider has, by id."""
    clients = (
        Client("rotating", _secret(), "authorization_code", "client_secret_post", rotates_refresh_tokens=True),
        Client("fixed", _secret(), "authorization_code", "client_secret_post", omits_refresh_token_on_refresh=True),
        Client("machine", _secret(), "client_credentials", "client_secret_basic"),
    )
    return {client.client_id: client for client in clients}


@dataclasses.dataclass
class OAuth2Provider:
    """One oidc-provider process on https://127.0.0.1:`port`, its CA, clients and state file."""

    root: pathlib.Path
    """npm prefix of the installed oidc-provider."""
    workdir: pathlib.Path
    port: int
    ca: tls.Issued
    clients: dict[str, Client]
    access_token_seconds: int = 30
    refresh_token_seconds: int = 86_400
    die_with_parent: bool = True
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def issuer(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/token/revocation"

    @property
    def ca_pem(self) -> str:
        """The CA that signed the provider's certificate (what a client must trust)."""
        return self.ca.cert_pem.decode("ascii")

    @property
    def ca_file(self) -> pathlib.Path:
        return self.workdir / "ca.crt"

    @property
    def log(self) -> pathlib.Path:
        return self.workdir / "provider.log"

    def _write_config(self) -> pathlib.Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        serving = tls.issue(self.ca, "127.0.0.1", hosts=["127.0.0.1"])
        cert, key = serving.write(self.workdir, "serving")
        self.ca_file.write_bytes(self.ca.cert_pem)
        config = {
            "module": str(self.root / "node_modules" / "oidc-provider" / "lib" / "index.js"),
            "issuer": self.issuer,
            "port": self.port,
            "tls": {"cert": str(cert), "key": str(key)},
            "stateFile": str(self.workdir / "state.json"),
            "cookieKeys": [secrets.token_urlsafe(24)],
            "scopes": list(SCOPES),
            "accessTokenSeconds": self.access_token_seconds,
            "refreshTokenSeconds": self.refresh_token_seconds,
            "clients": [client.registration() for client in self.clients.values()],
        }
        path = self.workdir / "config.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(config, handle)
        return path

    def start_process(self, timeout: float = 60.0) -> None:
        """Starts the provider (same port, clients and state as before) and waits until it answers."""
        node = shutil.which("node")
        if node is None:
            raise LocalOAuth2Error("the OAuth2 test provider needs Node.js (`apt-get install nodejs`): not on PATH")
        config = self._write_config()
        self.starts += 1
        with self.log.open("ab") as handle:
            handle.write(f"---- credbridge: start #{self.starts} ----\n".encode())
            self.popen = subprocess.Popen(
                [node, str(SCRIPT), str(config)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=controlplane._die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise LocalOAuth2Error(
                    f"the OAuth2 provider exited with code {self.popen.returncode} while starting; last lines of "
                    f"{self.log}:\n" + controlplane._tail(self.log, 40)
                )
            if self._answers():
                return
            time.sleep(0.3)
        raise LocalOAuth2Error(
            f"the OAuth2 provider was not ready after {timeout:.0f}s; last lines of {self.log}:\n"
            + controlplane._tail(self.log, 40)
        )

    def _answers(self) -> bool:
        try:
            with self._open(f"{self.issuer}/.well-known/openid-configuration", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop_process(self) -> None:
        """Stops the provider (its grants stay in the state file): the provider is down."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except (ProcessLookupError, PermissionError):
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(15)
        self.popen = None

    def restart(self) -> None:
        self.stop_process()
        self.start_process()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    # ---- test controls -------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)

    def _open(
        self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> http.client.HTTPResponse:
        request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310 -- https only
        return urllib.request.urlopen(request, timeout=timeout, context=self._tls())  # type: ignore[no-any-return]  # noqa: S310

    def set_fault(self, mode: str = "none", *, status: int = 503, retry_after: int = 5) -> None:
        """Makes the token endpoint fail: `error` (answers `status`), `throttle` (429 with Retry-After),
        `hang` (never answers), or `none` (works again)."""
        body = json.dumps({"mode": mode, "status": status, "retryAfter": retry_after}).encode()
        with self._open(f"{self.issuer}/_control/fault", body, {"content-type": "application/json"}) as response:
            response.read()

    def token_requests(self) -> dict[str, int]:
        """How many token requests were answered since the process started, as
        `<grant type>/<client id>/<ok | error code>` → count (`fault/unknown/<mode>` for injected faults)."""
        with self._open(f"{self.issuer}/_control/stats") as response:
            return {str(key): int(value) for key, value in json.loads(response.read())["token"].items()}

    def revoke(self, token: redaction.Redacted, client_id: str) -> None:
        """Revokes `token` (a refresh or access token of `client_id`) at the RFC 7009 endpoint."""
        client = self.clients[client_id]
        body = urllib.parse.urlencode(
            {
                "token": token.reveal(),
                "client_id": client.client_id,
                "client_secret": client.client_secret.reveal(),
            }
        ).encode()
        try:
            with self._open(
                self.revocation_endpoint, body, {"content-type": "application/x-www-form-urlencoded"}
            ) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise LocalOAuth2Error(f"the provider refused the revocation with HTTP {error.code}") from None

    def sign_in_and_consent(self, authorization_url: str, *, login: str = "alice", approve: bool = True) -> str:
        """Plays the browser for one authorization: opens `authorization_url`, signs in as `login` on the
        provider's sign-in page, approves (or, with `approve=False`, aborts) on its consent page, and
        returns the URL the provider redirects the browser to (the client's redirect URI with
        `code` and `state`, or `error`), without opening it."""
        browser = _Browser(self._tls())
        url, form = authorization_url, None
        for _ in range(20):
            if form is None:
                status, location, page = browser.get(url)
            else:
                status, location, page = browser.post(url, form)
            if location is not None:
                location = urllib.parse.urljoin(url, location)
                if not location.startswith(self.issuer):
                    return location
                url, form = location, None
                continue
            if status != 200:
                raise LocalOAuth2Error(f"the provider answered HTTP {status} while signing in")
            parsed = _FormParser.parse(page)
            action = urllib.parse.urljoin(url, parsed.action)
            if parsed.prompt == "login":
                url, form = action, {"prompt": "login", "login": login, "password": "any"}
            elif parsed.prompt == "consent" and approve:
                url, form = action, {"prompt": "consent"}
            elif parsed.prompt == "consent":
                url, form = action + "/abort", None
            else:
                raise LocalOAuth2Error("the provider showed a page with neither a sign-in nor a consent form")
        raise LocalOAuth2Error("the provider kept redirecting: no redirect to the client after 20 steps")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Browser:
    """Cookies and requests, no redirects followed: the test sees every step."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            urllib.request.HTTPSHandler(context=context),
            _NoRedirects(),
        )

    def _send(self, request: urllib.request.Request) -> tuple[int, str | None, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                return int(response.status), None, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            location = error.headers.get("location")
            body = error.read().decode("utf-8", "replace")
            return int(error.code), location, body

    def get(self, url: str) -> tuple[int, str | None, str]:
        return self._send(urllib.request.Request(url))  # noqa: S310

    def post(self, url: str, form: dict[str, str]) -> tuple[int, str | None, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(url, data=data, method="POST"))  # noqa: S310


class _FormParser(html.parser.HTMLParser):
    """The action of the page's form and the value of its hidden `prompt` input."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.prompt = ""

    @classmethod
    def parse(cls, page: str) -> _FormParser:
        parser = cls()
        parser.feed(page)
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and not self.action:
            self.action = values.get("action") or ""
        if tag == "input" and values.get("name") == "prompt":
            self.prompt = values.get("value") or ""


def start_provider(
    workdir: pathlib.Path,
    *,
    access_token_seconds: int = 30,
    refresh_token_seconds: int = 86_400,
    root: pathlib.Path | None = None,
    die_with_parent: bool = True,
    ca: tls.Issued | None = None,
) -> OAuth2Provider:
    """Starts a provider with the default clients in `workdir`, tokens living `access_token_seconds`.

    `ca`: the CA to sign its certificate with (another provider's, so a client trusting one trusts both);
    default a new one."""
    provider = OAuth2Provider(
        root=root or ensure_installed(),
        workdir=workdir,
        port=controlplane.free_port(),
        ca=ca or tls.make_ca("credbridge test OAuth2 provider CA"),
        clients=default_clients(),
        access_token_seconds=access_token_seconds,
        refresh_token_seconds=refresh_token_seconds,
        die_with_parent=die_with_parent,
    )
    provider.start_process()
    return provider


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m credbridge.local.oauth2provider install`: what `make oauth2-provider` runs."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments != ["install"]:
        print("usage: python -m credbridge.local.oauth2provider install", file=sys.stderr)
        return 2
    try:
        root = ensure_installed()
    except LocalOAuth2Error as error:
        print(f"credbridge: {error}", file=sys.stderr)
        return 1
    npm.say(True, f"oidc-provider@{OIDC_PROVIDER_VERSION} in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
