"""Which image a committed image was made from, as dockerd's image store keeps it (besides the config):
``images/parents.json`` ``{"<child id>": "<parent id>"}``, changed under the store's lock; carried through
``image save`` and ``image load`` as docker's manifest.json ``Parent``.

An image's config is the truth of whether it exists: a link whose child or parent has no config (an image
deleted by a process killed before it rewrote this file) is void. Readers skip it, and :meth:`prune`
(run by the store's recovery, and before a config is made, so a deleted image loaded again never shows
its old parent) drops it."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from ..errors import InvalidImage
from .files import read_json, write_json

if TYPE_CHECKING:
    from .imageio import ImageSpec


class Lineage:
    """Parents of images: read and changed by the image store, under its lock."""

    def __init__(self, path: str, present: Callable[[str], bool]) -> None:
        self.path = path
        self._present = present  # whether an image id has a config

    def _all(self) -> dict[str, str]:
        return dict(read_json(self.path, {}))

    def links(self) -> dict[str, str]:
        """Every record as stored, child id -> parent id (void ones too: what :meth:`replace` puts back)."""
        return self._all()

    def parent(self, image_id: str) -> str:
        """The image ``image_id`` was committed from ("" for none, and for a void link)."""
        parent = self._all().get(image_id, "")
        return parent if parent and self._present(parent) and self._present(image_id) else ""

    def children(self, image_id: str, present: Collection[str]) -> list[str]:
        """The images of ``present`` made from ``image_id``, sorted."""
        return sorted(c for c, p in self._all().items() if p == image_id and c in present)

    def set(self, image_id: str, parent: str) -> None:
        """Record that ``image_id`` was made from ``parent``."""
        parents = self._all()
        if parents.get(image_id) != parent:
            write_json(self.path, {**parents, image_id: parent})

    def prune(self) -> bool:
        """Drop the void links (child or parent without a config); whether the file was rewritten."""
        parents = self._all()
        kept = {c: p for c, p in parents.items() if self._present(c) and self._present(p)}
        if kept == parents:
            return False
        write_json(self.path, kept)
        return True

    def update(self, links: Mapping[str, str]) -> None:
        """Record several child -> parent links at once."""
        write_json(self.path, {**self._all(), **links})

    def replace(self, links: Mapping[str, str]) -> None:
        """Put back what :meth:`links` returned (a load that failed)."""
        write_json(self.path, dict(links))


def archive_parents(specs: list[ImageSpec]) -> dict[str, str]:
    """The parent links a docker-save archive carries (manifest.json's ``Parent``), kept only when the
    parent is another image of the archive, as docker's load; raises for a parent whose history is not
    the child's less one entry (docker: "image X is not a valid parent for Y")."""
    by_id = {s.image_id: s for s in specs}
    out = {}
    for spec in specs:
        parent = by_id.get(spec.parent) if spec.parent != spec.image_id else None
        if parent is None:
            continue
        mine = json.loads(spec.config).get("history") or []
        theirs = json.loads(parent.config).get("history") or []
        if (mine or theirs) and (len(mine) != len(theirs) + 1 or mine[:len(theirs)] != theirs):
            raise InvalidImage(f"image {parent.image_id} is not a valid parent for {spec.image_id}")
        out[spec.image_id] = parent.image_id
    return out
