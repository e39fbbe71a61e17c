"""A tar writing below a path that is a symlink in the layers below (``var/run -> /run``, ``../run``).

overlay2 extracts into the layer's own diff directory, where no such symlink exists: the entry makes a real
directory there, which hides the lower symlink in the union (Docker's overlay2 does the same), whether the
symlink is absolute or relative. vfs's layer directory is a full copy holding the symlink: one that points
outside the layer is refused there, and nothing outside the layer is ever written.
"""

from __future__ import annotations

import io
import os
import stat

import pytest

from graphdriver import open_driver
from graphdriver.errors import UnsafeArchive

from .tarbuild import directory, file, snapshot, symlink, tar


def _lower(sentinel: str) -> bytes:
    return tar(directory("var"), symlink("var/run", sentinel), symlink("var/rrun", "../run"), directory("run"),
               symlink("out", "../" * 12 + sentinel.lstrip("/")))


def _top() -> bytes:
    return tar(file("var/run/x", b"abs"), file("var/rrun/y", b"rel"), directory("out/d"), file("out/d/z", b"up"))


def test_overlay2_makes_directories_over_lower_symlinks(root, sentinel):
    d = open_driver(root, "overlay2")
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(_lower(sentinel)))
    d.create("top", "lower")
    outside, below = snapshot(os.path.dirname(sentinel)), snapshot(d.diff_path("lower"))
    d.apply_diff("top", None, io.BytesIO(_top()))
    diff = d.diff_path("top")
    for rel, data in (("var/run/x", b"abs"), ("var/rrun/y", b"rel"), ("out/d/z", b"up")):
        with open(os.path.join(diff, rel), "rb") as f:
            assert f.read() == data
    assert stat.S_ISDIR(os.lstat(os.path.join(diff, "var/run")).st_mode)
    assert snapshot(os.path.dirname(sentinel)) == outside
    assert snapshot(d.diff_path("lower")) == below
    merged = d.get("top")
    try:
        assert stat.S_ISDIR(os.lstat(os.path.join(merged, "var/run")).st_mode)  # the directory hides the link
        assert os.listdir(os.path.join(merged, "var/run")) == ["x"]
        assert os.listdir(os.path.join(merged, "run")) == []
    finally:
        d.put("top")


@pytest.mark.parametrize("entry", ["var/run/x", "out/d/z"])
def test_vfs_refuses_a_write_through_an_outward_symlink(root, sentinel, entry):
    d = open_driver(root, "vfs")
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(_lower(sentinel)))
    d.create("top", "lower")
    outside, before = snapshot(os.path.dirname(sentinel)), snapshot(d.diff_path("top"))
    with pytest.raises(UnsafeArchive, match=f"entry '{entry}': goes through symlink"):
        d.apply_diff("top", None, io.BytesIO(tar(file(entry, b"x"))))
    assert snapshot(d.diff_path("top")) == before
    assert snapshot(os.path.dirname(sentinel)) == outside
