"""`credbridge oauth2 authorize` against the local control plane and a real OAuth2 provider, the test
playing the browser: tokens land in the token Secret and, through the operator, in the Credential's
encrypted Secret; the loopback listener ignores a foreign redirect; a state mismatch and a caller
who may not write the Secret are refused before anything is written; no token is ever printed."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client

from credbridge.core import names, redaction, registry
from credbridge.core.oauth2 import authorization, outcomes
from credbridge.kube import connecting
from credbridge.local import controlplane, oauth2provider
from credbridge.oauth2client import client as token_client
from credbridge.testing import oauth2 as oauth2_testing
from credbridge.testing import objects
from credbridge.testing.fixtures import Namespaces, unique_name, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def oauth2_type(kube_api: client.ApiClient) -> Iterator[registry.CredentialTypeSpec]:
    """A CredentialType for the test provider (authorization code, Flowise's field names)."""
    spec = oauth2_testing.oauth2_type(f"testOAuth2{secrets.token_hex(4)}", "authorization_code")
    oauth2_testing.create_oauth2_type(kube_api, spec)
    yield spec
    oauth2_testing.delete_oauth2_type(kube_api, spec)


def make_credential(
    api: client.ApiClient,
    namespace: str,
    server: oauth2provider.OAuth2Provider,
    cred_type: registry.CredentialTypeSpec,
    client_id: str = "fixed",
) -> str:
    name = unique_name("mail")
    credential, secret = oauth2_testing.credential_objects(server, client_id, name=name, type_name=cred_type.name)
    client.CoreV1Api(api).create_namespaced_secret(namespace, secret)
    objects.create_credential(api, namespace, credential)
    return name


def token_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return objects.decoded(objects.read_secret(api, namespace, f"{name}-tokens") or {})


def with_state(redirect: str, state: str) -> str:
    parts = urllib.parse.urlsplit(redirect)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["state"] = state
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def test_authorize_headless_stores_tokens_that_the_operator_encrypts_and_prints_none(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
    credbridge_operator,  # type: ignore[no-untyped-def]
) -> None:
    name = make_credential(kube_api, namespace, oauth2_provider, oauth2_type)
    # Before any authorization the Credential is Ready with its client configuration only (optional references).
    before = objects.wait_for_reason(kube_api, namespace, name, "Encrypted", timeout=60)
    assert "refresh_token" not in before["status"]["fields"]

    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    redirect = oauth2_provider.sign_in_and_consent(command.authorization_url())
    code, out, err = command.finish(redirect)
    assert code == 0, err
    stored = token_secret(kube_api, namespace, name)
    assert set(stored) == set(oauth2_testing.TOKEN_FIELDS_STORED)
    assert f"Secret {namespace}/{name}-tokens (created)" in out
    for value in (stored["refresh_token"], stored["access_token"]):
        assert value not in out and value not in err
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirect).query))
    assert query["code"] not in out and query["code"] not in err

    # The operator takes the token fields into the Credential's encrypted Secret.
    def encrypted_with_tokens() -> bool:
        status = (objects.get_credential(kube_api, namespace, name) or {}).get("status") or {}
        return {"refresh_token", "access_token", "expires_at", "token_received_at"} <= set(status.get("fields") or ())

    wait_for(encrypted_with_tokens, timeout=60, message="the token fields in the Credential's Secret")
    opened = objects.open_managed_secret(kube_api, namespace, name)
    assert opened["refresh_token"] == stored["refresh_token"]
    assert stored["refresh_token"] not in credbridge_operator.logs()

    # The stored refresh token is a real one.
    config = oauth2_testing.provider_config(oauth2_provider, "fixed")
    result = token_client.TokenClient(ca_pem=oauth2_provider.ca_pem).refresh(
        config, redaction.Redacted(stored["refresh_token"])
    )
    assert isinstance(result, outcomes.Refreshed)


def test_the_loopback_listener_ignores_a_foreign_redirect_and_takes_its_own(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
) -> None:
    name = make_credential(kube_api, namespace, oauth2_provider, oauth2_type, client_id="rotating")
    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig, namespace, name, ca_file=oauth2_provider.ca_file
    )
    redirect = oauth2_provider.sign_in_and_consent(command.authorization_url())
    assert redirect.startswith("http://127.0.0.1:")
    forged = with_state(redirect, "cb1.forged.state")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 400
    with urllib.request.urlopen(redirect, timeout=10) as answered:
        assert answered.status == 200
    code, _out, err = command.finish()
    assert code == 0, err
    assert "ignored a redirect that belongs to another authorization" in err
    assert set(token_secret(kube_api, namespace, name)) == set(oauth2_testing.TOKEN_FIELDS_STORED)


def test_a_registered_https_redirect_uri_works_by_pasting_the_address(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
) -> None:
    name = make_credential(kube_api, namespace, oauth2_provider, oauth2_type)
    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig,
        namespace,
        name,
        "--no-browser",
        "--redirect-uri",
        oauth2provider.HTTPS_REDIRECT_URI,
        ca_file=oauth2_provider.ca_file,
    )
    redirect = oauth2_provider.sign_in_and_consent(command.authorization_url())
    assert redirect.startswith(oauth2provider.HTTPS_REDIRECT_URI + "?")
    code, _out, err = command.finish(redirect)
    assert code == 0, err
    assert set(token_secret(kube_api, namespace, name)) == set(oauth2_testing.TOKEN_FIELDS_STORED)


