"""Entries of one archive naming the same path: the last one wins, as Docker's Unpack (it removes what is
there first; a directory over a directory is kept). Directories keep the times their headers give."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from graphdriver import open_driver
from graphdriver.archive import tarformat as tf

from .tarbuild import directory, file, hardlink, header, symlink, tar

BACKENDS = ["overlay2", "vfs"]


@pytest.fixture(params=BACKENDS)
def drv(request, root):
    return open_driver(root, request.param)


def _applied(drv, blob: bytes, lid: str = "one") -> str:
    drv.create(lid)
    drv.apply_diff(lid, None, io.BytesIO(blob))
    return drv.diff_path(lid)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("target", ["/etc/passwd", "../t", "x/../../t"])
def test_a_later_regular_file_beats_an_earlier_symlink(drv, target):
    top = _applied(drv, tar(directory("d"), symlink("d/f", target), file("d/f", b"overwrite")))
    assert _read(os.path.join(top, "d/f")) == b"overwrite"


def test_a_later_fifo_or_symlink_beats_an_earlier_symlink(drv):
    fifo = header("p", tf.FIFO)
    top = _applied(drv, tar(symlink("p", "/etc/passwd"), fifo, symlink("s", "/a"), symlink("s", "../b"),
                            symlink("h", "/c"), hardlink("h2", "h"), file("h", b"file")))
    assert stat.S_ISFIFO(os.lstat(os.path.join(top, "p")).st_mode)
    assert os.readlink(os.path.join(top, "s")) == "../b"
    assert _read(os.path.join(top, "h")) == b"file"
    assert os.readlink(os.path.join(top, "h2")) == "/c"  # a hard link to the symlink as it was then


def test_a_file_replaces_a_directory_with_its_content(drv):
    top = _applied(drv, tar(directory("f"), file("f/x", b"in dir"), file("f", b"now a file"),
                            file("g/y", b"implicit parent"), symlink("g", "/etc")))
    assert _read(os.path.join(top, "f")) == b"now a file"
    assert os.readlink(os.path.join(top, "g")) == "/etc"


def test_a_directory_replaces_a_symlink_and_takes_entries(drv, tmp_path):
    outside = str(tmp_path)
    top = _applied(drv, tar(symlink("f", outside), symlink("r", "sub"), directory("sub"),
                            directory("f"), file("f/x", b"inside"), directory("r"), file("r/y", b"y")))
    assert stat.S_ISDIR(os.lstat(os.path.join(top, "f")).st_mode)
    assert _read(os.path.join(top, "f/x")) == b"inside"
    assert stat.S_ISDIR(os.lstat(os.path.join(top, "r")).st_mode)
    assert os.listdir(os.path.join(top, "sub")) == []  # r/y went into the new directory, not through r
    assert os.listdir(outside) == []


def test_a_directory_over_a_directory_is_kept(drv):
    top = _applied(drv, tar(directory("d", mode=0o700), file("d/a", b"a"), directory("d", mode=0o750),
                            file("d/b", b"b")))
    assert sorted(os.listdir(os.path.join(top, "d"))) == ["a", "b"]
    assert stat.S_IMODE(os.lstat(os.path.join(top, "d")).st_mode) == 0o750


OLD = 1577836800  # 2020-01-01


def test_directory_times_survive_whiteouts_and_replacements(drv):
    drv.create("base")
    drv.apply_diff("base", None, io.BytesIO(tar(directory("etc"), file("etc/motd", b"hi"), directory("d"),
                                                file("d/old", b"old"), file("keep", b"k"))))
    drv.create("top", "base")
    drv.apply_diff("top", None, io.BytesIO(tar(
        directory("etc", mtime=OLD), file("etc/.wh.motd"),
        directory("d", mtime=OLD + 1), file("d/.wh..wh..opq"), file("d/new", b"new"),
        directory("r", mtime=OLD + 2), symlink("r/s", "/abs"), file("r/s", b"replaced"))))
    top = drv.diff_path("top")
    for name, want in (("etc", OLD), ("d", OLD + 1), ("r", OLD + 2)):
        assert os.lstat(os.path.join(top, name)).st_mtime == want, name
    with drv.diff("top", None) as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        times = {m.name: m.mtime for m in t if m.isdir()}
    assert times == {"etc": OLD, "d": OLD + 1, "r": OLD + 2}


def test_a_directory_keeps_its_time_when_its_entries_come_after_other_directories(drv):
    """Directories first, then their files (as many image builders write a layer): GNU tar set a
    directory's times when the next entry was outside it, so files written into it later left it at the
    time of the apply; docker sets every directory's times after the last entry."""
    top = _applied(drv, tar(directory("a", mtime=OLD), directory("b", mtime=OLD + 1), directory("a/in", mtime=OLD + 2),
                            file("a/x", b"x"), file("b/y", b"y"), file("a/in/z", b"z"), directory("c", mtime=OLD + 3),
                            file("a/w", b"w")))
    for name, want in (("a", OLD), ("b", OLD + 1), ("a/in", OLD + 2), ("c", OLD + 3)):
        assert os.lstat(os.path.join(top, name)).st_mtime == want, name
