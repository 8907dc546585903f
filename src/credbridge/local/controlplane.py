"""A real Kubernetes control plane as local processes, for tests, benchmarks and the demo.

credbridge's behaviour is about what a real API server does: admission, RBAC, garbage collection,
namespace deletion, audit. So instead of a fake we run etcd, kube-apiserver and
kube-controller-manager on 127.0.0.1, the way controller-runtime's envtest does, plus
kube-controller-manager so that garbage collection and namespace finalization work.

`start()` returns a `ControlPlane` with an admin kubeconfig and the audit log path; `stop()` ends
every process it started. With `KUBECONFIG` set and `CREDBRIDGE_USE_EXISTING_CLUSTER=1`,
`start()` uses that cluster instead and starts nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from credbridge import tls

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"
CRDS_DIR = REPO_ROOT / "crds"

ADMIN_USER = "credbridge-admin"

_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["get", "list", "watch"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
  - level: Metadata
"""


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, found or started; the message says what to do."""


def require_checkout() -> pathlib.Path:
    """The source checkout this package runs from; ControlPlaneError when it is an installed wheel.

    The local control plane is built by `hack/controlplane/build.sh` and serves the CRDs in
    `crds/`; neither ships in the wheel, so `credbridge dev` works only from a checkout.
    """
    missing = [str(path) for path in (BUILD_SCRIPT, CRDS_DIR) if not path.exists()]
    if missing:
        raise ControlPlaneError(
            "the local control plane needs a credbridge source checkout (not found: "
            + ", ".join(missing)
            + "): clone the repository and run `make demo` or `.venv/bin/credbridge dev up` there"
        )
    return REPO_ROOT


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Paths of the programs the control plane runs, and helm for the end-to-end tier."""

    etcd: pathlib.Path
    kube_apiserver: pathlib.Path
    kube_controller_manager: pathlib.Path
    kubectl: pathlib.Path
    helm: pathlib.Path

    @classmethod
    def locate(cls) -> Binaries:
        """Find the binaries built by hack/controlplane/build.sh, or explain how to build them."""
        require_checkout()
        output = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-dirs"], check=True, capture_output=True, text=True
        ).stdout.split()
        kube_dir, etcd_dir, helm_dir = (pathlib.Path(line) for line in output)
        found = cls(
            etcd=etcd_dir / "etcd",
            kube_apiserver=kube_dir / "kube-apiserver",
            kube_controller_manager=kube_dir / "kube-controller-manager",
            kubectl=kube_dir / "kubectl",
            helm=helm_dir / "helm",
        )
        required = (found.etcd, found.kube_apiserver, found.kube_controller_manager, found.kubectl)
        missing = [str(path) for path in required if not path.exists()]
        if missing:
            raise ControlPlaneError(
                f"control plane binaries are missing ({', '.join(missing)}): "
                f"run `make controlplane` (or {BUILD_SCRIPT}) to build them"
            )
        return found


@dataclasses.dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: pathlib.Path


