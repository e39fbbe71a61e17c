"""The image store: configs and tags under ``<root>/images/``, image layers in the driver, keyed by chainID.

Layout (every file written atomically; every change under one lock shared with the container store)::

    images/repositories.json          {"name:tag": "sha256:<image id>"}
    images/configs/<hex>.json         each image config, byte for byte (its sha256 is the image id)
    images/configs/<hex>.removing     the config of an image being deleted, set aside (see imagedelete.py)
    images/parents.json               {"<committed image id>": "<the image it was made from>"}
    images/layerdb/<chain hex>.json   {"diff_id", "parent", "size", "tar_size"} per image layer
    images/layerdb/<chain hex>.tarsplit   what reproduces the layer tar byte for byte (``image save``)
    images/.tmp/                      decompressed archives and commit spools, removed after use

The driver's layer id of an image layer is its chainID's hex, so a layer whose chainID is already there
is reused, never applied twice. A load either completes or removes every layer it created.

An image exists while its config does: a tag or parent link naming an image without a config (one deleted
by a process killed before it rewrote those files, or on a disk too full to) is void, skipped by readers
and dropped by :meth:`ImageStore.recover` and before any config is made.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from ..driver import Driver
from ..errors import CorruptRecord, GraphDriverError, ImageNotFound, InvalidImage
from .files import naming, read_json, remove_temporaries, spool_file, write_atomic, write_json
from .imageio import (
    EMPTY_LAYER,
    chain_ids,
    check_digest,
    hex_of,
    sha256_digest,
)
from .layerstream import LayerStream
from .lineage import Lineage
from .locks import RootLock
from .marks import WorkMarks
from .reference import normalize_ref

_HEX_PREFIX_RE = re.compile(r"(?:sha256:)?[0-9a-f]{1,64}")

#: Progress events: (event, layer index from 1, layer count, chainID, bytes done, bytes total).
Progress = Callable[[str, int, int, str, int, int], None]


@dataclass(frozen=True)
class LoadedImage:
    """What ``load`` made: the image id, the tags now pointing at it, and of those the ones that named
    another image before (tag -> that image's id; it loses the tag, as docker's "renaming the old one")."""

    image_id: str
    tags: list[str]
    replaced: dict[str, str] = field(default_factory=dict)


def images_dir(root: str) -> str:
    """Where the image store of ``root`` lives (present once an image command has stored there)."""
    return os.path.join(os.path.realpath(root), "images")


class ImageStore:
    """Images over one driver. Library calls raise graphdriver errors; nothing prints."""

    def __init__(self, root: str, driver: Driver) -> None:
        self.root = os.path.realpath(root)  # one identity (and the kernel shows mounts by the real path)
        self.driver = driver
        self.dir = images_dir(self.root)
        self.configs = os.path.join(self.dir, "configs")
        self.layerdb = os.path.join(self.dir, "layerdb")
        self.tmp = os.path.join(self.dir, ".tmp")
        for d in (self.dir, self.configs, self.layerdb, self.tmp):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.lock = RootLock(os.path.join(self.dir, ".lock"))
        self._applying = WorkMarks(self.layerdb, ".applying")  # from a layer's create to its record
        self.lineage = Lineage(os.path.join(self.dir, "parents.json"), self.has_image)

    # -- references -------------------------------------------------------------------------------
    def repos_path(self) -> str:
        """Where the tags are recorded."""
        return os.path.join(self.dir, "repositories.json")

    def repos(self) -> dict[str, str]:
        """Every tag and the image id it names (a tag recorded before names were normalized reads as
        docker's short form); a void tag (its image has no config) is left out."""
        out = {}
        present = set(self.ids())
        for tag, image_id in read_json(self.repos_path(), {}).items():
            if image_id not in present:
                continue
            try:
                out[normalize_ref(tag)] = image_id
            except GraphDriverError:
                out[tag] = image_id
        return out

    def config_path(self, image_id: str) -> str:
        """Where the config of ``image_id`` is kept."""
        return os.path.join(self.configs, hex_of(image_id) + ".json")

    def has_image(self, image_id: str) -> bool:
        """Whether ``image_id`` has a config here."""
        return image_id.startswith("sha256:") and os.path.exists(self.config_path(image_id))

    def removing_path(self, image_id: str) -> str:
        """Where the config of ``image_id`` waits while the image is deleted."""
        return os.path.join(self.configs, hex_of(image_id) + ".removing")

    def ids(self) -> list[str]:
        """Every image id, sorted."""
        return sorted("sha256:" + n[:-5] for n in os.listdir(self.configs) if n.endswith(".json") and len(n) == 69)

    def resolve(self, ref: str) -> str:
        """An image id from a tag, a full id, or a unique id prefix."""
        repos = self.repos()
        try:
            tag = normalize_ref(ref)
        except GraphDriverError:
            tag = None
        if tag in repos:
            return repos[tag]
        if _HEX_PREFIX_RE.fullmatch(ref):
            want = ref if ref.startswith("sha256:") else "sha256:" + ref
            hits = [i for i in self.ids() if i.startswith(want)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ImageNotFound(f"image id prefix {ref} is ambiguous ({len(hits)} images)")
        raise ImageNotFound(f"no such image: {ref}")

    def tags_of(self, image_id: str) -> list[str]:
        """The tags naming ``image_id``, sorted."""
        return sorted(t for t, i in self.repos().items() if i == image_id)

    def config_bytes(self, image_id: str) -> bytes:
        """The image config exactly as loaded."""
        try:
            with open(self.config_path(image_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageNotFound(f"no such image: {image_id}") from None

    def config(self, image_id: str) -> dict:
        """The image config, parsed."""
        try:
            return json.loads(self.config_bytes(image_id))
        except ValueError as e:
            raise CorruptRecord(f"image config {self.config_path(image_id)} cannot be read: {e}") from None

    def chain(self, image_id: str) -> list[str]:
        """The image's chainIDs, bottom layer first."""
        return chain_ids(self.config(image_id)["rootfs"]["diff_ids"])

    def top_layer(self, image_id: str) -> str | None:
        """The driver layer id of the image's top layer (None for an image without layers)."""
        chain = self.chain(image_id)
        return hex_of(chain[-1]) if chain else None

    def layer_info(self, chain_id: str) -> dict:
        """The layer db record of a chainID (``{}`` when absent)."""
        return read_json(os.path.join(self.layerdb, hex_of(chain_id) + ".json"), {})

    # -- layers ---------------------------------------------------------------------------------
    def _layer_present(self, layer_id: str) -> bool:
        if self.driver.exists(layer_id) and os.path.exists(os.path.join(self.layerdb, layer_id + ".json")):
            return True
        if self.driver.exists(layer_id) and not self.driver.children(layer_id):
            self.driver.remove(layer_id)  # a driver layer without its record: a crashed load's leftover
        return False

    def recover(self) -> None:
        """Undo or finish what kills cut short: the temporary files of records being written (every
        writer holds the lock) and decompressed archives are removed, layers whose apply was (marked, no
        record yet) are removed,
        deletions whose config was set aside are finished, void tags and parent links dropped (left for
        the next time on a disk with no room for the rewrite: readers skip them). The lock is held by the
        caller or taken here."""
        from .imagedelete import finish_removals

        with self.lock.held():
            for stale in os.listdir(self.tmp):  # a killed load's decompressed copy (loads hold the lock)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.tmp, stale))
            for d in (self.dir, self.configs, self.layerdb):  # a record a kill cut short while written
                remove_temporaries(d)
            for layer_id in self._applying.left():
                if not os.path.exists(os.path.join(self.layerdb, layer_id + ".json")):
                    self.drop_layer(layer_id)
                self._applying.clear(layer_id)
            finish_removals(self)
            self.prune_records(strict=False)

    def prune_records(self, strict: bool = True) -> None:
        """Rewrite the tags and parent links without the void ones (naming an image without a config), when
        there are any. Done before a config is made (``strict``: an error is raised), so an image deleted
        and made again never gets back a name or a parent it had; else an error for lack of room leaves
        them for next time (as does a read-only root). The lock is held."""
        try:
            stored = read_json(self.repos_path(), {})
            present = set(self.ids())
            if any(i not in present for i in stored.values()):
                write_json(self.repos_path(), {t: i for t, i in stored.items() if i in present})
            self.lineage.prune()
        except OSError as e:
            if strict or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise

    def drop_layer(self, layer_id: str) -> None:
        """Remove an image layer and its records (the lock is held)."""
        for suffix in (".json", ".tarsplit"):
            try:
                os.unlink(os.path.join(self.layerdb, layer_id + suffix))
            except FileNotFoundError:
                pass
        if self.driver.exists(layer_id):
            self.driver.remove(layer_id)

    def _apply(self, layer_id: str, parent: str | None, raw: BinaryIO, diff_id: str, blob_digest: str | None,
               progress: Callable[[int], None] | None) -> None:
        """Create and fill one image layer, verifying its digests; on any failure nothing remains (and
        after a kill, :meth:`recover` removes what was made)."""
        with self._applying.around(layer_id):
            self.driver.create(layer_id, parent)
            try:
                stream = LayerStream(raw, progress)
                size = self.driver.apply_diff(layer_id, parent, stream)
                stream.drain()
                if blob_digest is not None and stream.blob_digest != blob_digest:
                    raise InvalidImage(f"digest mismatch for layer blob {blob_digest}: got {stream.blob_digest}")
                if stream.diff_id != diff_id:
                    raise InvalidImage(f"diffID mismatch for layer {diff_id}: "
                                       f"the uncompressed tar is {stream.diff_id}")
                write_atomic(os.path.join(self.layerdb, layer_id + ".tarsplit"), stream.split.result())
                write_json(os.path.join(self.layerdb, layer_id + ".json"),
                           {"diff_id": diff_id, "parent": "sha256:" + parent if parent else "", "size": size,
                            "tar_size": stream.size, "created": time.time(),
                            "not_reproducible": (stream.split.duplicate or b"").decode(errors="replace")})
            except BaseException:
                self.drop_layer(layer_id)
                raise

    # -- load -------------------------------------------------------------------------------------
    def load(self, path: str, progress: Progress | None = None, stdin: BinaryIO | None = None) -> list[LoadedImage]:
        """Load every image of a docker-save archive or OCI layout (file, compressed file, directory, or
        ``-``: ``stdin``); see imageload.py."""
        from .imageload import load_images

        return load_images(self, path, progress, stdin)

    # -- new images (commit) ------------------------------------------------------------------------
    def add_layer(self, stream: BinaryIO, parent_chain: str | None) -> tuple[str | None, str]:
        """Spool a layer tar, then apply it on ``parent_chain`` (reused if present): (chainID, diffID).
        An empty tar (docker's empty layer, :data:`EMPTY_LAYER`) is not applied: (None, its diffID)."""
        with self.lock.held(), spool_file(self.tmp) as spool:
            h = hashlib.sha256()
            while chunk := stream.read(1 << 20):
                h.update(chunk)
                try:
                    spool.write(chunk)
                except OSError as e:  # a full disk: the spool has no name, say where it is
                    raise naming(e, self.tmp) from None
            diff_id = "sha256:" + h.hexdigest()
            if diff_id == EMPTY_LAYER:
                return None, diff_id
            chain = diff_id if parent_chain is None else sha256_digest(f"{parent_chain} {diff_id}".encode())
            if not self._layer_present(hex_of(chain)):
                spool.seek(0)
                self._apply(hex_of(chain), hex_of(parent_chain) if parent_chain else None, spool, diff_id,
                            None, None)
            return chain, diff_id

    def add_image(self, config: bytes, tags: list[str], parent: str = "") -> str:
        """Record a config whose layers are all present, made from ``parent`` (a commit's image); point
        ``tags`` at it; returns the image id."""
        with self.lock.held():
            image_id = sha256_digest(config)
            for c in chain_ids(json.loads(config)["rootfs"]["diff_ids"]):
                if not self._layer_present(hex_of(c)):
                    raise InvalidImage(f"layer {c} of the new image is missing")
            path = self.config_path(image_id)
            new = not os.path.exists(path)
            if new:
                self.prune_records()  # a deleted image's void names and parent are not its own
            links = self.lineage.links()
            linked = bool(parent) and links.get(image_id) != parent
            if linked:  # first: a link for an image with no config is void (never read, pruned)
                self.lineage.set(image_id, parent)
            try:
                write_atomic(path, config)
                repos = self.repos()
                repos.update({normalize_ref(t): image_id for t in tags})
                write_json(self.repos_path(), repos)
            except BaseException:
                if new:  # not recorded without its names: the commit fails whole (unlinked first: room)
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                if linked:
                    with contextlib.suppress(OSError):
                        self.lineage.replace(links)
                raise
            return image_id

    def children(self, image_id: str) -> list[str]:
        """The images committed from ``image_id`` (they keep it: see imagedelete.py)."""
        return self.lineage.children(image_id, self.ids())

    def tag(self, ref: str, new_tag: str) -> str:
        """Point ``new_tag`` at the image ``ref`` names."""
        with self.lock.held():
            image_id = self.resolve(ref)
            repos = self.repos()
            repos[normalize_ref(new_tag)] = image_id
            write_json(self.repos_path(), repos)
            return image_id

    # -- remove -----------------------------------------------------------------------------------
    def tag_named(self, ref: str) -> str | None:
        """The stored tag ``ref`` names (normalized), or None when it names none (an id, say)."""
        try:
            tag = normalize_ref(ref)
        except GraphDriverError:
            return None
        return tag if tag in self.repos() else None

    def remove(self, ref: str, in_use: Mapping[str, Collection[str]] | None = None, force: bool = False) -> list[str]:
        """Untag ``ref``; when it was the image's last name (or an id), delete the image and free layers.

        Returns what was done, as Docker prints it (``Untagged: x``, ``Deleted: sha256:...``).
        """
        return self.remove_freeing(ref, in_use, force)[0]

    def remove_freeing(self, ref: str, in_use: Mapping[str, Collection[str]] | None = None, force: bool = False
                       ) -> tuple[list[str], list[str]]:
        """:meth:`remove`, also naming the chain ids whose layers it removed (the space it freed). ``in_use``:
        image id -> the containers using it (such an image is refused, naming them); ``force``: by id,
        an image with several names too (see imagedelete.py)."""
        from .imagedelete import remove_image

        with self.lock.held():
            return remove_image(self, ref, in_use or {}, force)

    # -- read side --------------------------------------------------------------------------------
    def size(self, image_id: str) -> int:
        """Bytes of content in the image's layers (as apply_diff reported them)."""
        return sum(int(self.layer_info(c).get("size", 0)) for c in self.chain(image_id))

    def inspect(self, ref: str) -> dict:
        """``docker image inspect``'s shape (under the lock: of one image, not half removed)."""
        with self.lock.held():
            image_id = self.resolve(ref)
            cfg = self.config(image_id)
            top = self.top_layer(image_id)
            tags, size, chain = self.tags_of(image_id), self.size(image_id), self.chain(image_id)
            data = self.driver.metadata(top) if top else {}
            parent = self.lineage.parent(image_id)
        return {
            "Id": image_id, "RepoTags": tags, "RepoDigests": [],
            "Parent": parent, "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created", ""), "Container": cfg.get("container", ""),
            "Author": cfg.get("author", ""), "Architecture": cfg.get("architecture", ""),
            "Os": cfg.get("os", ""), "Config": cfg.get("config") or {}, "Size": size,
            "GraphDriver": {"Name": self.driver.name, "Data": data},
            "RootFS": {"Type": "layers", "Layers": list(cfg["rootfs"]["diff_ids"])},
            "ChainIDs": chain,
        }

    def list(self) -> list[dict]:
        """One row per image: id, tags, created, size, layer count (under the lock: no image half removed)."""
        rows = []
        with self.lock.held():
            for image_id in self.ids():
                cfg = self.config(image_id)
                rows.append({"Id": image_id, "RepoTags": self.tags_of(image_id), "Created": cfg.get("created", ""),
                             "Size": self.size(image_id), "Layers": len(cfg["rootfs"]["diff_ids"])})
        return rows

    # -- save -------------------------------------------------------------------------------------
    def save(self, refs: list[str], out_path: str) -> list[dict]:
        """Write the images to ``out_path`` (``-``: stdout) as a tarball ``docker load`` accepts; returns
        the images written, ``[{"Id", "RepoTags"}]``."""
        from .imagewrite import save_images  # the write path, loaded when an image is saved

        return save_images(self, refs, out_path)


def check_image_id(image_id: str) -> str:
    """``sha256:<hex>`` or raise."""
    return check_digest(image_id, "image id")
