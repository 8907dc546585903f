"""Connections to the API server: from a kubeconfig, from inside a Pod, or as another identity.

Every other module in `kube/` takes an `ApiClient` made here, so credentials to the cluster are
loaded in one place and nowhere else.
"""

from __future__ import annotations

import os
from typing import TypeAlias

from kubernetes import client, config

ApiClient: TypeAlias = client.ApiClient
"""The connection type, named here so the operator and the CLI can annotate it without the client library."""


def api_client(
    kubeconfig: str | None = None,
    *,
    as_user: str | None = None,
    as_group: str | None = None,
    connections: int | None = None,
) -> client.ApiClient:
    """Return an ApiClient for `kubeconfig`, $KUBECONFIG, ~/.kube/config, or the Pod's service account.

    `as_user`/`as_group` add impersonation headers, so the API server authorizes requests as that
    identity (the caller needs the `impersonate` verb, which cluster admins have). `connections`
    sizes the connection pool for callers that use the client from many threads.
    """
    configuration = client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    api = client.ApiClient(configuration)
    if as_user:
        api.set_default_header("Impersonate-User", as_user)
    if as_group:
        api.set_default_header("Impersonate-Group", as_group)
    return api


def service_account_user(namespace: str, name: str) -> str:
    """The user name the API server gives a ServiceAccount, for impersonation and RBAC subjects."""
    return f"system:serviceaccount:{namespace}:{name}"


def whoami(api: client.ApiClient) -> str:
    """The user name the API server sees for `api` (a SelfSubjectReview)."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    return str(review.status.user_info.username)
