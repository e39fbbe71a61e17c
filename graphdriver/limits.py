"""Size limits of layers: the ``size`` storage option (and a backend's default for container layers),
kept by project quota on the backing filesystem.

:class:`SizeLimits` is a mixin of :class:`~graphdriver.driver.Driver`, which calls it while it builds a
layer in its staging directory.
"""

from __future__ import annotations

import os
from typing import ClassVar

from .errors import StorageOptUnsupported
from .kernel import quota
from .store.files import read_text, write_atomic


class SizeLimits:
    """The ``size`` storage option: parsed and checked before a layer is made, applied to its staging."""

    name: ClassVar[str]
    home: str

    @classmethod
    def storage_opt_size(cls, where: str, storage_opt: dict[str, str]) -> int | None:
        """The ``size`` limit in bytes the storage options ask for, if any, for layers under ``where``.
        ``size`` needs project quota on the backing filesystem (xfs or ext4 with ``prjquota``); anywhere
        else it is refused, as is any other key."""
        size = None
        for key, value in storage_opt.items():
            if key.strip().lower() != "size":  # as dockerd's: keys are case-insensitive
                raise StorageOptUnsupported(f"{cls.name}: unknown storage option {key!r}")
            size = quota.parse_size(value)
            why = quota.project_quota_reason(where)
            if why is not None:
                raise StorageOptUnsupported(f"{cls.name}: storage option 'size' needs project quota: {why}")
        return size

    def default_rw_size(self) -> int | None:
        """The ``size`` a container's layer gets when its storage options name none (a driver option)."""
        return None

    def limit_size(self, stage: str, size: int) -> None:
        """Give the staged layer's own directory a project quota of ``size`` bytes."""
        counter = os.path.join(self.home, ".quota-projid")
        projid = int(read_text(counter, "10000") or "10000") + 1
        write_atomic(counter, str(projid))
        quota.limit_directory(self.quota_dir(stage), projid, size)

    def quota_dir(self, stage: str) -> str:
        """The directory of a staged layer that a ``size`` quota covers (a backend's hook)."""
        return stage
