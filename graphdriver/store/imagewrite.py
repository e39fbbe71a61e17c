"""Writing images: one tarball that is both a ``docker save`` archive (manifest.json) and an OCI image
layout (oci-layout, index.json, blobs/sha256), as Docker 25 writes it; layers uncompressed, as ``docker save``
does, each rebuilt byte for byte from its tar-split record and checked against its diffID as it is
written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import InvalidImage
from . import tarsplit
from .files import STDOUT, naming, replacing
from .imageio import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, blob_path, hex_of, sha256_digest
from .layerstream import CHUNK
from .reference import qualified_ref

if TYPE_CHECKING:
    from .images import ImageStore


@dataclass
class SaveImage:
    """An image to write: its config bytes, tags, and per layer (diffID, size, chunk source)."""

    config: bytes
    tags: list[str]
    layers: list[tuple[str, int, Callable[[], Iterable[bytes]]]]
    parent: str = ""  # the id of its parent image, when that is written too (docker's manifest.json Parent)


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tf.addfile(info, io.BytesIO(data))


class _Chunks(io.RawIOBase):
    """``size`` bytes from an iterator of chunks; its sha256 is checked against ``digest`` at the end."""

    def __init__(self, chunks: Iterator[bytes], size: int, digest: str) -> None:
        super().__init__()
        self._it, self._left, self._digest, self._h = chunks, size, digest, hashlib.sha256()
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        parts = []
        while n:
            if not self._buf:
                nxt = next(self._it, None)
                if nxt is None:
                    raise InvalidImage(f"layer {self._digest} is shorter than when it was loaded")
                self._h.update(nxt)
                self._buf = memoryview(nxt)
            take = min(n, len(self._buf))
            parts.append(self._buf[:take].tobytes())
            self._buf, n, self._left = self._buf[take:], n - take, self._left - take
        if not self._left and self._it is not None:
            if self._buf or next(self._it, None) is not None:
                raise InvalidImage(f"layer {self._digest} is longer than when it was loaded")
            if "sha256:" + self._h.hexdigest() != self._digest:
                raise InvalidImage(f"layer {self._digest} no longer reproduces its diffID "
                                   f"(its files changed on disk)")
            self._it = None  # type: ignore[assignment]
        return b"".join(parts)


class _Counting(io.RawIOBase):
    """A write-only wrapper that knows its position (so tarfile can write to a pipe); a failed write
    names ``name`` when the error names nothing."""

    def __init__(self, out: BinaryIO, name: str = "") -> None:
        super().__init__()
        self._out, self._pos, self._name = out, 0, name

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # noqa: ANN001
        try:
            self._out.write(b)
        except OSError as e:
            raise naming(e, self._name) from None
        self._pos += len(b)
        return len(b)

    def flush(self) -> None:
        try:
            self._out.flush()
        except OSError as e:
            raise naming(e, self._name) from None

    def tell(self) -> int:
        return self._pos


def write_image_tar(out: BinaryIO, images: list[SaveImage], name: str = "") -> None:
    """Write a docker-save + OCI layout tarball (uncompressed layers, as ``docker save`` does) to ``out``,
    flushed; a failed write names ``name`` (what ``out`` is) when the error names nothing."""
    manifest, index, written = [], [], set()
    counted = _Counting(out, name)
    with tarfile.open(fileobj=counted, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.copybufsize = CHUNK
        for info in (tarfile.TarInfo("blobs"), tarfile.TarInfo("blobs/sha256")):
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for img in images:
            cfg_digest = sha256_digest(img.config)
            layer_descs = []
            for diff_id, size, chunks in img.layers:
                path = blob_path(diff_id)
                if path not in written:
                    info = tarfile.TarInfo(path)
                    info.size, info.mode = size, 0o644
                    tf.addfile(info, _Chunks(iter(chunks()), size, diff_id))
                    written.add(path)
                layer_descs.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": size})
            if blob_path(cfg_digest) not in written:
                _add_bytes(tf, blob_path(cfg_digest), img.config)
                written.add(blob_path(cfg_digest))
            mdoc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(img.config)},
                               "layers": layer_descs}, separators=(",", ":")).encode()
            mdigest = sha256_digest(mdoc)
            if blob_path(mdigest) not in written:
                _add_bytes(tf, blob_path(mdigest), mdoc)
                written.add(blob_path(mdigest))
            manifest.append({"Config": blob_path(cfg_digest), "RepoTags": img.tags or None,
                             "Layers": [blob_path(d["digest"]) for d in layer_descs],
                             **({"Parent": img.parent} if img.parent else {})})
            for tag in img.tags or [None]:
                ann = {"io.containerd.image.name": qualified_ref(tag),
                       "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]} if tag else {}
                desc = {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(mdoc)}
                index.append({**desc, "annotations": ann} if ann else desc)
        repositories: dict[str, dict[str, str]] = {}  # docker's legacy file: name -> tag -> top layer
        for img in images:
            for tag in img.tags if img.layers else ():
                name, _, version = tag.rpartition(":")
                repositories.setdefault(name, {})[version] = hex_of(img.layers[-1][0])
        if repositories:
            _add_bytes(tf, "repositories", json.dumps(repositories).encode())
        _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tf, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                 "manifests": index}).encode())
        _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
    counted.flush()


def save_images(store: ImageStore, refs: list[str], out_path: str) -> list[dict]:
    """Write ``store``'s images named by ``refs`` to ``out_path`` (``-``: stdout), under the store's lock,
    as docker does: one entry per image, its RepoTags the tags given (none for an image named by id), its
    Parent the image it was committed from when that is written too.
    A file is written whole or not at all (a temporary renamed over it). Returns what was written:
    ``[{"Id": ..., "RepoTags": [...]}]``."""
    with store.lock.held():
        named: dict[str, list[str]] = {}
        for ref in refs:
            tags = named.setdefault(store.resolve(ref), [])
            tag = store.tag_named(ref)
            if tag is not None and tag not in tags:
                tags.append(tag)
        parents = {i: p for i in named if (p := store.lineage.parent(i)) in named and p != i}  # as docker's
        images = [SaveImage(store.config_bytes(i), tags, [_layer_chunks(store, c) for c in store.chain(i)],
                            parents.get(i, "")) for i, tags in named.items()]
        if out_path == "-":
            import sys

            write_image_tar(sys.stdout.buffer, images, STDOUT)
        else:
            with replacing(out_path) as out:
                write_image_tar(out, images)
        return [{"Id": i, "RepoTags": tags} for i, tags in named.items()]


def _layer_chunks(store: ImageStore, chain_id: str) -> tuple[str, int, Callable[[], Iterable[bytes]]]:
    """A stored layer as :class:`SaveImage` wants it: its diffID, tar size and chunks rebuilt from its
    tar-split record over its files."""
    layer_id = hex_of(chain_id)
    info = store.layer_info(chain_id)
    if not info or not store.driver.exists(layer_id):
        raise InvalidImage(f"layer {chain_id} is missing from the store")
    if info.get("not_reproducible"):
        raise InvalidImage(f"layer {chain_id} cannot be saved byte for byte: its tar holds "
                           f"{info['not_reproducible']} twice and the first copy was overwritten")
    with open(os.path.join(store.layerdb, layer_id + ".tarsplit"), "rb") as f:
        ops = tarsplit.parse(f.read())
    if tarsplit.total_size(ops) != info["tar_size"]:
        raise InvalidImage(f"layer {chain_id}: tar-split record does not match the layer")
    return info["diff_id"], info["tar_size"], lambda: tarsplit.reassemble(ops, store.driver.diff_path(layer_id))
