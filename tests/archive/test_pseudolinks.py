"""aufs pseudo-links (``.wh..wh.plnk/``) in a layer tar give what Docker's unpack gives (moby's UnpackLayer):
a hard link to a pseudo-linked file becomes a regular file of its own at the link's name, with that file's
content and header (one link each: Docker writes each as a new file); nothing of ``.wh..wh.plnk`` stays in
the layer or comes back in its diff; a link to a pseudo-link no earlier entry gave is refused in one line."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from graphdriver import open_driver
from graphdriver.archive import tarformat as tf
from graphdriver.archive.pseudolinks import PseudoLinks
from graphdriver.archive.safety import PathGuard
from graphdriver.archive.scan import DIVERT, TarScanner
from graphdriver.drivers.aufs import Aufs
from graphdriver.errors import UnsafeArchive

from .tarbuild import data_blocks, directory, file, gnu_long, hardlink, header, pax, snapshot, symlink, tar

PLNK = ".wh..wh.plnk/1234.5678"
MTIME = 1_600_000_000


def _plnk_layer() -> bytes:
    """A pseudo-linked file and two links to it (as Docker's aufs driver exported a copied-up hard link)."""
    return tar(file(PLNK, b"pseudo-linked", mode=0o750, uid=7, gid=8, mtime=MTIME), directory("usr"),
               hardlink("usr/a", PLNK), hardlink("usr/b", "./" + PLNK), file("usr/c", b"plain"))


def _driver(root: str, backend: str):
    return Aufs(root) if backend == "aufs" else open_driver(root, backend)


def _no_plnk(top: str) -> None:
    for d, dirs, files in os.walk(top):
        assert not [n for n in dirs + files if n.startswith(".wh..wh.")], d


def _diff_names(driver, layer: str, parent: str | None) -> list[str]:
    with tarfile.open(fileobj=driver.diff(layer, parent), mode="r|") as t:
        return [m.name for m in t]


@pytest.mark.parametrize("backend", ["overlay2", "vfs", "aufs"])
def test_links_to_a_pseudo_linked_file_become_copies(root, backend):
    d = _driver(root, backend)
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(tar(directory("etc"), file("etc/keep", b"k"))))
    d.create("top", "base")
    size = d.apply_diff("top", "base", io.BytesIO(_plnk_layer()))
    assert size == len(b"pseudo-linked") + len(b"plain")  # Docker counts the pseudo-linked file once
    top = d.diff_path("top")
    a, b = os.path.join(top, "usr/a"), os.path.join(top, "usr/b")
    sa, sb = os.lstat(a), os.lstat(b)
    for path, st in ((a, sa), (b, sb)):
        with open(path, "rb") as f:
            assert f.read() == b"pseudo-linked"
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
        assert (st.st_uid, st.st_gid, st.st_mtime) == (7, 8, MTIME)  # the pseudo-linked file's header
        assert st.st_nlink == 1
    assert sa.st_ino != sb.st_ino  # each link a copy of its own, as Docker writes them
    _no_plnk(top)
    names = _diff_names(d, "top", "base")
    assert {"usr/a", "usr/b", "usr/c"} <= {n.rstrip("/") for n in names}
    assert not [n for n in names if ".wh..wh." in n], names


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_pseudo_links_in_order_with_other_entries(root, backend):
    """Each link is written where it stands in the archive: a later entry of its name replaces it, it
    replaces an earlier one (a directory too), a later pseudo-linked file of the same name serves only later
    links, and a plain hard link to a link's path shares that file."""
    d = _driver(root, backend)
    d.create("layer")
    blob = tar(file(PLNK, b"first"), directory("d"), file("d/x", b"x"), file("f", b"old"),
               hardlink("d", PLNK), hardlink("f", PLNK), hardlink("gone", PLNK), file("gone", b"later"),
               hardlink("one", PLNK), file(PLNK, b"second!"), hardlink("two", PLNK), hardlink("same", "one"))
    d.apply_diff("layer", None, io.BytesIO(blob))
    top = d.diff_path("layer")
    got = {n: open(os.path.join(top, n), "rb").read() for n in ("d", "f", "gone", "one", "two", "same")}
    assert got == {"d": b"first", "f": b"first", "gone": b"later", "one": b"first", "two": b"second!",
                   "same": b"first"}
    assert os.lstat(os.path.join(top, "one")).st_ino == os.lstat(os.path.join(top, "same")).st_ino
    assert os.lstat(os.path.join(top, "one")).st_nlink == 2
    _no_plnk(top)


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_pseudo_links_keep_extended_headers(root, backend):
    """A pseudo-linked file with PAX records (xattrs, an out-of-range time) and a GNU long name; links with
    long names: the copy gets the file's records under the link's name."""
    d = _driver(root, backend)
    d.create("layer")
    long_dir = "deep/" + "n" * 90
    gnu = b"ustar  \0"
    q = b".wh..wh.plnk/" + b"q" * 120
    blob = tar(pax({"SCHILY.xattr.user.tag": b"v", "mtime": b"-5"}), file(".wh..wh.plnk/p", b"xattr"),
               gnu_long(q), file(".wh..wh.plnk/short", b"gnu", magic=gnu), file(".wh..wh.plnk/g", b"g", magic=gnu),
               directory(long_dir), header("x" * 60, tf.LINK, linkname=".wh..wh.plnk/p", prefix=long_dir.encode()),
               pax({"path": f"{long_dir}/{'y' * 70}", "linkpath": q}), hardlink("y", ".wh..wh.plnk/ignored"),
               gnu_long(f"{long_dir}/{'z' * 80}".encode()), gnu_long(q, tf.GNU_LONGLINK),
               header("z", tf.LINK, linkname="q", magic=gnu),
               pax({"path": f"{long_dir}/{'w' * 90}"}), hardlink("w", ".wh..wh.plnk/g"))
    d.apply_diff("layer", None, io.BytesIO(blob))
    top = d.diff_path("layer")
    x, y, z, w = (os.path.join(top, long_dir, c * n) for c, n in (("x", 60), ("y", 70), ("z", 80), ("w", 90)))
    assert open(x, "rb").read() == b"xattr" and os.getxattr(x, "user.tag") == b"v"
    assert os.lstat(x).st_mtime == 0  # Docker's unpack sets a time before 1970 to the epoch
    assert open(y, "rb").read() == open(z, "rb").read() == b"gnu"
    assert open(w, "rb").read() == b"g"  # a long name for a GNU-format header: tar takes it from PAX
    assert not os.path.lexists(os.path.join(top, "y"))
    _no_plnk(top)


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
@pytest.mark.parametrize("blob, target", [
    (tar(file("ok", b"1"), hardlink("a", ".wh..wh.plnk/missing")), ".wh..wh.plnk/missing"),
    (tar(hardlink("a", "/.wh..wh.plnk/late"), file(".wh..wh.plnk/late", b"1")), ".wh..wh.plnk/late"),
    (tar(directory(".wh..wh.plnk/dir"), hardlink("a", ".wh..wh.plnk/dir")), ".wh..wh.plnk/dir"),
])
def test_a_link_to_a_missing_pseudo_link_is_refused(root, backend, blob, target):
    d = _driver(root, backend)
    d.create("layer")
    before = snapshot(d.diff_path("layer"))
    with pytest.raises(UnsafeArchive) as err:
        d.apply_diff("layer", None, io.BytesIO(blob))
    msg = str(err.value)
    assert "\n" not in msg and "'a'" in msg and repr(target) in msg, msg
    assert snapshot(d.diff_path("layer")) == before
    assert not os.listdir(os.path.join(d.home, ".staging"))


