"""The containerd snapshots service over a real unix socket, with real mounts of the plans it returns."""

from __future__ import annotations

import os
import stat as st
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2

from graphdriver.serve.proto import snapshots_pb2 as pb
from graphdriver.serve.snapshots.mounts import MountSpec
from graphdriver.serve.snapshots.verify import check_mounted

from .conftest import code_of, commit, mount_all, prepare, stat, umount, view, walk

NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _spec(m) -> MountSpec:
    return MountSpec(m.type, m.source, tuple(m.options))


def _mnt(root: str, name: str) -> str:
    d = os.path.join(root, "mnt", name)
    os.makedirs(d)
    return d


def test_lifecycle_with_real_mounts(served):
    stub, root = served.stub, os.path.dirname(served.root)
    base = prepare(stub, "ns/1/extract base", "")
    assert [(m.type, list(m.options)) for m in base] == [("bind", ["rw", "rbind"])]
    t = _mnt(root, "base")
    mount_all(base, t)
    with open(os.path.join(t, "foo"), "w") as f:
        f.write("foo\n")
    os.makedirs(os.path.join(t, "a/b"))
    umount(t)
    commit(stub, "ns/1/sha256:base", "ns/1/extract base")
    info = stat(stub, "ns/1/sha256:base")
    assert info.kind == pb.COMMITTED and info.parent == ""
    assert code_of(stub.Stat, pb.StatSnapshotRequest(key="ns/1/extract base"))[0] == NOT_FOUND

    top = prepare(stub, "top", "ns/1/sha256:base")
    assert top[0].type == "overlay"
    t2 = _mnt(root, "top")
    mount_all(top, t2)
    assert check_mounted(_spec(top[0]), t2) == []
    assert check_mounted(_spec(base[0]), t2)  # the kernel shows something else than that plan
    assert open(os.path.join(t2, "foo")).read() == "foo\n"
    with open(os.path.join(t2, "bar"), "w") as f:
        f.write("bar\n")
    os.rmdir(os.path.join(t2, "a/b"))
    umount(t2)
    commit(stub, "c2", "top")
    assert stat(stub, "c2").parent == "ns/1/sha256:base"

    v = view(stub, "v", "c2")
    assert v[0].type == "overlay" and not any(o.startswith("upperdir=") for o in v[0].options)
    t3 = _mnt(root, "view")
    mount_all(v, t3)
    try:
        assert check_mounted(_spec(v[0]), t3) == []
        assert sorted(os.listdir(t3)) == ["a", "bar", "foo"] and os.listdir(os.path.join(t3, "a")) == []
        with pytest.raises(OSError):
            open(os.path.join(t3, "new"), "w")
    finally:
        umount(t3)
    v1 = view(stub, "v1", "ns/1/sha256:base")
    assert [(m.type, list(m.options)) for m in v1] == [("bind", ["ro", "rbind"])]
    mount_all(v1, t3)
    try:
        assert check_mounted(_spec(v1[0]), t3) == []
        assert check_mounted(_spec(top[0]), t3) != []
    finally:
        umount(t3)
    mounts = stub.Mounts(pb.MountsRequest(key="v1")).mounts
    assert list(mounts) == v1

    for key in ("v", "v1", "c2", "ns/1/sha256:base"):
        stub.Remove(pb.RemoveSnapshotRequest(key=key))
    assert walk(stub) == []
    stub.Cleanup(pb.CleanupRequest())
    assert sorted(os.listdir(os.path.join(served.root, "snapshots"))) == [".lock"]


def test_keys_are_never_paths(served):
    stub = served.stub
    for key in ("../../etc", "a/b c/ d", "/abs/path", " spaced "):
        prepare(stub, key)
        assert stat(stub, key).name == key
    names = sorted(os.listdir(os.path.join(served.root, "snapshots")))
    assert names == [".lock", "1", "2", "3", "4"]
    assert not os.path.exists(os.path.join(served.root, "abs"))


