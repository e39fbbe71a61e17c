"""The native-diff probe on a root that cannot be written (full, out of inodes, read-only): diffs go the
naive way with the same output and the probe leaves nothing; its verdict is kept per boot in
``<home>/.native-diff-probe`` so later commands (on a root that filled up since) need no probe."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conformance.util import root_state
from support.fulldisk import fill, small_tmpfs

from graphdriver.kernel import syscalls
from graphdriver.store.runtime import boot_id

HOW = ["no blocks", "no inodes", "read-only"]


def gd(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args], capture_output=True,
                          timeout=120)


def ok(root: str, *args: str) -> bytes:
    r = gd(root, *args)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def cache_of(root: str) -> str:
    return os.path.join(root, "overlay2", ".native-diff-probe")


@contextmanager
def unwritable(disk: str, how: str) -> Iterator[None]:
    """``disk`` with no room left (``no blocks``: the probe mounts, then its write fails; ``no inodes``:
    its directory cannot be made) or remounted read-only, as it was afterwards."""
    made: list[str] = []
    if how == "read-only":
        syscalls.mount("none", disk, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
    else:
        made.append(fill(disk))
        for i in range(100000 if how == "no inodes" else 0):
            try:
                open(os.path.join(disk, f"inode-{i}"), "w").close()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            made.append(os.path.join(disk, f"inode-{i}"))
    try:
        yield
    finally:
        if how == "read-only":
            syscalls.mount("none", disk, None, syscalls.MS_REMOUNT)
        for path in made:
            os.unlink(path)


def write(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


def build(root: str) -> None:
    """base (etc/a, etc/b, srv/x/y); mid on it (etc/a removed, etc/b chmodded, new/f) with a child, so it
    mounts read-only; rw, a container-like layer on base without a child (etc/b rewritten, etc/c added)."""
    ok(root, "layer", "create", "base")
    top = ok(root, "layer", "mount", "base").decode().strip()
    os.makedirs(os.path.join(top, "etc"))
    os.makedirs(os.path.join(top, "srv", "x"))
    for name in ("etc/a", "etc/b", "srv/x/y"):
        write(os.path.join(top, name), name)
    ok(root, "layer", "umount", "base")
    ok(root, "layer", "create", "mid", "--parent", "base")
    top = ok(root, "layer", "mount", "mid").decode().strip()
    assert top.startswith(root)
    os.remove(os.path.join(top, "etc", "a"))
    os.chmod(os.path.join(top, "etc", "b"), 0o600)
    os.makedirs(os.path.join(top, "new"))
    write(os.path.join(top, "new", "f"), "fresh")
    ok(root, "layer", "umount", "mid")
    ok(root, "layer", "create", "child", "--parent", "mid")
    ok(root, "layer", "create", "rw", "--parent", "base", "--rw")
    top = ok(root, "layer", "mount", "rw").decode().strip()
    assert top.startswith(root)
    write(os.path.join(top, "etc", "b"), "rewritten")
    write(os.path.join(top, "etc", "c"), "added")
    ok(root, "layer", "umount", "rw")


def reads(root: str, layer: str) -> tuple[bytes, bytes, bytes]:
    return (ok(root, "layer", "diff", layer), ok(root, "layer", "changes", layer),
            ok(root, "layer", "diff-size", layer))


def entries(blob: bytes) -> list[tuple]:
    """A layer tar's entries: name, type, mode, owner, mtime, content; a whiteout by its name alone (the
    native way exports the whiteout file's own mode and time, the naive way has none: 0, as Docker's two
    ways differ there too)."""
    out: list[tuple] = []
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t:
            if os.path.basename(m.name).startswith(".wh."):
                out.append((m.name,))
                continue
            f = t.extractfile(m)
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.linkname, m.pax_headers,
                        f.read() if f else None))
    return out


@pytest.mark.parametrize("how", HOW)
def test_a_probe_that_cannot_write_falls_back_to_the_naive_diff_and_leaves_nothing(tmp_path, how: str) -> None:
    """The probe's error (naming its staging directory) was the diff's: a full or read-only root could
    not diff at all, though the naive way needs no probe."""
    with small_tmpfs(str(tmp_path / "disk"), size=8 << 20, inodes=400) as disk:
        root = os.path.join(disk, "gd")
        try:
            build(root)
            native = reads(root, "mid")
            assert json.load(open(cache_of(root)))["problem"] is None  # the way just taken was native
            os.unlink(cache_of(root))
            before = root_state(root)
            with unwritable(disk, how):
                tar, changes, size = reads(root, "mid")  # naive now: the same entries, changes and size
                assert (entries(tar), changes, size) == (entries(native[0]), *native[1:])
                info = ok(root, "info").decode()
                assert "Native Overlay Diff: unknown (cannot probe: " in info, info
                assert root_state(root) == before  # no probe directory, no mount, no verdict kept
            assert os.listdir(os.path.join(root, "overlay2", ".staging")) == []
        finally:
            gd(root, "cleanup")


@pytest.mark.parametrize("how", HOW)
def test_the_verdict_probed_once_serves_a_root_that_cannot_be_written_later(tmp_path, how: str) -> None:
    """A layer with no child mounts with its upper dir, which a full or read-only root cannot give it:
    the verdict kept from a command run while there was room lets its diff be read in place."""
    with small_tmpfs(str(tmp_path / "disk"), size=8 << 20, inodes=400) as disk:
        root = os.path.join(disk, "gd")
        try:
            build(root)
            first = reads(root, "rw")
            assert first[1].decode().split() == ["C", "/etc", "C", "/etc/b", "A", "/etc/c"]
            kept = json.load(open(cache_of(root)))
            assert kept["problem"] is None and kept["key"]["boot_id"] == boot_id()
            before = root_state(root)
            with unwritable(disk, how):
                assert reads(root, "rw") == first
                assert "Native Overlay Diff: true" in ok(root, "info").decode()
                assert root_state(root) == before
        finally:
            gd(root, "cleanup")


def test_the_kept_verdict_is_used_and_one_of_another_boot_or_damaged_is_probed_again(root: str) -> None:
    ok(root, "layer", "create", "base")
    assert not os.path.exists(cache_of(root))  # nothing asked for a diff yet: no probe
    assert b"Native Overlay Diff: true" in ok(root, "info")
    kept = json.load(open(cache_of(root)))
    planted = {"key": kept["key"], "problem": "a verdict the test planted"}
    write(cache_of(root), json.dumps(planted))
    assert b"Native Overlay Diff: false" in ok(root, "info")  # read, not probed again
    assert json.load(open(cache_of(root))) == planted
    for stale in ({**planted, "key": {**kept["key"], "boot_id": "another boot"}}, "{damaged"):
        write(cache_of(root), stale if isinstance(stale, str) else json.dumps(stale))
        assert b"Native Overlay Diff: true" in ok(root, "info")
        assert json.load(open(cache_of(root))) == kept
    assert os.listdir(os.path.join(root, "overlay2", ".staging")) == []


def naive_diff(root: str, layer: str) -> bytes:
    """The layer's diff the naive way, read in this process."""
    from graphdriver import open_driver
    from graphdriver.archive.diff import diff_stream

    with diff_stream(open_driver(root), layer, None, naive=True) as stream:
        return stream.read()


