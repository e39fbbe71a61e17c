"""Image archives in and out: ``docker save`` tarballs and OCI image layouts; digests, diffIDs, chainIDs.

Reading never extracts the archive: a plain tar is indexed once and each blob is read in place (pread)
and streamed through :class:`LayerStream` (layerstream.py). A compressed outer archive is first
decompressed to a temporary file. Writing is in imagewrite.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import InvalidImage
from .files import naming
from .layerstream import CHUNK, Decoder, LayerStream, compression_of

__all__ = ["LayerStream", "compression_of", "chain_ids", "open_source", "read_images"]

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_JSON = 16 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
#: The diffID of an empty tar (1024 zero bytes): docker's empty layer, which a commit does not add.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


# -- digests ---------------------------------------------------------------------------------------
def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, what: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>``, else raise InvalidImage naming ``what``."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise InvalidImage(f"{what}: unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker/OCI ChainIDs: chain(0) = diffID(0), chain(n) = sha256(chain(n-1) + " " + diffID(n))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha256_digest(f"{out[-1]} {d}".encode()))
    return out


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``."""
    return digest.split(":", 1)[1]


# -- archive sources ---------------------------------------------------------------------------------
class _Slice(io.RawIOBase):
    """``size`` bytes of an open file from ``offset``, read with pread (no shared file position)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._pos, self._end = fd, offset, offset + size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self._end - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._pos)
        if not data:
            raise InvalidImage("truncated archive: a blob ends past the end of the file")
        self._pos += len(data)
        return data

    def readinto(self, b) -> int:  # noqa: ANN001
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _safe(path: str) -> str:
    norm = posixpath.normpath("/" + path).lstrip("/")
    if not path or path.startswith("/") or ".." in path.split("/") or not norm:
        raise InvalidImage(f"archive path {path!r} escapes the archive")
    return norm


class Source:
    """Named files of an archive or layout directory: ``has``, ``read_json``, ``open`` (stream, size)."""

    label = ""

    def has(self, path: str) -> bool:
        raise NotImplementedError

    def open(self, path: str) -> tuple[BinaryIO, int]:
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        stream, size = self.open(path)
        if size > MAX_JSON:
            raise InvalidImage(f"{path} in {self.label} is too large ({size} bytes) for a JSON document")
        data = stream.read()
        if len(data) != size:
            raise InvalidImage(f"truncated archive {self.label}: {path} is cut short")
        return data

    def read_json(self, path: str) -> object:
        try:
            return json.loads(self.read_bytes(path))
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidImage(f"{path} in {self.label} is not valid JSON: {e}") from None

    def close(self) -> None:
        """Release the file and any temporary copy."""


class DirSource(Source):
    """An OCI layout (or an extracted docker-save archive) as a directory."""

    def __init__(self, path: str) -> None:
        self.path, self.label = path, path

    def _real(self, path: str) -> str:
        full = os.path.realpath(os.path.join(self.path, _safe(path)))
        if not full.startswith(os.path.realpath(self.path) + os.sep):
            raise InvalidImage(f"archive path {path!r} escapes {self.path}")
        return full

    def has(self, path: str) -> bool:
        return os.path.isfile(self._real(path))

    def open(self, path: str) -> tuple[BinaryIO, int]:
        try:
            f = open(self._real(path), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise InvalidImage(f"missing blob {path} in {self.label}") from None
        return f, os.fstat(f.fileno()).st_size


class TarSource(Source):
    """A plain tar indexed once; members are read in place."""

    def __init__(self, path: str, label: str | None = None, cleanup: str | None = None) -> None:
        self.label, self._cleanup = label or path, cleanup
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        file_size = os.fstat(self._fd).st_size
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tf:
                for m in tf:
                    name = posixpath.normpath(m.name).lstrip("/")
                    if m.isfile() and m.offset_data + m.size > file_size:
                        raise InvalidImage(f"truncated archive {self.label}: {m.name} is cut short")
                    self._members[name] = m
        except (tarfile.TarError, EOFError) as e:
            self.close()
            raise InvalidImage(f"corrupt or truncated archive {self.label}: {e}") from None
        except BaseException:
            self.close()
            raise

    def _member(self, path: str) -> tarfile.TarInfo:
        name = _safe(path)
        for _ in range(16):
            m = self._members.get(name)
            if m is None:
                raise InvalidImage(f"missing blob {path} in {self.label}")
            if m.issym():
                name = _safe(posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname)))
            elif m.islnk():
                name = _safe(m.linkname)
            else:
                return m
        raise InvalidImage(f"too many links resolving {path} in {self.label}")

    def has(self, path: str) -> bool:
        try:
            return self._member(path).isfile()
        except InvalidImage:
            return False

    def open(self, path: str) -> tuple[BinaryIO, int]:
        m = self._member(path)
        if not m.isfile():
            raise InvalidImage(f"{path} in {self.label} is not a file")
        return _Slice(self._fd, m.offset_data, m.size), m.size  # type: ignore[return-value]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._cleanup:
            try:
                os.unlink(self._cleanup)
            except FileNotFoundError:
                pass


def open_source(path: str, tmpdir: str, stdin: BinaryIO | None = None) -> Source:
    """A directory, a plain tar, or a compressed tar (decompressed into ``tmpdir`` first).

    ``path`` "-" reads ``stdin`` (a pipe cannot be read in place: it is copied into ``tmpdir`` first).
    """
    if path != "-" and os.path.isdir(path):
        return DirSource(path)
    try:
        src = stdin if path == "-" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise InvalidImage(f"no such archive: {path}") from None
    label = "standard input" if path == "-" else path
    try:
        head = src.read(8)
        kind = compression_of(head)
        if not kind and path != "-":
            return TarSource(path)
        fd, tmp = tempfile.mkstemp(prefix="load-", suffix=".tar", dir=tmpdir)
        try:
            decoder = Decoder(kind)
            with os.fdopen(fd, "wb") as dst:
                chunk = head
                while chunk:
                    dst.write(decoder.decode(chunk))
                    chunk = src.read(CHUNK)
                decoder.finish()
            return TarSource(tmp, label=label, cleanup=tmp)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):  # a TarSource that failed removed it already
                os.unlink(tmp)
            if isinstance(e, OSError):  # a full disk, say: name where it was writing
                raise naming(e, tmpdir) from None
            raise
    finally:
        if path != "-":
            src.close()


# -- what an archive holds ---------------------------------------------------------------------------
@dataclass
class LayerSpec:
    """One layer blob: where it is, and its digest when the format gives one."""

    path: str
    digest: str | None = None
    size: int | None = None


@dataclass
class ImageSpec:
    """One image found in an archive."""

    config: bytes
    image_id: str
    diff_ids: list[str]
    layers: list[LayerSpec]
    tags: list[str] = field(default_factory=list)
    parent: str = ""  # manifest.json's Parent: the id of the image this one was committed from


def _config(src: Source, path: str, digest: str | None, size: int | None) -> tuple[bytes, dict]:
    raw = src.read_bytes(path)
    if digest is not None and sha256_digest(raw) != digest:
        raise InvalidImage(f"digest mismatch for config {path}: expected {digest}, got {sha256_digest(raw)}")
    if size is not None and len(raw) != size:
        raise InvalidImage(f"size mismatch for config {path}: expected {size}, got {len(raw)}")
    try:
        cfg = json.loads(raw)
        diff_ids = cfg["rootfs"]["diff_ids"]
        if cfg["rootfs"].get("type") != "layers" or not isinstance(diff_ids, list):
            raise ValueError("rootfs is not of type layers")
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidImage(f"image config {path} in {src.label} is invalid: {e}") from None
    for d in diff_ids:
        check_digest(d, f"diff_id in {path}")
    return raw, cfg


def blob_path(digest: str) -> str:
    """``blobs/sha256/<hex>`` of a digest."""
    return "blobs/sha256/" + hex_of(digest)


def _docker_images(src: Source) -> list[ImageSpec]:
    manifest = src.read_json("manifest.json")
    if not isinstance(manifest, list):
        raise InvalidImage(f"manifest.json in {src.label} is not a list")
    out = []
    for entry in manifest:
        try:
            cfg_path, layers, tags = entry["Config"], entry["Layers"], entry.get("RepoTags") or []
            parent = entry.get("Parent") or ""
        except (KeyError, TypeError, AttributeError) as e:
            raise InvalidImage(f"manifest.json in {src.label}: bad entry ({e})") from None
        if not (isinstance(cfg_path, str) and isinstance(layers, list) and isinstance(tags, list)
                and all(isinstance(x, str) for x in (*layers, *tags))):
            raise InvalidImage(f"manifest.json in {src.label}: bad entry (Config is a path, Layers and "
                               f"RepoTags lists of them)")
        m = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", cfg_path)
        raw, cfg = _config(src, cfg_path, f"sha256:{m.group(1)}" if m else None, None)
        specs = []
        for p in layers:
            lm = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", p)
            specs.append(LayerSpec(p, f"sha256:{lm.group(1)}" if lm else None))
        if len(specs) != len(cfg["rootfs"]["diff_ids"]):
            raise InvalidImage(f"{cfg_path}: config lists {len(cfg['rootfs']['diff_ids'])} layers, "
                               f"manifest.json {len(specs)}")
        out.append(ImageSpec(raw, sha256_digest(raw), cfg["rootfs"]["diff_ids"], specs, tags,
                             check_digest(parent, "Parent in manifest.json") if parent else ""))
    return out


def _descriptor(d: object, what: str) -> tuple[str, str, int]:
    if not isinstance(d, dict):
        raise InvalidImage(f"{what}: a descriptor is not an object")
    size = d.get("size")
    if not isinstance(size, int) or size < 0:
        raise InvalidImage(f"{what}: descriptor without a valid size")
    return str(d.get("mediaType", "")), check_digest(d.get("digest"), what), size


def _oci_blob_json(src: Source, digest: str, size: int) -> dict:
    raw = src.read_bytes(blob_path(digest))
    if len(raw) != size:
        raise InvalidImage(f"size mismatch for blob {digest} in {src.label}: expected {size}, got {len(raw)}")
    if sha256_digest(raw) != digest:
        raise InvalidImage(f"digest mismatch for blob {digest} in {src.label}: got {sha256_digest(raw)}")
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise InvalidImage(f"blob {digest} in {src.label} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidImage(f"blob {digest} in {src.label} is not a JSON object")
    return obj


def _pick_platform(manifests: list, src: Source) -> dict:
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for d in manifests:
        plat = d.get("platform") if isinstance(d, dict) else None
        if not plat or (plat.get("os") == "linux" and plat.get("architecture") == arch):
            return d
    raise InvalidImage(f"no linux/{arch} image in the index of {src.label}")


def _oci_images(src: Source) -> list[ImageSpec]:
    index = src.read_json("index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InvalidImage(f"index.json in {src.label} has no manifests list")
    out = []
    for desc in index["manifests"]:
        ann = desc.get("annotations") or {} if isinstance(desc, dict) else {}
        for _ in range(4):
            mtype, digest, size = _descriptor(desc, "index.json")
            doc = _oci_blob_json(src, digest, size)
            if mtype in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES:
                desc = _pick_platform(doc.get("manifests") or [], src)
                continue
            break
        else:
            raise InvalidImage(f"index nesting too deep in {src.label}")
        _, cdigest, csize = _descriptor(doc.get("config"), f"manifest {digest}")
        raw, cfg = _config(src, blob_path(cdigest), cdigest, csize)
        layers = []
        for ld in doc.get("layers") or []:
            _, ldigest, lsize = _descriptor(ld, f"manifest {digest}")
            layers.append(LayerSpec(blob_path(ldigest), ldigest, lsize))
        if len(layers) != len(cfg["rootfs"]["diff_ids"]):
            raise InvalidImage(f"manifest {digest}: {len(layers)} layers but the config lists "
                               f"{len(cfg['rootfs']['diff_ids'])}")
        name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name") or ""
        tags = [name] if name and (":" in name or "/" in name) else []
        out.append(ImageSpec(raw, cdigest, cfg["rootfs"]["diff_ids"], layers, tags))
    return out


def read_images(src: Source) -> list[ImageSpec]:
    """The images of a docker-save archive (manifest.json) or else an OCI layout (index.json)."""
    if src.has("manifest.json"):
        return _docker_images(src)
    if src.has("index.json"):
        return _oci_images(src)
    raise InvalidImage(f"{src.label} is neither a docker-save archive (no manifest.json) "
                       f"nor an OCI layout (no index.json)")