def test_a_redirect_with_another_state_is_refused_and_nothing_is_written(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
) -> None:
    name = make_credential(kube_api, namespace, oauth2_provider, oauth2_type)
    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    redirect = oauth2_provider.sign_in_and_consent(command.authorization_url())
    other = authorization.AuthorizationState.new(namespace, name, "another-uid", secrets.token_bytes)
    code, _out, err = command.finish(with_state(redirect, other.encode()))
    assert code == 1
    assert "state does not match" in err
    assert objects.read_secret(kube_api, namespace, f"{name}-tokens") is None


def grant(api: client.ApiClient, namespace: str, user: str, rules: list[dict[str, object]]) -> None:
    role = unique_name("oauth2-caller")
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": role, "labels": objects.TEST_LABEL}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": role, "labels": objects.TEST_LABEL},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def types_reader(api: client.ApiClient, user: str) -> str:
    """A ClusterRole and binding letting `user` read CredentialTypes (cluster-scoped); returns their name."""
    name = unique_name("oauth2-types-reader")
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(
        {
            "metadata": {"name": name, "labels": objects.TEST_LABEL},
            "rules": [{"apiGroups": [names.GROUP], "resources": ["credentialtypes"], "verbs": ["get"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name, "labels": objects.TEST_LABEL},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
    )
    return name


def test_a_caller_who_may_not_write_the_token_secret_is_refused_before_signing_in(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespaces: Namespaces,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
) -> None:
    namespace = namespaces.create("oauth2-rbac")
    name = make_credential(kube_api, namespace, oauth2_provider, oauth2_type)
    user = unique_name("reader")
    grant(
        kube_api,
        namespace,
        user,
        [
            {"apiGroups": [names.GROUP], "resources": ["credentials"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ],
    )
    read_types = types_reader(kube_api, user)
    kubeconfig = control_plane.user_kubeconfig(user)
    as_user = connecting.api_client(str(kubeconfig))
    wait_for(
        lambda: (
            client.CustomObjectsApi(as_user).get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.CREDENTIAL_PLURAL, name
            )
            and client.CustomObjectsApi(as_user).get_cluster_custom_object(
                names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, registry.type_object_name(oauth2_type.name)
            )
        ),
        message="the Role to take effect",
    )
    refused = oauth2_testing.AuthorizeCommand(
        kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    code, _, err = refused.finish()
    assert code == 1
    assert f"you may not create Secret {namespace}/{name}-tokens" in err and "'create'" in err
    assert "https://" not in err  # refused before the sign-in page was offered

    objects.create_secret(kube_api, namespace, f"{name}-tokens", {"unrelated": "kept"})
    refused_again = oauth2_testing.AuthorizeCommand(
        kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    code, _, err = refused_again.finish()
    assert code == 1 and f"you may not patch Secret {namespace}/{name}-tokens" in err

    # Given patch on that Secret, the same caller authorizes; the key it does not own stays.
    grant(
        kube_api,
        namespace,
        user,
        [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [f"{name}-tokens"], "verbs": ["patch"]}],
    )
    wait_for(
        lambda: (
            client.AuthorizationV1Api(as_user)
            .create_self_subject_access_review(
                {
                    "spec": {
                        "resourceAttributes": {
                            "verb": "patch",
                            "resource": "secrets",
                            "namespace": namespace,
                            "name": f"{name}-tokens",
                        }
                    }
                }
            )
            .status.allowed
        ),
        message="the patch grant to take effect",
    )
    allowed = oauth2_testing.AuthorizeCommand(
        kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    code, _out, err = allowed.finish(oauth2_provider.sign_in_and_consent(allowed.authorization_url()))
    assert code == 0, err
    stored = token_secret(kube_api, namespace, name)
    assert stored["unrelated"] == "kept" and set(oauth2_testing.TOKEN_FIELDS_STORED) <= set(stored)
    client.RbacAuthorizationV1Api(kube_api).delete_cluster_role_binding(read_types)
    client.RbacAuthorizationV1Api(kube_api).delete_cluster_role(read_types)


def test_a_credential_that_does_not_say_where_tokens_go_is_told_what_to_add(
    control_plane: controlplane.ControlPlane,
    kube_api: client.ApiClient,
    namespace: str,
    oauth2_provider: oauth2provider.OAuth2Provider,
    oauth2_type: registry.CredentialTypeSpec,
) -> None:
    name = unique_name("mail")
    credential, secret = oauth2_testing.credential_objects(
        oauth2_provider, "fixed", name=name, type_name=oauth2_type.name, token_fields=()
    )
    client.CoreV1Api(kube_api).create_namespaced_secret(namespace, secret)
    objects.create_credential(kube_api, namespace, credential)
    command = oauth2_testing.AuthorizeCommand(
        control_plane.kubeconfig, namespace, name, "--no-browser", ca_file=oauth2_provider.ca_file
    )
    code, _, err = command.finish()
    assert code == 1
    assert f"spec.valueFrom.refresh_token: {{secretKeyRef: {{name: {name}-oauth2-tokens, key: refresh_token" in err
