"""Smoke test of the benchmarks in bench/: each script runs to the end on tiny sizes and prints its result.

Nothing here is timed and no ratio is asserted: on tiny sizes, on a shared machine, a bench may miss its
target (bench_mount and bench_ctr then exit 1). What is checked is that every bench still runs its whole
code path against the current driver (a bench that stopped at a stale assumption went unnoticed before)
and prints its figures. Each script runs as a subprocess in a private mount namespace
(``unshare -m --propagation private``; bench_mount also makes its own), so nothing it mounts can outlive it;
the dockerd and containerd benches start their private daemons there and stop them by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the benchmarks mount for real")


@pytest.fixture
def tmp() -> Iterator[str]:
    """A private temporary directory (TMPDIR, and --dir where a bench takes one): it must be empty after the
    bench. Short, under /tmp: the daemons' sockets live below it."""
    d = tempfile.mkdtemp(prefix="gd-smoke-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_bench(tmp: str, script: str, *args: str, timeout: float = 180) -> str:
    """Run ``bench/<script> ARGS`` as root from the project directory with TMPDIR=``tmp``; its stdout. Exit 0,
    or 1 (a missed target) when the bench printed its figures: the caller checks them. A traceback fails, and
    so does anything left in ``tmp``."""
    cmd = [sys.executable, os.path.join(BENCH, script), *args]
    if shutil.which("unshare"):
        cmd = ["unshare", "-m", "--propagation", "private", *cmd]
    env = dict(os.environ, TMPDIR=tmp,
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    report = f"{' '.join(cmd)}\nexit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode in (0, 1), report
    assert "Traceback" not in proc.stderr, report
    assert os.listdir(tmp) == [], f"left behind in {tmp}: {os.listdir(tmp)}\n{report}"
    return proc.stdout


def need_gcc() -> None:
    if shutil.which("gcc") is None:
        pytest.skip("bench_mount's C baseline needs gcc (ci/setup installs it)")


def check_mount_report(out: str, lowers: tuple[int, ...], containers: int) -> None:
    assert "| lowers | iterations x rounds | Python get+put | C mount+umount2 |" in out, out
    for n in lowers:
        assert any(line.startswith(f"| {n} | ") for line in out.splitlines()), f"no row for {n} lowers\n{out}"
    assert f"{containers} containers on one 5-layer image" in out, out
    for row in ("| Python get |", "| C mount", "| driver's own share (Python - C) |"):
        assert row in out, out
    assert "# total " in out.splitlines()[-1], out


def test_bench_mount(tmp: str) -> None:
    """Both parts; 200 lowers take the lower index (past a page of l/ links), 2 rounds alternate which side
    goes first, 1 pinned round, 21 containers fill both 20-get windows, 2 passes alternate Python and C."""
    need_gcc()
    out = run_bench(tmp, "bench_mount.py", "--rounds", "2", "--lowers", "1,200", "--pinned-rounds", "1",
                    "--containers", "21", "--passes", "2")
    check_mount_report(out, (1, 200), 21)
    assert "lower index, view" in out, out


def test_bench_mount_absolute_paths_fresh_ext4(tmp: str) -> None:
    """The other ways: the driver with absolute paths (``--layer-view false``), on a new ext4 (loop device)."""
    need_gcc()
    out = run_bench(tmp, "bench_mount.py", "--rounds", "1", "--lowers", "1,200", "--pinned-rounds", "0",
                    "--containers", "21", "--passes", "1", "--layer-view", "false", "--fresh-ext4")
    check_mount_report(out, (1, 200), 21)
    assert "| mount(2), absolute |" in out and "a fresh ext4 on a loop device" in out, out


def test_bench_apply(tmp: str) -> None:
    """2,500 entries is the least the layer's make-up allows (500 hard links to regular files past the 1,000th)."""
    out = run_bench(tmp, "bench_apply.py", "--runs", "1", "--files", "2500", "--mb", "2", "--dir", tmp)
    assert "2500 entries" in out and "driver overlay2" in out, out
    assert "run 0: GNU tar" in out and "apply_diff throughput / GNU tar throughput" in out, out


def test_bench_diff(tmp: str) -> None:
    out = run_bench(tmp, "bench_diff.py", "--runs", "1", "--files", "1000", "--changed", "50", "--grow", "2",
                    "--dir", tmp)
    assert "native diff in use: True" in out, out
    assert "1000 files, 50 changed: native" in out and "naive" in out, out
    assert "2000 files, 50 changed: native" in out, out


@pytest.fixture
def docker_packages() -> None:
    from support.dockerd import ensure_docker_packages

    try:
        ensure_docker_packages()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
        pytest.skip(f"docker.io, containerd, runc or busybox-static cannot be installed: {e}")


@pytest.mark.integration
def test_bench_load(tmp: str, docker_packages: None) -> None:
    """Two rounds: the second removes the first root and docker's image (rmi)."""
    out = run_bench(tmp, "bench_load.py", "--rounds", "2", "--layers", "2", "--mb", "1", "--creates", "1",
                    timeout=300)
    work = re.search(r"tarball at (/\S+)/image\.tar", out)
    assert work and not os.path.exists(work[1]), out  # its work dir is in /tmp whatever TMPDIR says
    for head in ("image: 2 layers", "load   graphdriver", "save   graphdriver", "create graphdriver ",
                 "create graphdriver library call"):
        assert head in out, out


@pytest.mark.integration
def test_bench_plugin(tmp: str, docker_packages: None) -> None:
    """Two cycles on each dockerd, alternating which goes first (the warm-up cycles are the same calls)."""
    out = run_bench(tmp, "bench_plugin.py", "--iterations", "2", "--warmup", "0", timeout=300)
    assert "docker create+start+rm of busybox, 2 cycles each, plugin backend overlay2" in out, out
    for head in ("  native: median", "  plugin: median", "  ratio plugin/native (median):"):
        assert head in out, out
    served = [line for line in out.splitlines() if "plugin requests served:" in line]
    assert served and int(served[0].split(":")[1]) > 0, out


@pytest.mark.integration
def test_bench_ctr(tmp: str, docker_packages: None) -> None:
    """One warm-up run and one measured run on each snapshotter."""
    out = run_bench(tmp, "bench_ctr.py", "--iterations", "1", "--warmup", "1", timeout=300)
    assert "ctr run --rm (2 layers, 1 runs each, median):" in out, out
    assert "containerd overlayfs (built-in):" in out and "graphdriver snapshotter (overlay2):" in out, out
    assert "  ratio " in out.splitlines()[-1], out
