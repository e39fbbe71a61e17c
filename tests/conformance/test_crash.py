"""A crash at any point: a process making, filling, mounting and removing layers is killed (SIGKILL) at
random moments; after ``cleanup`` the root is whole — every layer complete or absent, none half filled,
nothing mounted, staged or temporary left — and the work carries on from there."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time

from archive.tarbuild import file, tar

import graphdriver
from graphdriver import Driver, open_driver
from graphdriver.kernel import mountinfo

CONTENT = b"0123456789abcdef" * 262144  # 4 MiB: extracting it is most of an iteration, where kills land

_WORKER = """
import io, sys
from graphdriver import open_driver
root, name, start, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = open_driver(root, name)
with open(source, "rb") as f:
    data = f.read()  # a layer tar holding f
for i in range(start, start + 1000):  # made, filled, mounted through a child and removed again
    base, child = f"b{i}", f"c{i}"
    d.create(base)
    d.apply_diff(base, None, io.BytesIO(data))
    d.create(child, base)
    d.get(child)
    d.put(child)
    d.remove(child)
    d.remove(base)
    print(i, flush=True)
"""


def _whole(driver: Driver) -> list[str]:
    """What is not as it should be after cleanup (empty: the root is whole)."""
    problems = [str(d) for d in driver.verify()]
    if mountinfo.mounts_under(driver.root):
        problems.append("mounts left under the root")
    if os.listdir(driver._staging):
        problems.append(f"staging not empty: {os.listdir(driver._staging)}")
    layers = driver.layers()
    for lid in layers:
        parent = driver.parent(lid)
        if parent is not None and parent not in layers:
            problems.append(f"{lid}: parent {parent} missing")
        own = driver.diff_path(lid)
        names = sorted(os.listdir(own))
        if names not in ([], ["f"]):
            problems.append(f"{lid}: unexpected content {names}")
        elif names:
            with open(os.path.join(own, "f"), "rb") as f:
                if f.read() != CONTENT:
                    problems.append(f"{lid}: half-filled")
        if driver.needs_mount(lid) and not driver.children(lid):  # a leaf mounts: its lowers all resolve
            try:
                seen = sorted(os.listdir(driver.get(lid)))
                driver.put(lid)
            except Exception as e:  # reported with the rest
                seen = [f"get failed: {e}"]
            if seen not in ([], ["f"]):
                problems.append(f"{lid}: mounted, shows {seen}")
    for d, _, files in os.walk(driver.root):
        problems += [os.path.join(d, f) for f in files if ".tmp-" in f]
    return problems


def test_killed_at_random_moments_the_root_is_whole_after_cleanup(backend: str, root: str, tmp_path) -> None:
    source = tmp_path / "layer.tar"
    source.write_bytes(tar(file("f", CONTENT)))
    project = os.path.dirname(os.path.dirname(os.path.abspath(graphdriver.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])))
    rnd = random.Random(20261123)
    made = 0
    for kill in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, root, backend, str(1000 * kill), str(source)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one round done: started up, the work under way
        time.sleep(rnd.random() * 0.3)  # then killed somewhere in the next few rounds
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL and first, err.decode()
        made += 1 + len(out.split())
        driver = open_driver(root, backend)
        driver.cleanup()
        assert _whole(driver) == [], f"after kill {kill}"
    assert made >= 12, "the worker got too little done before each kill to test anything"
    driver = open_driver(root, backend)  # and the work carries on
    driver.create("after")
    driver.apply_diff("after", None, io.BytesIO(tar(file("g", b"g"))))
    driver.create("after-child", "after")
    assert os.listdir(driver.get("after-child")) == ["g"]
    driver.put("after-child")
