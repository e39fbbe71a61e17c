"""What ``diff`` writes, header by header, as Docker's tar writer (Go's archive/tar) writes it: mtimes
before 1970 in a PAX record, only ``security.capability`` of the xattrs, sparse files as plain entries."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from graphdriver import open_driver

CAP = bytes.fromhex("0100000200200000000000000000000000000000")


@pytest.fixture(params=["overlay2", "vfs"])
def drv(request, root):
    return open_driver(root, request.param)


def _export(drv, make) -> tuple[bytes, dict[str, tarfile.TarInfo]]:
    drv.create("one")
    top = drv.get("one")
    try:
        make(top)
    finally:
        drv.put("one")
    with drv.diff("one", None) as s:
        blob = s.read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        return blob, {m.name: m for m in t}


def test_mtime_before_1970_is_a_pax_record(drv):
    def make(top: str) -> None:
        p = os.path.join(top, "old")
        with open(p, "wb") as f:
            f.write(b"x")
        os.utime(p, ns=(0, -86400 * 10**9 - 5 * 10**8))  # 1969-12-30 23:59:59.5

    _blob, members = _export(drv, make)
    m = members["old"]
    assert m.pax_headers.get("mtime") == "-86401"  # whole seconds, down (Go's Truncate(time.Second))
    assert m.mtime == -86401


def test_only_security_capability_is_exported(drv):
    def make(top: str) -> None:
        p = os.path.join(top, "bin")
        with open(p, "wb") as f:
            f.write(b"x")
        os.setxattr(p, "user.mime", b"text/plain")
        os.setxattr(p, "trusted.thing", b"t")
        os.setxattr(p, "security.capability", CAP)
        os.mkdir(os.path.join(top, "d"))
        os.setxattr(os.path.join(top, "d"), "user.x", b"y")

    _blob, members = _export(drv, make)
    assert {k: v for k, v in members["bin"].pax_headers.items() if k.startswith("SCHILY")} == \
        {"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}
    assert members["d"].pax_headers == {}



def test_a_hard_link_carries_the_capability_as_mobys_writer(drv):
    """moby's writer reads ``security.capability`` into every header before it tells a hard link, so a link
    entry carries it too (measured: dockerd 20.10's committed layer, tests/images/test_container_diff_docker.py)."""
    def make(top: str) -> None:
        p = os.path.join(top, "ping")
        with open(p, "wb") as f:
            f.write(b"x")
        os.setxattr(p, "security.capability", CAP)
        os.link(p, os.path.join(top, "ping2"))

    _blob, members = _export(drv, make)
    link = members["ping2"]
    assert link.type == tarfile.LNKTYPE and link.linkname == "ping"
    assert link.pax_headers == members["ping"].pax_headers == \
        {"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}

def test_sparse_file_is_a_plain_regular_entry(drv):
    def make(top: str) -> None:
        with open(os.path.join(top, "huge"), "wb") as f:
            f.truncate(4 << 20)
            f.seek(1 << 20)
            f.write(b"data")

    blob, members = _export(drv, make)
    m = members["huge"]
    assert m.type == tarfile.REGTYPE and m.size == 4 << 20 and not m.pax_headers
    assert b"GNUSparseFile" not in blob and b"GNU.sparse" not in blob
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        data = t.extractfile("huge").read()
    assert data[(1 << 20):(1 << 20) + 4] == b"data" and data.count(0) == (4 << 20) - 4
