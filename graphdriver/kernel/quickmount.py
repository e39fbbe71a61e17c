"""An overlay mount made again the way it was made before: a layer's ``get`` after its ``put``.

The general path (:func:`~graphdriver.kernel.overlay.mount_overlay`, then
:func:`~graphdriver.kernel.mountinfo.shown`, else a full check) works out at each call what to compare.
A :class:`QuickMount` keeps what that path computed and saw the first time — the plan (its option bytes
and the bytes the kernel must show are computed once), the view, which directory the mount point was
and the mount's identity (the mount it sits on, the upper dir at its root) — and repeats the same
syscalls with nothing re-derived: one statx of the mount point (nothing mounted there, and the same
directory: not a layer or root made again), the mount through the same ``mount_overlay``, then statx
and statmount (the options as planned, over the same mount and upper dir as the first time: nothing
slipped in between). It takes plans the general path confirmed this way (mount(2) in one page, an
upper dir, statmount); anything it does not confirm is left as found or unmounted again at once, and
handed back (0) for the general path to look at, do and report.
"""

from __future__ import annotations

from ..errors import MountFailed
from ..plan.overlay import OverlayPlan
from . import statcalls
from .overlay import LayerView, mount_overlay
from .syscalls import MNT_DETACH, UMOUNT_NOFOLLOW, _libc  # ctypes plumbing shared within graphdriver.kernel

_MAGIC = statcalls.OVERLAY_MAGIC


class QuickMount:
    """One layer's overlay, as first planned, mounted and confirmed."""

    __slots__ = ("plan", "view", "path", "target", "prefix", "shown_key", "key", "ident", "room")

    def __init__(self, plan: OverlayPlan, key: tuple[int, int, int], ident: tuple[int, int, int],
                 view: LayerView | None, room: int) -> None:
        self.plan = plan
        self.view = view  # relative paths start there when it is usable (mount_overlay decides, as always)
        self.path = plan.target
        self.target = plan.mount_args[0]
        self.prefix, self.shown_key = plan.shown_prefix, plan.shown_key  # what the kernel must show
        self.key = key  # the mount point's identity when planned (statcalls.unmounted_key)
        self.ident = ident  # (parent mount id, root inode, root birth time) as first confirmed
        self.room = room  # statmount's first buffer

    @classmethod
    def of(cls, plan: OverlayPlan, key: tuple[int, int, int], shown: tuple[int, int, int, int], view: LayerView | None,
           room: int) -> QuickMount | None:
        """A quick mount for ``plan``, planned for the mount point ``key`` and just shown by the kernel as
        ``shown`` (:func:`statcalls.shown`), when it can take it (mount(2) and an upper dir); else None."""
        if plan.api != "mount" or not plan.upper:
            return None
        return cls(plan, key, shown[1:], view, room)

    def mount(self) -> int:
        """Mount when the mount point is the directory planned for with nothing on it; the kernel's mount
        id once it shows the mount as planned, over the same mount and upper dir as the first time. 0:
        nothing mounted (not tried, refused, or not confirmed and unmounted again) — the general path
        decides."""
        try:
            if statcalls.unmounted_key(self.target) != self.key:
                return 0
            mount_overlay(self.plan, self.view)  # from the view or the directory, as the general path mounts
        except (OSError, MountFailed):
            return 0
        try:
            got = statcalls.shown(self.target, _MAGIC, self.prefix, self.shown_key, self.room)
        except OSError:
            got = None
        if got is not None and got[1:] == self.ident:
            return got[0]
        _libc.umount2(self.target, MNT_DETACH)
        return 0

    def unmount(self) -> bool:
        """umount2 of the layer's mount point; False (nothing changed) when the kernel refuses."""
        return _libc.umount2(self.target, UMOUNT_NOFOLLOW) == 0
