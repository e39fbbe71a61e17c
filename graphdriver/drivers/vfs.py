"""vfs: every layer a full copy of its parent, no mounts (Docker's layout: ``<root>/vfs/dir/<id>``).

Slow on space where the filesystem cannot share extents, but it runs anywhere: on btrfs and xfs the copy
shares data through FICLONE, elsewhere the kernel copies with ``copy_file_range``.
"""

from __future__ import annotations

import os
from functools import cached_property

from .. import fscopy
from ..driver import Driver, register


@register
class VfsDriver(Driver):
    """Docker's vfs graphdriver: a layer's directory is its whole root filesystem."""

    name = "vfs"
    whiteout_format = "applied"

    @classmethod
    def unsupported_reason(cls, root: str) -> str | None:
        """vfs only needs a writable directory."""
        probe = os.path.abspath(root)
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            return f"{probe} is not a directory"
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{probe} is on a read-only filesystem"
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not writable"
        return None

    # -- layout (plan) ----------------------------------------------------------------------------
    @property
    def _dir(self) -> str:
        return os.path.join(self.home, "dir")

    def setup(self) -> None:
        os.makedirs(self._dir, mode=0o700, exist_ok=True)

    def layer_path(self, layer_id: str) -> str:
        return os.path.join(self._dir, layer_id)

    def diff_path(self, layer_id: str) -> str:
        return self.layer_path(layer_id)

    def rootfs_path(self, layer_id: str) -> str:
        return self.layer_path(layer_id)

    # -- build (execute) --------------------------------------------------------------------------
    def build_layer(self, stage: str, layer_id: str, parent: str | None, rw: bool) -> None:
        """A base layer is an empty 0755 directory; any other is a full copy of its parent."""
        if parent is None:
            os.chmod(stage, 0o755)
            return
        fscopy.copy_tree(self.layer_path(parent), stage)

    # -- reporting --------------------------------------------------------------------------------
    def metadata(self, layer_id: str) -> dict[str, str]:
        """Docker's vfs has no GraphDriver data: an empty map."""
        self._require(layer_id)
        return {}

    @cached_property
    def copy_method(self) -> str:
        """How layer data is copied here: shared extents where the filesystem can, else in-kernel copies."""
        try:
            return "reflink (FICLONE)" if fscopy.reflink_supported(self._staging) else "copy_file_range"
        except OSError as e:  # the probe's directory vanished (a concurrent cleanup)
            return f"unknown (probe failed: {e.strerror})"

    def backend_status(self) -> list[tuple[str, str]]:
        return [("Copy Method", self.copy_method)]
