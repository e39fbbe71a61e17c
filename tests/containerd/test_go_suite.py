"""containerd's own SnapshotterSuite (Go, from Debian's golang-* packages) against our gRPC server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .ctrd import mounts_under

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "ci", "containerd-go-suite")
#: The suite's cases in containerd 1.6 (Rename skips itself there: "still fails on some kernels").
CASES = 21


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("driver", ["overlay2", "vfs"])
def test_containerd_snapshotter_suite(driver):
    if os.geteuid() != 0:
        pytest.skip("the suite mounts: run as root")
    env = dict(os.environ, GD_PYTHON=sys.executable, GD_DRIVER=driver)
    proc = subprocess.run([SCRIPT], capture_output=True, text=True, env=env, timeout=1500)
    out = proc.stdout + proc.stderr
    results = re.findall(r"^\s+--- (PASS|FAIL|SKIP): TestSnapshotterSuite/(\S+)", out, re.M)
    failed = [name for res, name in results if res == "FAIL"]
    assert proc.returncode == 0 and not failed, f"failed: {failed}\n{out[-6000:]}"
    assert len(results) == CASES, out[-3000:]
    skipped = [name for res, name in results if res == "SKIP"]
    assert set(skipped) <= {"Rename"}, skipped
    assert not [m for m in mounts_under("/tmp") if "snapshot-suite-" in m]
