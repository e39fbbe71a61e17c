"""Execute an overlay mount plan: fsopen/fsconfig/fsmount/move_mount, or mount(2).

Relative paths in a plan (Docker's short ``l/`` links) are resolved by the kernel from the calling
thread's working directory: the plan's ``cwd``, or better a :class:`LayerView` of it. Each time, the
thread first stops sharing its working directory with any other thread (``unshare(CLONE_FS)``: threads
it started since the last time shared it again), then enters the plan's directory (or the view) and
goes back: no other thread ever sees the change. The one lasting
effect: that thread's cwd, root and umask are its own from then on (a later ``chdir`` or ``umask`` in
another thread no longer reaches it, nor its in theirs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import MountFailed
from ..plan.overlay import OverlayPlan
from . import probe, syscalls
from .statcalls import OVERLAY_MAGIC as OVERLAY_SUPER_MAGIC

_SHARED_CWD = threading.Lock()  # only where unshare(CLONE_FS) is refused (a seccomp profile, say)
T = TypeVar("T")


class LayerView:
    """A detached copy of the mount holding ``path`` (open_tree OPEN_TREE_CLONE, not recursive), rooted at
    ``path``: relative paths reach the same directories as from ``path``, through a mount with nothing
    mounted below it.

    Why: for each layer of a new overlay (every lower, and the upper) the kernel looks at every mount
    attached below the layer's own mount (``clone_private_mount`` checks them for locked mounts). The
    driver's overlays are all mounted below the mount holding its layers: with a thousand containers
    up, that scan was most of a mount's cost, growing with each container. From the view there is
    nothing to scan. Kernels that take no layers from a detached mount are found out at the first mount
    (see :func:`mount_overlay`); ``usable`` is False from then on.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.usable = True
        self._fd = -1
        self._replaced: list[int] = []  # earlier views: another thread may be inside one right now
        self._lock = threading.Lock()

    def fd(self) -> int:
        """The view's descriptor (made on first use, kept while the object lives)."""
        if self._fd < 0:
            with self._lock:
                if self._fd < 0:
                    self._fd = syscalls.open_tree_clone(self.path)
        return self._fd

    def follow(self) -> bool:
        """Make the view again if ``path`` is now another directory than the one it was made of (the
        root removed or moved away and made again). Two stat calls; True when it was made again."""
        with self._lock:
            if self._fd < 0:
                return False
            try:
                now = os.stat(self.path)
            except OSError:
                return False  # nothing there to follow: mounts fail by either way and say so
            then = os.fstat(self._fd)
            if (then.st_dev, then.st_ino) == (now.st_dev, now.st_ino):
                return False
            self._replaced.append(self._fd)
            self._fd = syscalls.open_tree_clone(self.path)
            return True

    def __del__(self, _close=os.close) -> None:  # os.close kept: module globals may be gone at exit
        for fd in (*self._replaced, self._fd):
            if fd >= 0:
                _close(fd)


def _mount_from(plan: OverlayPlan, fd: int | None, call: Callable[[OverlayPlan], T]) -> T:
    """``call(plan)`` (:func:`_mount`, :func:`_detached`) with this thread's working directory at
    ``plan.start`` — entered through ``fd`` (a view of ``plan.cwd``) when given — and back afterwards,
    private to this thread throughout."""
    try:
        syscalls.unshare(syscalls.CLONE_FS)  # a copy only while another thread shares it: cheap
        shared = None
    except OSError:
        shared = _SHARED_CWD  # the process's cwd moves for the call: other mounts here wait for it
        shared.acquire()
    try:
        back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if fd is None:
                os.chdir(plan.start or ".")
            else:
                os.fchdir(fd)
                if plan.subdir:
                    os.chdir(plan.subdir)
            return call(plan)
        finally:
            os.fchdir(back)
            os.close(back)
    finally:
        if shared is not None:
            shared.release()


def mount_overlay(plan: OverlayPlan, view: LayerView | None = None) -> None:
    """Ask the kernel for the planned overlay at ``plan.target``, resolving relative paths through
    ``view`` when it is a view of ``plan.cwd``. Raises MountFailed with the kernel's reason."""
    try:
        if plan.cwd is None:
            _mount(plan)
        elif view is not None and view.usable and view.path == plan.cwd:
            try:
                _mount_from(plan, view.fd(), _mount)
            except OSError:
                # Refused through the view: a kernel that takes no layers from a detached mount, or
                # without open_tree. By the path; and by the path from now on if that works.
                _mount_from(plan, None, _mount)
                view.usable = False
        else:
            _mount_from(plan, None, _mount)
    except OSError as e:
        raise MountFailed(f"overlay mount at {plan.target} failed: {e.strerror or e}") from None


def _mount(plan: OverlayPlan) -> None:
    if plan.api != "fsconfig":
        syscalls.mount_overlay(*plan.mount_args)
        return
    fd = syscalls.fsopen("overlay")
    try:
        syscalls.fsconfig_params(fd, plan.fs_params)
        syscalls.fsconfig_create(fd)
        mfd = syscalls.fsmount(fd)
        try:
            syscalls.move_mount(mfd, plan.target)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def open_overlay(plan: OverlayPlan, view: LayerView | None = None) -> int:
    """A detached, read-only overlay of the planned layers (an fsconfig plan with no upper dir): the
    descriptor of its root, mounted nowhere (nothing to write under the root, nothing left in the mount
    table; the kernel drops it with the last descriptor). Read through ``/proc/self/fd/<fd>``. Raises
    MountFailed with the kernel's reason."""
    if plan.api != "fsconfig" or plan.upper:
        raise ValueError("a detached read-only overlay takes an fsconfig plan with no upper dir")
    try:
        fd = -1
        if plan.cwd is None:
            fd = _detached(plan)
        elif view is not None and view.usable and view.path == plan.cwd:
            try:
                fd = _mount_from(plan, view.fd(), _detached)
            except OSError:
                pass  # refused through the view (see mount_overlay): by the path
        if fd < 0:
            fd = _mount_from(plan, None, _detached)
    except OSError as e:
        raise MountFailed(f"read-only overlay of {os.path.dirname(plan.target)} failed: {e.strerror or e}") from None
    problems = detached_problems(fd)
    if problems:
        os.close(fd)
        raise MountFailed(f"read-only overlay of {os.path.dirname(plan.target)}: the kernel's view differs "
                          f"({'; '.join(problems)}); dropped")
    return fd


def detached_problems(fd: int) -> list[str]:
    """What the kernel says of a detached overlay's root ``fd`` that differs from what
    :func:`open_overlay` asked for: an overlay, mounted read-only (it is in no mount table to read)."""
    problems = []
    magic = probe.fs_magic(f"/proc/self/fd/{fd}")
    if magic != OVERLAY_SUPER_MAGIC:
        problems.append(f"filesystem magic {magic:#x}, not overlay's")
    if not os.fstatvfs(fd).f_flag & os.ST_RDONLY:
        problems.append("mounted read-write")
    return problems


def _detached(plan: OverlayPlan) -> int:
    fd = syscalls.fsopen("overlay")
    try:
        syscalls.fsconfig_params(fd, plan.fs_params)
        syscalls.fsconfig_create(fd)
        return syscalls.fsmount(fd, syscalls.MOUNT_ATTR_RDONLY)
    finally:
        os.close(fd)
