"""Which image a committed image was made from, as dockerd's image store keeps it (besides the config):
``images/parents.json`` ``{"<child id>": "<parent id>"}``, changed under the store's lock."""

from __future__ import annotations

from collections.abc import Collection

from .files import read_json, write_json


class Lineage:
    """Parents of images: read and changed by the image store, under its lock."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _all(self) -> dict[str, str]:
        return dict(read_json(self.path, {}))

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
