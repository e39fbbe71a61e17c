"""Layer tars byte for byte as Docker writes them: the headers of our diff of a layer are handed to Go's
archive/tar (the writer moby's pkg/archive uses, Format PAX; Go from Debian's packages), and the two
tars must be identical, so a layer's diffID is the one dockerd computes. Cases that need PAX records
are the point: long names (split into ustar's prefix where Go splits them), names that are not ASCII,
long link targets, owners and times that do not fit octal, ``security.capability``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable

import pytest

from graphdriver import open_driver

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def gotar(tmp_path_factory) -> str:
    """The Go reference writer, built from tests/archive/gotar with the Go toolchain ci/containerd-go-debs
    extracts from Debian's packages (the one containerd's suite is built with; cached)."""
    script = os.path.join(HERE, "..", "..", "ci", "containerd-go-debs")
    fetched = subprocess.run(["bash", script], capture_output=True, text=True, timeout=900)
    if fetched.returncode != 0:
        pytest.skip(f"no Go toolchain from Debian's packages: {fetched.stderr.strip()[-300:]}")
    env_file = os.path.join(os.path.dirname(fetched.stdout.strip()), "suite.env")
    goroot = next(line.split("=", 1)[1].strip().strip("'\"") for line in open(env_file)
                  if line.startswith("GD_GOROOT="))
    work = tmp_path_factory.mktemp("gotar")
    env = {**os.environ, "GOROOT": goroot, "GOCACHE": str(work / "cache"), "GOPATH": str(work / "gopath"),
           "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    subprocess.run([os.path.join(goroot, "bin", "go"), "build", "-o", str(work / "gotar"),
                    os.path.join(HERE, "gotar", "main.go")], env=env, check=True, capture_output=True, timeout=300)
    return str(work / "gotar")


def _b64(raw: bytes | str) -> str:
    return base64.b64encode(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")).decode()


def headers_of(data: bytes) -> list[dict]:
    """Each entry of a tar as Go's tar.Header fields (mode with its type bits, from the header block)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as t:
        for m in t.getmembers():
            block = data[m.offset_data - 512:m.offset_data]
            xattrs = {k[len("SCHILY.xattr."):]: _b64(v) for k, v in m.pax_headers.items()
                      if k.startswith("SCHILY.xattr.")}
            body = t.extractfile(m).read() if m.isreg() else b""
            out.append({"Name": _b64(m.name + ("/" if m.isdir() else "")), "Link": _b64(m.linkname),
                        "Data": _b64(body), "Type": ord(m.type), "Mode": int(block[100:107], 8), "Uid": m.uid,
                        "Gid": m.gid, "Size": len(body), "Mtime": int(m.mtime), "Uname": m.uname,
                        "Gname": m.gname, "Major": m.devmajor, "Minor": m.devminor, "Xattrs": xattrs})
    return out


def write_file(top: str, name: bytes, data: bytes = b"x", mtime: int = 1_600_000_000) -> str:
    path = os.path.join(os.fsencode(top), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))
    return os.fsdecode(path)


CASES: dict[str, Callable[[str], object]] = {
    "short names": lambda t: write_file(t, b"etc/motd", b"hello"),
    "a long name ustar's prefix carries": lambda t: write_file(t, b"d" * 60 + b"/" + b"f" * 59),
    "a long name it cannot split": lambda t: write_file(t, b"x" * 150),
    "a name past 256 bytes": lambda t: write_file(t, (b"p" * 90 + b"/") * 3 + b"leaf"),
    "a long directory": lambda t: os.makedirs(os.path.join(t, "q" * 120, "r" * 30)),
    "non-ASCII names": lambda t: write_file(t, "café/crème.txt".encode()),
    "names that are not UTF-8": lambda t: write_file(t, b"bad\xff\xfename"),
    "a long link target": lambda t: os.symlink("t" * 150, os.path.join(t, "lnk")),
    "a time before 1970": lambda t: write_file(t, b"old", mtime=-86401),
    "an owner past octal": lambda t: os.chown(write_file(t, b"u"), 3_000_000, 5),
    "security.capability": lambda t: os.setxattr(write_file(t, b"bin/ping"), "security.capability",
                                                 b"\x01\x00\x00\x02" + bytes(16)),
    "devices, fifos, hard links, setuid and sticky": lambda t: (
        os.mknod(os.path.join(t, "null"), 0o20666, os.makedev(1, 3)), os.mkfifo(os.path.join(t, "fifo")),
        os.link(write_file(t, b"one"), os.path.join(t, "two")), os.chmod(write_file(t, b"su"), 0o4755),
        os.makedirs(os.path.join(t, "tmp")), os.chmod(os.path.join(t, "tmp"), 0o1777)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_tars_are_byte_for_byte_what_gos_writer_makes(root: str, gotar: str, case: str) -> None:
    d = open_driver(root, "vfs")
    d.create("base")
    CASES[case](d.get("base"))
    d.put("base")
    with d.diff("base", None) as stream:
        ours = stream.read()
    go = subprocess.run([gotar], input=json.dumps(headers_of(ours)).encode(), capture_output=True, check=True,
                        timeout=60).stdout
    first = next((i for i in range(0, max(len(go), len(ours)), 512) if go[i:i + 512] != ours[i:i + 512]), None)
    assert first is None, f"first difference in the block at {first}: Go {go[first:first + 160]!r}, " \
                          f"ours {ours[first:first + 160]!r}"


def test_whiteouts_and_opaque_markers_of_an_overlay_layer_are_what_gos_writer_makes(root: str, gotar: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("base")
    top = d.get("base")
    write_file(top, b"etc/motd")
    write_file(top, b"opt/old/f")
    d.put("base")
    d.create("ctr", "base", rw=True)
    top = d.get("ctr")
    os.unlink(os.path.join(top, "etc", "motd"))
    shutil.rmtree(os.path.join(top, "opt", "old"))
    write_file(top, b"opt/old/new")  # a directory replaced: opaque
    d.put("ctr")
    with d.diff("ctr", "base") as stream:
        ours = stream.read()
    names = [m["Name"] for m in headers_of(ours)]
    assert _b64("etc/.wh.motd") in names and _b64("opt/old/.wh..wh..opq") in names
    go = subprocess.run([gotar], input=json.dumps(headers_of(ours)).encode(), capture_output=True, check=True,
                        timeout=60).stdout
    assert go == ours
