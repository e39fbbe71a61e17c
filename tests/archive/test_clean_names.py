"""Names with a ``..`` that stays inside the layer are cleaned as Docker cleans them (Go's filepath.Clean):
``./x/./y/../z`` is extracted as ``x/z``, for every kind of entry, hard-link targets and whiteouts included.
Only a name that climbs above the root is refused (the hostile corpus)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from graphdriver import open_driver
from graphdriver.archive import tarformat as tf
from graphdriver.archive.safety import PathGuard
from graphdriver.archive.scan import TarScanner

from .tarbuild import directory, file, gnu_long, hardlink, header, pax, snapshot, symlink, tar

BACKENDS = ["overlay2", "vfs"]
GNU = b"ustar  \0"


def _kinds() -> bytes:
    """One entry of each kind, each named with harmless ``.`` and ``..`` components."""
    return tar(
        directory("./d/./e/../f", mode=0o750),
        file("./x/./y/../z", b"z"),
        symlink("s/t/../l", "x/z"),
        hardlink("h/../hl", "./x/./y/../z"),
        header("p/q/../fifo", tf.FIFO),
        header("c/v/../null", tf.CHR, devmajor=1, devminor=3),
        header("c" * 90, prefix=b"long/" + b"a" * 140 + b"/../b"),  # ustar prefix field with '..'
        header("x/..", prefix=b"n" * 155),  # cleans to 155 bytes: too long for the name field, no split
        gnu_long(b"g/" + b"k" * 200 + b"/../long"), file(b"g/kkk", b"gnu", magic=GNU),
        pax({"path": "p2/../" + "m" * 150}), file("p2/../m", b"pax"),
        gnu_long(b"g/" + b"k" * 200 + b"/../../x/z", tf.GNU_LONGLINK), hardlink("hl2", "x/../x/z", magic=GNU),
        directory("r/.."),  # the layer root itself
    )


EXPECTED = ["c", "c/null", "d", "d/f", "g", "g/long", "hl", "hl2", "long", "long/b", "long/b/" + "c" * 90,
            "m" * 150, "n" * 155, "p", "p/fifo", "s", "s/l", "x", "x/z"]


def test_the_stream_tar_sees_carries_the_clean_names():
    out = bytearray()
    guard = PathGuard("overlay")
    TarScanner(io.BytesIO(_kinds()).read, out.extend, guard.visit).run()
    with tarfile.open(fileobj=io.BytesIO(bytes(out))) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert not [n for n in names if ".." in n.split("/")], names
    assert names == ["d/f", "x/z", "s/l", "hl", "p/fifo", "c/null", "long/b/" + "c" * 90, "n" * 155, "g/long",
                     "m" * 150, "hl2", "."]
    by = {m.name: m for m in members}
    assert by["hl"].linkname == "x/z" and by["hl2"].linkname == "x/z" and by["s/l"].linkname == "x/z"
    assert by["c/null"].devmajor == 1 and by["d/f"].mode == 0o750


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_extracts_the_clean_names(root, backend):
    d = open_driver(root, backend)
    d.create("one")
    d.apply_diff("one", None, io.BytesIO(_kinds()))
    top = d.diff_path("one")
    got = sorted(os.path.relpath(os.path.join(dp, n), top) for dp, ds, fs in os.walk(top) for n in ds + fs)
    assert got == sorted(EXPECTED)  # no x/y, s/t, h, ...: the components '..' cancels are not made
    with open(os.path.join(top, "x/z"), "rb") as f:
        assert f.read() == b"z"
    assert os.stat(os.path.join(top, "hl")).st_ino == os.stat(os.path.join(top, "x/z")).st_ino
    assert os.stat(os.path.join(top, "hl2")).st_ino == os.stat(os.path.join(top, "x/z")).st_ino
    assert os.readlink(os.path.join(top, "s/l")) == "x/z"
    assert stat.S_ISFIFO(os.lstat(os.path.join(top, "p/fifo")).st_mode)
    assert stat.S_ISCHR(os.lstat(os.path.join(top, "c/null")).st_mode)
    assert stat.S_IMODE(os.lstat(os.path.join(top, "d/f")).st_mode) == 0o750
    for rel, data in (("g/long", b"gnu"), ("m" * 150, b"pax")):
        with open(os.path.join(top, rel), "rb") as f:
            assert f.read() == data


@pytest.mark.parametrize("backend", BACKENDS)
def test_whiteouts_with_dotdot_name_the_clean_path(root, backend):
    d = open_driver(root, backend)
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(tar(directory("w"), file("w/gone", b"1"), file("w/kept", b"2"),
                                              directory("o"), file("o/old", b"3"))))
    d.create("top", "lower")
    d.apply_diff("top", None, io.BytesIO(tar(file("w/sub/../.wh.gone"), file("./o/x/../.wh..wh..opq"),
                                            file("o/./new", b"4"))))
    merged = d.get("top")
    try:
        assert sorted(os.listdir(os.path.join(merged, "w"))) == ["kept"]
        assert sorted(os.listdir(os.path.join(merged, "o"))) == ["new"]
    finally:
        d.put("top")
    assert "sub" not in snapshot(d.diff_path("top"))
