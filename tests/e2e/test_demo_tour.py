"""The README's tour, typed the way a new user types it after `make demo`.

`credbridge dev demo` starts the local control plane and the operator (as the chart's ServiceAccount,
not as the user's kubeconfig), applies examples/ and shows the result. Then the tour's claims are
checked with the tour's own commands: a Credential a binding uses cannot be deleted, team-b cannot
edit or delete its mirror, and a workload reads a value with its ServiceAccount token.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from credbridge.testing import e2e, objects

pytestmark = pytest.mark.cluster


class Demo:
    """Runs `credbridge ...` in the demo's directory, as the README shows."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "credbridge.cli.main", *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            input=input,
            timeout=600,
            check=False,
            env={**os.environ, **(env or {})},
        )

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("dev", "kubectl", *args, input=input)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    made = Demo(tmp_path_factory.mktemp("demo"))
    started = made.run("dev", "demo")
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert "production-openai" in started.stdout and "staging-anthropic" in started.stdout
        yield made
    finally:
        made.run("dev", "down")


def test_the_demo_shows_ready_credentials_a_mirror_and_the_reason_of_a_failure(demo: Demo) -> None:
    rows = e2e.table(demo.kubectl("get", "credentials", "-A").stdout)
    by_name = {(row["NAMESPACE"], row["NAME"]): row for row in rows}
    assert by_name[("team-a", "production-openai")]["READY"] == "True"
    assert by_name[("team-b", "team-a.production-openai")]["SHARED"] == "true"
    assert by_name[("team-a", "staging-anthropic")]["REASON"] == "EnvReferenceMissing"


def test_deleting_a_credential_a_binding_uses_is_refused(demo: Demo) -> None:
    refused = demo.kubectl("delete", "credential", "production-openai", "-n", "team-a")
    assert refused.returncode != 0
    assert "is in use" in refused.stderr and "chat-api-openai" in refused.stderr
    assert demo.kubectl("get", "credential", "production-openai", "-n", "team-a", "-o", "name").returncode == 0


def test_team_b_cannot_edit_or_delete_its_mirror(demo: Demo) -> None:
    mirror = ("team-a.production-openai", "-n", "team-b")
    edited = demo.kubectl("patch", "credential", *mirror, "--type", "merge", "-p", '{"spec":{"displayName":"x"}}')
    assert edited.returncode != 0 and "read-only mirror" in edited.stderr
    deleted = demo.kubectl("delete", "credential", *mirror)
    assert deleted.returncode != 0 and "read-only mirror" in deleted.stderr
    secret = demo.kubectl("delete", "secret", "team-a.production-openai", "-n", "team-b")
    assert secret.returncode != 0, "the mirror's Secret is read-only too"


def test_a_workload_reads_the_mirror_with_its_service_account_once_a_role_grants_use(demo: Demo) -> None:
    assert demo.kubectl("create", "serviceaccount", "chat", "-n", "team-b").returncode == 0
    role = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: use-openai, namespace: team-b}\n"
        "rules: [{apiGroups: [credbridge.io], resources: [credentials], "
        "resourceNames: [team-a.production-openai], verbs: [use]}]\n"
    )
    token_file = demo.directory / "chat.token"
    command = (
        "env",
        "--token-file",
        str(token_file),
        "--credential",
        "team-a.production-openai",
        "--env",
        "OPENAI_API_KEY=openAIApiKey",
        "--",
        "sh",
        "-c",
        'echo "the app sees ${OPENAI_API_KEY%%-0*}-..."',
    )
    token_file.write_text(demo.kubectl("create", "token", "chat", "-n", "team-b", "--audience", "credbridge.io").stdout)
    status = demo.run("dev", "status").stdout
    exports = dict(
        part.split("=", 1)
        for line in status.splitlines()
        if line.strip().startswith("export CREDBRIDGE")
        for part in line.split()[1:]
    )
    refused = demo.run(*command, env=exports)
    assert refused.returncode != 0 and "may not use" in refused.stderr

    assert demo.kubectl("apply", "-f", "-", input=role).returncode == 0
    granted = demo.kubectl(
        "create", "rolebinding", "chat-use-openai", "-n", "team-b", "--role=use-openai", "--serviceaccount=team-b:chat"
    )
    assert granted.returncode == 0, granted.stderr
    # RBAC takes a moment to see a new RoleBinding; a user would retry the read, the test waits for it.
    can_i = ("auth", "can-i", "use", "credentials/team-a.production-openai", "-n", "team-b")
    objects.wait_until(
        lambda: demo.kubectl(*can_i, "--as", "system:serviceaccount:team-b:chat").stdout.strip() == "yes",
        60,
        "the Role to take effect",
    )
    read = demo.run(*command, env=exports)
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "the app sees sk-demo-..."
