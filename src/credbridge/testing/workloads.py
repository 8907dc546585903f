"""Helpers for tests of workload reads: ServiceAccounts, tokens, `use` grants and raw endpoint requests.

They make what a cluster admin and a Pod would have — a ServiceAccount, a Role granting the verb
`use`, a TokenRequest token with audience credbridge.io — and talk to the read endpoint with the
standard library's HTTPS client, so a test sees exactly the status, headers and body a Pod gets.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import pathlib
import ssl
import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kubernetes import client

from credbridge import tls
from credbridge.core import names

TEST_LABEL = {"created-by": "credbridge-tests"}


@dataclasses.dataclass(frozen=True)
class EndpointCertificate:
    """A serving certificate for 127.0.0.1 and its CA, as files, for `credbridge run --endpoint-*`."""

    certfile: pathlib.Path
    keyfile: pathlib.Path
    cafile: pathlib.Path

    @property
    def args(self) -> list[str]:
        return [
            "--endpoint-certfile",
            str(self.certfile),
            "--endpoint-pkeyfile",
            str(self.keyfile),
            "--endpoint-cafile",
            str(self.cafile),
        ]

    @property
    def ca_pem(self) -> str:
        return self.cafile.read_text()


def endpoint_certificate(directory: pathlib.Path) -> EndpointCertificate:
    """Make a CA and a serving certificate for 127.0.0.1 in `directory`."""
    ca = tls.make_ca("credbridge-test-endpoint-ca")
    certfile, keyfile = tls.issue(ca, "127.0.0.1", hosts=["127.0.0.1"]).write(directory, "endpoint")
    cafile = directory / "endpoint-ca.crt"
    cafile.write_bytes(ca.cert_pem)
    return EndpointCertificate(certfile, keyfile, cafile)


def create_service_account(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": dict(TEST_LABEL)}}
    created = client.CoreV1Api(api).create_namespaced_service_account(namespace, body)
    return {"uid": created.metadata.uid, "name": name}


def request_token(
    api: client.ApiClient,
    namespace: str,
    service_account: str,
    audiences: Sequence[str] = (names.TOKEN_AUDIENCE,),
    seconds: int = 600,
) -> str:
    """A TokenRequest token for the ServiceAccount (what `kubectl create token --audience` gets)."""
    body = {"spec": {"audiences": list(audiences), "expirationSeconds": seconds}}
    response = client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, body)
    return str(response.status.token)


def grant_use(
    api: client.ApiClient,
    namespace: str,
    service_account: str,
    plural: str,
    resource_names: Sequence[str] | None,
    *,
    name: str | None = None,
    service_account_namespace: str | None = None,
) -> str:
    """A Role in `namespace` granting verb `use` on `plural` (only `resource_names`, or all) and its
    RoleBinding to the ServiceAccount; returns the Role's name once the API server's authorizer
    answers the grant (RBAC takes a moment to see a new RoleBinding)."""
    role_name = name or f"use-{service_account}-{plural}"[:63]
    rule: dict[str, Any] = {"apiGroups": [names.GROUP], "resources": [plural], "verbs": [names.USE_VERB]}
    if resource_names is not None:
        rule["resourceNames"] = list(resource_names)
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": role_name, "labels": dict(TEST_LABEL)}, "rules": [rule]}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": role_name, "labels": dict(TEST_LABEL)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": service_account,
                    "namespace": service_account_namespace or namespace,
                }
            ],
        },
    )
    user = f"system:serviceaccount:{service_account_namespace or namespace}:{service_account}"
    attributes = {"namespace": namespace, "verb": names.USE_VERB, "group": names.GROUP, "resource": plural}
    if resource_names:
        attributes["name"] = resource_names[0]
    authorization = client.AuthorizationV1Api(api)
    deadline = time.monotonic() + 30
    while True:
        review = authorization.create_subject_access_review(
            {"spec": {"user": user, "groups": ["system:serviceaccounts"], "resourceAttributes": attributes}}
        )
        if review.status.allowed:
            return role_name
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} still may not use {plural} in {namespace} 30 s after the RoleBinding")
        time.sleep(0.1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def expired_copy(token: str, signing_key: pathlib.Path) -> str:
    """`token` with its validity moved ten minutes into the past, signed again with the cluster's
    ServiceAccount signing key: a genuine token of that ServiceAccount, expired.

    TokenRequest's shortest lifetime is ten minutes; this is how a test gets an expired token now.
    """
    header, payload, _ = token.split(".")
    claims = json.loads(_unb64(payload))
    now = int(time.time())
    claims.update({"iat": now - 1200, "nbf": now - 1200, "exp": now - 600})
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = dataclasses.field(repr=False)

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return str(self.json.get("message", ""))


class EndpointClient:
    """Raw GETs to the read endpoint on 127.0.0.1 over one kept-alive, verified TLS connection."""

    def __init__(self, port: int, ca_pem: str, timeout: float = 30.0) -> None:
        self.port = port
        self.context = ssl.create_default_context(cadata=ca_pem)
        self.timeout = timeout
        self._connection: http.client.HTTPSConnection | None = None

    def get(self, path: str, token: str | None = None, *, authorization: str | None = None) -> Response:
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=self.timeout
                )
            try:
                self._connection.request("GET", path, headers=headers)
                response = self._connection.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
                continue
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        raise AssertionError("unreachable")

    def read(self, namespace: str, plural: str, name: str, token: str | None) -> Response:
        return self.get(f"/v1/namespaces/{namespace}/{plural}/{name}", token)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
