"""The mount plans handed to containerd (pure: paths and option strings, no I/O).

containerd executes a plan with mount(2): one page of option data. A single-layer snapshot is a bind
mount; anything else is overlay (lowers nearest first). When the absolute lowerdir list would not fit in a
page, the plan names the lowers by their short links (``<root>/l/<id in base 36>``, made with each
snapshot): containerd then rewrites the list relative to that directory (its lowerdir compaction), so
even :data:`OVL_MAX_STACK` lowers fit. Past that the kernel refuses, and so does the plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import TooManyLayers
from ...plan.overlay import OVL_MAX_STACK
from .store import Kind

#: mount(2) copies at most one page of option data, including the terminating NUL.
MOUNT_DATA_MAX = 4095
#: containerd compacts the lowerdir list when the options reach a page less this margin.
CONTAINERD_COMPACT_AT = 4096 - 512


@dataclass(frozen=True)
class Layout:
    """Where snapshot ``id``'s directories live: ``<root>/snapshots/<id>`` and the link ``<root>/l/<b36 id>``."""

    root: str

    @property
    def home(self) -> str:
        return os.path.join(self.root, "snapshots")

    @property
    def link_dir(self) -> str:
        return os.path.join(self.root, "l")

    def link(self, snap_id: int) -> str:
        """A short absolute name for ``fs(snap_id)`` (a symlink to ``../snapshots/<id>/fs``)."""
        return os.path.join(self.link_dir, short_name(snap_id))

    def link_target(self, snap_id: int) -> str:
        return os.path.join("..", "snapshots", str(snap_id), "fs")

    def dir(self, snap_id: int) -> str:
        return os.path.join(self.home, str(snap_id))

    def fs(self, snap_id: int) -> str:
        return os.path.join(self.home, str(snap_id), "fs")

    def work(self, snap_id: int) -> str:
        return os.path.join(self.home, str(snap_id), "work")


@dataclass(frozen=True)
class MountSpec:
    """One containerd ``Mount``: type, source and fstab-style options."""

    type: str
    source: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class MountPlan:
    """The mounts for one snapshot; ``short`` when the lowers are named by their ``<root>/l`` links."""

    mounts: tuple[MountSpec, ...]
    short: bool = False


def plan_mounts(layout: Layout, snap_id: int, kind: Kind, parents: list[int], *, copy_mode: bool = False,
                index_off: bool = True) -> MountPlan:
    """The plan for snapshot ``snap_id`` of ``kind`` whose ancestors are ``parents`` (nearest first).

    ``copy_mode`` (the vfs backend): every snapshot holds a full copy, so it is always one bind mount.
    """
    if kind not in (Kind.ACTIVE, Kind.VIEW):
        raise ValueError(f"no mounts for a {kind.label} snapshot")
    if copy_mode or not parents:
        ro = "ro" if kind == Kind.VIEW else "rw"
        return MountPlan((MountSpec("bind", layout.fs(snap_id), (ro, "rbind")),))
    if kind == Kind.VIEW and len(parents) == 1:
        return MountPlan((MountSpec("bind", layout.fs(parents[0]), ("ro", "rbind")),))
    if len(parents) > OVL_MAX_STACK:
        raise TooManyLayers(f"snapshot chain of {len(parents)} layers exceeds overlayfs's {OVL_MAX_STACK} lowers")
    head: list[str] = ["index=off"] if index_off else []
    if kind == Kind.ACTIVE:
        head += [f"workdir={layout.work(snap_id)}", f"upperdir={layout.fs(snap_id)}"]
    lowers = [layout.fs(p) for p in parents]
    short = _size(head, lowers) > MOUNT_DATA_MAX
    if short:
        # containerd strips the links' common directory (<root>/l/) and chdirs into it: names only remain.
        lowers = [layout.link(p) for p in parents]
        compact = _size(head, [short_name(p) for p in parents])
        if compact > MOUNT_DATA_MAX:
            raise TooManyLayers(f"{len(parents)} lowers do not fit in one page of mount data")
    return MountPlan((MountSpec("overlay", "overlay", (*head, "lowerdir=" + ":".join(lowers))),), short)


def _size(head: list[str], lowers: list[str]) -> int:
    return len(",".join([*head, "lowerdir=" + ":".join(lowers)]).encode())


def short_name(i: int) -> str:
    """A snapshot id in base 36 (four characters up to 1.6 million snapshots)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        out = digits[i % 36] + out
        i //= 36
        if i == 0:
            return out
