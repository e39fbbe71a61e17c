"""Fixtures for the containerd snapshotter: a real server on a real unix socket, and a containerd-like mounter."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from graphdriver.serve.containerd_snapshotter import make_server
from graphdriver.serve.proto import snapshots_pb2 as pb
from graphdriver.serve.proto import snapshots_pb2_grpc
from graphdriver.serve.snapshots.snapshotter import Snapshotter


@dataclass
class Served:
    root: str
    socket: str
    stub: snapshots_pb2_grpc.SnapshotsStub
    snapshotter: Snapshotter


def serve_on(root: str, driver: str | None = None) -> Iterator[Served]:
    sock = os.path.join(root, "s.sock")
    sn = Snapshotter(os.path.join(root, "state"), driver)
    server = make_server(sock, sn, workers=4)
    server.start()
    channel = grpc.insecure_channel(f"unix:{sock}")
    try:
        yield Served(os.path.join(root, "state"), sock, snapshots_pb2_grpc.SnapshotsStub(channel), sn)
    finally:
        channel.close()
        server.stop(grace=None).wait()
        sn.close()


@pytest.fixture
def served(root: str) -> Iterator[Served]:
    """An overlay-mode server on ``<root>/s.sock`` with its state in ``<root>/state``."""
    yield from serve_on(root)


@pytest.fixture
def served_vfs(root: str) -> Iterator[Served]:
    yield from serve_on(root, "vfs")


def mount_all(mounts: list, target: str) -> None:
    """Execute a plan the way containerd does: mount(8)-style flags, overlay lowerdir compaction past 3584."""
    for m in mounts:
        opts = list(m.options)
        cwd = None
        if m.type == "overlay" and len(",".join(opts)) >= 4096 - 512:
            cwd, opts = _compact(opts)
        flags = ["-o", ",".join(opts)] if opts else []
        if m.type == "bind":
            flags = ["--rbind" if "rbind" in opts else "--bind"]
            subprocess.run(["mount", *flags, m.source, target], check=True, capture_output=True)
            if "ro" in opts:
                subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True, capture_output=True)
            continue
        subprocess.run(["mount", "-t", m.type, m.source, target, *flags], check=True, capture_output=True, cwd=cwd)


def _compact(opts: list[str]) -> tuple[str, list[str]]:
    idx = next(i for i, o in enumerate(opts) if o.startswith("lowerdir="))
    dirs = opts[idx][len("lowerdir="):].split(":")
    common = os.path.commonprefix(dirs)
    common = os.path.dirname(common) + "/"
    rel = [d[len(common):] for d in dirs]
    return common, [*opts[:idx], *opts[idx + 1:], "lowerdir=" + ":".join(rel)]


def umount(target: str) -> None:
    subprocess.run(["umount", target], check=True, capture_output=True)


def prepare(stub: snapshots_pb2_grpc.SnapshotsStub, key: str, parent: str = "", **labels: str) -> list:
    return list(stub.Prepare(pb.PrepareSnapshotRequest(key=key, parent=parent, labels=labels)).mounts)


def view(stub: snapshots_pb2_grpc.SnapshotsStub, key: str, parent: str = "", **labels: str) -> list:
    return list(stub.View(pb.ViewSnapshotRequest(key=key, parent=parent, labels=labels)).mounts)


def commit(stub: snapshots_pb2_grpc.SnapshotsStub, name: str, key: str, **labels: str) -> None:
    stub.Commit(pb.CommitSnapshotRequest(name=name, key=key, labels=labels))


def stat(stub: snapshots_pb2_grpc.SnapshotsStub, key: str) -> pb.Info:
    return stub.Stat(pb.StatSnapshotRequest(key=key)).info


def walk(stub: snapshots_pb2_grpc.SnapshotsStub, *filters: str) -> list[pb.Info]:
    return [i for resp in stub.List(pb.ListSnapshotsRequest(filters=list(filters))) for i in resp.info]


def code_of(call, *args) -> tuple[grpc.StatusCode, str]:
    """Run a call expected to fail; its status code and message."""
    with pytest.raises(grpc.RpcError) as ei:
        call(*args)
    return ei.value.code(), ei.value.details()
