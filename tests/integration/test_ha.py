"""High availability with `--peering`: one replica works, the other stands by, and takes over when
the active one dies without saying goodbye (SIGKILL); OAuth2 tokens are refreshed once per expiry
whichever replica works."""

from __future__ import annotations

import datetime
import itertools
import pathlib
import secrets
from typing import Any

import pytest
from kubernetes import client

from credbridge.core.oauth2 import tokens
from credbridge.local import oauth2provider, operator
from credbridge.testing import oauth2 as oauth2_testing
from credbridge.testing import objects
from credbridge.testing.fixtures import unique_name, wait_for

pytestmark = pytest.mark.cluster


def test_standby_takes_over_when_the_active_replica_dies(
    kube_api: client.ApiClient,
    namespace: str,
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
    operator_namespace: str,
) -> None:
    peering = unique_name("ha")
    custom = client.CustomObjectsApi(kube_api)
    custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": peering, "labels": objects.TEST_LABEL},
        },
    )
    common = [
        "--operator-namespace",
        operator_namespace,
        "--webhook-port",
        "0",
        "--peering",
        peering,
        "--peering-lifetime",
        # Long enough that a busy machine's late keepalive does not let the standby take over early.
        "10",
    ]
    env = {"CRED_HA": "ha-value"}
    active = operator.start(
        operator_kubeconfig, tmp_path / "active.log", args=[*common, "--peering-priority", "100"], env=env
    )
    standby = operator.start(
        operator_kubeconfig, tmp_path / "standby.log", args=[*common, "--peering-priority", "50"], env=env
    )
    try:
        objects.create_credential(
            kube_api, namespace, objects.credential_body("before", "openAIApi", {"openAIApiKey": "<<CRED_HA>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "before", "Encrypted")
        assert f"Credential {namespace}/before: Secret before written" in active.logs()
        assert f"{namespace}/before" not in standby.logs()

        active.popen.kill()
        active.popen.wait(10)
        objects.create_credential(
            kube_api, namespace, objects.credential_body("after", "openAIApi", {"openAIApiKey": "<<CRED_HA>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "after", "Encrypted", timeout=60)
        assert f"Credential {namespace}/after: Secret after written" in standby.logs()
    finally:
        active.stop()
        standby.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)


def test_two_replicas_refresh_each_expiry_once(
    kube_api: client.ApiClient,
    namespace: str,
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
    operator_namespace: str,
    oauth2_provider_process: oauth2provider.OAuth2Provider,
    private_provider: Any,
) -> None:
    """Two replicas with peering, the second started while the first is active (so the first keeps its
    timers while paused), then the active one killed: the rotating provider sees exactly one refresh per
    expiry, never the same refresh token twice (which would revoke the grant)."""
    peering = unique_name("ha-oauth2")
    custom = client.CustomObjectsApi(kube_api)
    custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": peering, "labels": objects.TEST_LABEL},
        },
    )
    cred_type = oauth2_testing.oauth2_type(f"haOAuth2{secrets.token_hex(4)}", "authorization_code")
    oauth2_testing.create_oauth2_type(kube_api, cred_type)
    server = private_provider()
    common = [
        "--operator-namespace",
        operator_namespace,
        "--webhook-port",
        "0",
        "--peering",
        peering,
        "--peering-lifetime",
        "10",
        *oauth2_testing.refresh_args(oauth2_provider_process),
    ]
    replicas: list[operator.OperatorProcess] = []
    try:
        replicas.append(
            operator.start(operator_kubeconfig, tmp_path / "a.log", args=[*common, "--peering-priority", "50"])
        )
        credential, secret = oauth2_testing.credential_objects(
            server, "rotating", name="mail", type_name=cred_type.name
        )
        client.CoreV1Api(kube_api).create_namespaced_secret(namespace, secret)
        objects.create_credential(kube_api, namespace, credential)
        oauth2_testing.store_tokens(kube_api, namespace, "mail", oauth2_testing.authorize_tokens(server, "rotating"))
        oauth2_testing.wait_for_oauth2(
            kube_api, namespace, "mail", lambda c, b: c.get("reason") == "TokenValid", timeout=120, what="TokenValid"
        )
        seen = [oauth2_testing.token_secret(kube_api, namespace, "mail")]

        def refreshed(times: int) -> None:
            def enough() -> bool:
                now = oauth2_testing.token_secret(kube_api, namespace, "mail")
                if now.get("access_token") != seen[-1].get("access_token"):
                    seen.append(now)
                return len(seen) > times

            wait_for(enough, timeout=180.0 * times, interval=0.5, message=f"refresh {times}")

        refreshed(1)  # by the first replica, alone
        replicas.append(
            operator.start(operator_kubeconfig, tmp_path / "b.log", args=[*common, "--peering-priority", "100"])
        )
        objects.wait_until(lambda: "Pausing operations" in replicas[0].logs(), 60, "the first replica pausing")
        refreshed(3)  # the second replica active, the first paused with the Credential still in its cache
        replicas[1].popen.kill()
        replicas[1].popen.wait(10)
        refreshed(5)  # the first replica resumes after the dead one's peering entry runs out

        assert not [key for key in server.token_requests() if "invalid_grant" in key], server.token_requests()
        sent = oauth2_testing.requests_of(server, "refresh_token", "rotating")
        assert len(seen) - 1 <= sent <= len(seen), (sent, len(seen))
        for previous, following in itertools.pairwise(seen):
            received = tokens.parse_time(following["token_received_at"])
            expires = tokens.parse_time(previous["expires_at"])
            issued = tokens.parse_time(previous["token_received_at"])
            assert received is not None and expires is not None and issued is not None
            assert received < expires  # refreshed before the token expired
            # ... and not twice for one token: the next refresh of a 30-second token comes after 70 % of it.
            assert received - issued >= datetime.timedelta(seconds=30 * 0.7 - 1)
        assert len({entry["refresh_token"] for entry in seen}) == len(seen)
        oauth2_testing.wait_for_oauth2(
            kube_api, namespace, "mail", lambda c, b: c.get("reason") == "TokenValid", timeout=60, what="TokenValid"
        )
    finally:
        for replica in replicas:
            replica.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
        oauth2_testing.delete_oauth2_type(kube_api, cred_type)


def test_a_paused_replica_runs_no_work_on_its_stale_cache(
    kube_api: client.ApiClient,
    namespace: str,
    operator_kubeconfig: pathlib.Path,
    tmp_path: pathlib.Path,
    operator_namespace: str,
) -> None:
    """The first replica works, then one of a higher priority starts and kopf pauses the first: its
    periodic re-verification (every 2 s here) must not reconcile anything any more, while the new one does."""
    peering = unique_name("ha-pause")
    custom = client.CustomObjectsApi(kube_api)
    custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": peering, "labels": objects.TEST_LABEL},
        },
    )
    common = [
        "--operator-namespace",
        operator_namespace,
        "--webhook-port",
        "0",
        "--peering",
        peering,
        "--peering-lifetime",
        "10",
        "--resync-interval",
        "2",
    ]
    env = {"CRED_HA": "ha-value"}
    first = operator.start(
        operator_kubeconfig, tmp_path / "first.log", args=[*common, "--peering-priority", "50"], env=env
    )
    second: operator.OperatorProcess | None = None

    def reconciles(process: operator.OperatorProcess) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in process.metrics().splitlines()
            if line.startswith('credbridge_reconciles_total{kind="credential"')
        )

    try:
        objects.create_credential(
            kube_api, namespace, objects.credential_body("c", "openAIApi", {"openAIApiKey": "<<CRED_HA>>"})
        )
        objects.wait_for_reason(kube_api, namespace, "c", "Encrypted", timeout=60)
        second = operator.start(
            operator_kubeconfig, tmp_path / "second.log", args=[*common, "--peering-priority", "100"], env=env
        )
        wait_for(lambda: "pauses its work queues" in first.logs(), timeout=60, message="the first replica to pause")
        paused_at = reconciles(first)
        # The working replica re-verifies every 2 s; give the paused one as long to (wrongly) do the same.
        wait_for(lambda: reconciles(second) >= 3, timeout=60, message="the second replica's re-verifications")
        assert reconciles(first) == paused_at, "a paused replica reconciled on its stale cache"
        objects.patch_credential(kube_api, namespace, "c", {"spec": {"displayName": "changed while paused"}})
        wait_for(
            lambda: (
                (objects.get_credential(kube_api, namespace, "c") or {}).get("status", {}).get("displayName")
                == "changed while paused"
            ),
            timeout=60,
            message="the working replica to reconcile the change",
        )
        assert reconciles(first) == paused_at
    finally:
        first.stop()
        if second is not None:
            second.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
