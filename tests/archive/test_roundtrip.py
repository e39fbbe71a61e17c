"""apply_diff -> diff -> apply_diff on every backend that runs here: same entries, same trees, same sizes;
whiteouts and opaque directories as seen through real mounts; changes equal the changes made."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import subprocess
import tarfile

import pytest
import zstandard

from graphdriver import backends, open_driver
from graphdriver.archive import diff as diffmod

from .tarbuild import directory, file, pax, snapshot, symlink, tar

BACKENDS = sorted(backends())


@pytest.fixture(params=BACKENDS)
def drv(request, root):
    cls = backends()[request.param]
    why = cls.unsupported_reason(root)
    if why is not None:
        pytest.skip(why)
    return open_driver(root, request.param)


def make_rich_tree(top: str) -> None:
    """Every kind of entry a layer carries."""
    os.makedirs(top)
    j = lambda *p: os.path.join(top, *p)  # noqa: E731
    os.makedirs(j("usr/bin"))
    os.makedirs(j("empty/dir"))
    os.makedirs(j("tmp"))
    os.chmod(j("tmp"), 0o1777)
    with open(j("usr/bin/su"), "wb") as f:
        f.write(b"#!setuid\n" * 100)
    os.chmod(j("usr/bin/su"), 0o4755)
    with open(j("usr/bin/wall"), "wb") as f:
        f.write(b"setgid")
    os.chown(j("usr/bin/wall"), 0, 5)
    os.chmod(j("usr/bin/wall"), 0o2755)
    with open(j("owned"), "wb") as f:
        f.write(b"owned by 1234:5678")
    os.chown(j("owned"), 1234, 5678)
    os.link(j("owned"), j("usr/hardlink-to-owned"))
    os.symlink("../owned", j("usr/rel-link"))
    os.symlink("/etc/abs-target", j("abs-link"))
    os.mknod(j("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(j("loop9"), stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(j("fifo"), 0o600)
    long_dir = j(*(["d" * 60] * 4))
    os.makedirs(long_dir)
    with open(os.path.join(long_dir, "n" * 200), "wb") as f:
        f.write(b"long name")
    with open(j("xattrs"), "wb") as f:
        f.write(b"x")
    os.setxattr(j("xattrs"), "user.mime", b"text/plain")
    os.setxattr(j("xattrs"), "trusted.thing", b"\x00\x01binary")
    os.setxattr(j("usr/bin/su"), "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))
    with open(j("sparse"), "wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"data in the middle" * 300)
    for p in ("usr/bin/su", "owned", "sparse", "xattrs", "tmp"):
        os.utime(j(p), (1600000000, 1600000000))


def entries(blob: bytes) -> dict[str, tuple]:
    """Normalized tar entries: hard links resolved to their target's content."""
    out: dict[str, tuple] = {}
    content: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t:
            name = m.name.rstrip("/").removeprefix("./")
            if not name or name == ".":
                continue
            xattrs = tuple(sorted((k, v) for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")))
            if m.islnk():
                data = content[m.linkname.removeprefix("./")]
                kind = "file"
            elif m.isreg():
                data = t.extractfile(m).read()
                content[name] = data
                kind = "file"
            else:
                data = b""
                kind = m.type
            out[name] = (kind, stat.S_IMODE(m.mode), m.uid, m.gid, int(m.mtime) if kind != tarfile.DIRTYPE else 0,
                         m.linkname if m.issym() else "", m.devmajor if m.isdev() else 0,
                         m.devminor if m.isdev() else 0, data, xattrs)
    return out


def seconds(snap: dict[str, tuple]) -> dict[str, tuple]:
    """A snapshot with mtimes cut to whole seconds."""
    return {k: v[:5] + (v[5] // 10**9,) + v[6:] if len(v) > 5 else v for k, v in snap.items()}


def gnu_tar_of(top: str) -> bytes:
    return subprocess.run(["tar", "--format=pax", "--xattrs", "--xattrs-include=*", "--sparse", "--numeric-owner",
                           "-cf", "-", "-C", top, "."], check=True, capture_output=True).stdout


def test_round_trip_fidelity(drv, tmp_path):
    src = str(tmp_path / "src")
    make_rich_tree(src)
    blob = gnu_tar_of(src)
    drv.create("base")
    size = drv.apply_diff("base", None, io.BytesIO(blob))
    links = sum(len(m.linkname.encode()) for m in tarfile.open(fileobj=io.BytesIO(blob)) if m.issym())
    assert links > 0
    # DiffSize counts symlink targets (Docker's directory.Size / ChangesSize); so does overlay2's and aufs's
    # ApplyDiff, vfs's (the naive one) sums the tar's sizes only
    assert size + (links if drv.whiteout_format == "applied" else 0) == drv.diff_size("base", None)
    with drv.diff("base", None) as s:
        out = s.read()
    want, got = entries(blob), entries(out)
    assert sorted(got) == sorted(want)
    for name in want:  # of the xattrs, Docker's tars carry security.capability only
        assert got[name] == want[name][:9] + (tuple(x for x in want[name][9] if "security." in x[0]),), name
    # the exported tar re-applied gives the same tree (but the other xattrs, and sparseness)
    drv.create("copy")
    assert drv.apply_diff("copy", None, io.BytesIO(out)) == size
    a, b = seconds(snapshot(drv.diff_path("base"))), seconds(snapshot(drv.diff_path("copy")))
    a = {k: v[:7] + (tuple(x for x in v[7] if x[0] == "security.capability"),) if len(v) > 7 else v
         for k, v in a.items()}
    assert a == b  # layer tars carry whole-second mtimes (as Docker's do)
    st = os.lstat(os.path.join(drv.diff_path("copy"), "usr/hardlink-to-owned"))
    assert st.st_nlink == 2 and (st.st_uid, st.st_gid) == (1234, 5678)


def test_gnu_format_and_sparse_variants(drv, tmp_path):
    """GNU-format archives (L/K long names, old sparse headers) extract the same as PAX ones."""
    src = str(tmp_path / "src")
    make_rich_tree(src)
    pax_blob = gnu_tar_of(src)
    gnu_blob = subprocess.run(["tar", "--format=gnu", "--xattrs", "--sparse", "--numeric-owner", "-cf", "-",
                               "-C", src, "."], check=True, capture_output=True).stdout
    drv.create("p")
    drv.create("g")
    drv.apply_diff("p", None, io.BytesIO(pax_blob))
    drv.apply_diff("g", None, io.BytesIO(gnu_blob))
    a, b = snapshot(drv.diff_path("p")), snapshot(drv.diff_path("g"))
    # GNU format carries no xattrs: compare everything else
    strip = lambda snap: {k: v[:7] for k, v in snap.items()}  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.parametrize("compress", [None, gzip.compress, bz2.compress, lzma.compress,
                                      lambda b: zstandard.ZstdCompressor().compress(b)])
def test_compressed_streams(drv, compress):
    blob = tar(directory("d"), file("d/f", b"hello" * 1000), symlink("l", "d/f"))
    drv.create("x")
    size = drv.apply_diff("x", None, io.BytesIO(compress(blob) if compress else blob))
    assert size == 5000 + (3 if drv.whiteout_format != "applied" else 0)  # overlay2, aufs: the symlink "d/f" too
    with open(os.path.join(drv.diff_path("x"), "d/f"), "rb") as f:
        assert f.read() == b"hello" * 1000


def _child(drv):
    base = tar(directory("etc"), file("etc/passwd", b"root"), file("etc/group", b"g"), directory("var/lib/x"),
               file("var/lib/x/a", b"a"), file("var/lib/x/b", b"b"), file("keep", b"k"), directory("gone"),
               file("gone/f", b"f"))
    drv.create("base")
    drv.apply_diff("base", None, io.BytesIO(base))
    child = tar(file("etc/.wh.group"), directory("var/lib/x", mode=0o755), file("var/lib/x/.wh..wh..opq"),
                file("var/lib/x/new", b"n"), file("etc/passwd", b"root2"), file("added", b"new file"),
                file(".wh.gone"))
    drv.create("child", "base")
    return drv.apply_diff("child", None, io.BytesIO(child))


def test_whiteouts_through_a_real_mount(drv):
    _child(drv)
    merged = drv.get("child")
    try:
        assert not os.path.lexists(os.path.join(merged, "etc/group"))
        assert not os.path.lexists(os.path.join(merged, "gone"))
        assert sorted(os.listdir(os.path.join(merged, "var/lib/x"))) == ["new"]
        with open(os.path.join(merged, "etc/passwd")) as f:
            assert f.read() == "root2"
        assert os.path.exists(os.path.join(merged, "keep"))
    finally:
        drv.put("child")


def test_changes_equal_changes_made(drv):
    size = _child(drv)
    got = dict(drv.changes("child", None))
    want = {"/etc": 0, "/etc/group": 2, "/etc/passwd": 0, "/var": 0, "/var/lib": 0, "/var/lib/x": 0,
            "/var/lib/x/a": 2, "/var/lib/x/b": 2, "/var/lib/x/new": 1, "/added": 1, "/gone": 2}
    assert got == want
    assert drv.diff_size("child", None) == size == len(b"n") + len(b"root2") + len(b"new file")


def test_native_and_naive_agree(drv):
    _child(drv)
    m = diffmod._Mounted(drv, "child", "base")
    try:
        naive = [(c.path, c.kind) for c in diffmod.naive_changes(m.old, m.new)]
    finally:
        m.release()
    ours = [(c.path, c.kind) for c in diffmod.compute_changes(drv, "child", None)]
    assert sorted(ours) == sorted(naive)


def test_diff_then_apply_reproduces_the_view(drv):
    _child(drv)
    with drv.diff("child", None) as s:
        blob = s.read()
    drv.create("again", "base")
    drv.apply_diff("again", None, io.BytesIO(blob))
    views = []
    for lid in ("child", "again"):
        p = drv.get(lid)
        try:
            snap = snapshot(p)
            snap.pop(".", None)
            views.append({k: v[:6] + v[6:7] for k, v in snap.items()})
        finally:
            drv.put(lid)
    assert views[0] == views[1]


def test_apply_onto_content_merges_and_rolls_back(drv):
    """Applying into a layer that has content merges; a failure part way leaves it exactly as it was."""
    drv.create("lay")
    drv.apply_diff("lay", None, io.BytesIO(tar(directory("a"), file("a/one", b"1"), directory("b"),
                                             file("b/two", b"2"))))
    drv.apply_diff("lay", None, io.BytesIO(tar(file("a/three", b"3"), file("b/two", b"22"))))
    top = drv.diff_path("lay")
    assert sorted(os.listdir(os.path.join(top, "a"))) == ["one", "three"]
    with open(os.path.join(top, "b/two")) as f:
        assert f.read() == "22"
    before = snapshot(top)
    locked = os.path.join(top, "b")
    subprocess.run(["chattr", "+i", locked], check=True)
    try:
        with pytest.raises(Exception) as err:
            drv.apply_diff("lay", None, io.BytesIO(tar(file("a/four", b"4"), file("b/five", b"5"))))
        assert "rolled back" in str(err.value)
    finally:
        subprocess.run(["chattr", "-i", locked], check=True)
    assert snapshot(top) == before


def test_apply_from_a_regular_file_and_truncation(drv, tmp_path):
    """A file input takes the splice path for big data; a file cut inside that data is refused cleanly."""
    big = os.urandom(3 << 20)
    blob = tar(file("small", b"s"), file("big", big), file("after", b"a"))
    p = tmp_path / "layer.tar"
    p.write_bytes(blob)
    drv.create("ok")
    with open(p, "rb") as f:
        assert drv.apply_diff("ok", None, f) == len(big) + 2
    with open(os.path.join(drv.diff_path("ok"), "big"), "rb") as f:
        assert f.read() == big
    p.write_bytes(blob[:2 << 20])
    drv.create("cut")
    with open(p, "rb") as f, pytest.raises(Exception) as err:
        drv.apply_diff("cut", None, f)
    assert "'big'" in str(err.value) and "truncated" in str(err.value)
    assert os.listdir(drv.diff_path("cut")) == []


def test_changes_and_diff_against_a_layer_that_is_not_the_parent(drv):
    """Any other layer as ``parent``: the naive comparison of the two root filesystems."""
    drv.create("a")
    drv.apply_diff("a", None, io.BytesIO(tar(file("same", b"1"), file("only-a", b"a"), file("differs", b"x"))))
    drv.create("b")
    drv.apply_diff("b", None, io.BytesIO(tar(file("same", b"1", mtime=1700000000), file("only-b", b"b"),
                                             file("differs", b"yy"))))
    assert sorted(drv.changes("b", "a")) == [("/differs", 0), ("/only-a", 2), ("/only-b", 1)]
    with drv.diff("b", "a") as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        assert sorted(m.name for m in t) == [".wh.only-a", "differs", "only-b"]
    assert drv.diff_size("b", "a") == 3


def test_tar_failure_leaves_the_layer_alone(drv):
    """An entry GNU tar cannot make (a name component over NAME_MAX) fails the apply as a whole."""
    from graphdriver.errors import ApplyFailed

    drv.create("t")
    drv.apply_diff("t", None, io.BytesIO(tar(file("first", b"1"))))
    before = snapshot(drv.diff_path("t"))
    with pytest.raises(ApplyFailed) as err:
        drv.apply_diff("t", None, io.BytesIO(tar(file("second", b"2"), pax({"path": "n" * 300}),
                                                     file("x", b"x"))))
    assert "\n" not in str(err.value)
    assert snapshot(drv.diff_path("t")) == before
    assert os.listdir(os.path.join(drv.home, ".staging")) == []


def test_a_whiteout_whose_directory_a_later_entry_replaces_is_dropped(drv):
    # Found by the property test: `a/.wh.a` then a regular file `a` replacing the directory.
    drv.create("base")
    drv.apply_diff("base", None, io.BytesIO(tar(directory("a"), file("a/a", b"lower"))))
    drv.create("top", "base")
    drv.apply_diff("top", None, io.BytesIO(tar(file("a/.wh.a"), file("a", b"now a file"))))
    merged = drv.get("top")
    try:
        with open(os.path.join(merged, "a"), "rb") as f:
            assert f.read() == b"now a file"
    finally:
        drv.put("top")
