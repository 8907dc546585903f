"""`credbridge dev`: the local control plane (and optionally the operator) kept running for people.

Tests start and stop their own control plane; people trying credbridge want one that stays up
between commands. State lives in `.credbridge-dev/` of the current directory: the kubeconfig, the
process ids, and every process's log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from credbridge import tls
from credbridge.core import names
from credbridge.local import controlplane, operator

STATE_DIR = pathlib.Path(".credbridge-dev")
STATE_FILE = STATE_DIR / "state.json"
EXAMPLES_DIR = controlplane.REPO_ROOT / "examples"
SEALING_EXAMPLES_DIR = EXAMPLES_DIR / "sealing"
"""Credential manifests with plain values that the demo seals with its cluster's public key, then applies."""
OPERATOR_NAMESPACE = names.DEFAULT_OPERATOR_NAMESPACE
RESTARTABLE = ("etcd", "kube-apiserver", "kube-controller-manager")
DEMO_ENV = {
    # A made-up key: the demo shows how a value from the operator's environment ends up encrypted.
    "CRED_DEMO_OPENAI_API_KEY": "sk-demo-0000000000000000000000000000",
}
DEMO_ENV_POLICY = ("CRED_DEMO_*=team-a",)
IDENTITY_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
"""The kinds of the chart's objects that make up the operator's identity and its rights."""
OPERATOR_SERVICE_ACCOUNT = "credbridge"
"""The ServiceAccount the chart (release `credbridge`) creates; the dev operator acts as it."""
DEV_WEBHOOK_RULES = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "credbridge-dev-webhooks"},
    "rules": [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
            "verbs": ["get", "list", "watch", "create", "update", "patch"],
        }
    ],
}
"""What the dev operator needs beyond the chart's ClusterRole: in a cluster the chart owns the webhook
configurations; here the operator manages its own (a self-made certificate on 127.0.0.1)."""
"""--env-policy rules of the demo operator: the demo's variables belong to team-a, so team-a's
CredentialBindings may render them into plain Secrets, and workloads read them as plaintext there
(and from its mirrors) — the tenancy rule, docs/consumers.md."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = subparsers.add_parser("dev", help="run a local control plane for trying credbridge")
    commands = dev.add_subparsers(dest="dev_command", required=True)
    up = commands.add_parser("up", help="start etcd, kube-apiserver and kube-controller-manager in the background")
    up.add_argument("--operator", action="store_true", help="also start the operator in the background")
    commands.add_parser("down", help="stop everything `dev up` or `dev demo` started (restarted processes too)")
    restart = commands.add_parser(
        "restart",
        help="kill a control plane process with SIGKILL and start it again (same arguments, ports and data)",
        description="Fault injection by hand: what a crash and a supervisor's restart do to etcd, the API server "
        "or the controller manager. The new process id is recorded, so `dev down` stops it.",
    )
    restart.add_argument("process", choices=RESTARTABLE, help="the process to crash and start again")
    commands.add_parser("status", help="show what is running and the kubeconfig path")
    commands.add_parser("demo", help="up + operator + apply examples/ + show the result")
    kubectl = commands.add_parser("kubectl", help="run kubectl against the local control plane")
    kubectl.add_argument("args", nargs=argparse.REMAINDER)
    dev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    command = args.dev_command
    try:
        controlplane.require_checkout()
    except controlplane.ControlPlaneError as error:
        print(f"credbridge dev: {error}", file=sys.stderr)
        return 2
    if command == "up":
        state = _up()
        if args.operator:
            _start_operator(state)
        _print_status(state)
        return 0
    if command == "down":
        return _down()
    if command == "restart":
        return _restart(args.process)
    if command in ("status", "kubectl"):
        loaded = _load()
        if not loaded:
            print("credbridge dev: nothing is running (start it with `credbridge dev up`)", file=sys.stderr)
            return 1
        if command == "status":
            _print_status(loaded)
            return 0
        kubectl_args = args.args[1:] if args.args[:1] == ["--"] else args.args
        return subprocess.call([loaded["kubectl"], "--kubeconfig", loaded["kubeconfig"], *kubectl_args])
    if command == "demo":
        return _demo()
    raise AssertionError(command)


def _alive(entry: dict[str, Any]) -> bool:
    """True when the recorded pid still runs the recorded program (pids get reused)."""
    try:
        cmdline = pathlib.Path(f"/proc/{entry['pid']}/cmdline").read_bytes()
    except OSError:
        return False
    return entry["match"].encode() in cmdline


def _load() -> dict[str, Any] | None:
    if not STATE_FILE.exists():
        return None
    state: dict[str, Any] = json.loads(STATE_FILE.read_text())
    if not all(_alive(entry) for entry in state["processes"]):
        return None
    return state


def _save(state: dict[str, Any]) -> None:
    STATE_FILE.write_text(json.dumps(state, indent=2))


def _up() -> dict[str, Any]:
    running_state = _load()
    if running_state:
        print("credbridge dev: the control plane is already running", file=sys.stderr)
        return running_state
    _down(quiet=True)
    workdir = STATE_DIR.resolve() / "controlplane"
    plane = controlplane.start(workdir, die_with_parent=False, progress=True)
    assert plane.binaries is not None
    state = {
        "kubeconfig": str(plane.kubeconfig),
        "server": plane.server,
        "kubectl": str(plane.binaries.kubectl),
        "processes": [
            {
                "name": process.name,
                "pid": process.pid,
                "match": process.name,
                "log": str(process.log),
                "argv": process.argv,
            }
            for process in plane.processes
        ],
    }
    _save(state)
    return state


def _start_operator(state: dict[str, Any]) -> None:
    if any(entry["name"] == "operator" and _alive(entry) for entry in state["processes"]):
        print("credbridge dev: the operator is already running", file=sys.stderr)
        return
    kubectl = [state["kubectl"], "--kubeconfig", state["kubeconfig"]]
    subprocess.run([*kubectl, "create", "namespace", OPERATOR_NAMESPACE], capture_output=True, check=False)
    kubeconfig = _operator_identity(state)
    log = STATE_DIR.resolve() / "operator.log"
    # The workload read endpoint's certificate, in a place `credbridge env --ca-file` can name.
    endpoint_dir = STATE_DIR.resolve() / "endpoint"
    ca = tls.make_ca("credbridge-dev-endpoint-ca")
    certfile, keyfile = tls.issue(ca, "127.0.0.1", hosts=["127.0.0.1"]).write(endpoint_dir, "serving")
    (endpoint_dir / "ca.crt").write_bytes(ca.cert_pem)
    print(f"credbridge: starting the operator (log: {log})", file=sys.stderr)
    process = operator.start(
        kubeconfig,
        log,
        args=[
            "--operator-namespace",
            OPERATOR_NAMESPACE,
            "--log-level",
            "info",
            *(argument for rule in DEMO_ENV_POLICY for argument in ("--env-policy", rule)),
            "--endpoint-certfile",
            str(certfile),
            "--endpoint-pkeyfile",
            str(keyfile),
            "--endpoint-cafile",
            str(endpoint_dir / "ca.crt"),
        ],
        env=DEMO_ENV,
        die_with_parent=False,
    )
    state["processes"].append(
        {
            "name": "operator",
            "pid": process.popen.pid,
            "match": "credbridge.cli.main",
            "log": str(log),
            "metrics": f"http://127.0.0.1:{process.metrics_port}/metrics",
        }
    )
    state["endpoint"] = {"url": f"https://127.0.0.1:{process.endpoint_port}", "ca": str(endpoint_dir / "ca.crt")}
    _save(state)


def _operator_identity(state: dict[str, Any]) -> pathlib.Path:
    """Installs the chart's ServiceAccount and ClusterRole and returns a kubeconfig that acts as that
    ServiceAccount, so the dev operator has exactly the rights an installed one has (plus managing its own
    webhook configurations). Your kubeconfig (credbridge-admin) is then someone else to the operator: its
    admission checks — the in-use check, read-only mirrors — apply to you as they would in a cluster."""
    binaries = controlplane.Binaries.locate()
    chart = subprocess.run(
        [
            str(binaries.helm),
            "template",
            "credbridge",
            str(controlplane.REPO_ROOT / "charts" / "credbridge"),
            "--namespace",
            OPERATOR_NAMESPACE,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # The chart's identity and every right it gives it, whichever templates they are in.
    rendered = "\n---\n".join(
        json.dumps(document)
        for document in yaml.safe_load_all(chart)
        if document and document.get("kind") in IDENTITY_KINDS
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "credbridge-dev-webhooks"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "credbridge-dev-webhooks"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    }
    manifests = "\n---\n".join([rendered, json.dumps(DEV_WEBHOOK_RULES), json.dumps(binding)])
    subprocess.run(
        [state["kubectl"], "--kubeconfig", state["kubeconfig"], "apply", "-f", "-"],
        input=manifests,
        capture_output=True,
        text=True,
        check=True,
    )
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    groups = ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}")
    return controlplane.client_kubeconfig(pathlib.Path(state["kubeconfig"]).parent, state["server"], user, groups)


def _restart(name: str) -> int:
    """kill -9 one control plane process and start it again; record its new pid for `dev down`."""
    if not STATE_FILE.exists():
        print("credbridge dev: nothing is running (start it with `credbridge dev up`)", file=sys.stderr)
        return 1
    state: dict[str, Any] = json.loads(STATE_FILE.read_text())
    entry = next((entry for entry in state["processes"] if entry["name"] == name), None)
    if entry is None or "argv" not in entry:
        print(f"credbridge dev: no restartable {name} recorded; run `dev down`, then `dev up`", file=sys.stderr)
        return 1
    process = controlplane.LocalProcess(
        name=name,
        argv=list(entry["argv"]),
        log=pathlib.Path(entry["log"]),
        die_with_parent=False,
        pid=int(entry["pid"]) if _alive(entry) else 0,
    )
    print(f"credbridge dev: killing {name} (pid {process.pid or 'not running'}) and starting it again")
    try:
        process.restart()
    finally:
        if process.pid:
            entry["pid"] = process.pid
            _save(state)
    # The API server answers again once it (and etcd behind it) is back.
    deadline = time.monotonic() + 120
    while _kubectl(state, "get", "--raw=/readyz", check=False).strip() != "ok":
        if time.monotonic() > deadline:
            print(f"credbridge dev: the API server is not ready after restarting {name}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"credbridge dev: {name} runs again as pid {process.pid}")
    return 0


def _down(quiet: bool = False) -> int:
    if not STATE_FILE.exists():
        if not quiet:
            print("credbridge dev: nothing to stop")
        return 0
    state = json.loads(STATE_FILE.read_text())
    for entry in reversed(state["processes"]):
        if not _alive(entry):
            continue
        if not quiet:
            print(f"credbridge dev: stopping {entry['name']} (pid {entry['pid']})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(entry):
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry["pid"], signal.SIGKILL)
    STATE_FILE.unlink()
    return 0


def _print_status(state: dict[str, Any]) -> None:
    for entry in state["processes"]:
        extra = f"  metrics {entry['metrics']}" if "metrics" in entry else ""
        print(f"  {entry['name']:<24} pid {entry['pid']:<8} log {entry['log']}{extra}")
    print(f"\nAPI server: {state['server']}")
    print(f"kubeconfig: {state['kubeconfig']}")
    print(f"  export KUBECONFIG={state['kubeconfig']}")
    print(f"  kubectl is at {state['kubectl']} (or use `credbridge dev kubectl ...`)")
    if "endpoint" in state:
        print(f"\nWorkload read endpoint: {state['endpoint']['url']} (for credbridge env/fetch)")
        print(f"  export CREDBRIDGE_ENDPOINT={state['endpoint']['url']} CREDBRIDGE_CA_FILE={state['endpoint']['ca']}")


def _kubectl(state: dict[str, Any], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [state["kubectl"], "--kubeconfig", state["kubeconfig"], *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _show(state: dict[str, Any], *args: str) -> None:
    print(f"\n$ kubectl {' '.join(args)}")
    print(_kubectl(state, *args, check=False).rstrip())


def _demo() -> int:
    state = _up()
    _show(state, "get", "namespaces")
    if not EXAMPLES_DIR.is_dir() or not any(EXAMPLES_DIR.glob("*.yaml")):
        return 0
    _start_operator(state)
    print(f"\ncredbridge: applying {EXAMPLES_DIR}", file=sys.stderr)
    for manifest in sorted(EXAMPLES_DIR.glob("*.yaml")):
        _kubectl(state, "apply", "--server-side", "-f", str(manifest))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = _kubectl(
            state,
            "get",
            "credentials",
            "-A",
            "-o",
            'jsonpath={range .items[*]}{.status.conditions[0].status}{"\\n"}{end}',
        ).split()
        total = len(_kubectl(state, "get", "credentials", "-A", "-o", "name").split())
        if total and len(ready) == total:
            break
        time.sleep(1)
    _show(state, "get", "credentials", "-A")
    _show(state, "get", "credentialshares", "-A")
    _show(state, "get", "secrets", "-A", "-l", "app.kubernetes.io/managed-by=credbridge")
    types = _kubectl(state, "get", "credentialtypes", "-o", "name").split()
    print(f"\n{len(types)} credential types are installed; the first few:")
    print("\n".join(_kubectl(state, "get", "credentialtypes").splitlines()[:6]))
    token = base64.b64decode(
        _kubectl(state, "get", "secret", "production-openai", "-n", "team-a", "-o", "jsonpath={.data.encryptedData}")
    ).decode()
    print("\nThe operator's environment held CRED_DEMO_OPENAI_API_KEY; Secret team-a/production-openai holds")
    print(f"only ciphertext: encryptedData = {token[:48]}...")
    reason = _kubectl(
        state,
        "get",
        "credential",
        "staging-anthropic",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    )
    print(f"\nWhy staging-anthropic is not Ready:\n  {reason}")
    _show_bindings(state)
    _show_sealing(state)
    print("\nTry: .venv/bin/credbridge dev kubectl describe credential staging-anthropic -n team-a")
    print("     KUBECONFIG=" + state["kubeconfig"] + " .venv/bin/credbridge reveal production-openai -n team-a")
    print("Stop everything with: make demo-down")
    return 0


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _show_bindings(state: dict[str, Any]) -> None:
    """The consumer side: binding Secrets (keys, never values) and a rollout after a change."""

    def rendered() -> bool:
        reasons = _kubectl(
            state, "get", "credentialbindings", "-n", "team-a", "-o", "jsonpath={.items[*].status.conditions[0].reason}"
        ).split()
        return len(reasons) >= 2 and all(reason == "Rendered" for reason in reasons)

    _wait(rendered, 60)
    _show(state, "get", "credentialbindings", "-n", "team-a")
    print("\nApps read plain Secrets with the keys they expect (values not shown):")
    for name in ("chat-api-openai", "orders-db-url"):
        secret = json.loads(_kubectl(state, "get", "secret", name, "-n", "team-a", "-o", "json", check=False) or "{}")
        print(f"  Secret team-a/{name}: keys {', '.join(sorted(secret.get('data') or {})) or '(not written yet)'}")

    print("\nUpdate in one place: changing the database password in Secret team-a/orders-db ...")
    _kubectl(
        state,
        "patch",
        "secret",
        "orders-db",
        "-n",
        "team-a",
        "-p",
        '{"stringData": {"password": "demo-password-changed"}}',
    )

    def annotations() -> str:
        return _kubectl(
            state,
            "get",
            "deployment",
            "orders-api",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.spec.template.metadata.annotations}",
            check=False,
        )

    _wait(lambda: "restartedAt" in annotations(), 60)
    print("... re-renders Secret team-a/orders-db-url and rolls Deployment orders-api out:")
    _show(
        state, "get", "deployment", "orders-api", "-n", "team-a", "-o", "jsonpath={.spec.template.metadata.annotations}"
    )
    _show(state, "get", "credentials", "-n", "team-a")


def _credbridge(state: dict[str, Any], *args: str) -> str:
    """Run `credbridge ARGS` against the demo cluster as a user would; raise SystemExit when it fails."""
    environment = {**os.environ, "KUBECONFIG": state["kubeconfig"]}
    environment.pop("POD_NAMESPACE", None)
    result = subprocess.run(
        [sys.executable, "-m", "credbridge.cli.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise SystemExit(f"credbridge {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def seal_examples(state: dict[str, Any], output: pathlib.Path) -> list[pathlib.Path]:
    """Seal examples/sealing/*.yaml with the demo cluster's public key into `output`; return the sealed files.

    The demo's cluster gets a fresh sealing key every time, so a sealed file cannot be committed
    for it: the demo does what a user does once per repository instead — fetch the certificate,
    seal the plain manifests with it — and applies what came out.
    """
    output.mkdir(parents=True, exist_ok=True)
    certificate = output / "sealing.pem"
    _credbridge(state, "seal", "--fetch-cert", str(certificate), "--operator-namespace", OPERATOR_NAMESPACE)
    sealed = []
    for plain in sorted(SEALING_EXAMPLES_DIR.glob("*.yaml")):
        target = output / plain.name
        _credbridge(state, "seal", "--cert", str(certificate), "-f", str(plain), "-o", str(target))
        sealed.append(target)
    return sealed


def _show_sealing(state: dict[str, Any]) -> None:
    """The whole Credential in Git: seal examples/sealing/ with the cluster's public key, apply, show it Ready."""
    if not SEALING_EXAMPLES_DIR.is_dir():
        return
    print("\nThe whole Credential in Git: sealing examples/sealing/ with the cluster's public key ...")
    print("$ credbridge seal --fetch-cert .credbridge-dev/sealed/sealing.pem")
    print("$ credbridge seal --cert .credbridge-dev/sealed/sealing.pem -f examples/sealing/orders-cache.yaml")
    for path in seal_examples(state, STATE_DIR.resolve() / "sealed"):
        text = path.read_text()
        shown = [
            line if "cbs1." not in line else line[: line.index("cbs1.") + 40] + "..." for line in text.splitlines()
        ]
        print("\n".join(f"  {line}" for line in shown))
        _kubectl(state, "apply", "--server-side", "-f", str(path))
    _wait(
        lambda: _kubectl(
            state, "get", "credential", "orders-cache", "-n", "team-a", "-o",
            "jsonpath={.status.conditions[0].reason}", check=False,
        ) == "Encrypted",
        60,
    )  # fmt: skip
    _show(state, "get", "credential", "orders-cache", "-n", "team-a")
    print("\nOnly the operator opens it, and only where it was sealed for. The same file applied to team-b:")
    sealed_file = STATE_DIR.resolve() / "sealed" / "orders-cache.yaml"
    moved = sealed_file.read_text().replace("namespace: team-a", "namespace: team-b")
    subprocess.run(
        [state["kubectl"], "--kubeconfig", state["kubeconfig"], "apply", "--server-side", "-f", "-"],
        input=moved,
        capture_output=True,
        text=True,
        check=False,
    )

    def refusal() -> str:
        return _kubectl(
            state, "get", "credential", "orders-cache", "-n", "team-b", "-o",
            "jsonpath={.status.conditions[0].reason}: {.status.conditions[0].message}", check=False,
        )  # fmt: skip

    _wait(lambda: refusal().startswith("SealedForElsewhere"), 60)
    print(f"  {refusal()}")
    print("  (the webhook refuses it at apply time for anyone but the operator's identity, which the demo shares)")
