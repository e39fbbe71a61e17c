"""Which image a committed image was made from, as dockerd's image store keeps it (besides the config):
``images/parents.json`` ``{"<child id>": "<parent id>"}``, changed under the store's lock; carried through
``image save`` and ``image load`` as docker's manifest.json ``Parent``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from ..errors import InvalidImage
from .files import read_json, write_json

if TYPE_CHECKING:
    from .imageio import ImageSpec


class Lineage:
    """Parents of images: read and changed by the image store, under its lock."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _all(self) -> dict[str, str]:
        return dict(read_json(self.path, {}))

    def links(self) -> dict[str, str]:
        """Every record, child id -> parent id."""
        return self._all()

    def parent(self, image_id: str) -> str:
        """The image ``image_id`` was committed from ("" for none)."""
        return self._all().get(image_id, "")

    def children(self, image_id: str, present: Collection[str]) -> list[str]:
        """The images of ``present`` made from ``image_id``, sorted."""
        return sorted(c for c, p in self._all().items() if p == image_id and c in present)

    def set(self, image_id: str, parent: str) -> None:
        """Record that ``image_id`` was made from ``parent``."""
        parents = self._all()
        if parents.get(image_id) != parent:
            write_json(self.path, {**parents, image_id: parent})

    def forget(self, image_id: str) -> None:
        """Drop the record of a deleted image (its children keep theirs, as dockerd's do)."""
        parents = self._all()
        if parents.pop(image_id, None) is not None:
            write_json(self.path, parents)

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
