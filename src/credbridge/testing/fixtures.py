"""pytest fixtures for tests that need a real cluster: one control plane per session, a fresh
namespace per test, the operator as a process, other identities by impersonation, and audit-log
reading for counting API writes.

Cluster fixtures never skip: if the control plane cannot start, the tests that need it error out
with the reason, so a run without the cluster tiers cannot pass by accident.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from kubernetes import client

from credbridge.kube import connecting
from credbridge.local import controlplane, operator

TEST_LABEL = {"created-by": "credbridge-tests"}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """The session's control plane, with the credbridge CRDs installed."""
    plane = controlplane.start(tmp_path_factory.mktemp("controlplane"))
    try:
        if plane.existing:
            plane.install_crds()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: controlplane.ControlPlane) -> client.ApiClient:
    """An admin ApiClient for the session's control plane."""
    return connecting.api_client(str(control_plane.kubeconfig))


def unique_name(prefix: str) -> str:
    """A DNS-label name that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class Namespaces:
    """Creates labelled namespaces for one test and deletes them afterwards."""

    api: client.ApiClient
    created: list[str] = dataclasses.field(default_factory=list)

    def create(
        self,
        prefix: str = "t",
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> str:
        name = unique_name(prefix)
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name, labels={**TEST_LABEL, **(labels or {})}, annotations=annotations or None
            )
        )
        core = client.CoreV1Api(self.api)
        core.create_namespace(body)
        self.created.append(name)
        # As in a real cluster, Pods (without serviceAccountName) are admitted once the service-account
        # controller has made the namespace's `default` ServiceAccount: wait for it.
        wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=60,
            message=f"the default ServiceAccount of namespace {name}",
        )
        return name

    def delete_all(self) -> None:
        core = client.CoreV1Api(self.api)
        for name in self.created:
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(name)


@pytest.fixture
def namespaces(kube_api: client.ApiClient) -> Iterator[Namespaces]:
    """A factory of fresh namespaces, deleted after the test."""
    made = Namespaces(kube_api)
    yield made
    made.delete_all()


@pytest.fixture
def namespace(namespaces: Namespaces) -> str:
    """A fresh namespace for this test, labelled created-by=credbridge-tests."""
    return namespaces.create()


@pytest.fixture
def impersonate(control_plane: controlplane.ControlPlane) -> Callable[..., client.ApiClient]:
    """Return ApiClients that act as another user or service account (impersonation)."""

    def make(user: str, group: str | None = None) -> client.ApiClient:
        return connecting.api_client(str(control_plane.kubeconfig), as_user=user, as_group=group)

    return make


@pytest.fixture
def run_operator(
    control_plane: controlplane.ControlPlane, tmp_path: pathlib.Path
) -> Iterator[Callable[..., operator.OperatorProcess]]:
    """Start `credbridge run` processes against the control plane; all are stopped after the test."""
    started: list[operator.OperatorProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        kubeconfig: pathlib.Path | None = None,
    ) -> operator.OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        process = operator.start(kubeconfig or control_plane.kubeconfig, log, args=args, env=env, wait_ready=wait_ready)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def effective_user(event: dict[str, Any]) -> str:
    """The identity a request acted as: the impersonated user when there is one."""
    identity = event.get("impersonatedUser") or event.get("user") or {}
    return str(identity.get("username", ""))


class AuditLog:
    """Reads the API server's audit log: which writes a user made, from a point in time on."""

    def __init__(self, path: pathlib.Path | None) -> None:
        if path is None:
            pytest.skip("the audit log is only available on the local control plane, not an existing cluster")
        self.path = path

    def mark(self) -> int:
        """A position in the log; `writes(since=...)` only counts what came after it."""
        return self.path.stat().st_size if self.path.exists() else 0

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        with self.path.open("rb") as handle:
            handle.seek(since)
            return [json.loads(line) for line in handle.read().splitlines() if line.strip()]

    def writes(
        self,
        *,
        since: int = 0,
        user: str | None = None,
        resources: Sequence[str] | None = None,
        namespace: str | None = None,
    ) -> list[dict[str, Any]]:
        """Successful write requests, optionally only by `user`, on `resources`, in `namespace`."""
        selected = []
        for event in self.events(since):
            if event.get("verb") not in WRITE_VERBS or event.get("stage") != "ResponseComplete":
                continue
            ref = event.get("objectRef") or {}
            if user and effective_user(event) != user:
                continue
            if resources and ref.get("resource") not in resources:
                continue
            if namespace and ref.get("namespace") != namespace:
                continue
            if int(event.get("responseStatus", {}).get("code", 0)) >= 400:
                continue
            selected.append(event)
        return selected


@pytest.fixture
def audit(control_plane: controlplane.ControlPlane) -> AuditLog:
    """The control plane's audit log."""
    return AuditLog(control_plane.audit_log)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, message: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test with `message` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: client.ApiException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except client.ApiException as error:
            last_error, result = error, None
        if result:
            return result
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout:.0f}s waiting for {message}"
        + (f" (last API error: {last_error.status} {last_error.reason})" if last_error else "")
    )


def kubectl_run(
    plane: controlplane.ControlPlane, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kubectl and return the completed process without raising (tests inspect failures)."""
    kubectl = str(plane.binaries.kubectl) if plane.binaries else "kubectl"
    return subprocess.run(
        [kubectl, "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=input,
        check=False,
    )
