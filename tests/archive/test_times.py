"""Times Docker's unpack does not keep: a file's or directory's mtime before 1970 or past 2262 is set to
the epoch (moby's Chtimes), symlinks keep theirs. graphdriver kept them, so a layer unpacked here, and
what a container committed from it exports, differed from dockerd's."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from graphdriver import open_driver


def _tar(members: list[tuple[str, bytes, float, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, mtime, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, mtime, 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.SYMTYPE:
                info.linkname = "old"
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_times_docker_does_not_keep_unpack_as_the_epoch(root: str, backend: str) -> None:
    d = open_driver(root, backend)
    d.create("base")
    d.apply_diff("base", None, io.BytesIO(_tar([
        ("dir", tarfile.DIRTYPE, -5, b""),
        ("dir/old", tarfile.REGTYPE, -1000, b"o"),
        ("late", tarfile.REGTYPE, 10413792000, b"l"),
        ("link", tarfile.SYMTYPE, -1000, b""),
        ("fine", tarfile.REGTYPE, 1_600_000_000, b"f"),
        ("again", tarfile.REGTYPE, -1000, b"1"),
        ("again", tarfile.REGTYPE, 1_500_000_000, b"2"),  # the last entry of a name decides
    ])))
    top = d.diff_path("base")

    def mtime(name: str) -> int:
        return os.lstat(os.path.join(top, name)).st_mtime_ns // 10**9

    assert [mtime(n) for n in ("dir", "dir/old", "late")] == [0, 0, 0]
    assert mtime("link") == -1000 and mtime("fine") == 1_600_000_000 and mtime("again") == 1_500_000_000
    with d.diff("base", None) as s, tarfile.open(fileobj=io.BytesIO(s.read())) as t:
        exported = {m.name: (m.mtime, "mtime" in m.pax_headers) for m in t}
    assert exported["dir/old"] == (0, False) and exported["late"] == (0, False)
