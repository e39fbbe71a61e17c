"""Pure planning and checking of overlay mounts: no I/O here.

A plan says exactly what the kernel is asked for; :func:`check_overlay` compares the kernel's view of a
mount (a :class:`~graphdriver.kernel.mountinfo.MountEntry`) with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import MountFailed, TooManyLayers
from ..kernel.mountinfo import MountEntry

#: The kernel's overlayfs stack limit (OVL_MAX_STACK): lower layers in one mount.
OVL_MAX_STACK = 500
#: fsconfig(2) takes string values of at most this many bytes (longer paths go by file descriptor).
FSCONFIG_VALUE_MAX = 255
_FORBIDDEN = (",", ":", "\n", "\\")


@dataclass(frozen=True)
class OverlayPlan:
    """One overlay mount: ``lowers`` nearest first, as passed to the kernel.

    ``api`` is ``fsconfig`` (one ``lowerdir+`` per layer, by path or by fd) or ``mount`` (mount(2) with
    one page of option data; relative paths resolved from ``cwd`` when set).
    """

    target: str
    lowers: tuple[str, ...]
    upper: str | None
    work: str | None
    api: str
    cwd: str | None = None
    extra: tuple[str, ...] = ()

    def mount_data(self) -> str:
        """The mount(2) option string."""
        parts = [f"lowerdir={':'.join(self.lowers)}"]
        if self.upper:
            parts += [f"upperdir={self.upper}", f"workdir={self.work}"]
        return ",".join(parts + list(self.extra))

    def by_fd(self, path: str) -> bool:
        """True when ``path`` is too long for an fsconfig string and goes by file descriptor."""
        return len(os.fsencode(path)) > FSCONFIG_VALUE_MAX

    def resolve(self, path: str) -> str:
        """An absolute form of a (possibly relative) planned path."""
        return path if os.path.isabs(path) or not self.cwd else os.path.join(self.cwd, path)


def _check_paths(paths: list[str]) -> None:
    joined = "\0".join(paths)  # one scan per character over all paths; the culprit is looked up on a hit
    if not any(c in joined for c in _FORBIDDEN):
        return
    for p in paths:
        bad = [c for c in _FORBIDDEN if c in p]
        if bad:
            raise MountFailed(f"path {p!r} contains {bad[0]!r}, which overlay mount options cannot carry")


def plan_overlay(target: str, lowers: list[str], upper: str | None, work: str | None, *, api: str,
                 short_lowers: list[str] | None = None, cwd: str | None = None,
                 page_size: int = 4096, extra: tuple[str, ...] = ()) -> OverlayPlan:
    """Plan an overlay mount of ``lowers`` (absolute, nearest first) under ``upper``/``work``.

    With ``api="mount"`` the option data must fit one page (minus the NUL): absolute paths when they
    fit, else ``short_lowers`` relative to ``cwd`` (Docker's ``l/`` links), else :class:`TooManyLayers`.
    Past :data:`OVL_MAX_STACK` lowers nothing is tried.
    """
    if not lowers:
        raise MountFailed(f"overlay at {target} needs at least one lower layer")
    if len(lowers) > OVL_MAX_STACK:
        raise TooManyLayers(f"{len(lowers)} lower layers: the kernel's overlayfs takes at most {OVL_MAX_STACK}")
    _check_paths([*lowers, *(p for p in (upper, work) if p)])
    if api == "fsconfig":
        return OverlayPlan(target, tuple(lowers), upper, work, api, None, extra)
    if api != "mount":
        raise ValueError(f"unknown mount api {api!r}")
    limit = page_size - 1
    plan = OverlayPlan(target, tuple(lowers), upper, work, api, None, extra)
    if len(plan.mount_data().encode()) <= limit:
        return plan
    if short_lowers is not None and cwd is not None:
        rel = (lambda p: os.path.relpath(p, cwd)) if upper else (lambda p: p)
        short = OverlayPlan(target, tuple(short_lowers), rel(upper) if upper else None,
                            rel(work) if work else None, api, cwd, extra)
        if len(short.mount_data().encode()) <= limit:
            return short
        size = len(short.mount_data().encode())
    else:
        size = len(plan.mount_data().encode())
    raise TooManyLayers(f"{len(lowers)} lower layers need {size} bytes of mount data; mount(2) takes "
                        f"{limit} on this kernel (no fsconfig lowerdir+ here)")


def kernel_lowers(entry: MountEntry) -> list[str]:
    """The lower layers the kernel reports for an overlay mount, nearest first."""
    plus = entry.option_values("lowerdir+")
    if plus:
        return plus
    legacy = entry.option_values("lowerdir")
    return legacy[0].split(":") if legacy else []


def check_overlay(plan: OverlayPlan, entry: MountEntry | None) -> list[str]:
    """Differences between the plan and the kernel's view of the mount (empty: they agree)."""
    if entry is None:
        return [f"no mount at {plan.target}"]
    problems = []
    if entry.fs_type != "overlay":
        problems.append(f"{plan.target} is a {entry.fs_type} mount, not overlay")
        return problems
    got = kernel_lowers(entry)
    want = list(plan.lowers)
    if got != want and [os.path.normpath(plan.resolve(p)) for p in got] \
            != [os.path.normpath(plan.resolve(p)) for p in want]:
        problems.append(f"lower layers differ: planned {len(want)}, kernel shows {len(got)}"
                        + (f" (first difference at #{_first_diff(want, got)})" if got else ""))
    for key, value in (("upperdir", plan.upper), ("workdir", plan.work)):
        shown = entry.option_values(key)
        if value is None:
            if shown:
                problems.append(f"unexpected {key}={shown[0]}")
        elif shown != [value] and [plan.resolve(s) for s in shown] != [plan.resolve(value)]:
            problems.append(f"{key} is {shown[0] if shown else 'missing'}; planned {value}")
    if plan.upper and entry.read_only:
        problems.append("mounted read-only although an upper dir was planned (the kernel dropped it)")
    return problems


def _first_diff(a: list[str], b: list[str]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
