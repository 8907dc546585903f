"""The authorization-code flow's front half: the `state`, the authorization URL and the redirect.

Flowise sends the credential id as `state`: anyone who knows an id can complete a flow into that
credential, and the callback cannot tell its own request from a forged one. Here `state` names the
Credential (namespace, name, uid) *and* carries 256 random bits that only the process that started
the flow knows; the redirect is accepted only when its state is exactly the one sent (compared in
constant time), and a state made for another Credential is named as such.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import hmac
import json
import urllib.parse

from credbridge.core import redaction

STATE_VERSION = "cb1"
NONCE_BYTES = 32
RESERVED_PARAMETERS = frozenset(
    {"client_id", "response_type", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope"}
)
"""Parameters the flow sets itself: a type's `additionalParameters` may not replace them."""
CALLBACK_PATH = "/callback"


class AuthorizationError(Exception):
    """The flow cannot go on; the message says why and what to do, never a code or token."""


class StateMismatch(AuthorizationError):
    """The redirect's `state` is not the one this flow sent: a forged, stale or foreign redirect."""


class AuthorizationDenied(AuthorizationError):
    """The provider redirected with an `error` (the user declined, or the request was refused)."""

    def __init__(self, message: str, error: str) -> None:
        """Keeps the OAuth error code (`access_denied`, ...) next to the message."""
        super().__init__(message)
        self.error = error


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclasses.dataclass(frozen=True)
class AuthorizationState:
    """The `state` of one authorization: which Credential it is for, plus a random nonce."""

    namespace: str
    name: str
    uid: str
    nonce: redaction.Redacted = dataclasses.field(repr=False)

    @classmethod
    def new(
        cls, namespace: str, name: str, uid: str, random_bytes: collections.abc.Callable[[int], bytes]
    ) -> AuthorizationState:
        """A state for the Credential `namespace/name` (object `uid`) with a fresh 256-bit nonce."""
        return cls(namespace, name, uid, redaction.Redacted(_b64url(random_bytes(NONCE_BYTES))))

    @property
    def credential(self) -> str:
        return f"{self.namespace}/{self.name}"

    def encode(self) -> str:
        """`cb1.<base64url of {ns, name, uid}>.<nonce>`: what goes into the authorization URL."""
        binding = json.dumps({"ns": self.namespace, "name": self.name, "uid": self.uid}, separators=(",", ":"))
        return f"{STATE_VERSION}.{_b64url(binding.encode())}.{self.nonce.reveal()}"

    def verify(self, returned: str | None) -> None:
        """Accepts `returned` only when it is exactly this state; raises StateMismatch saying which part differs."""
        if not returned:
            raise StateMismatch("the redirect carries no state: it did not come from this authorization; start again")
        if hmac.compare_digest(returned.encode("utf-8", "replace"), self.encode().encode("utf-8")):
            return
        other = _credential_of(returned)
        if other is not None and other[:2] != (self.namespace, self.name):
            raise StateMismatch(
                f"the redirect's state is for Credential {other[0]}/{other[1]}, not {self.credential}: it belongs to "
                "another authorization; start again and use the redirect of this one"
            )
        raise StateMismatch(
            f"the redirect's state does not match the one sent for Credential {self.credential}: it comes from "
            "another (or an older) authorization, or was forged; start again"
        )


def _credential_of(state: str) -> tuple[str, str, str] | None:
    parts = state.split(".")
    if len(parts) != 3 or parts[0] != STATE_VERSION:
        return None
    try:
        binding = json.loads(_unb64url(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(binding, dict):
        return None
    return str(binding.get("ns", "")), str(binding.get("name", "")), str(binding.get("uid", ""))


def loopback_redirect_uri(port: int) -> str:
    """The redirect URI on the loopback interface (RFC 8252 §7.3), as `gcloud auth login` and kubelogin use."""
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def extra_parameters(raw: str) -> list[tuple[str, str]]:
    """A type's `additionalParameters` (`access_type=offline&prompt=consent`) as pairs.

    Raises AuthorizationError when they would replace a parameter the flow sets (state, PKCE, ...).
    """
    pairs = urllib.parse.parse_qsl(raw.strip().lstrip("?&"), keep_blank_values=True)
    clashing = sorted({name for name, _ in pairs if name in RESERVED_PARAMETERS})
    if clashing:
        raise AuthorizationError(
            f"additionalParameters sets {', '.join(clashing)}, which the authorization flow sets itself: remove "
            "them from the Credential's additionalParameters"
        )
    return pairs


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: AuthorizationState,
    code_challenge: str,
    additional_parameters: str = "",
) -> str:
    """The URL the user opens: `endpoint` with the code request, PKCE (S256) and the state.

    A query already in `endpoint` is kept; `additional_parameters` (Flowise's field, e.g. Google's
    `access_type=offline&prompt=consent`) come last.
    """
    parts = urllib.parse.urlsplit(endpoint)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state.encode()),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    if scope:
        query.append(("scope", scope))
    query += extra_parameters(additional_parameters)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def parse_redirect(redirect: str, state: AuthorizationState) -> redaction.Redacted:
    """The authorization code from the redirect the provider sent the browser to.

    `redirect` is the whole URL (`http://127.0.0.1:PORT/callback?code=...&state=...`) or just its
    query. The state is checked before anything else; an `error` becomes AuthorizationDenied.
    """
    text = redirect.strip()
    query = urllib.parse.urlsplit(text).query if "://" in text or text.startswith("/") else text.lstrip("?")
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    state.verify(params.get("state"))
    error = params.get("error")
    if error:
        code = error if error.replace("_", "").isalnum() and len(error) <= 64 else "error"
        raise AuthorizationDenied(
            f"the provider did not authorize Credential {state.credential} ({code}): "
            + (
                "the sign-in or consent was declined"
                if code == "access_denied"
                else "check the client id, redirect URI and scope registered with the provider"
            ),
            code,
        )
    code_value = params.get("code")
    if not code_value:
        raise AuthorizationError(
            "the redirect carries no authorization code: paste the whole address the browser was sent to"
        )
    return redaction.Redacted(code_value)
