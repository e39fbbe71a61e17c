"""Can a layer's own directory stand for its diff? (overlay2: no redirect_dir, no metacopy, no opaque bug)

With ``redirect_dir`` a renamed directory lives in the upper dir under its new name with a pointer to
the old one; with ``metacopy`` an upper file may hold only metadata. Either way the upper dir alone no
longer describes the change, so diffs go the naive way. Old kernels also copied the opaque xattr up with
a directory; that is checked for real with a throw-away overlay mount, as is what a directory rename does.

The probe's verdict is kept in ``<home>/.native-diff-probe``, keyed by the boot, the overlay module's
parameters and the mount options, so it runs once per boot and root, not once per command. A probe that
cannot run (a full or read-only root) is no verdict: diffs go the naive way, as Docker's overlay2 does
when its probe fails, nothing is cached and the next command tries again.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from ..errors import CorruptRecord
from ..kernel import probe, syscalls
from ..store.files import read_json, write_json
from ..store.runtime import boot_id
from .whiteouts import overlay_opaque

if TYPE_CHECKING:
    from ..driver import Driver

log = logging.getLogger(__name__)

#: The probe's verdict, per backend home (``{"key": ..., "problem": ...}``).
CACHE = ".native-diff-probe"
_PARAMS = "/sys/module/overlay/parameters"

#: Verdicts this process has seen: (home, key as JSON) -> problem.
_seen: dict[tuple[str, str], str | None] = {}


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


def probe_mount(workdir: str, extra: tuple[str, ...]) -> str | None:
    """Verify with a real overlay (in a directory of its own under ``workdir``, removed afterwards):
    copy-up of an opaque dir and a directory rename. None: native is exact; else why not. Raises
    OSError when the probe cannot run (no room, a read-only filesystem, the mount refused)."""
    base = tempfile.mkdtemp(prefix="native-diff-probe-", dir=workdir)
    try:
        return _probe_in(base, extra)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _probe_in(base: str, extra: tuple[str, ...]) -> str | None:
    for d in ("l1/d", "l1/d1", "l2/d", "upper", "work", "merged"):
        os.makedirs(os.path.join(base, d))
    os.setxattr(os.path.join(base, "l2/d"), "trusted.overlay.opaque", b"y")
    merged, upper = os.path.join(base, "merged"), os.path.join(base, "upper")
    data = ",".join([f"lowerdir={base}/l2:{base}/l1", f"upperdir={upper}", f"workdir={base}/work", *extra])
    try:
        syscalls.mount("overlay", merged, "overlay", 0, data)
    except OSError as e:
        raise OSError(e.errno, f"probe overlay mount failed ({e.strerror})", merged) from None
    try:
        try:
            with open(os.path.join(merged, "d", "f"), "w") as f:
                f.write("x")
        except OSError as e:  # a full disk, say: the write names no file
            raise OSError(e.errno, e.strerror, os.path.join(merged, "d", "f")) from None
        if overlay_opaque(os.path.join(upper, "d")) == b"y":
            return "the kernel copies the opaque xattr up with a directory (old overlay bug)"
        try:
            os.rename(os.path.join(merged, "d1"), os.path.join(merged, "d2"))
        except OSError as e:
            if e.errno != errno.EXDEV:  # EXDEV: no redirect_dir, the answer sought
                raise OSError(e.errno, f"probe directory rename failed ({e.strerror})", merged) from None
        else:
            for prefix in ("trusted.overlay.", "user.overlay."):
                try:
                    os.getxattr(os.path.join(upper, "d2"), prefix + "redirect")
                    return "the kernel records directory renames as redirects (redirect_dir in effect)"
                except OSError:
                    pass
        return None
    finally:
        try:
            syscalls.umount2(merged, 0)
        except OSError:
            syscalls.umount2(merged, syscalls.MNT_DETACH)


def _module_params() -> dict[str, str]:
    """The overlay module's parameters as read now (they can change at run time, or with a reload)."""
    try:
        names = sorted(os.listdir(_PARAMS))
    except OSError:
        return {}
    params = {}
    for name in names:
        value = probe.module_param("overlay", name)
        if value is not None:
            params[name] = value
    return params


def _cached(path: str, key: dict[str, Any]) -> tuple[bool, str | None]:
    """(True, problem) when ``path`` holds a verdict for ``key``; (False, None) when it holds none (absent,
    for another boot or other parameters, or damaged)."""
    try:
        found = read_json(path, {})
    except (OSError, CorruptRecord):
        return False, None
    problem = found.get("problem")
    if found.get("key") != key or not (problem is None or isinstance(problem, str)):
        return False, None
    return True, problem


def probed_problem(driver: Driver, extra: tuple[str, ...]) -> str | None:
    """The probe's verdict for ``driver``'s home: from this process's memory, else the cache file, else a
    probe mount (its verdict then cached where the root has room). Raises OSError when it cannot run."""
    key: dict[str, Any] = {"boot_id": boot_id(), "overlay": _module_params(), "options": list(extra)}
    seen = (driver.home, repr(sorted(key.items())))
    if seen in _seen:
        return _seen[seen]
    path = os.path.join(driver.home, CACHE)
    known, problem = _cached(path, key)
    if not known:
        with driver.staged("native-diff-probe.") as work:  # leased: a cleanup meanwhile leaves it be
            problem = probe_mount(work, extra)
        try:
            write_json(path, {"key": key, "problem": problem})
        except OSError as e:  # a full or read-only root: the verdict holds for this process only
            log.info("native diff probe verdict not cached in %s: %s", path, e.strerror)
    _seen[seen] = problem
    return problem


def native_diff_verdict(driver: Driver) -> str | None:
    """None when ``driver``'s own layer directories are exact diffs, else why not. Raises OSError when that
    cannot be told (the probe mount needs room to write under the root)."""
    fmt = driver.whiteout_format
    if fmt == "aufs":
        return None
    if fmt != "overlay":
        return f"{driver.name} keeps full copies, not diffs"
    extra = tuple(getattr(driver, "_extra_options", ()) or ())
    return configured_problem(extra) or probed_problem(driver, extra)


def native_diff_problem(driver: Driver) -> str | None:
    """None when native diff is used for ``driver``, else why not. A probe that cannot run is a reason
    (naive diff is always exact), not an error: the diff does not fail for want of room to probe."""
    try:
        return native_diff_verdict(driver)
    except OSError as e:
        why = f"native diff cannot be probed under {driver.home} ({e.strerror}): using naive diff"
        log.info("%s", why)
        return why
