"""Helpers for tests with sealed values: the cluster's public key, sealing like `credbridge seal` does, and
running the CLI as a user runs it (a process, values on stdin)."""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence

from kubernetes import client

from credbridge.core import names, sealing
from credbridge.kube import sealingkeys
from credbridge.testing import objects


def public_key(api: client.ApiClient, operator_namespace: str = names.DEFAULT_OPERATOR_NAMESPACE) -> bytes:
    """The active sealing public key as the operator publishes it (waiting until it has)."""

    def published() -> str | None:
        try:
            return sealingkeys.read_certificate(api, operator_namespace, names.DEFAULT_SEALING_CONFIGMAP)[1]
        except client.ApiException:
            return None

    pem = objects.wait_until(published, 60, f"the sealing certificate in {operator_namespace}")
    return sealing.parse_public_key_pem(str(pem))


def seal(key: bytes, value: str, namespace: str, name: str | None = None, field: str | None = None) -> str:
    """`value` sealed to `key` for one field of one Credential, or (no name and field) for a namespace."""
    return sealing.seal_value(value, key, sealing.Scope(namespace, name, field), secrets.token_bytes)


def run_cli(
    kubeconfig: pathlib.Path, *argv: str, stdin: str = "", env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`credbridge ARGV` as a process against the cluster of `kubeconfig`, with `stdin` piped in."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("CRED_", "CREDBRIDGE_"))}
    environment.update({"KUBECONFIG": str(kubeconfig), **(env or {})})
    environment.pop("POD_NAMESPACE", None)
    return subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


def keyring_args(operator_namespace: str) -> Sequence[str]:
    return ("--operator-namespace", operator_namespace)
