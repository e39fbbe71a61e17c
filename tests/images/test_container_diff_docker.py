"""Differential: one shell script of filesystem operations run in a container of a real dockerd 20.10 (its
own overlay2 and vfs) and in a graphdriver container (overlay2 and vfs backends), then `docker diff` against
`container diff`, and the layer `docker commit` + `docker save` makes against `container commit` + `image
save`'s, header by header (times and checksums aside) and byte for byte in content."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import tarfile

import pytest
from imgkit import BUSYBOX, docker_archive, ensure_busybox

import graphdriver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKENDS = ("overlay2", "vfs")
APPLETS = ("sh", "echo", "mkdir", "rm", "touch", "sleep", "mv", "ln", "chmod", "chown", "mkfifo", "mknod", "cp")
FILES = ("modify", "chmod", "chown", "touch", "del", "rename", "linksrc", "recreate", "file2dir", "xattr",
         "samemod", "samesize", "over", "under", "setuid")
DIRS = ("deltree", "deltree/a", "opq", "opq/sub", "dir2file", "mvdir", "mvdir/sub", "chmoddir", "chmoddir/in",
        "deep", "deep/lower", "keepdir")
SUBFILES = ("deltree/a/f", "opq/x", "opq/sub/y", "dir2file/in", "mvdir/f1", "mvdir/sub/f2", "chmoddir/in/f",
            "deep/lower/x", "keepdir/k")
#: Every kind of change the audit covers, in one run (busybox sh; the rest is done from outside: from_outside).
SCRIPT = r"""set -e
cd /data
echo new > new.txt
echo changed >> modify.txt
chmod 600 chmod.txt
chown 1000:1000 chown.txt
touch -d 2020-01-01 touch.txt
rm del.txt
rm -rf deltree
rm -rf opq && mkdir opq && echo z > opq/z
rm file2dir.txt && mkdir file2dir.txt && echo in > file2dir.txt/in
rm -rf dir2file && echo f > dir2file
mv rename.txt renamed.txt
mv mvdir mvdir2
ln linksrc.txt hardlink
echo a > newa && ln newa newb
ln -sfn new.txt sym
ln -s nowhere newsym
rm recreate.txt && echo recreate > recreate.txt
mkfifo fifo
mknod nulldev c 1 3
mkdir emptydir
mkdir -p newdeep/a/b/c && echo deep > newdeep/a/b/c/f
echo more >> deep/lower/x
chmod 700 chmoddir
chmod 644 samemod.txt
ln hl1 hl3
echo t > keepdir/tmp && rm keepdir/tmp
cp -p samesize.txt /tmp/ref && echo SAMESIZE > samesize.txt && touch -r /tmp/ref samesize.txt && rm /tmp/ref
mkdir -p long/{a}/{b} && echo l > long/{a}/{b}/{c}
echo u > ünïcødé
echo b > bigid && chown 3000000000:3000000001 bigid
echo o > old && touch -d "1960-01-01 00:00:00" old
echo c > cap
mv over.txt under.txt
rm hl2
ln -s modify.txt sym2 && chown -h 1000:1000 sym2
chmod 4755 setuid.txt
mkdir -m 2775 sgid
""".format(a="a" * 70, b="b" * 70, c="c" * 120)
#: A valid VFS_CAP_REVISION_2 value (cap_net_bind_service, effective), set from outside as the user.* xattr.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def base_layer() -> bytes:
    """busybox and the files the script works on (whole-second mtimes, as a pulled image has)."""
    ensure_busybox()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1_700_000_000, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d in ("bin", "etc", "tmp", "data", *(f"data/{d}" for d in DIRS)):
            add(d, tarfile.DIRTYPE, mode=0o755)
        with open(BUSYBOX, "rb") as f:
            add("bin/busybox", data=f.read(), mode=0o755)
        for a in APPLETS:
            add(f"bin/{a}", tarfile.SYMTYPE, link="busybox", mode=0o777)
        for name in (*(f"{n}.txt" for n in FILES), "hl1", *SUBFILES):
            add(f"data/{name}", data=f"{name}\n".encode())
        add("data/hl2", tarfile.LNKTYPE, link="data/hl1")
        add("data/sym", tarfile.SYMTYPE, link="modify.txt", mode=0o777)
    return buf.getvalue()


def from_outside(rootfs: str) -> None:
    """What busybox cannot do: a user.* xattr (not carried by a layer tar), a capability on a new file and
    on a lower file the script gave a second name, a socket (listed as added, never in a layer tar)."""
    data = os.path.join(rootfs, "data")
    os.setxattr(os.path.join(data, "xattr.txt"), "user.audit", b"v")
    for name in ("cap", "linksrc.txt"):
        os.setxattr(os.path.join(data, name), "security.capability", CAPABILITY)
    here, sock = os.open(".", os.O_RDONLY | os.O_DIRECTORY), socket.socket(socket.AF_UNIX)
    try:
        os.chdir(data)  # a relative name: the full path may be past AF_UNIX's 108 bytes
        sock.bind("sock")
    finally:
        os.fchdir(here)
        os.close(here)
        sock.close()


def last_layer(saved: bytes) -> bytes:
    """The top layer's tar of a `docker save` / `image save` archive."""
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        [entry] = json.load(tf.extractfile("manifest.json"))
        return tf.extractfile(entry["Layers"][-1]).read()