@pytest.mark.parametrize("how", HOW)
def test_a_layer_without_a_child_diffs_the_naive_way_on_a_root_that_cannot_be_written(tmp_path, how: str) -> None:
    """With no verdict kept, the naive way mounted a layer without a child as ``get`` does, with its upper
    and work dir: refused on a read-only root (EINVAL) or one out of inodes (ENOSPC), so ``layer diff``,
    ``container diff`` and ``container commit`` failed there. It needs only to read: a detached read-only
    view now (the layer's diff on top of its parents), giving what the layer's own writable mount gives."""
    with small_tmpfs(str(tmp_path / "disk"), size=8 << 20, inodes=400) as disk:
        root = os.path.join(disk, "gd")
        try:
            build(root)
            native = reads(root, "rw")
            ok(root, "layer", "mount", "rw")  # the naive way through the layer's own (writable) mount
            try:
                through_mount = naive_diff(root, "rw")
            finally:
                ok(root, "layer", "umount", "rw")
            os.unlink(cache_of(root))
            before = root_state(root)
            with unwritable(disk, how):
                tar, changes, size = reads(root, "rw")
                assert tar == through_mount
                assert (entries(tar), changes, size) == (entries(native[0]), *native[1:])
                assert naive_diff(root, "rw") == through_mount
                assert root_state(root) == before  # nothing written, nothing left mounted
            assert os.listdir(os.path.join(root, "overlay2", ".staging")) == []
        finally:
            gd(root, "cleanup")


def test_the_naive_way_reads_through_a_mount_already_there(tmp_path) -> None:
    """A layer that is mounted is read through that mount (shared, as ``get`` shares it), never through
    a second overlay on the upper dir in use; its references are as they were afterwards."""
    from graphdriver import open_driver

    with small_tmpfs(str(tmp_path / "disk"), size=8 << 20, inodes=400) as disk:
        root = os.path.join(disk, "gd")
        try:
            build(root)
            expected = naive_diff(root, "rw")
            top = ok(root, "layer", "mount", "rw").decode().strip()
            with unwritable(disk, "no blocks"):
                assert open_driver(root).read_only_fd("rw") is None  # get serves: it shares the mount
                assert naive_diff(root, "rw") == expected
                assert open_driver(root).mount_count("rw") == 1
            write(os.path.join(top, "late"), "seen through the mount")
            assert b"seen through the mount" in naive_diff(root, "rw")
            ok(root, "layer", "umount", "rw")
        finally:
            gd(root, "cleanup")


def test_a_detached_view_is_checked_for_what_the_kernel_made(tmp_path) -> None:
    """The naive way's read-only view is in no mount table: what the kernel says of its root (statfs,
    statvfs) is compared with what was asked, and anything else is named."""
    from graphdriver.kernel.overlay import detached_problems

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        problems = detached_problems(fd)  # a plain directory of a writable filesystem
    finally:
        os.close(fd)
    assert len(problems) == 2 and "not overlay's" in problems[0] and problems[1] == "mounted read-write"
