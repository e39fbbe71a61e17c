"""Archive variants for the differential ``image load`` tests (against ``docker load``), built offline and
independently of graphdriver: docker-save archives assembled entry by entry, layer tars with the odd
corners of the format (whiteouts, hardlinks, long names, sparse files, xattrs, devices, big ids), and a
fingerprint of a layer directory to compare two stores' files."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field

import zstandard
from imgkit import config_for, sha256

MTIME = 1_700_000_000
RECENT = MTIME  # the latest time these archives give: a directory newer was left to the apply


# -- layer tars -------------------------------------------------------------------------------------
def entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``(header, data)`` pairs, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            if info.isreg():
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def files(spec: dict[str, bytes | str | None], mode: int = 0o644) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Entries of ``path -> content`` (None: a directory; ``->target``: a symlink; ``=>target``: a hardlink)."""
    out = []
    for path, content in spec.items():
        if content is None:
            out.append((entry(path, tarfile.DIRTYPE, 0o755), b""))
        elif isinstance(content, str) and content[:2] in ("->", "=>"):
            kind = tarfile.SYMTYPE if content[:2] == "->" else tarfile.LNKTYPE
            out.append((entry(path, kind, 0o777 if kind == tarfile.SYMTYPE else mode, linkname=content[2:]), b""))
        else:
            out.append((entry(path, mode=mode), content.encode() if isinstance(content, str) else content))
    return out


def base_layer() -> bytes:
    return tar_of(files({"a": None, "a/f1": "one\n", "a/f2": "two\n", "b": None, "b/x": "x\n", "c": "c\n",
                         "d": None, "d/keep": "keep\n", "etc": None, "etc/motd": "base\n"}))


def whiteout_layer() -> bytes:
    """Over :func:`base_layer`: ``a`` made opaque (with a new file), ``c`` and ``b/x`` whited out."""
    return tar_of(files({"a": None, "a/.wh..wh..opq": b"", "a/new": "new\n", ".wh.c": b"", "b": None,
                         "b/.wh.x": b"", "d/added": "added\n"}))


def odd_layer() -> bytes:
    """Hardlinks, PAX long names and link names, xattrs, a device node and a fifo, setuid, big ids."""
    long_dir = "/".join(["d" * 60] * 3)
    long_name = f"{long_dir}/{'f' * 120}"
    e = files({"h": None, "h/orig": "linked\n", "h/link": "=>h/orig", "h/link2": "=>h/orig"})
    e += [(entry(d, tarfile.DIRTYPE, 0o755), b"") for d in ("d" * 60, "/".join(["d" * 60] * 2), long_dir)]
    e += [(entry(long_name), b"long\n"),
          (entry("longsym", tarfile.SYMTYPE, 0o777, linkname=long_name), b""),
          (entry("longhard", tarfile.LNKTYPE, linkname=long_name), b""),
          (entry("xa", pax_headers={"SCHILY.xattr.user.color": "blue", "SCHILY.xattr.trusted.k": "v"}), b"x\n"),
          (entry("dev", tarfile.DIRTYPE, 0o755), b""),
          (entry("dev/null2", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3), b""),
          (entry("dev/fifo", tarfile.FIFOTYPE, 0o600), b""),
          (entry("suid", mode=0o4755), b"#!/bin/sh\n"),
          (entry("sgid", tarfile.DIRTYPE, 0o2775), b""),
          (entry("bigid", uid=100_000, gid=200_000), b"big\n"),
          (entry("hugeid", uid=3_000_000, gid=4_000_000), b"huge\n")]
    return tar_of(e)


def sparse_layer(fmt: str) -> bytes:
    """A GNU tar of one sparse file (``gnu``: old GNU 'S' headers; ``pax``: GNU.sparse 1.0) and a plain one."""
    with tempfile.TemporaryDirectory(prefix="loadkit-") as d:
        with open(os.path.join(d, "sparse"), "wb") as f:
            f.write(b"head")
            f.seek(1 << 20)
            f.write(b"middle")
            f.truncate(3 << 20)
        with open(os.path.join(d, "plain"), "wb") as f:
            f.write(b"plain\n")
        for n in ("sparse", "plain"):
            os.utime(os.path.join(d, n), (MTIME, MTIME))
        return subprocess.run(["tar", "-C", d, f"--format={fmt}", "--sparse", "--owner=0", "--group=0",
                               "--numeric-owner", "-cf", "-", "sparse", "plain"],
                              check=True, capture_output=True).stdout