def test_the_stream_tar_reads(tmp_path):
    """The rewriting alone (no extraction): links become regular members carrying the pseudo-linked file's
    header and data; the pseudo-linked file, and aufs's other metadata, never reach tar; aufs whiteouts do."""
    out = bytearray()
    guard = PathGuard("aufs")
    links = PseudoLinks(str(tmp_path), out.extend)
    seen = []

    def visit(e):
        action = guard.visit(e)
        seen.append(action)
        if action == DIVERT:
            links.divert(e)
        return action

    blob = tar(file(".wh..wh.aufs"), symlink(".wh..wh.plnk/s", "/etc"), file(".wh.gone"),
               header(PLNK, tf.AREG, size=600_000, mode=0o600, uid=3) + data_blocks(b"z" * 600_000),
               hardlink("a", PLNK), hardlink("b", PLNK))
    try:
        TarScanner(io.BytesIO(blob).read, out.extend, visit).run()
    finally:
        links.close()
    assert seen.count(DIVERT) == 3
    assert guard.pseudo_links.keys() == {b"1234.5678"}
    with tarfile.open(fileobj=io.BytesIO(bytes(out))) as t:
        members = t.getmembers()
        assert [m.name for m in members] == [".wh.gone", "a", "b"]
        for m in members[1:]:
            assert m.isreg() and (m.size, m.mode, m.uid) == (600_000, 0o600, 3)
            assert t.extractfile(m).read() == b"z" * 600_000
    assert guard.whiteouts == [(b"", b"gone")]
    assert not list(tmp_path.iterdir())  # the kept data has no name
