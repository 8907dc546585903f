"""How the e2e tier reads the operator image: its user, and container paths through the image's symlinks.

The image test mounts a Pod's volumes into the container; buildah skips a mount whose path crosses
a symlink (/var/run → /run on Debian), so paths are resolved inside the image first. And an image
whose USER is not numeric could not pass the kubelet's runAsNonRoot check.
"""

from __future__ import annotations

import pathlib

import pytest

from credbridge.local import image


@pytest.fixture
def rootfs(tmp_path: pathlib.Path) -> pathlib.Path:
    """A root filesystem with the symlinks of a Debian image."""
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "loop").symlink_to("/etc/loop")
    return tmp_path


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("/var/run/secrets/kubernetes.io/serviceaccount", "/run/secrets/kubernetes.io/serviceaccount"),
        ("/bin/sh", "/usr/bin/sh"),
        ("/etc/credbridge/webhook", "/etc/credbridge/webhook"),
        ("/var/run/../tmp", "/tmp"),
        ("/tmp/./x", "/tmp/x"),
    ],
    ids=["absolute-link", "relative-link", "no-link", "dot-dot-after-link", "dot"],
)
def test_paths_resolve_inside_the_image_not_on_the_host(rootfs: pathlib.Path, path: str, resolved: str) -> None:
    assert image.resolve_in_rootfs(rootfs, path) == resolved


def test_a_symlink_loop_is_an_error(rootfs: pathlib.Path) -> None:
    with pytest.raises(image.ImageError, match="too many symbolic links"):
        image.resolve_in_rootfs(rootfs, "/etc/loop/x")


def config(user: str) -> image.ImageConfig:
    return image.ImageConfig("localhost/credbridge:test", user, ("credbridge",), ("run",), {}, "/")


def test_numeric_user_and_group() -> None:
    assert (config("65532:65533").uid, config("65532:65533").gid) == (65532, 65533)
    assert (config("65532").uid, config("65532").gid) == (65532, 65532)


def test_a_user_name_is_refused_with_the_reason() -> None:
    with pytest.raises(image.ImageError, match="must be numeric"):
        _ = config("credbridge").uid
