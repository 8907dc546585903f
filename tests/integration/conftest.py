"""The operator for integration tests: one process per test module, under its own identity.

It runs as user `credbridge-operator` (group system:masters) so the audit log and the webhook can
tell its writes from the test's own admin writes. Every module shares the keyring namespace, so
the keyring survives operator restarts as it does in production.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from kubernetes import client

from credbridge.local import controlplane, operator

OPERATOR_USER = "credbridge-operator"
OPERATOR_NAMESPACE = "credbridge-system"


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as error:
        if error.status != 409:
            raise


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: controlplane.ControlPlane) -> pathlib.Path:
    return control_plane.user_kubeconfig(OPERATOR_USER, groups=["system:masters"])


@pytest.fixture(scope="session")
def operator_namespace(kube_api: client.ApiClient) -> str:
    """The namespace of the shared keyring, created once per session."""
    ensure_namespace(kube_api, OPERATOR_NAMESPACE)
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    """Environment variables the module's operator gets; modules override this fixture."""
    return {}


@pytest.fixture(scope="module")
def operator_args() -> list[str]:
    """Extra `credbridge run` flags for the module's operator; modules override this fixture."""
    return []


class OperatorHandle:
    """The module's operator, restartable with other environment variables."""

    def __init__(self, kubeconfig: pathlib.Path, workdir: pathlib.Path, args: list[str], env: dict[str, str]):
        self.kubeconfig, self.workdir, self.args, self.env = kubeconfig, workdir, args, env
        self.generation = 0
        self.process = self._start()

    def _start(self, extra_args: tuple[str, ...] = ()) -> operator.OperatorProcess:
        self.generation += 1
        return operator.start(
            self.kubeconfig,
            self.workdir / f"operator-{self.generation}.log",
            args=["--operator-namespace", OPERATOR_NAMESPACE, "--log-level", "debug", *self.args, *extra_args],
            env=self.env,
        )

    def restart(self, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> operator.OperatorProcess:
        """Stop the operator and start it again, optionally with other variables or extra flags."""
        self.process.stop()
        if env is not None:
            self.env = env
        self.process = self._start(extra_args)
        return self.process

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.workdir.glob("operator-*.log")))

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def credbridge_operator(
    control_plane: controlplane.ControlPlane,
    operator_namespace: str,
    operator_kubeconfig: pathlib.Path,
    operator_env: dict[str, str],
    operator_args: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorHandle]:
    handle = OperatorHandle(operator_kubeconfig, tmp_path_factory.mktemp("operator"), operator_args, operator_env)
    yield handle
    handle.stop()
