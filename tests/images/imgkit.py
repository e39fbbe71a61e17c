"""Test images built offline, independently of graphdriver's own code: layer tars made with tarfile,
docker-save archives and OCI layouts assembled by hand, digests taken with hashlib."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "ls", "hostname", "mkdir", "rm", "touch", "true", "ip", "sleep", "mv")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainIDs computed here, independently: chain(n) = sha256(chain(n-1) + ' ' + diff(n))."""
    out = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256((out[-1] + " " + d).encode()).hexdigest())
    return out


def layer_tar(files: dict[str, bytes | str | None], mode: int = 0o644) -> bytes:
    """A layer tar: ``path -> content`` (None: a directory; ``->target`` string: a symlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(content, str) and content.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, content[2:]
                tf.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size, info.mode = len(data), mode
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def busybox_layer() -> bytes:
    """A rootfs layer with Debian's static busybox and a few applet links."""
    ensure_busybox()
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(bb), 0o755, 1_700_000_000
        tf.addfile(info, io.BytesIO(bb))
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "busybox", 1_700_000_000
            tf.addfile(info)
    return buf.getvalue()


def ensure_busybox() -> None:
    """apt-get install busybox-static (a static /bin/busybox runs inside a bare chroot) when missing."""
    def installed() -> bool:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "busybox-static"], capture_output=True, text=True)
        return q.stdout.endswith("installed") and os.path.exists(BUSYBOX)
    if installed():
        return
    import fcntl

    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open("/tmp/.graphdriver-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "busybox-static"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)


def config_for(diff_ids: list[str], **extra) -> bytes:
    cfg = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
           "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                      "Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(diff_ids))]}
    cfg.update(extra)
    return json.dumps(cfg).encode()


@dataclass
class Built:
    path: str
    image_id: str
    diff_ids: list[str]
    chain_ids: list[str]
    layer_blobs: list[bytes]


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tf.addfile(info, io.BytesIO(data))


def docker_archive(path: str, layers: list[bytes], tags: list[str], *, gzip_outer: bool = False,
                   gzip_layers: bool = False) -> Built:
    """The legacy ``docker save`` format: <v1>/layer.tar, <configid>.json, manifest.json."""
    diff_ids = [sha256(tar) for tar in layers]
    cfg = config_for(diff_ids)
    image_id = sha256(cfg)
    blobs = [gzip.compress(t, mtime=0) if gzip_layers else t for t in layers]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        names = []
        for i, blob in enumerate(blobs):
            v1 = hashlib.sha256(f"v1-{i}-{diff_ids[i]}".encode()).hexdigest()
            _add(tf, f"{v1}/VERSION", b"1.0")
            _add(tf, f"{v1}/layer.tar", blob)
            names.append(f"{v1}/layer.tar")
        _add(tf, image_id.split(":")[1] + ".json", cfg)
        _add(tf, "manifest.json", json.dumps([{"Config": image_id.split(":")[1] + ".json",
                                              "RepoTags": tags, "Layers": names}]).encode())
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if gzip_outer else data)
    return Built(path, image_id, diff_ids, chain_ids(diff_ids), blobs)


def oci_layout(path: str, layers: list[bytes], ref_name: str, *, as_tar: bool = False,
               compress: str = "gzip") -> Built:
    """An OCI image layout (directory, or a tar of one) with compressed layer blobs and an index."""
    import zstandard

    diff_ids = [sha256(t) for t in layers]
    cfg = config_for(diff_ids)
    if compress == "gzip":
        blobs = [gzip.compress(t, mtime=0) for t in layers]
        mt = "application/vnd.oci.image.layer.v1.tar+gzip"
    else:
        blobs = [zstandard.ZstdCompressor().compress(t) for t in layers]
        mt = "application/vnd.oci.image.layer.v1.tar+zstd"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(cfg), "size": len(cfg)},
        "layers": [{"mediaType": mt, "digest": sha256(b), "size": len(b)} for b in blobs]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest),
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for blob in [cfg, manifest, *blobs]:
        files["blobs/sha256/" + sha256(blob).split(":")[1]] = blob
    if as_tar:
        with tarfile.open(path, "w") as tf:
            for name, data in files.items():
                _add(tf, name, data)
    else:
        shutil.rmtree(path, ignore_errors=True)
        for name, data in files.items():
            full = os.path.join(path, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
    return Built(path, sha256(cfg), diff_ids, chain_ids(diff_ids), blobs)


def tree_state(path: str) -> list[tuple[str, int, int]]:
    """Every entry under ``path`` as (relative path, mode, size): to assert 'nothing changed'."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        for n in sorted(dirnames + filenames):
            full = os.path.join(dirpath, n)
            st = os.lstat(full)
            out.append((os.path.relpath(full, path), st.st_mode, st.st_size if not os.path.isdir(full) else 0))
    return sorted(out)
