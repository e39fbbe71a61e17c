"""Can a layer's own directory stand for its diff? (overlay2: no redirect_dir, no metacopy, no opaque bug)

With ``redirect_dir`` a renamed directory lives in the upper dir under its new name with a pointer to
the old one; with ``metacopy`` an upper file may hold only metadata. Either way the upper dir alone no
longer describes the change, so diffs go the naive way. Old kernels also copied the opaque xattr up with
a directory; that is checked for real with a throw-away overlay mount, as is what a directory rename does.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from functools import lru_cache
from typing import TYPE_CHECKING

from ..kernel import probe, syscalls
from .whiteouts import overlay_opaque

if TYPE_CHECKING:
    from ..driver import Driver


def _option(extra: tuple[str, ...], key: str) -> str | None:
    found = None
    for opt in extra:
        k, _, v = opt.partition("=")
        if k == key:
            found = v
    return found


def configured_problem(extra: tuple[str, ...]) -> str | None:
    """Plan: what the module parameters and the backend's mount options say (no mounting)."""
    redirect = _option(extra, "redirect_dir")
    if redirect is None:
        redirect = "on" if probe.module_param("overlay", "redirect_dir") in ("Y", "y", "1") else "off"
    if redirect == "on":
        return "overlay redirect_dir is enabled (renamed directories are redirects in the upper dir)"
    metacopy = _option(extra, "metacopy")
    if metacopy is None:
        metacopy = "on" if probe.module_param("overlay", "metacopy") in ("Y", "y", "1") else "off"
    if metacopy == "on":
        return "overlay metacopy is enabled (upper files may hold metadata only)"
    return None


@lru_cache(maxsize=8)
def probe_mount(workdir: str, extra: tuple[str, ...]) -> str | None:
    """Verify with a real overlay: copy-up of an opaque dir and a directory rename. None: native is exact."""
    base = tempfile.mkdtemp(prefix="native-diff-probe-", dir=workdir)
    merged = os.path.join(base, "merged")
    try:
        for d in ("l1/d", "l1/d1", "l2/d", "upper", "work", "merged"):
            os.makedirs(os.path.join(base, d))
        os.setxattr(os.path.join(base, "l2/d"), "trusted.overlay.opaque", b"y")
        data = ",".join([f"lowerdir={base}/l2:{base}/l1", f"upperdir={base}/upper", f"workdir={base}/work",
                         *extra])
        try:
            syscalls.mount("overlay", merged, "overlay", 0, data)
        except OSError as e:
            return f"probe overlay mount failed ({e.strerror})"
        try:
            try:
                with open(os.path.join(merged, "d", "f"), "w") as f:
                    f.write("x")
            except OSError as e:  # a full disk, say: the write names no file
                raise OSError(e.errno, e.strerror, os.path.join(merged, "d", "f")) from None
            if overlay_opaque(os.path.join(base, "upper", "d")) == b"y":
                return "the kernel copies the opaque xattr up with a directory (old overlay bug)"
            try:
                os.rename(os.path.join(merged, "d1"), os.path.join(merged, "d2"))
            except OSError as e:
                if e.errno != errno.EXDEV:
                    return f"probe directory rename failed ({e.strerror})"
            else:
                for prefix in ("trusted.overlay.", "user.overlay."):
                    try:
                        os.getxattr(os.path.join(base, "upper", "d2"), prefix + "redirect")
                        return "the kernel records directory renames as redirects (redirect_dir in effect)"
                    except OSError:
                        pass
        finally:
            try:
                syscalls.umount2(merged, 0)
            except OSError:
                syscalls.umount2(merged, syscalls.MNT_DETACH)
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def native_diff_problem(driver: Driver) -> str | None:
    """None when ``driver``'s own layer directories are exact diffs, else why not."""
    fmt = driver.whiteout_format
    if fmt == "aufs":
        return None
    if fmt != "overlay":
        return f"{driver.name} keeps full copies, not diffs"
    extra = tuple(getattr(driver, "_extra_options", ()) or ())
    problem = configured_problem(extra)
    if problem is None:
        with driver.staged("native-diff-probe.") as work:  # leased: a cleanup meanwhile leaves it be
            problem = probe_mount(work, extra)
    return problem
