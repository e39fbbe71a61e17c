"""aufs whiteouts at the file level: ``.wh.<name>`` and ``.wh..wh..opq`` stay as they are in the branch,
and aufs's own ``.wh..wh.aufs``/``.wh..wh.plnk``/``.wh..wh.orph`` never count as content. The diff is
read natively from ``aufs/diff/<id>``, so none of this needs a mount."""

from __future__ import annotations

import io
import os
import stat
import tarfile

DELETED, ADDED, MODIFIED = 2, 1, 0


def layer_tar(entries: list[tuple[str, bytes | None]]) -> io.BytesIO:
    """A tar with files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def base_and_child(aufs):
    aufs.create("base")
    aufs.apply_diff("base", None, layer_tar([("etc", None), ("etc/gone", b"x"), ("etc/kept", b"k"),
                                             ("opq", None), ("opq/old", b"o")]))
    aufs.create("child", "base")
    aufs.apply_diff("child", "base", layer_tar([("etc", None), ("etc/.wh.gone", b""), ("etc/new", b"n"),
                                                ("opq", None), ("opq/.wh..wh..opq", b""), ("opq/fresh", b"f")]))


def test_whiteouts_are_kept_as_aufs_files(aufs):
    base_and_child(aufs)
    d = aufs.diff_path("child")
    wh = os.lstat(os.path.join(d, "etc/.wh.gone"))
    assert stat.S_ISREG(wh.st_mode)  # not overlay's 0:0 character device
    assert stat.S_ISREG(os.lstat(os.path.join(d, "opq/.wh..wh..opq")).st_mode)
    assert not os.path.lexists(os.path.join(d, "etc/gone"))
    assert os.path.exists(os.path.join(aufs.diff_path("base"), "etc/gone"))  # the parent's branch is untouched


def test_changes_read_whiteouts_and_hide_aufs_metadata(aufs):
    base_and_child(aufs)
    d = aufs.diff_path("child")
    # what the module leaves in a branch it has mounted rw
    open(os.path.join(d, ".wh..wh.aufs"), "w").close()
    os.makedirs(os.path.join(d, ".wh..wh.plnk", "123.45"))
    open(os.path.join(d, ".wh..wh.plnk", "123.45", "link"), "w").close()
    os.makedirs(os.path.join(d, ".wh..wh.orph"))
    changes = dict(aufs.changes("child", None))
    assert changes["/etc/gone"] == DELETED
    assert changes["/etc/new"] == ADDED
    assert changes["/opq/fresh"] == ADDED
    assert not any(".wh." in p for p in changes), changes


def test_diff_tar_carries_aufs_whiteouts_as_they_are(aufs):
    base_and_child(aufs)
    d = aufs.diff_path("child")
    open(os.path.join(d, ".wh..wh.aufs"), "w").close()
    os.makedirs(os.path.join(d, ".wh..wh.plnk"))
    with tarfile.open(fileobj=aufs.diff("child", None), mode="r|") as tar:
        names = {m.name.rstrip("/") for m in tar}
    assert "etc/.wh.gone" in names
    assert "opq/.wh..wh..opq" in names
    assert not any(n.startswith(".wh..wh.") or "/.wh..wh.plnk" in n for n in names), names


def test_applying_aufs_metadata_from_a_tar_stores_nothing(aufs):
    aufs.create("base")
    aufs.apply_diff("base", None, layer_tar([(".wh..wh.plnk/1.2", b"p"), (".wh..wh.aufs", b""), ("real", b"r")]))
    assert sorted(os.listdir(aufs.diff_path("base"))) == ["real"]


def test_applying_an_aufs_metadata_directory_entry_stores_nothing(aufs):
    aufs.create("base")
    aufs.apply_diff("base", None, layer_tar([(".wh..wh.plnk", None), (".wh..wh.plnk/1.2", b"p"), ("real", b"r")]))
    assert sorted(os.listdir(aufs.diff_path("base"))) == ["real"]


def test_a_round_trip_through_diff_and_apply_keeps_the_whiteouts(aufs):
    base_and_child(aufs)
    data = aufs.diff("child", None).read()
    aufs.create("copy", "base")
    aufs.apply_diff("copy", "base", io.BytesIO(data))
    assert sorted(aufs.changes("copy", None)) == sorted(aufs.changes("child", None))
    assert os.path.isfile(os.path.join(aufs.diff_path("copy"), "etc/.wh.gone"))
