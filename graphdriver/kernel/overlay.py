"""Execute an overlay mount plan: fsopen/fsconfig/fsmount/move_mount, or mount(2).

Relative paths in a plan (Docker's short ``l/`` links) are resolved by the kernel from the calling
thread's working directory. Each time, the thread first stops sharing its working directory with any
other thread (``unshare(CLONE_FS)``: threads it started since the last time shared it again), then
enters the plan's directory and goes back: no other thread ever sees the change. The one lasting
effect: that thread's cwd, root and umask are its own from then on (a later ``chdir`` or ``umask`` in
another thread no longer reaches it, nor its in theirs).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from ..errors import MountFailed
from ..plan.overlay import OverlayPlan
from . import syscalls

_SHARED_CWD = threading.Lock()  # only where unshare(CLONE_FS) is refused (a seccomp profile, say)


@contextlib.contextmanager
def working_dir(path: str | None) -> Iterator[None]:
    """Run the block in ``path`` (None: where we are), with a working directory private to this thread."""
    if path is None:
        yield
        return
    try:
        syscalls.unshare(syscalls.CLONE_FS)  # a copy only while another thread shares it: cheap
        private = True
    except OSError:
        private = False  # the process's cwd moves for the block: other mounts here wait for it
    with contextlib.nullcontext() if private else _SHARED_CWD:
        back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(path)
            yield
        finally:
            os.fchdir(back)
            os.close(back)


def mount_overlay(plan: OverlayPlan) -> None:
    """Ask the kernel for the planned overlay at ``plan.target``. Raises MountFailed with its reason."""
    try:
        if plan.cwd is None:
            _mount(plan)
        else:
            with working_dir(plan.cwd):
                _mount(plan)
    except OSError as e:
        raise MountFailed(f"overlay mount at {plan.target} failed: {e.strerror or e}") from None


def _mount(plan: OverlayPlan) -> None:
    if plan.api != "fsconfig":
        target, data = plan.mount_args
        syscalls.mount(b"overlay", target, b"overlay", 0, data)
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
