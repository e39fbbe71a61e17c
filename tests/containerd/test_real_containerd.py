"""Debian's containerd 1.6 with our snapshotter as a proxy plugin: import, run, remove."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from graphdriver.serve.proto import snapshots_pb2 as pb
from graphdriver.serve.proto import snapshots_pb2_grpc
from graphdriver.serve.snapshots.mounts import MountSpec
from graphdriver.serve.snapshots.verify import check_mounted

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
        sn = ["snapshots", "--snapshotter", ctrd.PLUGIN]
        usage = c.ctr(*sn, "usage").stdout.splitlines()[1:]  # Usage of committed layers
        assert len(usage) == 2 and any("MiB" in line for line in usage), usage  # busybox is ~2 MiB
        top = c.ctr(*sn, "ls").stdout.splitlines()[1].split()[0]
        c.ctr(*sn, "label", top, "gd.test=yes")  # Update with a labels.* field mask
        assert '"gd.test": "yes"' in c.ctr(*sn, "info", top).stdout

        script = "cat /etc/message; echo written > /tmp/x; cat /tmp/x"
        out = c.ctr(*c.run_args(ctrd.PLUGIN, IMAGE, "gdtest-run", "/bin/sh", "-c", script)).stdout
        if out == "":  # exit 0 yet no output: ctr's rare fifo-copy race (not ours); the next run must print
            out = c.ctr(*c.run_args(ctrd.PLUGIN, IMAGE, "gdtest-run2", "/bin/sh", "-c", script)).stdout
        assert out.splitlines()[:2] == ["hello from the second layer", "written"], out
        # --rm removed the container's snapshot (containerd's garbage collector calls our Remove a moment later;
        # its scheduler stretches that delay on a loaded machine): only the image's two layers remain, and
        # nothing is mounted.
        started = time.monotonic()
        assert _eventually(lambda: len(_snapshot_dirs(c)) == 2, timeout=60), \
            (_snapshot_dirs(c), f"waited {time.monotonic() - started:.0f}s")
        assert ctrd.mounts_under(c.tmp) == []

        c.ctr("images", "rm", "--sync", IMAGE)
        assert c.ctr("snapshots", "--snapshotter", ctrd.PLUGIN, "ls").stdout.count("\n") <= 1
        assert _snapshot_dirs(c) == []
        assert os.listdir(os.path.join(c.snap_root, "l")) == []
        assert ctrd.mounts_under(c.tmp) == []
        assert "Traceback" not in c.log("snapshotter.log")


def test_running_container_rootfs_matches_our_plan(image_tar):
    """While a container runs, the kernel's view of its rootfs is exactly the plan we handed containerd."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with ctrd.Containerd() as c:
        c.ctr("images", "import", "--snapshotter", ctrd.PLUGIN, image_tar)
        cid = "gdtest-bg"
        c.containers.append(cid)
        c.ctr("run", "-d", "--snapshotter", ctrd.PLUGIN, "--runc-root", os.path.join(c.tmp, "runc"),
              "--fifo-dir", os.path.join(c.tmp, "fifo"), IMAGE, cid, "/bin/sh", "-c", "sleep 60")
        try:
            with grpc.insecure_channel(f"unix:{c.snap_socket}") as ch:
                stub = snapshots_pb2_grpc.SnapshotsStub(ch)
                active = [i for r in stub.List(pb.ListSnapshotsRequest(filters=["kind==active"])) for i in r.info]
                assert len(active) == 1 and active[0].name.endswith("/" + cid), active
                plan = stub.Mounts(pb.MountsRequest(key=active[0].name)).mounts
            assert [m.type for m in plan] == ["overlay"]
            rootfs = os.path.join(c.tmp, "state", "io.containerd.runtime.v2.task", ctrd.NAMESPACE, cid, "rootfs")
            spec = MountSpec(plan[0].type, plan[0].source, tuple(plan[0].options))
            assert check_mounted(spec, rootfs) == []
        finally:
            c.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
            assert _eventually(lambda: c.ctr("task", "rm", cid, check=False).returncode == 0 or
                               cid not in c.ctr("task", "ls", check=False).stdout)
            c.ctr("containers", "rm", cid, check=False)
        assert _eventually(lambda: len(_snapshot_dirs(c)) == 2), _snapshot_dirs(c)
        assert ctrd.mounts_under(c.tmp) == []