@dataclasses.dataclass
class ControlPlane:
    """A running control plane (or an existing cluster) and how to reach it."""

    workdir: pathlib.Path
    kubeconfig: pathlib.Path
    server: str
    audit_log: pathlib.Path | None
    binaries: Binaries | None
    ca_file: pathlib.Path | None = None
    """CA that signs the API server certificate and client certificates (local mode only)."""
    ca_key_file: pathlib.Path | None = None
    existing: bool = False
    processes: list[_Process] = dataclasses.field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """Process ids of what this control plane started (empty for an existing cluster)."""
        return [process.popen.pid for process in self.processes]

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run kubectl against this control plane and return its standard output."""
        kubectl = str(self.binaries.kubectl) if self.binaries else (shutil.which("kubectl") or "kubectl")
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, ["kubectl", *args], result.stdout, result.stderr)
        return result.stdout

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> pathlib.Path:
        """A kubeconfig that authenticates as `user` (in `groups`) with a client certificate.

        Lets the operator run under its own identity, so the audit log and the webhook can tell its
        requests from a test's admin requests. Local control plane only.
        """
        if self.ca_file is None or self.ca_key_file is None:
            raise ControlPlaneError("user kubeconfigs need the local control plane's CA (not an existing cluster)")
        ca = tls.Issued(self.ca_file.read_bytes(), self.ca_key_file.read_bytes())
        stem = user.replace(":", "_")
        cert, key = tls.issue(ca, user, organizations=list(groups), client=True).write(self.workdir / "pki", stem)
        path = self.workdir / f"{stem}.kubeconfig"
        _write_kubeconfig(path, self.server, self.ca_file, cert, key, user=user)
        return path

    def install_crds(self) -> None:
        """Apply crds/ to the cluster and wait until the API server serves them."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS_DIR))

    def stop(self) -> None:
        """Stop every process this control plane started, newest first, and wait for them."""
        for process in reversed(self.processes):
            _terminate(process.popen)
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_existing_cluster() -> bool:
    """True when the caller asked for the cluster in KUBECONFIG instead of a local one."""
    return os.environ.get("CREDBRIDGE_USE_EXISTING_CLUSTER") == "1" and bool(os.environ.get("KUBECONFIG"))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    workdir: pathlib.Path,
    *,
    timeout: float = 180.0,
    die_with_parent: bool = True,
    progress: bool = False,
    install_crds: bool = True,
) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager under `workdir`, or use an existing cluster.

    `install_crds` applies crds/ before kube-controller-manager starts, so the garbage collector
    knows credbridge's kinds from its first discovery instead of after its 30 s resync.
    `die_with_parent` makes the kernel stop the processes if this Python process dies without
    cleaning up (a killed pytest); `credbridge dev up` turns it off to keep them running.
    """
    if use_existing_cluster():
        kubeconfig = pathlib.Path(os.environ["KUBECONFIG"])
        return ControlPlane(
            workdir=workdir, kubeconfig=kubeconfig, server="", audit_log=None, binaries=None, existing=True
        )
    binaries = Binaries.locate()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    ca = tls.make_ca("credbridge-local-ca")
    ca_file, ca_key_file = ca.write(pki, "ca")
    serving_cert, serving_key = tls.issue(ca, "kube-apiserver", hosts=["127.0.0.1", "localhost"]).write(
        pki, "apiserver"
    )
    admin_cert, admin_key = tls.issue(ca, ADMIN_USER, organizations=["system:masters"], client=True).write(pki, "admin")
    # kube-controller-manager gets its own identity, and its controllers their service accounts, as in
    # a real cluster: webhooks and audit then see the garbage collector as who it is.
    kcm_cert, kcm_key = tls.issue(ca, "system:kube-controller-manager", client=True).write(
        pki, "kube-controller-manager"
    )
    sa_private, sa_public = tls.make_rsa_keypair()
    (pki / "sa.key").write_bytes(sa_private)
    (pki / "sa.pub").write_bytes(sa_public)
    audit_policy = workdir / "audit-policy.yaml"
    audit_policy.write_text(_AUDIT_POLICY)
    audit_log = workdir / "audit.log"

    plane = ControlPlane(
        workdir=workdir,
        kubeconfig=workdir / "kubeconfig",
        server="",
        audit_log=audit_log,
        binaries=binaries,
        ca_file=ca_file,
        ca_key_file=ca_key_file,
    )
    try:
        etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        _say(progress, f"starting etcd on {etcd_url}")
        plane.processes.append(
            _spawn(
                "etcd",
                workdir,
                [
                    str(binaries.etcd),
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                die_with_parent,
            )
        )
        _wait(plane.processes[-1], timeout, lambda: _http_ok(f"{etcd_url}/health"))

        plane.server = f"https://127.0.0.1:{api_port}"
        _say(progress, f"starting kube-apiserver on {plane.server}")
        plane.processes.append(
            _spawn(
                "kube-apiserver",
                workdir,
                [
                    str(binaries.kube_apiserver),
                    f"--etcd-servers={etcd_url}",
                    f"--cert-dir={pki}",
                    f"--tls-cert-file={serving_cert}",
                    f"--tls-private-key-file={serving_key}",
                    f"--secure-port={api_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    "--endpoint-reconciler-type=none",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--client-ca-file={ca_file}",
                    "--disable-admission-plugins=ServiceAccount",
                    "--allow-privileged=true",
                    f"--audit-policy-file={audit_policy}",
                    f"--audit-log-path={audit_log}",
                    "--audit-log-mode=blocking",
                    "--v=1",
                ],
                die_with_parent,
            )
        )
        _write_kubeconfig(plane.kubeconfig, plane.server, ca_file, admin_cert, admin_key)
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(admin_cert), str(admin_key))
        _wait(plane.processes[-1], timeout, lambda: _http_ok(f"{plane.server}/readyz", context))

        if install_crds:
            _say(progress, "installing the credbridge CRDs")
            plane.install_crds()
        kcm_kubeconfig = workdir / "kube-controller-manager.kubeconfig"
        _write_kubeconfig(
            kcm_kubeconfig, plane.server, ca_file, kcm_cert, kcm_key, user="system:kube-controller-manager"
        )
        _say(progress, "starting kube-controller-manager (garbage collection, namespace deletion)")
        plane.processes.append(
            _spawn(
                "kube-controller-manager",
                workdir,
                [
                    str(binaries.kube_controller_manager),
                    f"--kubeconfig={kcm_kubeconfig}",
                    "--use-service-account-credentials=true",
                    "--leader-elect=false",
                    # clusterrole-aggregation: the chart extends admin/edit/view by aggregation labels.
                    "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={ca_file}",
                    "--secure-port=0",
                    "--concurrent-gc-syncs=5",
                    "--concurrent-namespace-syncs=5",
                    "--v=1",
                ],
                die_with_parent,
            )
        )
        _wait(plane.processes[-1], timeout, lambda: _default_service_account_exists(plane))
    except BaseException:
        plane.stop()
        raise
    _say(progress, f"control plane ready; kubeconfig: {plane.kubeconfig}")
    return plane


@contextlib.contextmanager
def running(workdir: pathlib.Path, **kwargs: typing.Any) -> Iterator[ControlPlane]:
    """Context manager around `start()` that stops everything on exit, Ctrl-C included."""
    plane = start(workdir, **kwargs)
    try:
        yield plane
    finally:
        plane.stop()


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"credbridge: {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when its parent dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start_logged(
    argv: Sequence[str],
    log: pathlib.Path,
    *,
    env: typing.Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own, its stdout and stderr appended to `log`.

    With `die_with_parent`, Linux sends it SIGTERM when this process dies, so a killed test run
    leaves no server behind.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
        )


def _spawn(name: str, workdir: pathlib.Path, argv: Sequence[str], die_with_parent: bool) -> _Process:
    log = workdir / f"{name}.log"
    return _Process(name, start_logged(argv, log, die_with_parent=die_with_parent), log)


def _terminate(popen: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(grace)


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(process: _Process, timeout: float, ready: object) -> None:
    """Poll `ready()` until it is true; fail with the process log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    assert callable(ready)
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise ControlPlaneError(
                f"{process.name} exited with code {process.popen.returncode} while starting; "
                f"last lines of {process.log}:\n{_tail(process.log)}"
            )
        if ready():
            return
        time.sleep(0.25)
    raise ControlPlaneError(
        f"{process.name} was not ready after {timeout:.0f}s; last lines of {process.log}:\n{_tail(process.log)}"
    )


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _default_service_account_exists(plane: ControlPlane) -> bool:
    """The service-account controller made `default/default`: kube-controller-manager is working."""
    result = subprocess.run(
        [
            str(plane.binaries.kubectl) if plane.binaries else "kubectl",
            "--kubeconfig",
            str(plane.kubeconfig),
            "get",
            "serviceaccount",
            "default",
            "-n",
            "default",
            "-o",
            "name",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0


def _write_kubeconfig(
    path: pathlib.Path,
    server: str,
    ca_file: pathlib.Path,
    cert: pathlib.Path,
    key: pathlib.Path,
    user: str = ADMIN_USER,
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "credbridge-local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "credbridge-local", "context": {"cluster": "credbridge-local", "user": user}}],
        "current-context": "credbridge-local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
