"""A real Kubernetes control plane as local processes, for tests, benchmarks and the demo.

credbridge's behaviour is about what a real API server does: admission, RBAC, garbage collection,
namespace deletion, audit. So instead of a fake we run etcd, kube-apiserver and
kube-controller-manager on 127.0.0.1, the way controller-runtime's envtest does, plus
kube-controller-manager so that garbage collection and namespace finalization work.

`start()` returns a `ControlPlane` with an admin kubeconfig and the audit log path; `stop()` ends
every process it started. Each program is one small type (`Etcd`, `APIServer`,
`ControllerManager`) that knows its arguments and when it is ready; any of them can be killed
with SIGKILL and started again with the same arguments, ports and data directory (`restart()`),
which is how the fault tests crash etcd or the API server. With `KUBECONFIG` set and
`CREDBRIDGE_USE_EXISTING_CLUSTER=1`, `start()` uses that cluster instead and starts nothing.
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


@dataclasses.dataclass(frozen=True)
class Pki:
    """The control plane's certificates and keys, made once in `<workdir>/pki` and reused on restarts."""

    ca: pathlib.Path
    ca_key: pathlib.Path
    serving_cert: pathlib.Path
    """kube-apiserver's serving certificate, for 127.0.0.1 and localhost."""
    serving_key: pathlib.Path
    admin_cert: pathlib.Path
    """Client certificate of ADMIN_USER, group system:masters."""
    admin_key: pathlib.Path
    controller_manager_cert: pathlib.Path
    """Client certificate of system:kube-controller-manager."""
    controller_manager_key: pathlib.Path
    service_account_key: pathlib.Path
    """Private key that signs service account tokens."""
    service_account_public_key: pathlib.Path

    @classmethod
    def make(cls, directory: pathlib.Path) -> Pki:
        ca = tls.make_ca("credbridge-local-ca")
        ca_file, ca_key = ca.write(directory, "ca")
        serving = tls.issue(ca, "kube-apiserver", hosts=["127.0.0.1", "localhost"]).write(directory, "apiserver")
        admin = tls.issue(ca, ADMIN_USER, organizations=["system:masters"], client=True).write(directory, "admin")
        # kube-controller-manager gets its own identity, and its controllers their service accounts, as
        # in a real cluster: webhooks and audit then see the garbage collector as who it is.
        manager = tls.issue(ca, "system:kube-controller-manager", client=True).write(
            directory, "kube-controller-manager"
        )
        sa_private, sa_public = tls.make_rsa_keypair()
        (directory / "sa.key").write_bytes(sa_private)
        (directory / "sa.pub").write_bytes(sa_public)
        return cls(
            ca_file,
            ca_key,
            *serving,
            *admin,
            *manager,
            service_account_key=directory / "sa.key",
            service_account_public_key=directory / "sa.pub",
        )


