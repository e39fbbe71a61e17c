"""Execute an overlay mount plan: fsopen/fsconfig/fsmount/move_mount, or mount(2) from a directory."""

from __future__ import annotations

import os
import sys
import threading

from ..errors import MountFailed
from ..plan.overlay import FSCONFIG_VALUE_MAX, OverlayPlan
from . import syscalls

_CWD_LOCK = threading.Lock()  # mount(2) with relative paths needs the process's cwd
_FS_ENCODING = sys.getfilesystemencoding()


def mount_overlay(plan: OverlayPlan) -> None:
    """Ask the kernel for the planned overlay at ``plan.target``. Raises MountFailed with its reason."""
    try:
        if plan.api == "fsconfig":
            _mount_fsconfig(plan)
        else:
            _mount_legacy(plan)
    except OSError as e:
        raise MountFailed(f"overlay mount at {plan.target} failed: {e.strerror or e}") from None


def _mount_fsconfig(plan: OverlayPlan) -> None:
    fd = syscalls.fsopen("overlay")
    try:
        syscalls.fsconfig_string(fd, "source", "overlay")
        batch: list[bytes] = []  # consecutive lowers passed by path, one fsconfig each
        for lower in plan.lowers:
            raw = lower.encode(_FS_ENCODING, "surrogateescape")  # what os.fsencode does
            if len(raw) <= FSCONFIG_VALUE_MAX:  # else too long for a string: by fd (plan.by_fd)
                batch.append(raw)
                continue
            syscalls.fsconfig_strings(fd, "lowerdir+", batch)
            batch = []
            dfd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                syscalls.fsconfig_fd(fd, "lowerdir+", dfd)
            finally:
                os.close(dfd)
        syscalls.fsconfig_strings(fd, "lowerdir+", batch)
        if plan.upper:
            syscalls.fsconfig_string(fd, "upperdir", plan.upper)
            syscalls.fsconfig_string(fd, "workdir", plan.work or "")
        for opt in plan.extra:
            key, eq, value = opt.partition("=")
            if eq:
                syscalls.fsconfig_string(fd, key, value)
            else:
                syscalls.fsconfig_flag(fd, key)
        syscalls.fsconfig_create(fd)
        mfd = syscalls.fsmount(fd)
        try:
            syscalls.move_mount(mfd, plan.target)
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def _mount_legacy(plan: OverlayPlan) -> None:
    data = plan.mount_data()
    if plan.cwd is None:
        syscalls.mount("overlay", plan.target, "overlay", 0, data)
        return
    with _CWD_LOCK:
        back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(plan.cwd)
            syscalls.mount("overlay", plan.target, "overlay", 0, data)
        finally:
            os.fchdir(back)
            os.close(back)
