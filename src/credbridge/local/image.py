"""The operator image as a local container: find the image `make image` built and run it with buildah.

The end-to-end tier runs the operator from the image users deploy, not from the checkout. These
machines have no Docker daemon, and `podman run` cannot start containers here (runc and crun are
not allowed to set resource limits), so the container runs with `buildah run --isolation chroot`:
the image's root filesystem in its own mount namespace, sharing the host's network, like a Pod with
`hostNetwork: true`.

chroot isolation applies the image's environment and working directory, but not all of what a
kubelet would: it starts the command as root. A small launcher (`_LAUNCHER`, run by the image's own
python3) does the rest before it execs the image's entrypoint, as a container runtime would: it
remounts the root filesystem read-only (`readOnlyRootFilesystem`), hides the shells (the image must
not need one), sets no_new_privs (`allowPrivilegeEscalation: false`), switches to the image's
numeric user and group, which drops every capability, and sets the container's environment, read
from a mounted file so that no value shows in a process list. Not reproduced: seccomp, cgroup
limits, and PID and network namespaces (the container shares the host's, by design here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import uuid
from collections.abc import Mapping, Sequence

from credbridge.local import controlplane, operator

BUILD_SCRIPT = controlplane.REPO_ROOT / "hack" / "image" / "build.sh"
LAUNCH_DIR = "/run/credbridge-launch"
"""Where the launcher's instructions are mounted in the container (read-only)."""

# Runs inside the container as root with CAP_SYS_ADMIN (given to `buildah run`), and execs the
# entrypoint as the image's user; after setuid() to a non-zero id the process has no capabilities.
_LAUNCHER = """\
import ctypes, json, os, sys
launch = json.load(open(sys.argv[1]))
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
def mount(source, target, flags):
    if libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), target)
for shell in sorted({os.path.realpath(path) for path in launch["hide"] if os.path.exists(path)}):
    mount("/dev/null", shell, MS_BIND)
if launch["read_only_root"]:
    mount("none", "/", MS_REMOUNT | MS_BIND | MS_RDONLY)
PR_SET_NO_NEW_PRIVS = 38
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
os.setgroups([])
os.setgid(launch["gid"])
os.setuid(launch["uid"])
os.chdir(launch["workdir"])
os.execvpe(launch["argv"][0], launch["argv"], launch["env"])
"""

SHELLS = ("/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/dash")


class ImageError(RuntimeError):
    """The image is not built, cannot be inspected or cannot be started; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What the image says about how to run it (its OCI config)."""

    reference: str
    user: str
    """`USER` as written in the image, e.g. `65532:65532`."""
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str

    @property
    def uid(self) -> int:
        """The numeric user id; ImageError when `USER` is a name (a kubelet could not check runAsNonRoot)."""
        return _numeric(self.user.split(":")[0], self.reference, "user")

    @property
    def gid(self) -> int:
        """The numeric group id (the user id when `USER` names no group)."""
        parts = self.user.split(":")
        return _numeric(parts[1] if len(parts) > 1 else parts[0], self.reference, "group")


def _numeric(value: str, reference: str, what: str) -> int:
    if not value.isdigit():
        raise ImageError(f"image {reference} sets USER {value!r}: the {what} must be numeric")
    return int(value)


def locate() -> str:
    """The reference of the image built from the current sources (`hack/image/build.sh --print-ref`)."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--print-ref"], capture_output=True, text=True, check=False, cwd=controlplane.REPO_ROOT
    )
    if result.returncode != 0:
        raise ImageError(result.stderr.strip() or f"{BUILD_SCRIPT} --print-ref failed: run `make image`")
    return result.stdout.strip()


def inspect(reference: str) -> ImageConfig:
    """The image's configuration, as `buildah inspect` reports it."""
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", reference], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"buildah cannot inspect {reference}: {result.stderr.strip()}")
    config = json.loads(result.stdout)["OCIv1"]["config"]
    return ImageConfig(
        reference=reference,
        user=str(config.get("User") or "0"),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        env=dict(item.split("=", 1) for item in config.get("Env") or ()),
        workdir=str(config.get("WorkingDir") or "/"),
    )