@dataclasses.dataclass(kw_only=True)
class LocalProcess:
    """One program run as a local process: its command line, its log, and the process running it.

    The command line is fixed when the process is configured, so a restart runs the same program
    with the same ports and data directory. A process adopted from a pid (one `credbridge dev`
    started in an earlier command) can be killed and restarted too.
    """

    name: str
    """Short name (etcd, kube-apiserver, ...); also the log file's name."""
    argv: list[str]
    """The command line, program first."""
    log: pathlib.Path
    """Where stdout and stderr go, appended across restarts."""
    die_with_parent: bool = True
    """Ask the kernel to stop the process when the process that started it dies."""
    pid: int = 0
    """Process id of the running (or last) process; 0 before the first start."""
    popen: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False, compare=False)
    """The process handle, when this Python process started it."""

    def ready(self) -> bool:
        """True once the program serves; subclasses ask the program itself."""
        return self.alive()

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as dead)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid)

    def start(self, timeout: float = 180.0) -> None:
        """Spawn the command line and wait until `ready()`; ControlPlaneError with the log tail otherwise."""
        self.popen = start_logged(self.argv, self.log, die_with_parent=self.die_with_parent)
        self.pid = self.popen.pid
        _wait(self, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; waits until the process is gone."""
        if not self.alive():
            return
        self._signal(signal.SIGTERM)
        if not self._wait_gone(grace):
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would, and wait until the process is gone."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self._wait_gone(30.0)

    def restart(self, timeout: float = 180.0) -> None:
        """Kill the process with SIGKILL and start it again with the same command line; wait until ready."""
        self.kill()
        self.start(timeout)

    def _signal(self, number: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, number)

    def _wait_gone(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@dataclasses.dataclass(kw_only=True)
class Etcd(LocalProcess):
    """etcd on 127.0.0.1, its data in `<workdir>/etcd`."""

    url: str
    """Client URL, http://127.0.0.1:<port>."""

    @classmethod
    def configure(cls, binary: pathlib.Path, workdir: pathlib.Path, die_with_parent: bool) -> Etcd:
        """Pick free ports and build the command line."""
        client_port, peer_port = free_port(), free_port()
        url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        argv = [
            str(binary),
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        return cls(name="etcd", argv=argv, log=workdir / "etcd.log", die_with_parent=die_with_parent, url=url)

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/health")


@dataclasses.dataclass(kw_only=True)
class APIServer(LocalProcess):
    """kube-apiserver on 127.0.0.1 with RBAC, client-certificate authentication and an audit log."""

    server: str
    """https://127.0.0.1:<port>."""
    ca_file: pathlib.Path
    client_cert: pathlib.Path
    """A client certificate that may read /readyz (the admin's)."""
    client_key: pathlib.Path

    @classmethod
    def configure(
        cls,
        binary: pathlib.Path,
        workdir: pathlib.Path,
        die_with_parent: bool,
        *,
        pki: Pki,
        etcd_url: str,
        audit_policy: pathlib.Path,
        audit_log: pathlib.Path,
    ) -> APIServer:
        """Pick a free port and build the command line."""
        server = f"https://127.0.0.1:{free_port()}"
        argv = [
            str(binary),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={pki.ca.parent}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--secure-port={server.rsplit(':', 1)[1]}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--client-ca-file={pki.ca}",
            "--allow-privileged=true",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-mode=blocking",
            "--v=1",
        ]
        return cls(
            name="kube-apiserver",
            argv=argv,
            log=workdir / "kube-apiserver.log",
            die_with_parent=die_with_parent,
            server=server,
            ca_file=pki.ca,
            client_cert=pki.admin_cert,
            client_key=pki.admin_key,
        )

    def ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return _http_ok(f"{self.server}/readyz", context)


@dataclasses.dataclass(kw_only=True)
class ControllerManager(LocalProcess):
    """kube-controller-manager with the controllers credbridge relies on: garbage collection, namespaces,
    service accounts."""

    kubectl: pathlib.Path
    admin_kubeconfig: pathlib.Path

    @classmethod
    def configure(
        cls,
        binary: pathlib.Path,
        workdir: pathlib.Path,
        die_with_parent: bool,
        *,
        pki: Pki,
        kubeconfig: pathlib.Path,
        kubectl: pathlib.Path,
        admin_kubeconfig: pathlib.Path,
    ) -> ControllerManager:
        """Build the command line; `kubeconfig` is its own identity, system:kube-controller-manager."""
        argv = [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            # clusterrole-aggregation: the chart extends admin/edit/view by aggregation labels.
            "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca}",
            "--secure-port=0",
            "--concurrent-gc-syncs=5",
            "--concurrent-namespace-syncs=5",
            "--v=1",
        ]
        return cls(
            name="kube-controller-manager",
            argv=argv,
            log=workdir / "kube-controller-manager.log",
            die_with_parent=die_with_parent,
            kubectl=kubectl,
            admin_kubeconfig=admin_kubeconfig,
        )

    def ready(self) -> bool:
        """The service-account controller made `default/default`: it is working."""
        result = subprocess.run(
            [
                str(self.kubectl),
                *("--kubeconfig", str(self.admin_kubeconfig)),
                *("get", "serviceaccount", "default", "-n", "default", "-o", "name"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0


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
    processes: list[LocalProcess] = dataclasses.field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """Process ids of what this control plane runs now (empty for an existing cluster)."""
        return [process.pid for process in self.processes]

    def process(self, name: str) -> LocalProcess:
        """The process called `name` (etcd, kube-apiserver, kube-controller-manager)."""
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"this control plane runs no {name!r} (it runs {', '.join(p.name for p in self.processes)})")

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
        return client_kubeconfig(self.workdir, self.server, user, groups)

    def install_crds(self) -> None:
        """Apply crds/ to the cluster and wait until the API server serves them."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS_DIR))

    def stop(self) -> None:
        """Stop every process this control plane started, newest first, and wait for them."""
        for process in reversed(self.processes):
            process.stop()
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
    pki = Pki.make(workdir / "pki")
    audit_policy = workdir / "audit-policy.yaml"
    audit_policy.write_text(_AUDIT_POLICY)
    audit_log = workdir / "audit.log"

    plane = ControlPlane(
        workdir=workdir,
        kubeconfig=workdir / "kubeconfig",
        server="",
        audit_log=audit_log,
        binaries=binaries,
        ca_file=pki.ca,
        ca_key_file=pki.ca_key,
    )
    try:
        etcd = Etcd.configure(binaries.etcd, workdir, die_with_parent)
        _say(progress, f"starting etcd on {etcd.url}")
        plane.processes.append(etcd)
        etcd.start(timeout)

        apiserver = APIServer.configure(
            binaries.kube_apiserver,
            workdir,
            die_with_parent,
            pki=pki,
            etcd_url=etcd.url,
            audit_policy=audit_policy,
            audit_log=audit_log,
        )
        plane.server = apiserver.server
        _write_kubeconfig(plane.kubeconfig, plane.server, pki.ca, pki.admin_cert, pki.admin_key)
        _say(progress, f"starting kube-apiserver on {plane.server}")
        plane.processes.append(apiserver)
        apiserver.start(timeout)

        if install_crds:
            _say(progress, "installing the credbridge CRDs")
            plane.install_crds()
        kcm_kubeconfig = workdir / "kube-controller-manager.kubeconfig"
        _write_kubeconfig(
            kcm_kubeconfig,
            plane.server,
            pki.ca,
            pki.controller_manager_cert,
            pki.controller_manager_key,
            user="system:kube-controller-manager",
        )
        _say(progress, "starting kube-controller-manager (garbage collection, namespace deletion)")
        manager = ControllerManager.configure(
            binaries.kube_controller_manager,
            workdir,
            die_with_parent,
            pki=pki,
            kubeconfig=kcm_kubeconfig,
            kubectl=binaries.kubectl,
            admin_kubeconfig=plane.kubeconfig,
        )
        plane.processes.append(manager)
        manager.start(timeout)
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


def _tail(path: pathlib.Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(process: LocalProcess, timeout: float) -> None:
    """Poll `process.ready()` until it is true; fail with the process log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            code = process.popen.returncode if process.popen is not None else "?"
            raise ControlPlaneError(
                f"{process.name} exited with code {code} while starting; "
                f"last lines of {process.log}:\n{_tail(process.log)}"
            )
        if process.ready():
            return
        time.sleep(0.25)
    raise ControlPlaneError(
        f"{process.name} was not ready after {timeout:.0f}s; last lines of {process.log}:\n{_tail(process.log)}"
    )


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as dead."""
    if pid <= 0:
        return False
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def client_kubeconfig(workdir: pathlib.Path, server: str, user: str, groups: Sequence[str] = ()) -> pathlib.Path:
    """A kubeconfig for the control plane in `workdir` that authenticates as `user` (in `groups`) with a
    client certificate signed by its CA; written next to the admin kubeconfig."""
    pki = workdir / "pki"
    ca = tls.Issued((pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes())
    stem = user.replace(":", "_")
    cert, key = tls.issue(ca, user, organizations=list(groups), client=True).write(pki, stem)
    path = workdir / f"{stem}.kubeconfig"
    _write_kubeconfig(path, server, pki / "ca.crt", cert, key, user=user)
    return path


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
