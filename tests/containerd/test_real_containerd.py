"""Debian's containerd 1.6 with our snapshotter as a proxy plugin: import, run, remove."""

from __future__ import annotations

import os
import time

import pytest

from . import ctrd

pytestmark = pytest.mark.integration
IMAGE = "docker.io/library/gdtest:latest"


@pytest.fixture
def image_tar(tmp_path) -> str:
    ctrd.ensure_packages()
    path = str(tmp_path / "image.tar")
    ctrd.docker_save_tar(path, [ctrd.busybox_layer(), ctrd.message_layer("hello from the second layer\n")],
                         "gdtest:latest")
    return path


def _eventually(cond, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _snapshot_dirs(c: ctrd.Containerd) -> list[str]:
    return sorted(n for n in os.listdir(os.path.join(c.snap_root, "snapshots")) if n != ".lock")


@pytest.mark.parametrize("driver", [None, "vfs"], ids=["overlay", "vfs"])
def test_import_run_remove(image_tar, driver):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with ctrd.Containerd(driver=driver) as c:
        plugins = c.ctr("plugins", "ls").stdout
        assert any(ctrd.PLUGIN in line and "io.containerd.snapshotter" in line for line in plugins.splitlines())
        c.ctr("images", "import", "--snapshotter", ctrd.PLUGIN, image_tar)
        assert IMAGE in c.ctr("images", "ls", "-q").stdout
        snaps = c.ctr("snapshots", "--snapshotter", ctrd.PLUGIN, "ls").stdout
        assert snaps.count("Committed") == 2, snaps
        assert len(_snapshot_dirs(c)) == 2

        out = c.ctr(*c.run_args(ctrd.PLUGIN, IMAGE, "gdtest-run", "/bin/sh", "-c",
                                "cat /etc/message; echo written > /tmp/x; cat /tmp/x; ls /bin | wc -l")).stdout
        assert out.splitlines()[:2] == ["hello from the second layer", "written"], out
        # --rm removed the container's snapshot (containerd's garbage collector does, a moment later): only the
        # image's two layers remain, and nothing is mounted.
        assert _eventually(lambda: len(_snapshot_dirs(c)) == 2), _snapshot_dirs(c)
        assert ctrd.mounts_under(c.tmp) == []

        c.ctr("images", "rm", "--sync", IMAGE)
        assert c.ctr("snapshots", "--snapshotter", ctrd.PLUGIN, "ls").stdout.count("\n") <= 1
        assert _snapshot_dirs(c) == []
        assert os.listdir(os.path.join(c.snap_root, "l")) == []
        assert ctrd.mounts_under(c.tmp) == []
        assert "Traceback" not in c.log("snapshotter.log")
