"""Decisions of the workload read endpoint: who may read which values, and what each refusal says.

A Pod reads a Credential (or a CredentialBinding's rendered keys) by presenting a ServiceAccount
token with audience `credbridge.io` to the operator. The operator gathers answers (TokenReview,
SubjectAccessReview, its cache of Credentials) and this module decides, in this order:

1. the path names a Credential or binding (`/v1/namespaces/NS/credentials/NAME`,
   `/v1/namespaces/NS/credentialbindings/NAME`), else 404;
2. a bearer token is present, else 401;
3. the API server authenticated it *for the audience credbridge.io*, else 401 — a token minted
   for another audience (the API server's own, a cloud provider's) is not accepted here;
4. (the rate limit, core.ratelimit, 429);
5. SubjectAccessReview allows verb `use` on that object in that namespace, else 403;
6. the object exists in the operator's cache — if not, the *same* 403 as step 5, so a caller
   without permission learns nothing about which names exist;
7. the Credential is Ready and its values may leave as plaintext (the release rule, core.release:
   a mirror is judged by its source, and an invisible source releases nothing), else 503 or 403
   naming the reason — said only to callers with `use`.

Every answer carries a metric label (`result`) and, for refusals, one sentence naming the
permission or object and the fix. No answer, log line or exception here carries a value: values
only enter the body of a 200 answer, built by `values_answer`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing

from credbridge.core import binding, names, ratelimit, redaction, release, reviewcache, templating, views

Json = dict[str, typing.Any]

KINDS = {names.CREDENTIAL_PLURAL: names.CREDENTIAL_KIND, names.CREDENTIAL_BINDING_PLURAL: names.CREDENTIAL_BINDING_KIND}
"""Resources the endpoint serves (plural → kind)."""

TOKEN_PATH = "/var/run/secrets/credbridge.io/serviceaccount/token"
"""Where `credbridge env`/`fetch` read the projected token by default, and where injection mounts it."""
ENDPOINT_ENV = "CREDBRIDGE_ENDPOINT"
"""Variable holding the endpoint's base URL (`https://host:port`), set by injection."""
CA_ENV = "CREDBRIDGE_CA_FILE"
"""Variable holding the path of the CA bundle that signed the endpoint's certificate."""
CA_DATA_ENV = "CREDBRIDGE_CA_DATA"
"""Variable holding that CA bundle itself (PEM), set by injection (a CA certificate is not a secret)."""
TOKEN_ENV = "CREDBRIDGE_TOKEN_FILE"
"""Variable holding the token's path, when it is not TOKEN_PATH."""
NAMESPACE_ENV = "CREDBRIDGE_NAMESPACE"
"""Variable holding the namespace to read from, when it is not the token's own."""

RETRY_NOT_READY_SECONDS = 5.0
"""Retry-After sent with a 503 for a Credential that is not Ready yet."""