def test_error_codes(served):
    stub = served.stub
    prepare(stub, "a")
    commit(stub, "c", "a")
    prepare(stub, "child", "c")
    view(stub, "v", "c")
    assert code_of(stub.Stat, pb.StatSnapshotRequest(key="nope"))[0] == NOT_FOUND
    assert code_of(stub.Prepare, pb.PrepareSnapshotRequest(key="x", parent="nope"))[0] == NOT_FOUND
    assert code_of(stub.Prepare, pb.PrepareSnapshotRequest(key="child", parent="c"))[0] == EXISTS
    assert code_of(stub.View, pb.ViewSnapshotRequest(key="c"))[0] == EXISTS
    assert code_of(stub.Prepare, pb.PrepareSnapshotRequest(key=""))[0] == INVALID
    assert code_of(stub.Prepare, pb.PrepareSnapshotRequest(key="y", parent="child"))[0] == INVALID
    assert code_of(stub.Commit, pb.CommitSnapshotRequest(name="c3", key="v"))[0] == PRECONDITION
    assert code_of(stub.Commit, pb.CommitSnapshotRequest(name="c3", key="c"))[0] == PRECONDITION
    assert code_of(stub.Commit, pb.CommitSnapshotRequest(name="c", key="child"))[0] == EXISTS
    assert code_of(stub.Commit, pb.CommitSnapshotRequest(name="c4", key="nope"))[0] == NOT_FOUND
    code, msg = code_of(stub.Remove, pb.RemoveSnapshotRequest(key="c"))
    assert code == PRECONDITION and "remove" in msg and "child" in msg
    assert code_of(stub.Remove, pb.RemoveSnapshotRequest(key="nope"))[0] == NOT_FOUND
    assert code_of(stub.Mounts, pb.MountsRequest(key="c"))[0] == PRECONDITION
    assert code_of(stub.Usage, pb.UsageRequest(key="nope"))[0] == NOT_FOUND
    code, msg = code_of(walk, stub, "name==")
    assert code == INVALID and "name==" in msg
    for bad in ('labels."unterminated', "kind=active", "name~=(", ",", "name==a,,"):
        assert code_of(walk, stub, bad)[0] == INVALID, bad
    big = {"k": "v" * 4096}
    assert code_of(stub.Prepare, pb.PrepareSnapshotRequest(key="big", labels=big))[0] == INVALID
    # the failed requests changed nothing
    assert sorted(i.name for i in walk(stub)) == ["c", "child", "v"]


def test_update_labels_with_masks(served):
    stub = served.stub
    prepare(stub, "a", **{"containerd.io/gc.root": "x"})
    before = stat(stub, "a")
    assert before.created_at == before.updated_at

    def update(labels, *paths, **info):
        req = pb.UpdateSnapshotRequest(info=pb.Info(name="a", labels=labels, **info))
        if paths:
            req.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
        return stub.Update(req).info

    got = update({"l1": "v1", "l2": "v2"}, parent="ignored", kind=pb.COMMITTED)
    assert dict(got.labels) == {"l1": "v1", "l2": "v2"} and got.kind == pb.ACTIVE and got.parent == ""
    assert got.created_at == before.created_at and got.updated_at.ToNanoseconds() > before.updated_at.ToNanoseconds()
    got = update({"l1": "new", "l4": "v4"}, "labels.l1", "labels.l2")
    assert dict(got.labels) == {"l1": "new"}
    got = update({"l9": "9"}, "labels")
    assert dict(got.labels) == {"l9": "9"}
    with pytest.raises(grpc.RpcError) as ei:
        update({}, "parent")
    assert ei.value.code() == INVALID
    assert dict(stat(stub, "a").labels) == {"l9": "9"}
    with pytest.raises(grpc.RpcError) as ei:
        stub.Update(pb.UpdateSnapshotRequest(info=pb.Info(name="nope")))
    assert ei.value.code() == NOT_FOUND


