"""Leases (flock on a directory): who excludes whom, who is named, and that a lease dies with its holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from graphdriver.store.leases import Lease, holders, in_use


def test_shared_leases_coexist_and_exclude_an_exclusive_one(tmp_path) -> None:
    d = str(tmp_path)
    a = Lease.take(d, shared=True)
    b = Lease.take(d, shared=True, wait=False)  # another open file description, as another thread has
    assert a is not None and b is not None
    assert Lease.take(d, shared=False, wait=False) is None and in_use(d)
    assert not b.convert(shared=False)  # a holds it shared
    b.release()
    a.release()
    assert not in_use(d)
    c = Lease.take(d, shared=True)
    assert c is not None and c.convert(shared=False)
    assert Lease.take(d, shared=True, wait=False) is None
    c.release()


def test_a_lease_names_its_holder_and_goes_with_it(tmp_path) -> None:
    d = str(tmp_path)
    code = ("import sys, time; from graphdriver.store.leases import Lease; "
            f"lease = Lease.take({d!r}, shared=True); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert in_use(d)
        assert [h for h in holders(d) if h.endswith(f"[{child.pid}]")]  # name[pid], from /proc/locks
        assert not [h for h in holders(d) if h.endswith(f"[{os.getpid()}]")]
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while in_use(d):  # the kernel drops the lock once the process is gone
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert holders(d) == []


def test_still_there_tells_a_directory_replaced_under_the_lease(tmp_path) -> None:
    d = tmp_path / "layer"
    d.mkdir()
    lease = Lease.take(str(d), shared=True)
    assert lease is not None and lease.still_there()
    d.rename(tmp_path / "old")
    assert not lease.still_there()
    d.mkdir()  # another directory at the same path
    assert not lease.still_there()
    lease.release()
    assert not in_use(str(tmp_path / "missing"))
