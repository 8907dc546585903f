"""pytest fixtures for the Flowise tier: one PostgreSQL and one Flowise per session (a second
Flowise only when a test asks for it), started from the real `flowise` npm package.

Like the cluster fixtures they never skip: if Node, npm or PostgreSQL are missing, the tests that
need Flowise error out with the reason, so a run without them cannot pass by accident. The first
run installs Flowise with npm into the cache (minutes, printed as it goes).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from credbridge import tls as credbridge_tls
from credbridge.core import names
from credbridge.core.flowise import stored, sync
from credbridge.core.flowise import target as target_module
from credbridge.flowise import client as flowise_client
from credbridge.kube import fetching
from credbridge.local import controlplane
from credbridge.local import flowise as local_flowise
from credbridge.testing import objects


@pytest.fixture(scope="session")
def flowise_install() -> local_flowise.FlowiseInstall:
    """The cached `flowise` npm package, installed on first use."""
    return local_flowise.ensure_installed()


@pytest.fixture(scope="session")
def flowise_postgres() -> Iterator[local_flowise.PostgresServer]:
    """One PostgreSQL server for the session's Flowise databases."""
    server = local_flowise.PostgresServer.start()
    yield server
    server.stop()


def _start(
    tmp_path_factory: pytest.TempPathFactory,
    install: local_flowise.FlowiseInstall,
    postgres: local_flowise.PostgresServer,
    name: str,
) -> local_flowise.FlowiseServer:
    return local_flowise.start_flowise(tmp_path_factory.mktemp(name), postgres, install=install)


@pytest.fixture(scope="session")
def flowise_server(
    tmp_path_factory: pytest.TempPathFactory,
    flowise_install: local_flowise.FlowiseInstall,
    flowise_postgres: local_flowise.PostgresServer,
) -> Iterator[local_flowise.FlowiseServer]:
    """A running Flowise with its first admin and an API key holding every credentials:* permission."""
    server = _start(tmp_path_factory, flowise_install, flowise_postgres, "flowise")
    yield server
    server.stop_process()


@pytest.fixture(scope="session")
def second_flowise_server(
    tmp_path_factory: pytest.TempPathFactory,
    flowise_install: local_flowise.FlowiseInstall,
    flowise_postgres: local_flowise.PostgresServer,
) -> Iterator[local_flowise.FlowiseServer]:
    """Another Flowise on a fresh database: where migrated credentials land."""
    server = _start(tmp_path_factory, flowise_install, flowise_postgres, "flowise-second")
    yield server
    server.stop_process()


def flowise_api(server: local_flowise.FlowiseServer) -> flowise_client.FlowiseClient:
    """A client of `server` with its full-permission API key."""
    return flowise_client.FlowiseClient(server.url, server.api_key)


def stored_fields(server: local_flowise.FlowiseServer, credential_id: str) -> dict[str, str] | None:
    """What Flowise stored for `credential_id`, decrypted with its key, read straight from its database."""
    if not sync.is_flowise_id(credential_id):
        raise ValueError("a Flowise credential id is a UUID")
    query = f"SELECT \"encryptedData\" FROM credential WHERE id = '{credential_id}'"  # noqa: S608 -- a UUID
    rows = server.postgres.psql(server.database, query)
    if not rows.strip():
        return None
    return dict(stored.decrypt_fields(rows.strip(), server.secret_key.reveal().encode()))


def create_api_key_secret(api: client.ApiClient, namespace: str, name: str, api_key: str) -> None:
    """A Secret holding a Flowise API key under `apiKey`, as spec.apiKeySecretRef expects by default."""
    objects.create_secret(api, namespace, name, {target_module.DEFAULT_API_KEY_KEY: api_key})


def target_body(
    name: str,
    url: str,
    api_key_secret: str,
    *,
    selector: dict[str, Any] | None = None,
    prune: bool | None = None,
    ca_secret: str | None = None,
) -> dict[str, Any]:
    """A FlowiseTarget manifest labelled created-by=credbridge-tests."""
    spec: dict[str, Any] = {"url": url, "apiKeySecretRef": {"name": api_key_secret}}
    if selector is not None:
        spec["selector"] = selector
    if prune is not None:
        spec["prune"] = prune
    if ca_secret is not None:
        spec["tls"] = {"caSecretRef": {"name": ca_secret}}
    return {
        "apiVersion": names.API_VERSION,
        "kind": target_module.KIND,
        "metadata": {"name": name, "labels": dict(objects.TEST_LABEL)},
        "spec": spec,
    }


def create_target(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, target_module.PLURAL, body
    )
    return created


def get_target(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The FlowiseTarget, or None when it does not exist."""
    return fetching.read_object(api, target_module.PLURAL, target_module.KIND, namespace, name)


def patch_target(api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, target_module.PLURAL, name, patch
    )


def delete_target(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, target_module.PLURAL, name
    )


def entry(target: dict[str, Any] | None, credential: str) -> dict[str, Any] | None:
    """The status entry of `credential` in a FlowiseTarget, or None."""
    for item in ((target or {}).get("status") or {}).get("credentials") or []:
        if item.get("name") == credential:
            found: dict[str, Any] = item
            return found
    return None


def ready_reason(target: dict[str, Any] | None) -> str | None:
    condition = objects.ready(target)
    return None if condition is None else str(condition.get("reason"))


class BrokenFlowise:
    """A `brokenflowise` process on a free port; stopped by `stop()`."""

    def __init__(self, mode: str, workdir: pathlib.Path, *, tls: bool = False) -> None:
        self.port = controlplane.free_port()
        self.ca_pem: str | None = None
        argv = [sys.executable, "-m", "credbridge.testing.brokenflowise", "--port", str(self.port), "--mode", mode]
        if tls:
            ca = credbridge_tls.make_ca("broken-flowise-ca")
            cert, key = credbridge_tls.issue(ca, "127.0.0.1", hosts=["127.0.0.1"]).write(workdir, f"broken-{self.port}")
            self.ca_pem = ca.cert_pem.decode()
            argv += ["--cert", str(cert), "--key", str(key)]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if b"ready" not in line:
            self.stop()
            raise RuntimeError(f"the stand-in Flowise did not start: {line!r}")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


@pytest.fixture
def broken_flowise(tmp_path: pathlib.Path) -> Iterator[Callable[..., BrokenFlowise]]:
    """Starts stand-in Flowise processes with a chosen misbehaviour; all are stopped after the test."""
    started: list[BrokenFlowise] = []

    def start(mode: str, *, tls: bool = False) -> BrokenFlowise:
        server = BrokenFlowise(mode, tmp_path, tls=tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