@dataclasses.dataclass
class ContainerProcess(operator.OperatorProcess):
    """The operator running in a container: `popen` is `buildah run`; `program_pid()` finds the operator."""

    container: str = ""
    """The buildah working container, removed by `stop()`."""

    def program_pid(self) -> int | None:
        """The host pid of the program the entrypoint started, once it runs (the deepest descendant)."""
        pid, children = self.popen.pid, _children()
        while children.get(pid):
            pid = max(children[pid])
        return pid if pid != self.popen.pid and not _comm(pid).startswith("buildah") else None

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM to the program, as a kubelet sends it, then SIGKILL; remove the container.

        `buildah run` itself answers SIGTERM by killing its child outright, so the signal goes to
        the program, which shuts down and exits; `buildah run` then exits with its code.
        """
        try:
            if self.popen.poll() is None:
                pid = self.program_pid()
                if pid is not None:
                    os.kill(pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(grace)
            return int(self.popen.returncode)
        finally:
            subprocess.run(["buildah", "rm", self.container], capture_output=True, check=False)


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    """Who a process runs as and what it may do, read from /proc/<pid>."""

    uids: tuple[int, ...]
    """Real, effective, saved and filesystem user ids."""
    gids: tuple[int, ...]
    """Real, effective, saved and filesystem group ids."""
    groups: tuple[int, ...]
    """Supplementary groups."""
    effective_capabilities: int
    """CapEff as a bit mask; 0 when the process holds no capability."""
    no_new_privs: bool
    """Whether the process (and what it execs) can never gain privileges (setuid, file capabilities)."""
    root_options: frozenset[str]
    """Mount options of the root filesystem as the process sees it (`ro` when read-only)."""


def identity(pid: int) -> ProcessIdentity:
    """The identity of process `pid` (its credentials, capabilities and root mount)."""
    fields = dict(
        line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    # The last mount on "/" is the one on top, the one the process sees.
    root = [
        line.split()
        for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    ][-1]
    return ProcessIdentity(
        uids=tuple(int(value) for value in fields["Uid"].split()),
        gids=tuple(int(value) for value in fields["Gid"].split()),
        groups=tuple(int(value) for value in fields["Groups"].split()),
        effective_capabilities=int(fields["CapEff"], 16),
        no_new_privs=fields["NoNewPrivs"].strip() == "1",
        root_options=frozenset(root[5].split(",")),
    )


def _resolve_in_container(container: str, paths: Sequence[str]) -> dict[str, str]:
    """Each of `paths` in the container with its symlinks resolved (/var/run/x is /run/x on Debian).

    buildah 1.28's chroot isolation silently skips a volume whose container path crosses a symlink,
    so volumes are mounted at the resolved path; the container sees them under both names.
    """
    mounted = subprocess.run(["buildah", "mount", container], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise ImageError(f"buildah mount {container} failed: {mounted.stderr.strip()}")
    rootfs = pathlib.Path(mounted.stdout.strip())
    try:
        return {path: resolve_in_rootfs(rootfs, path) for path in paths}
    finally:
        subprocess.run(["buildah", "umount", container], capture_output=True, check=False)


def resolve_in_rootfs(rootfs: pathlib.Path, path: str) -> str:
    """`path` with the symlinks of the tree at `rootfs` resolved, as if `rootfs` were `/`."""
    pending = list(pathlib.PurePosixPath(path).parts[1:])
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = resolved[:-1]
        elif rootfs.joinpath(*resolved, part).is_symlink():
            links += 1
            if links > 40:
                raise ImageError(f"too many symbolic links in {path} in the image")
            target = pathlib.PurePosixPath(os.readlink(rootfs.joinpath(*resolved, part)))
            if target.is_absolute():
                resolved, pending = [], [*target.parts[1:], *pending]
            else:
                pending = [*target.parts, *pending]
        elif part != ".":
            resolved.append(part)
    return "/" + "/".join(resolved)


def _children() -> dict[int, list[int]]:
    """Every process's children, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The fields after the command name (which may hold spaces) start with state, then ppid.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _comm(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def start(
    image: ImageConfig,
    args: Sequence[str],
    log: pathlib.Path,
    *,
    env: Mapping[str, str],
    volumes: Mapping[str, pathlib.Path],
    empty_dirs: Mapping[str, pathlib.Path],
    health_port: int,
    metrics_port: int = 0,
    webhook_port: int = 0,
    read_only_root: bool = True,
    ready_timeout: float = 90.0,
) -> ContainerProcess:
    """Run the image's entrypoint with `args` (a Pod's `args`), `env`, `volumes` and `empty_dirs`.

    `volumes` (read-only, like a Pod's Secret and projected volumes) and `empty_dirs` (writable,
    like its emptyDir volumes) map container paths to host directories. The container shares the
    host's network, so `health_port` and the other ports are the host's. Waits until the health
    endpoint answers.
    """
    container = f"credbridge-e2e-{uuid.uuid4().hex[:10]}"
    created = subprocess.run(
        ["buildah", "from", "--pull-never", "--name", container, image.reference],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        raise ImageError(f"buildah from {image.reference} failed: {created.stderr.strip()}")
    launch_dir = log.parent / f"{container}-launch"
    launch_dir.mkdir(parents=True)
    launch = {
        "argv": [*image.entrypoint, *args],
        "env": {**image.env, **env},
        "uid": image.uid,
        "gid": image.gid,
        "workdir": image.workdir,
        "read_only_root": read_only_root,
        "hide": SHELLS,
    }
    launch_file = launch_dir / "launch.json"
    launch_file.touch(mode=0o600)
    launch_file.write_text(json.dumps(launch))
    targets = _resolve_in_container(container, [*volumes, *empty_dirs])
    mounts = [
        f"{launch_dir}:{LAUNCH_DIR}:ro",
        *(f"{host}:{targets[path]}:ro" for path, host in volumes.items()),
        *(f"{host}:{targets[path]}" for path, host in empty_dirs.items()),
    ]
    argv = [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--user",
        "0:0",
        "--cap-add",
        "CAP_SYS_ADMIN",
        *(arg for mount in mounts for arg in ("--volume", mount)),
        container,
        "--",
        "python3",
        "-c",
        _LAUNCHER,
        f"{LAUNCH_DIR}/launch.json",
    ]
    popen = controlplane.start_logged(argv, log)
    process = ContainerProcess(popen, log, health_port, metrics_port, webhook_port, container=container)
    try:
        operator.wait_until_ready(process, ready_timeout)
    except RuntimeError:
        process.stop()
        raise
    return process
