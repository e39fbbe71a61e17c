"""Check a mount containerd made from one of our plans against the kernel's view of it.

containerd executes the plans (mount(2), possibly with its lowerdir compaction: names relative to the
lowers' common directory); this reads /proc/self/mountinfo (or statmount) and stat(2) at the target and
says what differs. Overlay mounts reuse the core's overlay checker; binds compare the directory itself.
"""

from __future__ import annotations

import os

from ...kernel import mountinfo
from ...plan.overlay import OverlayPlan, check_overlay
from .mounts import MountSpec


def check_mounted(spec: MountSpec, target: str) -> list[str]:
    """Differences between ``spec`` and what is mounted at ``target`` (empty: they agree)."""
    entry = mountinfo.mount_at(target)
    if entry is None:
        return [f"nothing is mounted at {target}"]
    opts = dict(o.split("=", 1) for o in spec.options if "=" in o)
    if spec.type == "overlay":
        lowers = tuple(opts.get("lowerdir", "").split(":"))
        # Where containerd's compaction would have chdir'd: relative names the kernel shows resolve there.
        cwd = os.path.dirname(os.path.commonprefix(list(lowers))) if len(lowers) > 1 else None
        plan = OverlayPlan(target=target, lowers=lowers, upper=opts.get("upperdir"), work=opts.get("workdir"),
                           api="mount", cwd=cwd)
        return check_overlay(plan, entry)
    problems = []
    if entry.fs_type == "overlay":
        problems.append(f"{target} is an overlay mount; planned a bind of {spec.source}")
    a, b = os.stat(target), os.stat(spec.source)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        problems.append(f"{target} does not show {spec.source}")
    if ("ro" in spec.options) != entry.read_only:
        problems.append(f"{target} is {'read-only' if entry.read_only else 'writable'}; planned "
                        f"{'ro' if 'ro' in spec.options else 'rw'}")
    return problems