def headers(layer: bytes) -> list[tuple[bytes, bytes]]:
    """Each block group of a layer tar: (header without mtime and checksum, data)."""
    out, i = [], 0
    while i + 512 <= len(layer) and layer[i:i + 512] != bytes(512):
        h = bytearray(layer[i:i + 512])
        size = int(bytes(h[124:136]).strip(b"\0 ") or b"0", 8)
        h[136:156] = bytes(20)
        out.append((bytes(h), layer[i + 512:i + 512 + size]))
        i += 512 + -(-size // 512) * 512
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("diffs") / "base.tar")
    docker_archive(path, [base_layer()], ["gddiff/base:1"])
    return path


@pytest.fixture(scope="module")
def dockerd_runs(archive: str) -> dict[str, tuple[list[str], bytes]]:
    """Per dockerd storage driver: (`docker diff` lines by path, the committed layer's tar)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from support.dockerd import Dockerd, ensure_docker_packages

    ensure_docker_packages()
    runs = {}
    for driver in BACKENDS:
        with Dockerd(driver) as d:
            d.docker("load", "-i", archive)
            d.docker("run", "-d", "--name", "audit", "gddiff/base:1", "sleep", "600")
            d.docker("exec", "audit", "sh", "-c", SCRIPT)
            pid = int(d.docker("inspect", "-f", "{{.State.Pid}}", "audit").stdout)
            from_outside(f"/proc/{pid}/root")
            d.docker("kill", "audit")
            diff = sorted(d.docker("diff", "audit").stdout.splitlines(), key=lambda line: line[2:])
            d.docker("commit", "audit", "gddiff/base:2")
            runs[driver] = (diff, last_layer(d.docker_bytes("save", "gddiff/base:2")))
    return runs


@pytest.fixture(params=BACKENDS)
def ours(request: pytest.FixtureRequest, root: str, archive: str) -> tuple[str, list[str], bytes]:
    """(backend, `container diff` lines by path, the committed layer's tar) of the same run here."""
    backend = request.param
    tree = os.path.dirname(os.path.dirname(graphdriver.__file__))  # the graphdriver under test (`-m`: cwd first)
    env = {**os.environ, "PYTHONPATH": tree}

    def gd(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "--driver", backend, *args],
                           capture_output=True, text=True, env=env, cwd=tree, timeout=120)
        assert p.returncode == 0, f"graphdriver {' '.join(args)}: {p.stderr}"
        return p.stdout

    gd("image", "load", "-q", "-i", archive)
    gd("container", "create", "gddiff/base:1", "--name", "audit")
    gd("container", "run", "audit", "--", "sh", "-c", SCRIPT)
    merged = gd("container", "mount", "audit").strip()
    try:
        from_outside(merged)
    finally:
        gd("container", "umount", "audit")
    diff = sorted(gd("container", "diff", "audit").splitlines(), key=lambda line: line[2:])
    gd("container", "commit", "audit", "gddiff/base:2")
    saved = os.path.join(root, "saved.tar")
    gd("image", "save", "gddiff/base:2", "-o", saved)
    with open(saved, "rb") as f:
        return backend, diff, last_layer(f.read())


def test_dockerd_lists_the_same_changes_on_both_its_drivers(dockerd_runs):
    """dockerd's overlay2 Changes is its naive one, as vfs's: one list (what the fixes here rely on)."""
    assert dockerd_runs["overlay2"][0] == dockerd_runs["vfs"][0]
    assert "C /data/samemod.txt" not in dockerd_runs["overlay2"][0]  # a copy-up only: no change


def test_container_diff_is_docker_diff(dockerd_runs, ours):
    backend, diff, _ = ours
    assert diff == dockerd_runs[backend][0]


def test_committed_layer_is_dockers(dockerd_runs, ours):
    """The same entries in the same order with the same headers (owners, modes, types, link names, device
    numbers, whiteouts and opaque markers) and content, mtimes aside: native diff against dockerd's overlay2,
    naive against its vfs."""
    backend, _, layer = ours
    theirs = headers(dockerd_runs[backend][1])
    got = headers(layer)
    assert [h[:100].rstrip(b"\0") for h, _ in got] == [h[:100].rstrip(b"\0") for h, _ in theirs]
    assert got == theirs