def test_walk_filters(served):
    stub = served.stub
    gc = {"containerd.io/gc.root": "check-walk"}
    prepare(stub, "a-np", **gc)
    prepare(stub, "p-tmp", **gc)
    commit(stub, "p", "p-tmp", **gc)
    prepare(stub, "a", "p", **gc)
    view(stub, "v", "p", **gc)
    prepare(stub, "p-wl-tmp", **gc)
    commit(stub, "p-wl", "p-wl-tmp", l="1", **gc)
    prepare(stub, "a-wl", "p-wl", l="2", **gc)
    view(stub, "v-wl", "p-wl", l="3", **gc)
    prepare(stub, "a-np-wl", l="2", **gc)
    prepare(stub, "nolabels")
    cases = [
        (['labels."containerd.io/gc.root"==check-walk'], {"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}),
        (['kind==active,labels."containerd.io/gc.root"==check-walk'], {"a-np", "a", "a-wl", "a-np-wl"}),
        (["kind==view"], {"v", "v-wl"}),
        (["kind==committed"], {"p", "p-wl"}),
        (["name==p", "name==a-np-wl"], {"p", "a-np-wl"}),
        (["name==a-wl,labels.l"], {"a-wl"}),
        (["parent==p"], {"a", "v"}),
        (['parent!="",labels."containerd.io/gc.root"==check-walk'], {"a", "v", "a-wl", "v-wl"}),
        (["labels.l"], {"p-wl", "a-wl", "v-wl", "a-np-wl"}),
        (["labels.l==2"], {"a-wl", "a-np-wl"}),
        (["labels.l!=2"], {"a-np", "p", "a", "v", "p-wl", "v-wl", "nolabels"}),
        (["name~=^a-np"], {"a-np", "a-np-wl"}),
        (["name~=/-wl$|^v$/"], {"p-wl", "a-wl", "v-wl", "v", "a-np-wl"}),
        (["  name == p  "], {"p"}),
        ([], {"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl", "nolabels"}),
    ]
    for filters, want in cases:
        assert {i.name for i in walk(stub, *filters)} == want, filters


def test_list_streams_in_batches_and_timestamps(served):
    stub = served.stub
    t0 = time.time_ns()
    for i in range(230):
        view(stub, f"view {i}")
    t1 = time.time_ns()
    responses = list(stub.List(pb.ListSnapshotsRequest()))
    assert [len(r.info) for r in responses] == [100, 100, 30]
    for r in responses:
        for info in r.info:
            assert t0 <= info.created_at.ToNanoseconds() <= t1
            assert info.created_at == info.updated_at and info.kind == pb.VIEW


def test_roots_0755_whatever_the_umask(served):
    old = os.umask(0o077)
    try:
        prepare(served.stub, "a")
    finally:
        os.umask(old)
    fs = os.path.join(served.root, "snapshots", "1", "fs")
    assert st.S_IMODE(os.stat(fs).st_mode) == 0o755


def test_usage(served):
    stub, root = served.stub, os.path.dirname(served.root)
    t = _mnt(root, "u")
    mount_all(prepare(stub, "a"), t)
    with open(os.path.join(t, "data"), "wb") as f:
        f.write(b"x" * 65536)
    umount(t)
    active = stub.Usage(pb.UsageRequest(key="a"))
    assert active.size >= 65536 and active.inodes == 2
    commit(stub, "c", "a")
    assert stub.Usage(pb.UsageRequest(key="c")) == active
    view(stub, "v", "c")
    assert stub.Usage(pb.UsageRequest(key="v")).size == 0


def test_cleanup_removes_crash_leftovers(served):
    stub = served.stub
    prepare(stub, "kept")
    home = os.path.join(served.root, "snapshots")
    # What a crash leaves: a half-built staging dir, a renamed-in dir whose transaction never committed,
    # and a removal that was interrupted before its delete.
    os.makedirs(os.path.join(home, ".new-crash", "fs"))
    os.makedirs(os.path.join(home, "77", "fs", "deep"))
    os.makedirs(os.path.join(home, ".del-crash", "x", "fs"))
    drift = served.snapshotter.verify()
    assert len(drift) == 3 and all("not a recorded snapshot" in d for d in drift)
    stub.Cleanup(pb.CleanupRequest())
    assert sorted(os.listdir(home)) == [".lock", "1"]
    assert stat(stub, "kept").kind == pb.ACTIVE
    assert served.snapshotter.verify() == []
    os.unlink(os.path.join(served.root, "l", "1"))
    assert served.snapshotter.verify() == [f"snapshot 'kept' (id 1): link {served.root}/l/1 is missing or wrong"]


def test_a_cleanup_arriving_mid_prepare_leaves_the_new_snapshot_whole(served, monkeypatch):
    # containerd's garbage collector calls Cleanup whenever it likes, e.g. right after a `ctr run --rm`
    # while the next run's Prepare is staging its directories: Cleanup must not take them for debris.
    import tempfile
    import threading

    from graphdriver.serve.snapshots import snapshotter as module

    real_mkdtemp = tempfile.mkdtemp
    cleaners: list[threading.Thread] = []

    def mkdtemp_then_cleanup(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        if kwargs.get("prefix") == ".new-" and not cleaners:
            cleaners.append(threading.Thread(target=served.snapshotter.cleanup))
            cleaners[0].start()
            cleaners[0].join(0.5)  # as long as it takes, unless it has to wait for this Prepare
        return path

    monkeypatch.setattr(module.tempfile, "mkdtemp", mkdtemp_then_cleanup)
    mounts = prepare(served.stub, "racing")
    cleaners[0].join()
    snap = os.path.join(served.root, "snapshots", "1")
    assert os.path.isdir(os.path.join(snap, "fs")) and os.path.isdir(os.path.join(snap, "work"))
    assert mounts and served.snapshotter.verify() == []


def test_vfs_mode_copies_parents(served_vfs):
    stub, root = served_vfs.stub, os.path.dirname(served_vfs.root)
    t = _mnt(root, "a")
    mount_all(prepare(stub, "a"), t)
    os.symlink("target", os.path.join(t, "link"))
    with open(os.path.join(t, "f"), "w") as f:
        f.write("1")
    umount(t)
    commit(stub, "c", "a")
    m = prepare(stub, "b", "c")
    assert [x.type for x in m] == ["bind"]
    t2 = _mnt(root, "b")
    mount_all(m, t2)
    try:
        assert open(os.path.join(t2, "f")).read() == "1" and os.readlink(os.path.join(t2, "link")) == "target"
    finally:
        umount(t2)


def test_usage_of_an_active_snapshot_whose_files_come_and_go(served):
    """A running container creates and deletes files while containerd asks for its usage: a file listed
    and gone before it is looked at is simply not counted (before: the call failed)."""
    import threading

    stub = served.stub
    prepare(stub, "live")
    fs = os.path.join(served.root, "snapshots", "1", "fs")
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for i in range(200):
                open(os.path.join(fs, f"t{i}"), "w").close()
            for i in range(200):
                os.unlink(os.path.join(fs, f"t{i}"))

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(100):
            assert stub.Usage(pb.UsageRequest(key="live")).inodes >= 1
    finally:
        stop.set()
        worker.join()


def test_usage_of_a_snapshot_removed_while_it_is_counted_is_not_found(served, monkeypatch):
    from graphdriver.serve.snapshots import snapshotter as module

    prepare(served.stub, "gone")
    real = module.disk_usage

    def removed_meanwhile(path):
        served.snapshotter.remove("gone")  # another request, between the look-up and the count
        return real(path)

    monkeypatch.setattr(module, "disk_usage", removed_meanwhile)
    code, details = code_of(served.stub.Usage, pb.UsageRequest(key="gone"))
    assert code == NOT_FOUND and "was removed while its usage was counted" in details
