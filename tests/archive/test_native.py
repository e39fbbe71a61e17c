"""Native diff: when it is used, when it is refused (redirect_dir, metacopy, probed for real), what it reads
(overlay whiteouts in trusted./user. forms, xwhiteouts); and apply does not hold the root lock while it reads."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time

import pytest

from graphdriver import open_driver
from graphdriver.archive import diff as diffmod
from graphdriver.archive.native import configured_problem, probe_mount

from .tarbuild import directory, file, tar


def test_native_in_use_and_reported(root):
    d = open_driver(root, "overlay2")
    assert d.native_diff_reason() is None
    assert d.diff_status() == [("Native Overlay Diff", "true")]


def test_vfs_reports_nothing_and_goes_naive(root):
    d = open_driver(root, "vfs")
    assert d.diff_status() == []
    assert "copies" in d.native_diff_reason()


def test_configured_problems():
    assert "redirect_dir" in configured_problem(("redirect_dir=on",))
    assert "metacopy" in configured_problem(("metacopy=on",))
    assert configured_problem(("redirect_dir=off", "metacopy=off")) is None


def test_probe_sees_redirects_for_real(root):
    work = os.path.join(root, "probe")
    os.makedirs(work)
    assert probe_mount(work, ("index=off",)) is None
    assert "redirect" in probe_mount(work, ("redirect_dir=on", "index=off"))


def test_redirect_dir_falls_back_to_naive_and_stays_right(root):
    d = open_driver(root, "overlay2", {"overlay2.mountopt": "redirect_dir=on"})
    assert d.native_diff_reason() is not None
    assert d.diff_status() == [("Native Overlay Diff", "false")]
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(directory("a"), file("a/one", b"1"), file("a/two", b"2"))))
    d.create("rw", "base", rw=True)
    top = d.get("rw")
    try:
        os.rename(os.path.join(top, "a"), os.path.join(top, "b"))
    finally:
        d.put("rw")
    assert sorted(d.changes("rw", None)) == [("/a", 2), ("/b", 1), ("/b/one", 1), ("/b/two", 1)]
    with d.diff("rw", None) as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        assert sorted(m.name for m in t) == [".wh.a", "b", "b/one", "b/two"]


@pytest.mark.parametrize("prefix", ["trusted.overlay.", "user.overlay."])
def test_native_reads_opaque_and_xwhiteouts(root, prefix):
    d = open_driver(root, "overlay2")
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(directory("o"), file("o/old", b"1"), directory("x"),
                                              file("x/gone", b"2"), file("x/stays", b"3"))))
    d.create("child", "base")
    up = d.diff_path("child")
    os.makedirs(os.path.join(up, "o"))
    os.setxattr(os.path.join(up, "o"), prefix + "opaque", b"y")
    with open(os.path.join(up, "o", "new"), "w") as f:
        f.write("n")
    os.makedirs(os.path.join(up, "x"))
    os.setxattr(os.path.join(up, "x"), prefix + "opaque", b"x")
    open(os.path.join(up, "x", "gone"), "w").close()
    os.setxattr(os.path.join(up, "x", "gone"), prefix + "whiteout", b"")
    got = sorted(d.changes("child", None))
    assert got == [("/o", 0), ("/o/new", 1), ("/o/old", 2), ("/x", 0), ("/x/gone", 2)]
    with d.diff("child", None) as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        members = {m.name: m for m in t}
    assert sorted(members) == ["o", "o/.wh..wh..opq", "o/new", "x", "x/.wh.gone"]
    assert not any(k.startswith("SCHILY.xattr.") for m in members.values() for k in m.pax_headers)


def test_native_and_naive_agree_on_a_container_layer(root):
    d = open_driver(root, "overlay2")
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(directory("etc"), file("etc/a", b"a"), file("etc/b", b"b"),
                                              directory("srv/x"), file("srv/x/y", b"y"))))
    d.create("rw", "base", rw=True)
    top = d.get("rw")
    try:
        os.remove(os.path.join(top, "etc/a"))
        os.chmod(os.path.join(top, "etc/b"), 0o600)
        import shutil
        shutil.rmtree(os.path.join(top, "srv/x"))
        os.makedirs(os.path.join(top, "srv/x/z"))
        os.symlink("/nowhere", os.path.join(top, "dangling"))
    finally:
        d.put("rw")
    native = [(c.path, c.kind) for c in diffmod.compute_changes(d, "rw", None)]
    naive = [(c.path, c.kind) for c in diffmod.compute_changes(d, "rw", None, naive=True)]
    assert native == naive
    # etc/b copied up, and the symlink counts its target's length (Docker's directory.Size and ChangesSize)
    assert diffmod.diff_size(d, "rw", None) == diffmod.diff_size(d, "rw", None, naive=True) == 1 + len("/nowhere")


def test_apply_does_not_hold_the_root_lock_while_reading(root):
    d = open_driver(root, "overlay2")
    d.create("slow")
    r, w = os.pipe()
    blob = tar(file("a", b"x" * 100000), file("b", b"y"))

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(blob[:50000])
            f.flush()
            time.sleep(1.5)
            f.write(blob[50000:])

    feeder = threading.Thread(target=feed)
    result: list[int] = []
    applier = threading.Thread(target=lambda: result.append(d.apply_diff("slow", None, os.fdopen(r, "rb"))))
    feeder.start()
    applier.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    d.create("meanwhile")
    assert time.monotonic() - t0 < 1.0, "create waited for the extraction"
    applier.join()
    feeder.join()
    assert result == [100001]


def test_aufs_format_read_side_without_a_kernel(tmp_path):
    """aufs layers keep ``.wh.`` files: native changes and tar read them (and hide aufs's own entries)."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for p in ("etc", "opq"):
        (lower / p).mkdir(parents=True)
    (lower / "etc/passwd").write_text("root")
    (lower / "etc/group").write_text("g")
    (lower / "opq/old").write_text("o")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/.wh.group").write_text("")
    (upper / "opq").mkdir()
    (upper / "opq/.wh..wh..opq").write_text("")
    (upper / "opq/new").write_text("n")
    for meta in (".wh..wh.aufs", ".wh..wh.plnk", ".wh..wh.orph"):
        (upper / meta).mkdir() if meta != ".wh..wh.aufs" else (upper / meta).write_text("")
    for d in ("etc", "opq"):
        st = os.lstat(lower / d)
        os.chmod(upper / d, st.st_mode & 0o7777)
    from graphdriver.archive.view import LayerView

    view = LayerView([str(lower)], "aufs")
    got = [(c.path.decode(), c.kind) for c in diffmod.native_changes(os.fsencode(upper), view, "aufs")]
    assert sorted(got) == [("etc", 0), ("etc/group", 2), ("opq", 0), ("opq/new", 1), ("opq/old", 2)]
    blob = b"".join(diffmod.native_tar(os.fsencode(upper), "aufs"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        assert sorted(m.name for m in t) == ["etc", "etc/.wh.group", "opq", "opq/.wh..wh..opq", "opq/new"]
    merged = LayerView([str(upper), str(lower)], "aufs")
    assert merged.lookup(b"etc/group") is None and merged.lookup(b"etc/passwd") is not None
    assert sorted(merged.listdir(b"opq")) == [b"new"]


def test_changes_leave_out_copy_ups_the_diff_exports(root):
    """As dockerd 20.10's overlay2 (measured: tests/images/test_container_diff_docker.py): changes follow
    Docker's naive rule, natively too, so a copy-up with nothing changed, or rewritten with the same size
    and mtime, is no change; the native diff still exports every file the upper dir holds."""
    d = open_driver(root, "overlay2")
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(directory("bin"), file("bin/sh", b"shell"), directory("etc"),
                                              file("etc/conf", b"aaaa"), directory("srv"), file("srv/x", b"x"))))
    d.create("rw", "base", rw=True)
    top = d.get("rw")
    try:
        os.link(os.path.join(top, "bin/sh"), os.path.join(top, "bin/sh2"))  # copies bin/sh up, unchanged
        conf = os.path.join(top, "etc/conf")
        st = os.stat(conf)
        with open(conf, "r+b") as f:
            f.write(b"bbbb")
        os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    finally:
        d.put("rw")
    got = d.changes("rw", None)
    assert got == [("/bin", 0), ("/bin/sh2", 1)]
    naive = diffmod.compute_changes(d, "rw", None, naive=True)
    assert [("/" + c.path.decode(), c.kind) for c in naive] == got
    with d.diff("rw", None) as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        exported = {"/" + m.name for m in t if not m.isdir()}
    assert exported == {"/bin/sh", "/bin/sh2", "/etc/conf"}


def test_whiteouts_of_one_inode_export_as_mobys_writer(tmp_path):
    """overlayfs (Linux 5.8+) links its whiteouts to one inode. moby's writer takes every one after the first
    for a hard link to it, and its whiteout conversion leaves that link name (the first device's own name,
    without ``.wh.``) in the regular ``.wh.`` entry: the headers, so the diffID, are dockerd's."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mknod")
    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    os.mknod(upper / "a", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.link(upper / "a", upper / "d" / "b")
    os.mknod(upper / "c", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # an inode of its own (a rename's)
    blob = b"".join(diffmod.native_tar(os.fsencode(upper), "overlay"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        got = [(m.name, m.type, m.linkname, m.mode & 0o7777 if m.isreg() else None) for m in t]
    assert got == [(".wh.a", tarfile.REGTYPE, "", 0o600), (".wh.c", tarfile.REGTYPE, "", 0o600),
                   ("d", tarfile.DIRTYPE, "", None), ("d/.wh.b", tarfile.REGTYPE, "a", 0o600)]