def compress(blob: bytes, codec: str) -> bytes:
    """``blob`` compressed by ``codec``: gzip, zstd, xz, bzip2 (else as it is)."""
    if codec == "gzip":
        return gzip.compress(blob, mtime=0)
    if codec == "zstd":
        return zstandard.ZstdCompressor().compress(blob)
    if codec == "xz":
        return lzma.compress(blob)
    if codec == "bzip2":
        return bz2.compress(blob)
    return blob


# -- docker-save archives ------------------------------------------------------------------------------
@dataclass
class Image:
    """One image of an archive: its layer tars (uncompressed), tags, and the config built from them."""

    layers: list[bytes]
    tags: list[str] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def diff_ids(self) -> list[str]:
        return [sha256(t) for t in self.layers]

    @property
    def config(self) -> bytes:
        return config_for(self.diff_ids, **self.extra)

    @property
    def image_id(self) -> str:
        return sha256(self.config)


def save_entries(images: list[Image], codec: str = "plain", legacy: bool = True,
                 repositories: bool = True) -> dict[str, bytes]:
    """The files of a docker-save archive as docker 20.10 writes it (``<v1>/layer.tar``, ``<v1>/json``,
    ``<v1>/VERSION``, ``<config hex>.json``, manifest.json, repositories), layers compressed by ``codec``."""
    out: dict[str, bytes] = {}
    manifest, repos = [], {}
    for img in images:
        names, parent = [], ""
        for tar in img.layers:
            v1 = hashlib.sha256(f"{parent} {sha256(tar)}".encode()).hexdigest()
            out[f"{v1}/layer.tar"] = compress(tar, codec)
            if legacy:
                out[f"{v1}/VERSION"] = b"1.0"
                out[f"{v1}/json"] = json.dumps({"id": v1, **({"parent": parent} if parent else {})}).encode()
            names.append(f"{v1}/layer.tar")
            parent = v1
        out[img.image_id.split(":")[1] + ".json"] = img.config
        manifest.append({"Config": img.image_id.split(":")[1] + ".json", "RepoTags": img.tags, "Layers": names})
        for t in img.tags or []:
            repo, _, tag = t.rpartition(":")
            repos.setdefault(repo, {})[tag] = parent
    out["manifest.json"] = json.dumps(manifest).encode()
    if repositories and repos:
        out["repositories"] = json.dumps(repos).encode()
    return out


def write_archive(path: str, entries: dict[str, bytes | str], outer: str = "plain") -> str:
    """A tar of ``name -> bytes`` (``->target``: a symlink), directories added for nested names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        dirs: set[str] = set()
        for name, data in entries.items():
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in dirs and not d.startswith("..") and not name.startswith("/"):
                    dirs.add(d)
                    tf.addfile(entry(d, tarfile.DIRTYPE, 0o755))
            if isinstance(data, str) and data.startswith("->"):
                tf.addfile(entry(name, tarfile.SYMTYPE, 0o777, linkname=data[2:]))
            else:
                info = entry(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    with open(path, "wb") as f:
        f.write(compress(buf.getvalue(), outer))
    return path


# -- comparing files ------------------------------------------------------------------------------------
def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names
                        if not n.startswith("security.selinux")))


def fingerprint(top: str) -> dict[str, tuple]:
    """Every entry under ``top`` (relative path -> type, mode, owner, size, content digest or link target or
    device, mtime (``"now"`` for whiteouts and directories the archive leaves to the apply), xattrs), plus
    ``"<hardlinks>"``: the groups of paths sharing an inode."""
    out: dict[str, tuple] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, top)
            st = os.lstat(full)
            what: object = None
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()[:16]
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                what = (os.major(st.st_rdev), os.minor(st.st_rdev))
            when: object = int(st.st_mtime)
            if what == (0, 0) or (stat.S_ISDIR(st.st_mode) and st.st_mtime > RECENT):
                when = "now"  # a whiteout, a directory the apply changed and the archive does not name
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else 0, what, when, _xattrs(full))
    out["<hardlinks>"] = tuple(sorted(tuple(sorted(g)) for g in inodes.values() if len(g) > 1))
    return out


def docker_layer_dir(data_root: str, driver: str, chain_id: str) -> str:
    """Where a dockerd keeps the files of the image layer ``chain_id``: overlay2's ``diff`` (that layer's own
    files), vfs's directory (the whole rootfs up to it)."""
    with open(f"{data_root}/image/{driver}/layerdb/sha256/{chain_id.split(':')[1]}/cache-id") as f:
        cache = f.read().strip()
    return f"{data_root}/overlay2/{cache}/diff" if driver == "overlay2" else f"{data_root}/vfs/dir/{cache}"