_PATH = re.compile(r"/v1/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/]+)/?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

RESULTS = ("ok", "unauthenticated", "forbidden", "rate_limited", "not_ready", "not_plaintext", "bad_request", "error")
"""Every `result` label of the reads metric."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The object a read names."""

    namespace: str
    plural: str
    name: str

    @property
    def kind(self) -> str:
        return KINDS[self.plural]

    def __str__(self) -> str:
        return f"{self.plural}/{self.name} in namespace {self.namespace}"


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, metric label, and either a refusal message or (200) the values."""

    status: int
    result: str
    message: str = ""
    """One sentence for refusals, naming the permission or object and the fix. Empty on 200."""
    retry_after: float | None = None
    """Seconds, for 429 and 503."""
    body: bytes = dataclasses.field(default=b"", repr=False)
    """The response body: JSON `{"reason", "message"}` for refusals, the values for 200."""

    @property
    def headers(self) -> dict[str, str]:
        """Headers every answer carries: never cached anywhere, JSON, and the retry hint when there is one."""
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "Content-Type": "application/json"}
        if self.status == 401:
            headers["WWW-Authenticate"] = f'Bearer realm="{names.TOKEN_AUDIENCE}"'
        if self.retry_after is not None:
            headers["Retry-After"] = ratelimit.retry_after_header(self.retry_after)
        return headers


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
}


def refusal(status: int, result: str, message: str, retry_after: float | None = None) -> Answer:
    """An answer refusing the read with `message` (which never holds a value)."""
    body = json.dumps({"reason": _REASONS.get(status, "Error"), "message": message}).encode()
    return Answer(status=status, result=result, message=message, retry_after=retry_after, body=body)


def parse_path(path: str) -> Target | Answer:
    """The object a request path names, or a 404 answer saying which paths exist."""
    match = _PATH.fullmatch(path)
    usage = "use GET /v1/namespaces/NAMESPACE/credentials/NAME or GET /v1/namespaces/NAMESPACE/credentialbindings/NAME"
    if match is None or match["plural"] not in KINDS:
        return refusal(404, "bad_request", f"no such read path: {usage}")
    namespace, name = match["namespace"], match["name"]
    if not _DNS_LABEL.fullmatch(namespace) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return refusal(404, "bad_request", f"the namespace or name in the path is not a valid Kubernetes name: {usage}")
    return Target(namespace=namespace, plural=match["plural"], name=name)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


_TOKEN_HOWTO = (
    f"mount a projected serviceAccountToken with audience {names.TOKEN_AUDIENCE} (the credbridge.io/inject "
    f"annotation does it; credbridge env/fetch read {TOKEN_PATH}), or for a test: "
    f"kubectl create token SERVICEACCOUNT --audience {names.TOKEN_AUDIENCE}"
)


def no_token() -> Answer:
    """The answer to a request without a bearer token."""
    return refusal(401, "unauthenticated", f"no token: send 'Authorization: Bearer TOKEN'; {_TOKEN_HOWTO}")


def authenticate(review: reviewcache.TokenReview) -> reviewcache.Identity | Answer:
    """The caller's identity, or a 401 when the API server did not accept the token for our audience."""
    if not review.authenticated or review.identity is None:
        said = f" ({review.error[:300]})" if review.error else ""
        return refusal(
            401,
            "unauthenticated",
            "the API server did not accept the token" + said + ": it may be expired, revoked, for another "
            f"audience, or its ServiceAccount deleted; {_TOKEN_HOWTO}",
        )
    if names.TOKEN_AUDIENCE not in review.audiences:
        return refusal(
            401,
            "unauthenticated",
            f"the token of {review.identity.username} is not bound to the audience {names.TOKEN_AUDIENCE}: "
            f"{_TOKEN_HOWTO}",
        )
    return review.identity


def rate_limited(identity: reviewcache.Identity, retry_after: float, rate: float) -> Answer:
    """The answer to an identity that used up its reads."""
    return refusal(
        429,
        "rate_limited",
        f"{identity.username} is reading faster than {rate:g} reads per second: retry after the Retry-After "
        "delay, and read once at start (or poll with credbridge fetch --watch) instead of per request",
        retry_after=retry_after,
    )


def forbidden(identity: reviewcache.Identity, target: Target) -> Answer:
    """The answer to a caller without `use` on the target — and, word for word, to one naming a missing object.

    The fix is a Role (kubectl create role refuses the verb `use` on custom resources, so the rule
    is spelled out for a manifest).
    """
    user = identity.username
    return refusal(
        403,
        "forbidden",
        f"{user} may not use {target.plural}/{target.name} in namespace {target.namespace}: grant it with a Role "
        f"in {target.namespace} holding the rule {{apiGroups: [{names.GROUP}], resources: [{target.plural}], "
        f"resourceNames: [{target.name}], verbs: [{names.USE_VERB}]}} and a RoleBinding to {user}; "
        f"the {target.kind} must exist",
    )


def review_unavailable(what: str) -> Answer:
    """The answer when the API server could not be asked (TokenReview or SubjectAccessReview failed)."""
    return refusal(
        503,
        "error",
        f"the operator could not reach the API server for the {what}: retry later; if it persists, see the "
        "operator log",
        retry_after=RETRY_NOT_READY_SECONDS,
    )


@dataclasses.dataclass(frozen=True)
class Release:
    """What to decrypt for a read that passed every check: this Credential's managed Secret."""

    credential: views.CredentialView


def release_credential(
    identity: reviewcache.Identity,
    target: Target,
    requested: Target,
    credential: views.CredentialView | None,
    source: views.CredentialView | None,
    policy: release.Policy,
) -> Release | Answer:
    """Decides whether the values of `credential` (the object `target` names, or None) may be read.

    `requested` is what the caller asked for (the binding, for a binding read), for messages.
    `source` is the source Credential when `credential` is a mirror (None when it is not visible).
    Whether values may leave at all is the release rule's (core.release) to say.
    """
    if credential is None:
        if requested == target:
            return forbidden(identity, requested)
        return refusal(
            503,
            "not_ready",
            f"CredentialBinding {requested.namespace}/{requested.name} names Credential {target.name}, which does "
            f"not exist in namespace {target.namespace}: create it or fix spec.credential",
            retry_after=RETRY_NOT_READY_SECONDS,
        )
    view = credential
    where = f"Credential {view.namespace}/{view.name}"
    reason = str((view.ready_condition or {}).get("reason") or "")
    if not view.ready or not view.status.get("keyId") or view.deleting:
        return refusal(
            503,
            "not_ready",
            f"{where} is not Ready{f' ({reason})' if reason else ''}: see kubectl describe credential {view.name} "
            f"-n {view.namespace}",
            retry_after=RETRY_NOT_READY_SECONDS,
        )
    denial = release.denial(
        release.Facts(credential=view, source=source), release.workload_read(target.namespace), policy
    )
    if denial is None:
        return Release(view)
    if denial.reason == release.SOURCE_NOT_VISIBLE:
        return refusal(503, "not_ready", denial.message, retry_after=RETRY_NOT_READY_SECONDS)
    return refusal(403, "not_plaintext", denial.message)


def binding_credential(binding_view: binding.BindingView) -> Target:
    """The Credential a binding names (always in the binding's namespace)."""
    return Target(namespace=binding_view.namespace, plural=names.CREDENTIAL_PLURAL, name=binding_view.credential_name)


def render_binding(
    binding_view: binding.BindingView, fields: redaction.SecretFields, *, where: str
) -> redaction.SecretFields:
    """The binding's output keys rendered from its Credential's fields, exactly as its Secret would hold them.

    Raises ValueError (templating.TemplateError or RenderError) naming keys and fields, never a value.
    """
    return templating.render(binding.parse_templates(binding_view, fields), fields, where=where)


def values_answer(
    target: Target,
    values: redaction.SecretFields,
    *,
    credential: views.CredentialView,
) -> Answer:
    """The 200 answer: the values (fields of a Credential, rendered keys of a binding) as JSON.

    `{"kind", "namespace", "name", "credential", "type", "id", "data": {key: value}}`; `credential`
    is the Credential the values came from (for a binding, the one it names).
    """
    document = {
        "kind": target.kind,
        "namespace": target.namespace,
        "name": target.name,
        "credential": credential.name,
        "type": credential.type_name,
        "id": credential.credential_id,
        "data": {key: values[key] for key in sorted(values)},
    }
    return Answer(status=200, result="ok", body=json.dumps(document, ensure_ascii=False).encode("utf-8"))


def not_openable(view: views.CredentialView) -> Answer:
    """The answer when a Ready Credential's Secret cannot be opened (edited, or its key retired)."""
    return refusal(
        503,
        "not_ready",
        f"the Secret of Credential {view.namespace}/{view.name} could not be opened; the operator repairs it on "
        "its next reconcile: retry later, and see kubectl describe credential",
        retry_after=RETRY_NOT_READY_SECONDS,
    )


def not_renderable(requested: Target, problem: str) -> Answer:
    """The answer when a binding's template cannot be rendered from its Credential's fields."""
    return refusal(
        503,
        "not_ready",
        f"CredentialBinding {requested.namespace}/{requested.name}: {problem}",
        retry_after=RETRY_NOT_READY_SECONDS,
    )
