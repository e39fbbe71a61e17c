"""Docker's DiffDriver half (ApplyDiff, Diff, Changes, DiffSize), mixed into every Driver.

Placeholder until the layer-contents work lands: every method raises NotImplementedError.
"""

from __future__ import annotations

from typing import BinaryIO


class DiffMixin:
    """apply_diff / diff / changes / diff_size on top of a Driver's layer directories."""

    def apply_diff(self, layer_id: str, parent: str | None, stream: BinaryIO) -> int:
        raise NotImplementedError

    def diff(self, layer_id: str, parent: str | None) -> BinaryIO:
        raise NotImplementedError

    def changes(self, layer_id: str, parent: str | None) -> list[tuple[str, int]]:
        raise NotImplementedError

    def diff_size(self, layer_id: str, parent: str | None) -> int:
        raise NotImplementedError
