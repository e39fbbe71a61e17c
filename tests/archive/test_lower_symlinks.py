"""A tar writing below a path that is a symlink in the layers below (``var/run -> /run``, ``../run``).

overlay2 extracts into the layer's own diff directory, where no such symlink exists: the entry makes a real
directory there, which hides the lower symlink in the union (Docker's overlay2 does the same), whether the
symlink is absolute or relative. vfs's layer directory is a full copy holding the symlink: the entry is
written where the symlink leads *inside the layer* and the symlink stays, as Docker's vfs does (moby's
UnpackLayer runs chrooted in the layer: ``/run`` is ``<layer>/run``, ``..`` stops at the layer's root); a
symlink that leads nowhere in the layer fails the apply, as there. Nothing outside the layer is ever written.
"""

from __future__ import annotations

import io
import os
import stat

import pytest

from graphdriver import open_driver
from graphdriver.errors import ApplyFailed, UnsafeArchive

from .hostile import lower_layer
from .tarbuild import directory, file, hardlink, snapshot, symlink, tar


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


def _vfs(root: str, lower: bytes):
    d = open_driver(root, "vfs")
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(lower))
    d.create("top", "lower")
    return d


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_vfs_writes_through_an_in_layer_symlink_where_it_leads(root, sentinel):
    lower = tar(directory("b"), file("b/old", b"old"), symlink("a", "b"), directory("run"), directory("var"),
                symlink("var/run", "/run"), symlink("var/rrun", "../run"), symlink("up", "../../../../b"))
    d = _vfs(root, lower)
    outside = snapshot(os.path.dirname(sentinel))
    d.apply_diff("top", None, io.BytesIO(tar(file("a/x", b"x"), directory("a/sub"), file("a/sub/y", b"y"),
                                             file("var/run/abs", b"abs"), file("var/rrun/rel", b"rel"),
                                             file("up/z", b"z"), hardlink("h", "a/x"))))
    top = d.diff_path("top")
    assert os.readlink(os.path.join(top, "a")) == "b"  # the symlinks stay, as in Docker's vfs
    assert os.readlink(os.path.join(top, "var/run")) == "/run"
    assert os.readlink(os.path.join(top, "up")) == "../../../../b"
    assert sorted(os.listdir(os.path.join(top, "b"))) == ["old", "sub", "x", "z"]
    assert _read(os.path.join(top, "b/sub/y")) == b"y"
    assert sorted(os.listdir(os.path.join(top, "run"))) == ["abs", "rel"]  # /run is the layer's run
    assert os.stat(os.path.join(top, "h")).st_ino == os.stat(os.path.join(top, "b/x")).st_ino
    assert snapshot(os.path.dirname(sentinel)) == outside


def test_vfs_entry_named_as_a_symlink_replaces_it(root):
    """Docker's unpack replaces what is at an entry's own name unless both are directories (Lstat, never
    followed): a directory entry over a symlink makes a directory, and later entries go into it."""
    d = _vfs(root, tar(directory("b"), file("b/old", b"old"), symlink("a", "b"), symlink("f", "b/old")))
    d.apply_diff("top", None, io.BytesIO(tar(directory("a"), file("a/x", b"x"), file("f", b"new"))))
    top = d.diff_path("top")
    assert stat.S_ISDIR(os.lstat(os.path.join(top, "a")).st_mode) and os.listdir(os.path.join(top, "a")) == ["x"]
    assert os.listdir(os.path.join(top, "b")) == ["old"] and _read(os.path.join(top, "b/old")) == b"old"
    assert not os.path.islink(os.path.join(top, "f")) and _read(os.path.join(top, "f")) == b"new"


def test_vfs_whiteout_through_an_in_layer_symlink(root, sentinel):
    """A whiteout under a symlinked directory deletes where the symlink leads (Docker's RemoveAll, chrooted);
    one under a symlink that leads nowhere in the layer deletes nothing and fails nothing."""
    d = _vfs(root, lower_layer(sentinel) + b"")
    d.apply_diff("top", None, io.BytesIO(tar(file("inside/.wh.passwd"), file("lower_abs/.wh.file"))))
    top = d.diff_path("top")
    assert os.readlink(os.path.join(top, "inside")) == "etc" and os.listdir(os.path.join(top, "etc")) == []
    assert os.listdir(sentinel) and os.path.exists(os.path.join(sentinel, "file"))


@pytest.mark.parametrize("entry", ["lower_abs/pwned", "lower_rel/pwned", "lower_abs/newdir/", "lower_abs/d/x",
                                   "inside/passwd/x"])
def test_vfs_refuses_a_symlink_that_leads_nowhere_in_the_layer(root, sentinel, entry):
    """``lower_abs -> <sentinel>`` leads to ``<layer><sentinel>``, which the layer lacks: refused before anything
    is extracted, as Docker's unpack fails there (ENOENT); ``inside/passwd`` is a file (ENOTDIR)."""
    d = _vfs(root, lower_layer(sentinel))
    outside, before = snapshot(os.path.dirname(sentinel)), snapshot(d.diff_path("top"))
    member = directory(entry) if entry.endswith("/") else file(entry, b"x")
    with pytest.raises(ApplyFailed, match=f"entry '{entry.rstrip('/')}/?': goes through symlink"):
        d.apply_diff("top", None, io.BytesIO(tar(file("ok", b"fine"), member)))
    assert snapshot(d.diff_path("top")) == before
    assert snapshot(os.path.dirname(sentinel)) == outside
    assert os.listdir(os.path.join(d.home, ".staging")) == []


def test_vfs_outward_symlink_stays_inside_the_layer(root, sentinel):
    """Where the layer holds the path an absolute symlink names, the entry is written there — in the layer,
    never at the host's path of the same name."""
    inner = sentinel.lstrip("/")
    d = _vfs(root, lower_layer(sentinel) + b"")
    d.apply_diff("top", None, io.BytesIO(tar(directory(inner))))  # <layer><sentinel> now exists
    outside = snapshot(os.path.dirname(sentinel))
    d.apply_diff("top", None, io.BytesIO(tar(file("lower_abs/pwned", b"x"), file("lower_rel/pwned2", b"y"))))
    assert sorted(os.listdir(os.path.join(d.diff_path("top"), inner))) == ["pwned", "pwned2"]
    assert snapshot(os.path.dirname(sentinel)) == outside


def test_vfs_still_refuses_a_symlink_made_by_the_same_archive(root, sentinel):
    d = _vfs(root, tar(directory("b")))
    before = snapshot(d.diff_path("top"))
    with pytest.raises(UnsafeArchive, match="made earlier in the same archive"):
        d.apply_diff("top", None, io.BytesIO(tar(symlink("a", "b"), file("a/x", b"x"))))
    assert snapshot(d.diff_path("top")) == before
