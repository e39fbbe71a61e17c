"""An overlay mount made again the way it was made before: a layer's ``get`` after its ``put``.

The general path (:func:`~graphdriver.kernel.overlay.mount_overlay`, then
:func:`~graphdriver.kernel.mountinfo.shown`, else a full check) derives everything from the plan at each
call. A :class:`QuickMount` holds what that path computed and saw the first time — the option bytes, the
view relative paths resolve from, the bytes the kernel must show, which directory the mount point was
and the mount's identity (the mount it sits on, the upper dir at its root) — and repeats the same
syscalls with nothing re-derived: one statx of the mount point (nothing mounted there, and the same
directory: not a layer or root made again), the mount, then statx and statmount (the options as planned,
over the same mount and upper dir as the first time: nothing slipped in between). It takes only plans
the general path confirmed this way (mount(2) in one page, an upper dir, statmount; paths absolute or
relative, from the layer view or the directory itself); anything it does not confirm is left as found
or unmounted again at once, and handed back (0) for the general path to look at, do and report.
"""

from __future__ import annotations

import os

from ..plan.overlay import OverlayPlan
from . import statcalls
from .overlay import LayerView
from .syscalls import CLONE_FS, MNT_DETACH, UMOUNT_NOFOLLOW, _libc  # ctypes plumbing shared within graphdriver.kernel

_CWD_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_MAGIC = statcalls.OVERLAY_MAGIC


class QuickMount:
    """One layer's overlay, as first planned, mounted and confirmed."""

    __slots__ = ("path", "target", "data", "key", "ident", "view_fd", "start", "subdir", "prefix", "shown_key", "room")

    def __init__(self, plan: OverlayPlan, key: tuple[int, int], ident: tuple[int, int, int], view: LayerView | None,
                 room: int) -> None:
        self.path = plan.target
        self.target, self.data = plan.mount_args
        self.key = key  # the mount point's identity when planned (statcalls.unmounted_key)
        self.ident = ident  # (parent mount id, root inode, root birth time) as first confirmed
        # Where relative paths start: the view's descriptor (a view made again keeps its earlier ones
        # open, and a root made again fails the look at the mount point first) and the layer's lower
        # index below it; else the directory by its path (None: every planned path is absolute).
        self.view_fd = view.fd() if view is not None else -1
        self.subdir = plan.subdir
        self.start = plan.start if view is None else None
        self.prefix, self.shown_key = plan.shown_prefix, plan.shown_key
        self.room = room  # statmount's first buffer

    @classmethod
    def of(cls, plan: OverlayPlan, key: tuple[int, int], shown: tuple[int, int, int, int], view: LayerView | None,
           room: int) -> QuickMount | None:
        """A quick mount for ``plan``, planned for the mount point ``key`` and just shown by the kernel as
        ``shown`` (:func:`statcalls.shown`), when it can take it (mount(2) and an upper dir); else None.
        Relative paths start where the general path starts them: ``view`` when it is usable and a view
        of the plan's ``cwd``, else the directory by its path."""
        if plan.api != "mount" or not plan.upper:
            return None
        if plan.cwd is None or view is None or not view.usable or view.path != plan.cwd:
            view = None
        return cls(plan, key, shown[1:], view, room)

    def mount(self) -> int:
        """Mount when the mount point is the directory planned for with nothing on it; the kernel's mount
        id once it shows the mount as planned, over the same mount and upper dir as the first time. 0:
        nothing mounted (not tried, refused, or not confirmed and unmounted again) — the general path
        decides."""
        try:
            if statcalls.unmounted_key(self.target) != self.key:
                return 0
        except OSError:
            return 0
        if self.view_fd < 0 and self.start is None:
            if _libc.mount(b"overlay", self.target, b"overlay", 0, self.data) < 0:
                return 0
        elif _libc.unshare(CLONE_FS) < 0:  # this thread's cwd its own, to move for the mount and back
            return 0
        else:
            try:
                back = os.open(".", _CWD_FLAGS)
            except OSError:
                return 0
            try:
                if self.view_fd < 0:
                    os.chdir(self.start)
                else:
                    os.fchdir(self.view_fd)
                    if self.subdir:
                        os.chdir(self.subdir)
                if _libc.mount(b"overlay", self.target, b"overlay", 0, self.data) < 0:
                    return 0
            except OSError:
                return 0
            finally:
                os.fchdir(back)
                os.close(back)
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
