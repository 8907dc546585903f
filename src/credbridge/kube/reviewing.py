"""Asking the API server who a token belongs to (TokenReview) and what they may do (SubjectAccessReview).

The workload read endpoint does not judge tokens or RBAC itself: the API server already knows the
ServiceAccount signing keys, bound-token revocation, RBAC and any other authorizer the cluster
runs, so the endpoint asks it — exactly what `kubectl auth can-i` asks. These two calls need
`create` on `tokenreviews` and `subjectaccessreviews` (the chart's ClusterRole grants both).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from credbridge.core import names, reviewcache
from credbridge.kube import errors


def review_token(api: client.ApiClient, token: str, audiences: tuple[str, ...]) -> reviewcache.TokenReview:
    """TokenReview of `token` for `audiences`. Raises errors.ApiError when the API server cannot answer."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": list(audiences)},
    }
    with errors.translated("review a workload's token (TokenReview)"):
        response = client.AuthenticationV1Api(api).create_token_review(body, _preload_content=False)
    status: dict[str, Any] = json.loads(response.data).get("status") or {}
    user = status.get("user") or {}
    identity = None
    if status.get("authenticated") and user.get("username"):
        identity = reviewcache.Identity(
            username=str(user["username"]),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(group) for group in user.get("groups") or ()),
            extra={str(key): tuple(str(v) for v in values or ()) for key, values in (user.get("extra") or {}).items()},
        )
    return reviewcache.TokenReview(
        authenticated=bool(status.get("authenticated")) and identity is not None,
        identity=identity,
        audiences=tuple(str(audience) for audience in status.get("audiences") or ()),
        error=str(status.get("error") or ""),
    )


def may_use(api: client.ApiClient, identity: reviewcache.Identity, namespace: str, plural: str, name: str) -> bool:
    """SubjectAccessReview: may `identity` use the object `plural`/`name` of credbridge.io in `namespace`?

    Raises errors.ApiError when the API server cannot answer.
    """
    spec: dict[str, Any] = {
        "user": identity.username,
        "groups": list(identity.groups),
        "resourceAttributes": {
            "group": names.GROUP,
            "resource": plural,
            "verb": names.USE_VERB,
            "namespace": namespace,
            "name": name,
        },
    }
    if identity.uid:
        spec["uid"] = identity.uid
    if identity.extra:
        spec["extra"] = {key: list(values) for key, values in identity.extra.items()}
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    with errors.translated(f"check {identity.username}'s use of {plural}/{name} (SubjectAccessReview)"):
        response = client.AuthorizationV1Api(api).create_subject_access_review(body, _preload_content=False)
    status: dict[str, Any] = json.loads(response.data).get("status") or {}
    return bool(status.get("allowed")) and not status.get("denied")
