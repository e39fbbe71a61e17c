"""Several users at once: processes, each with threads (one driver shared by them, or one each), get and
put the same layers and make, mount and remove others on them; afterwards the count table holds exactly
the references still taken, the kernel shows exactly the layers counted, and nothing drifted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import graphdriver
from graphdriver import open_driver
from graphdriver.kernel import mountinfo

SHARED = ["s0", "s1", "s2"]

_WORKER = """
import json, os, random, sys, threading, time
from graphdriver import open_driver
root, name, wid, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
held, errors, lock = {}, [], threading.Lock()
one = open_driver(root, name) if shared else None
def run(tid):
    d = one or open_driver(root, name)
    rnd = random.Random(wid * 10 + tid)
    end = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < end:
        n += 1
        lid, op = rnd.choice(SHARED), rnd.random()
        try:
            if op < 0.4:
                if "x" not in os.listdir(d.get(lid)):
                    errors.append(f"{lid}: its mount lacks x")
                with lock:
                    held[lid] = held.get(lid, 0) + 1
            elif op < 0.75:
                with lock:
                    if not held.get(lid):
                        continue
                    held[lid] -= 1
                d.put(lid)
            else:
                c = f"t{wid}-{tid}-{n}"
                d.create(c, lid)
                if "x" not in os.listdir(d.get(c)):
                    errors.append(f"{c}: its mount lacks x")
                d.put(c)
                d.remove(c)
        except Exception as e:
            errors.append(f"{lid}: {type(e).__name__}: {e}")
threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"held": held, "errors": errors}))
""".replace("SHARED", repr(SHARED))


@pytest.mark.parametrize("threads_share", [True, False], ids=["one driver per process", "one per thread"])
def test_processes_and_threads_at_once_leave_counts_mounts_and_table_agreeing(backend: str, root: str,
                                                                             threads_share: bool) -> None:
    d = open_driver(root, backend)
    d.create("base")
    os.mkdir(os.path.join(d.diff_path("base"), "x"))
    for lid in SHARED:
        d.create(lid, "base")
    project = os.path.dirname(os.path.dirname(os.path.abspath(graphdriver.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")])))
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, root, backend, str(w), "1" if threads_share else "0"],
                                stdout=subprocess.PIPE, text=True, env=env) for w in range(3)]
    held: dict[str, int] = {}
    for w in workers:
        out, _ = w.communicate(timeout=60)
        assert w.returncode == 0
        report = json.loads(out)
        assert report["errors"] == []
        for lid, n in report["held"].items():
            held[lid] = held.get(lid, 0) + n
    held = {lid: n for lid, n in held.items() if n}
    assert {lid: ref.count for lid, ref in d.refs.all().items()} == held  # the workers' references, no more
    mounted = [e.mount_point for e in mountinfo.mounts_under(d.home)]
    assert sorted(mounted) == sorted(d.mount_point(lid) for lid in held if d.needs_mount(lid))  # none stacked
    assert d.verify() == []
    assert sorted(d.layers()) == ["base", *SHARED] and os.listdir(d._staging) == []
    for lid, n in held.items():  # references a process left behind are another's to drop
        for _ in range(n):
            d.put(lid)
    assert d.refs.all() == {} and mountinfo.mounts_under(d.home) == []
