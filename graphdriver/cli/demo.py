"""``graphdriver demo``: the seed's walk-through on a temporary root, no input needed."""

from __future__ import annotations

import json
import os
import stat
import tempfile

from plumbum import cli

from ..kernel import mountinfo
from ..plan.overlay import kernel_lowers
from ..registry import open_driver
from .app import top
from .demo_images import discard_root


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _describe(path: str) -> str:
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        return f"character device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return "regular file" if stat.S_ISREG(st.st_mode) else stat.filemode(st.st_mode)


def _proc_mounts_line(path: str) -> str:
    with open("/proc/mounts") as f:
        lines = [line.rstrip() for line in f if line.split(" ")[1] == path]
    return lines[-1] if lines else f"(no mount at {path}: this driver does not mount)"


def layer_story(driver_name: str | None, say=print) -> None:
    """Two image layers, a container layer on top, copy-on-write and a whiteout, shown from the kernel."""
    root = tempfile.mkdtemp(prefix="graphdriver-demo-")
    try:
        d = open_driver(root, driver_name)
        say(f"graphdriver demo: driver {d.name}, temporary root {root}")
        d.create("A")
        _write(os.path.join(d.diff_path("A"), "a"), "a from A")
        _write(os.path.join(d.diff_path("A"), "x"), "x from A")
        d.create("B", "A")
        if d.whiteout_format == "applied":  # vfs: B starts as a full copy of A
            say("layer B starts as a full copy of A (vfs)")
        _write(os.path.join(d.diff_path("B"), "b"), "b from B")
        _write(os.path.join(d.diff_path("B"), "x"), "x from B")
        say(f"layer A holds: {' '.join(sorted(os.listdir(d.diff_path('A'))))}")
        say(f"layer B (parent A) holds: {' '.join(sorted(os.listdir(d.diff_path('B'))))}")
        d.create("C", "B", rw=True)
        merged = d.get("C")
        say(f"container layer C (parent B, read-write) mounted at {merged}")
        say(f"  merged view: {' '.join(sorted(os.listdir(merged)))}; x reads {_read(os.path.join(merged, 'x'))!r}")
        _write(os.path.join(merged, "new"), "written in the container")
        upper = d.diff_path("C")
        say(f"write /new in the container -> lands in C's own dir: {os.path.join(upper, 'new')} "
            f"({_read(os.path.join(upper, 'new'))!r})")
        os.unlink(os.path.join(merged, "a"))
        wh = os.path.join(upper, "a")
        if os.path.lexists(wh):
            say(f"rm /a in the container -> whiteout in C's upper dir: {wh} ({_describe(wh)})")
        else:
            say(f"rm /a in the container -> deleted from C's copy ({d.name} carries deletions out)")
        say(f"  layer A still holds a: {os.path.exists(os.path.join(d.diff_path('A'), 'a'))}; "
            f"merged view now: {' '.join(sorted(os.listdir(merged)))}")
        say("GraphDriver:")
        say(json.dumps({"Name": d.name, "Data": d.metadata("C")}, indent=2))
        say("kernel /proc/mounts:")
        say(_proc_mounts_line(merged))
        entry = mountinfo.mount_at(merged)
        lowers = kernel_lowers(entry) if entry is not None and entry.fs_type == "overlay" else []
        relative = [p for p in lowers if not os.path.isabs(p)]
        if relative:  # overlay2 looks layers up from its directory (through a detached copy of its mount)
            home = os.path.dirname(os.path.dirname(merged))
            say(f"  relative to {home}: " + ", ".join(
                f"{name} = {os.path.relpath(os.path.realpath(os.path.join(home, name)), home)}" for name in relative))
        drift = d.verify()
        say("verify: " + ("no drift" if not drift else "; ".join(map(str, drift))))
        d.put("C")
        say(f"unmounted; mounts left under the root: {len(mountinfo.mounts_under(root))}")
        d.cleanup()
    finally:
        discard_root(root)
    say("cleaned up")


class DemoCmd(cli.Application):
    """Walk through layers, copy-on-write and whiteouts, then images and containers (load, two containers
    sharing an image, commit) on temporary roots, then clean up."""

    def main(self) -> int:
        from .demo_images import image_story

        layer_story(top(self).driver_name)
        image_story(top(self).driver_name)
        return 0
