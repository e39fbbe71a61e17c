"""Helpers for the conformance suite: observable state of a root, layer content, subprocess drivers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import graphdriver
from graphdriver import Driver
from graphdriver.kernel import mountinfo


def layer_id(n: int) -> str:
    """A 64-hex id, like Docker's."""
    return hashlib.sha256(f"layer-{n}".encode()).hexdigest()


def root_state(root: str) -> tuple[dict[str, tuple[int, int, str]], list[tuple[str, str]]]:
    """Every path under ``root`` with (mode, size, link target), and the mounts under it (the lock file aside)."""
    paths: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name == ".lock":  # the root lock's file appears on first use; it holds no state
                continue
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            paths[os.path.relpath(p, root)] = (st.st_mode, size, os.readlink(p) if stat.S_ISLNK(st.st_mode) else "")
    mounts = [(m.mount_point, m.fs_type) for m in mountinfo.mounts_under(root)]
    return paths, mounts


def write(path: str, data: str, mode: int | None = None) -> None:
    with open(path, "w") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def is_mount_root(path: str) -> bool:
    return mountinfo.current_mount_id(path) is not None


def mounted_somewhere(driver: Driver, layer: str) -> bool:
    """True when the layer's mount point is a mount root (always False for a backend that does not mount)."""
    return driver.needs_mount(layer) and is_mount_root(driver.mount_point(layer))


_CHILD = """
import json, sys
from graphdriver import open_driver
from graphdriver.kernel.mountinfo import current_mount_id
root, name, op, layer = sys.argv[1:5]
d = open_driver(root, name)
out = {}
if op == "get":
    out["path"] = d.get(layer)
    out["mnt_id"] = current_mount_id(out["path"])
else:
    d.put(layer)
out["count"] = d.mount_count(layer)
print(json.dumps(out))
"""


def in_other_process(root: str, name: str, op: str, layer: str) -> dict:
    """Run ``get`` or ``put`` in a separate ``python -c`` process; its JSON answer."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(graphdriver.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", _CHILD, root, name, op, layer], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


_RACER = """
import sys
from graphdriver import open_driver
from graphdriver.errors import LayerExists
root, name, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
d = open_driver(root, name)
parent = "base"
for i in range(n):
    d.create(f"{tag}-{i}", parent)
    parent = f"{tag}-{i}"
try:
    d.create("contested", "base")
    print("won")
except LayerExists:
    print("lost")
"""


def race(root: str, name: str, tags: list[str], n: int) -> list[str]:
    """Start one process per tag, all at once, each building a chain of ``n`` layers on ``base`` and then
    trying to create the same id ``contested``; each one's answer ("won"/"lost")."""
    project = os.path.dirname(os.path.dirname(os.path.abspath(graphdriver.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, root, name, tag, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for tag in tags]
    answers = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        answers.append(out.strip())
    return answers
