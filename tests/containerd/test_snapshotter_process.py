"""The CLI server as a process (killed and restarted), and the 500-layer limit with real overlay mounts."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

import grpc
import pytest

from graphdriver.serve.proto import snapshots_pb2 as pb
from graphdriver.serve.proto import snapshots_pb2_grpc
from graphdriver.serve.snapshots.mounts import MountSpec
from graphdriver.serve.snapshots.verify import check_mounted

from .conftest import code_of, commit, mount_all, prepare, stat, umount, walk


def _start(root: str, sock: str) -> subprocess.Popen:
    """Start the CLI server; return once it says it serves (after its gRPC server started)."""
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "serve", "containerd-snapshotter",
                             "--socket", sock, "--root", os.path.join(root, "state")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stderr], [], [], 30)
    line = proc.stderr.readline().decode() if ready else ""
    if "serving containerd snapshotter" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"server did not start: {line}")
    return proc


def test_server_process_survives_sigkill_and_stops_cleanly(root):
    sock = os.path.join(root, "gd.sock")
    proc = _start(root, sock)
    try:
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = snapshots_pb2_grpc.SnapshotsStub(ch)
            prepare(stub, "default/1/extract-1 sha256:aa")
            commit(stub, "default/1/sha256:aa", "default/1/extract-1 sha256:aa")
            prepare(stub, "container rw", "default/1/sha256:aa")  # a Prepare the crash interrupts before Commit
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Debris a crash in the middle of a Prepare can leave.
        os.makedirs(os.path.join(root, "state", "snapshots", ".new-crashed", "fs"))
        proc = _start(root, sock)
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = snapshots_pb2_grpc.SnapshotsStub(ch)
            assert stat(stub, "default/1/sha256:aa").kind == pb.COMMITTED
            assert stat(stub, "container rw").parent == "default/1/sha256:aa"
            assert code_of(stub.Remove, pb.RemoveSnapshotRequest(key="default/1/sha256:aa"))[0] == \
                grpc.StatusCode.FAILED_PRECONDITION
            stub.Remove(pb.RemoveSnapshotRequest(key="container rw"))
            stub.Remove(pb.RemoveSnapshotRequest(key="default/1/sha256:aa"))
            stub.Cleanup(pb.CleanupRequest())
            assert walk(stub) == []
        assert sorted(os.listdir(os.path.join(root, "state", "snapshots"))) == [".lock"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_server_on_same_root_is_refused(root, served):
    proc = subprocess.run([sys.executable, "-m", "graphdriver", "serve", "containerd-snapshotter",
                           "--socket", os.path.join(root, "other.sock"), "--root", served.root],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "in use" in proc.stderr


@pytest.mark.parametrize("what", ["a file", "a live socket"])
def test_the_socket_path_is_never_taken_from_what_is_there(root, served, what):
    """A file at --socket, or the socket another snapshotter serves: refused, left as it was (it was
    unlinked, then removed again at exit, leaving the other server unreachable)."""
    if what == "a file":
        path = os.path.join(root, "precious.txt")
        with open(path, "w") as f:
            f.write("precious")
    else:
        path = served.socket
    before = os.lstat(path)
    proc = subprocess.run([sys.executable, "-m", "graphdriver", "serve", "containerd-snapshotter",
                           "--socket", path, "--root", os.path.join(root, "other")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert path in proc.stderr and ("not a socket" in proc.stderr or "already being served" in proc.stderr)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if what == "a file":
        assert open(path).read() == "precious"
    else:
        assert walk(served.stub) == []  # the first server still answers on its socket
        with grpc.insecure_channel(f"unix:{path}") as ch:
            assert walk(snapshots_pb2_grpc.SnapshotsStub(ch)) == []


@pytest.mark.slow
def test_500_lowers_mount_and_501_are_refused(served):
    stub, root = served.stub, os.path.dirname(served.root)
    parent = ""
    for i in range(500):
        key = f"layer {i}"
        prepare(stub, key + " extract", parent)
        with open(os.path.join(served.root, "snapshots", str(i + 1), "fs", f"f{i}"), "w") as f:
            f.write(str(i))
        commit(stub, key, key + " extract")
        parent = key
    mounts = prepare(stub, "top", parent)
    assert mounts[0].type == "overlay" and len(",".join(mounts[0].options)) > 4095  # short links + compaction
    target = os.path.join(root, "top")
    os.mkdir(target)
    mount_all(mounts, target)
    try:
        m = mounts[0]
        assert check_mounted(MountSpec(m.type, m.source, tuple(m.options)), target) == []
        names = os.listdir(target)
        assert len(names) == 500 and open(os.path.join(target, "f0")).read() == "0"
    finally:
        umount(target)
    commit(stub, "layer 500", "top")
    code, msg = code_of(stub.Prepare, pb.PrepareSnapshotRequest(key="too deep", parent="layer 500"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "500" in msg
