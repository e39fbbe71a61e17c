"""Docker's DiffDriver half (ApplyDiff, Diff, Changes, DiffSize), mixed into every Driver.

Which way a diff is computed: *native* (walk only the layer's own directory, overlay2 and aufs, against
the layer's own parent, when the kernel makes that exact) or *naive* (mount both and compare the trees).
``native_diff_reason`` says why native is not used; ``diff_status`` is the pair ``info`` shows.

The archive modules are imported by the first call that needs them: a driver that only mounts (the CLI's
one-shot ``layer mount``, a runtime's get/put) never loads them.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import BinaryIO

from ..checks import check_parent, check_stream


def _archive(name: str) -> ModuleType:
    """``graphdriver.archive.<name>``, imported on first use."""
    return importlib.import_module(f"{__package__}.{name}")


class DiffMixin:
    """apply_diff / diff / changes / diff_size on top of a Driver's layer directories."""

    def apply_diff(self, layer_id: str, parent: str | None, stream: BinaryIO) -> int:
        """Extract the layer tar ``stream`` (plain, gzip, zstd) into ``layer_id``; its size as Docker's
        driver of this kind answers (file content; overlay2 and aufs: plus symlink targets)."""
        self._require(layer_id)  # type: ignore[attr-defined]
        check_stream(stream)
        return _archive("apply").apply_layer(self, layer_id, check_parent(parent), stream)  # type: ignore[arg-type]

    def diff(self, layer_id: str, parent: str | None) -> BinaryIO:
        """The layer's changes against ``parent`` (None: its own parent) as an uncompressed OCI layer tar."""
        return _archive("diff").diff_stream(self, layer_id, check_parent(parent))  # type: ignore[arg-type]

    def changes(self, layer_id: str, parent: str | None) -> list[tuple[str, int]]:
        """(path, kind) for every change; kind 0 Modified, 1 Added, 2 Deleted (Docker's numbering)."""
        return _archive("diff").changes(self, layer_id, check_parent(parent))  # type: ignore[arg-type]

    def diff_size(self, layer_id: str, parent: str | None = None) -> int:
        """Bytes the layer adds or changes, as Docker's DiffSize counts them: lstat sizes of all but
        directories (symlinks count their target's length), each inode once."""
        return _archive("diff").diff_size(self, layer_id, check_parent(parent))  # type: ignore[arg-type]

    def native_diff_reason(self) -> str | None:
        """None when native diff is in use for this backend, else why not (one line; a probe that cannot
        run on a full or read-only root is a reason too: diffs then go the naive way)."""
        return _archive("native").native_diff_problem(self)  # type: ignore[arg-type]

    def diff_status(self) -> list[tuple[str, str]]:
        """Status pairs for ``info``: ("Native Overlay Diff", "true"/"false") on overlay2."""
        if getattr(self, "whiteout_format", "") != "overlay":
            return []
        try:
            native = "true" if _archive("native").native_diff_verdict(self) is None else "false"
        except OSError as e:  # the probe needs room to write: a full or read-only root still has an info
            native = f"unknown (cannot probe: {e.strerror})"
        return [("Native Overlay Diff", native)]
