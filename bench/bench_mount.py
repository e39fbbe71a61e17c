"""Issue 2 benchmarks: overlay2 ``get``+``put`` against raw mount syscalls, and 1,000 mounted containers.

Run as root from the project directory (about a minute on a quiet machine, under three on a busy one)::

    .venv/bin/python bench/bench_mount.py
    .venv/bin/python bench/bench_mount.py --rounds 31 --lowers 1,10 --containers 0

Part 1 — for 1, 10, 128 and 500 lower layers: the Python API (``open_driver(root, "overlay2")``, a chain
of N layers and a layer on it with no child — a writable mount, as a container's — ``get``+``put`` of that
one) against ``mount_baseline.c`` (compiled with gcc into a
temporary directory) doing the same overlay mount and ``umount2`` with nothing around it: the driver's
own plan, raw — one mount(2) with a page of options: Docker's short ``l/`` links and relative upper
and work dirs from the overlay2 directory's detached view (absolute paths with ``--layer-view false``
while they fit), and for 500 lowers the layer's lower index (``0:1:...`` from ``<id>/lowers``). Two more
C columns: the same plus the statx + statmount(2) the driver's verification needs
(the kernel's share of verifying), and fsconfig for every count (what the new mount API costs).
Each round runs Python and C back to back (alternating which goes first); the ratio is the median of
the per-round ratios, which cancels most of the noise of a shared machine. Target: <= 1.2. Then, for
contrast only, ``--pinned-rounds`` more rounds with the benchmark and its C program kept on one CPU (no
migrations between the kernel's sleeps in mount and umount; see bench/README.md).

Part 2 — 1,000 containers on one 5-layer image: 1,000 rw layers on the image's top layer, ``get`` each
in turn keeping all mounted; the mean of the last 20 ``get`` calls over the mean of the first 20.
Repeated (put all, get all again) and the median ratio reported. Target <= 1.3. Passes alternate with
the C program mounting the same 1,000 overlays the same way (+ statx + statmount): the
kernel's own growth, and the driver's own share (Python minus C at the same positions).

Everything runs in a private mount namespace (``--shared-namespace`` to opt out): neighbours reading
their mount tables never see our 1,000 overlays (and stall our mounts less), and nothing can be left
mounted. ``--fresh-ext4``: on a new ext4 on a loop device (see :func:`fresh_ext4`). Exit status 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [PROJECT, os.path.join(PROJECT, "tests")]  # the package; tests/support (shared with the tests)

from support.loopfs import loop_filesystem  # noqa: E402

from graphdriver import open_driver  # noqa: E402
from graphdriver.driver import Driver  # noqa: E402
from graphdriver.drivers.overlay2 import Overlay2  # noqa: E402
from graphdriver.kernel import mountinfo, probe, syscalls  # noqa: E402
from graphdriver.plan.overlay import OverlayPlan, plan_overlay  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
C_SOURCE = os.path.join(HERE, "mount_baseline.c")
LOWERS = (1, 10, 128, 500)
#: get+put iterations per round for each lower count, at most (see ROUND_BUDGET).
ITERATIONS = {1: 50, 10: 50, 128: 20, 500: 8}
#: Seconds each side of a round should take: iterations are cut to fit on a slow (busy) machine.
ROUND_BUDGET = 0.05
CLONE_NEWNS = 0x00020000
TARGET_RATIO = 1.2
TARGET_SCALING = 1.3


def layer_id(n: int) -> str:
    """A 64-hex id, as Docker's layer ids are."""
    return hashlib.sha256(f"bench-layer-{n}".encode()).hexdigest()


def top_id(lowers: int) -> str:
    """The layer benchmarked at ``lowers`` lowers: on the chain's first ``lowers`` layers, with no child."""
    return hashlib.sha256(f"bench-top-{lowers}".encode()).hexdigest()


def compile_baseline(tmp: str) -> str:
    """Build mount_baseline.c with gcc into ``tmp``; return the executable's path."""
    exe = os.path.join(tmp, "mount_baseline")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, C_SOURCE], check=True)
    return exe


def c_cwd(driver: Overlay2, plan: OverlayPlan) -> str:
    """Where the C program resolves the plan's relative paths from, as the driver does: ``-`` (absolute
    paths), a directory, or ``view:DIR[:SUB]`` (DIR's detached view, then its subdirectory SUB)."""
    if not plan.cwd:
        return "-"
    if driver.layer_view_in_use:
        return f"view:{plan.cwd}" + (f":{plan.subdir}" if plan.subdir else "")
    return plan.start or plan.cwd


class Baseline:
    """The C program's command lines for one layer: the driver's own plan, and fsconfig for comparison."""

    def __init__(self, exe: str, driver: Overlay2, top: str, tmp: str) -> None:
        plan = driver.plan(top)  # what the driver asks the kernel for: mount(2) while it fits a page
        self.lowers = len(plan.lowers)
        self.api = plan.api
        dirs, links = driver._resolve_lowers(top)  # the same lowers, and their l/ short links
        layer = driver.layer_path(top)
        fsplan = plan_overlay(plan.target, dirs, os.path.join(layer, "diff"), os.path.join(layer, "work"),
                              api="fsconfig", short_lowers=links, cwd=driver.home, extra=plan.extra,
                              page_size=os.sysconf("SC_PAGE_SIZE"), relative=driver.layer_view_in_use)
        lowers_file = os.path.join(tmp, f"lowers-{self.lowers}")
        with open(lowers_file, "w") as f:
            f.write("".join(p + "\n" for p in fsplan.lowers))
        self._fsconfig = [exe, "fsconfig", "{iters}", "{verify}", fsplan.target, c_cwd(driver, fsplan),
                          fsplan.upper or "", fsplan.work or "", lowers_file, *fsplan.extra]
        self._mount: list[str] | None = None
        self.mount_paths = ""
        if plan.api != "mount":
            return
        data_file = os.path.join(tmp, f"data-{self.lowers}")
        with open(data_file, "w") as f:
            f.write(plan.mount_data())
        self._mount = [exe, "mount", "{iters}", "{verify}", plan.target, c_cwd(driver, plan), data_file]
        spelled = "lower index" if plan.subdir else "relative" if driver.layer_view_in_use else "short l/"
        self.mount_paths = (f"{spelled}, view" if driver.layer_view_in_use else spelled) if plan.cwd else "absolute"

    def fsconfig(self, verify: bool = False) -> list[str]:
        """fsopen/fsconfig lowerdir+/fsmount/move_mount of the same lowers."""
        return [a.replace("{verify}", str(int(verify))) for a in self._fsconfig]

    def primary(self, verify: bool = False) -> list[str]:
        """The driver's own mount, raw: mount(2) where its plan uses it, else fsconfig."""
        cmd = self._mount or self._fsconfig
        return [a.replace("{verify}", str(int(verify))) for a in cmd]

    @property
    def primary_api(self) -> str:
        return f"mount(2), {self.mount_paths}" if self._mount else "fsconfig lowerdir+"

    @staticmethod
    def run(cmd: list[str], iters: int) -> float:
        """Mean seconds per mount+umount2 over ``iters`` (the program times itself)."""
        out = subprocess.run([a.replace("{iters}", str(iters)) for a in cmd], check=True,
                             capture_output=True, text=True)
        return float(out.stdout.strip())


def time_get_put(driver: Driver, top: str, iters: int) -> float:
    """Mean seconds per get+put of ``top`` through the Python API."""
    get, put = driver.get, driver.put
    t0 = time.perf_counter()
    for _ in range(iters):
        get(top)
        put(top)
    return (time.perf_counter() - t0) / iters


def interleave(rounds: int, pair: tuple[Callable[[], float], Callable[[], float]],
               extra: dict[str, Callable[[], float]]) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Each round runs the pair back to back (alternating which goes first), then the extra runners.

    Returns the per-round results of the pair's two sides and of each extra runner.
    """
    first: list[float] = []
    second: list[float] = []
    more: dict[str, list[float]] = {name: [] for name in extra}
    for r in range(rounds):
        if r % 2:
            b = pair[1]()
            first.append(pair[0]())
            second.append(b)
        else:
            first.append(pair[0]())
            second.append(pair[1]())
        for name, run in extra.items():
            more[name].append(run())
    return first, second, more


@contextlib.contextmanager
def one_cpu() -> Iterator[int]:
    """This process, and the C programs it starts meanwhile (they inherit it), kept on one CPU: the
    last one it may use. Restored afterwards."""
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def bench_lowers(root: str, exe: str, tmp: str, rounds: int, lowers: tuple[int, ...],
                 options: dict[str, str] | None = None, pinned_rounds: int = 0) -> list[dict]:
    """Part 1. Returns one row per lower count."""
    driver = open_driver(root, "overlay2", options)
    t0 = time.perf_counter()
    for i in range(max(lowers)):
        driver.create(layer_id(i), layer_id(i - 1) if i else None)
    for n in lowers:  # a top layer on N of the chain, with no child: a writable mount (a committed one is read-only)
        driver.create(top_id(n), layer_id(n - 1))
    print(f"# created a chain of {max(lowers)} layers and {len(lowers)} tops in {time.perf_counter() - t0:.1f}s "
          f"(driver mount API: {driver.mount_api})", flush=True)
    rows = []
    try:
        for n in lowers:
            top = top_id(n)
            base = Baseline(exe, driver, top, tmp)
            assert base.lowers == n, (base.lowers, n)
            driver.get(top)  # warm-up: caches, dentries, the first mount
            driver.put(top)
            # Iterations per round: up to the cap, fewer when the machine is slow (keeps the run short).
            probe = statistics.median(time_get_put(driver, top, 1) for _ in range(3))
            iters = max(3, min(ITERATIONS.get(n, 10), int(ROUND_BUDGET / probe)))
            extra = {"c_verify": lambda base=base, iters=iters: Baseline.run(base.primary(verify=True), iters)}
            if base.api == "mount":
                extra["c_fsconfig"] = lambda base=base, iters=iters: Baseline.run(base.fsconfig(), iters)
            pair = (lambda top=top, iters=iters: time_get_put(driver, top, iters),
                    lambda base=base, iters=iters: Baseline.run(base.primary(), iters))
            py, c, more = interleave(rounds, pair, extra)
            med = statistics.median
            pinned = None
            if pinned_rounds and len(os.sched_getaffinity(0)) > 1:  # for contrast: no CPU migrations
                with one_cpu():
                    py_1, c_1, _ = interleave(pinned_rounds, pair, {})
                pinned = med([p / q for p, q in zip(py_1, c_1, strict=True)])
            row = {"lowers": n, "iters": iters, "rounds": rounds, "c_api": base.primary_api,
                   "python_ms": med(py) * 1e3, "c_ms": med(c) * 1e3,
                   "ratio": med([p / q for p, q in zip(py, c, strict=True)]),
                   "ratio_min": min(py) / min(c),
                   "c_fsconfig_ms": med(more.get("c_fsconfig", c)) * 1e3,
                   "c_verify_ms": med(more["c_verify"]) * 1e3, "ratio_pinned": pinned}
            rows.append(row)
            print(f"# {n} lowers: python {row['python_ms']:.3f} ms, C {row['c_ms']:.3f} ms ({row['c_api']}), "
                  f"ratio {row['ratio']:.2f} (min-based {row['ratio_min']:.2f}); C fsconfig+statmount "
                  f"{row['c_verify_ms']:.3f} ms"
                  + (f"; both on one CPU: ratio {pinned:.2f}" if pinned is not None else ""), flush=True)
            if mountinfo.current_mount_id(driver.mount_point(top)) is not None:
                raise RuntimeError(f"{driver.mount_point(top)} still mounted after the rounds")
    finally:
        driver.cleanup()
    return rows


def c_many_pass(exe: str, driver: Overlay2, containers: list[str], tmp: str) -> list[float]:
    """The C program mounts every container's planned overlay in turn (the plan's API + statx + statmount,
    all kept mounted) and unmounts them; seconds per mount, in order. The kernel's own cost growth."""
    plans = [driver.plan(cid) for cid in containers]
    lowers_file = os.path.join(tmp, "many-lowers")
    targets_file = os.path.join(tmp, "many-targets")
    cwd = c_cwd(driver, plans[0])
    if plans[0].api == "mount":  # what the driver does: mount(2)
        with open(targets_file, "w") as f:
            f.write("".join(f"{p.target}\t{p.mount_data()}\n" for p in plans))
        cmd = [exe, "many-mount", "1", cwd, targets_file]
    else:
        with open(lowers_file, "w") as f:
            f.write("".join(p + "\n" for p in plans[0].lowers))
        with open(targets_file, "w") as f:
            f.write("".join(f"{p.target}\t{p.upper}\t{p.work}\n" for p in plans))
        cmd = [exe, "many", "1", cwd, lowers_file, targets_file, *plans[0].extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [float(x) for x in out.stdout.split()]


def python_pass(driver: Driver, containers: list[str]) -> tuple[list[float], float]:
    """``get`` every container in turn (all stay mounted), then ``put`` them all: (seconds per get, put all)."""
    times = []
    for cid in containers:
        t = time.perf_counter()
        driver.get(cid)
        times.append(time.perf_counter() - t)
    n_mounted = len(mountinfo.mounts_under(driver.home))
    if n_mounted != len(containers):
        raise RuntimeError(f"expected {len(containers)} mounts under {driver.home}, the kernel shows {n_mounted}")
    t = time.perf_counter()
    for cid in containers:
        driver.put(cid)
    return times, time.perf_counter() - t


def bench_containers(root: str, exe: str, tmp: str, count: int, passes: int, window: int = 20) -> dict:
    """Part 2. Python passes alternate with C passes over the same overlays; ratios per pass."""
    driver = open_driver(root, "overlay2")
    plain = open_driver(root, "overlay2", {"overlay2.layer_view": "false"})  # Docker's absolute paths
    image = [f"image-{i}" for i in range(5)]
    for i, lid in enumerate(image):
        driver.create(lid, image[i - 1] if i else None)
    containers = [f"container-{i:04d}" for i in range(count)]
    t0 = time.perf_counter()
    for cid in containers:
        driver.create(cid, image[-1], rw=True)
    print(f"# created {count} rw layers in {time.perf_counter() - t0:.1f}s", flush=True)

    def ratio(times: list[float], stat: Callable[[list[float]], float]) -> float:
        return stat(times[-window:]) / stat(times[:window])

    py: list[list[float]] = []
    c: list[list[float]] = []
    c_abs: list[list[float]] = []
    put_s: list[float] = []
    try:
        for cid in containers[:window]:  # warm-up, so the first gets are not the coldest
            driver.get(cid)
            driver.put(cid)
        for n in range(passes):
            for side in ("python", "c") if n % 2 == 0 else ("c", "python"):
                time.sleep(0.3)  # let the kernel finish tearing down the previous pass's mounts
                if side == "python":
                    times, put_all = python_pass(driver, containers)
                    py.append(times)
                    put_s.append(put_all)
                else:
                    c.append(c_many_pass(exe, driver, containers, tmp))
                    if driver.layer_view_in_use:
                        time.sleep(0.3)
                        c_abs.append(c_many_pass(exe, plain, containers, tmp))
            print(f"# {count} containers, pass {n + 1}: Python first {window} gets "
                  f"{statistics.fmean(py[-1][:window]) * 1e3:.3f} ms, last {window} "
                  f"{statistics.fmean(py[-1][-window:]) * 1e3:.3f} ms, ratio {ratio(py[-1], statistics.fmean):.2f}; "
                  f"C ratio {ratio(c[-1], statistics.fmean):.2f}"
                  + (f", C with absolute paths {ratio(c_abs[-1], statistics.fmean):.2f}" if c_abs else ""),
                  flush=True)
    finally:
        driver.cleanup()  # unmounts whatever is left; the temporary root goes with the run
    med = statistics.median
    return {"count": count, "passes": passes, "window": window,
            "first_ms": med(statistics.fmean(t[:window]) for t in py) * 1e3,
            "last_ms": med(statistics.fmean(t[-window:]) for t in py) * 1e3,
            "ratio": med(ratio(t, statistics.fmean) for t in py),
            "ratios": [ratio(t, statistics.fmean) for t in py],
            "ratio_medians": med(ratio(t, statistics.median) for t in py),
            "c_first_ms": med(statistics.fmean(t[:window]) for t in c) * 1e3,
            "c_last_ms": med(statistics.fmean(t[-window:]) for t in c) * 1e3,
            "c_ratio": med(ratio(t, statistics.fmean) for t in c),
            "c_ratio_medians": med(ratio(t, statistics.median) for t in c),
            # the driver's own share: Python minus C at the same positions, pass by pass
            "own_first_ms": med(statistics.fmean(p[:window]) - statistics.fmean(q[:window])
                                for p, q in zip(py, c, strict=True)) * 1e3,
            "own_last_ms": med(statistics.fmean(p[-window:]) - statistics.fmean(q[-window:])
                               for p, q in zip(py, c, strict=True)) * 1e3,
            "c_abs": {"first_ms": med(statistics.fmean(t[:window]) for t in c_abs) * 1e3,
                      "last_ms": med(statistics.fmean(t[-window:]) for t in c_abs) * 1e3,
                      "ratio": med(ratio(t, statistics.fmean) for t in c_abs),
                      "ratio_medians": med(ratio(t, statistics.median) for t in c_abs)} if c_abs else None,
            "view": driver.layer_view_in_use,
            "put_all_s": med(put_s)}


def report(rows: list[dict], cont: dict | None, namespace: str) -> str:
    """The figures as Markdown tables."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"Measured {stamp}, kernel {platform.release()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, load average at the end {load}; {namespace}.", ""]
    if rows:
        lines += ["get+put of a layer on N layers of a chain (no child: a writable mount) against the same raw "
                  f"mount+umount2 in C, "
                  f"{rows[0]['rounds']} interleaved rounds. Times: median of the per-round means. Ratio: median "
                  "of the per-round Python/C ratios (each round runs both back to back); min-based: the fastest "
                  "Python round over the fastest C round. Both on one CPU (for contrast, not the target): the "
                  "same rounds with the benchmark and its C program kept on one CPU, no migrations.", "",
                  "| lowers | iterations x rounds | Python get+put | C mount+umount2 | C API (the driver's) | "
                  "ratio (target <= 1.2) | min-based | C + statx + statmount | Python / (C + statmount) | "
                  "C with fsconfig | both on one CPU |",
                  "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            ok = "ok" if r["ratio"] <= TARGET_RATIO else "MISSED"
            lines.append(f"| {r['lowers']} | {r['iters']} x {r['rounds']} | {r['python_ms']:.3f} ms | "
                         f"{r['c_ms']:.3f} ms | {r['c_api']} | "
                         f"**{r['ratio']:.2f}** {ok} | {r['ratio_min']:.2f} | {r['c_verify_ms']:.3f} ms | "
                         f"{r['python_ms'] / r['c_verify_ms']:.2f} | {r['c_fsconfig_ms']:.3f} ms | "
                         + (f"{r['ratio_pinned']:.2f} |" if r["ratio_pinned"] is not None else "- |"))
        lines.append("")
    if cont:
        ok = "ok" if cont["ratio"] <= TARGET_SCALING else "MISSED"
        lines += [f"{cont['count']} containers on one 5-layer image, all kept mounted: mean of the last "
                  f"{cont['window']} get calls over the mean of the first {cont['window']}, median of "
                  f"{cont['passes']} passes (get all, put all), alternating with passes of the C program "
                  "mounting the same overlays with the driver's API (+ statx + statmount, no bookkeeping):", "",
                  f"| | first {cont['window']} (mean) | last {cont['window']} (mean) | "
                  "ratio (target <= 1.3) | same with window medians | per-pass ratios | put all |",
                  "|---|---:|---:|---:|---:|---|---:|",
                  f"| Python get | {cont['first_ms']:.3f} ms | {cont['last_ms']:.3f} ms | "
                  f"**{cont['ratio']:.2f}** {ok} | {cont['ratio_medians']:.2f} | "
                  f"{', '.join(f'{x:.2f}' for x in cont['ratios'])} | {cont['put_all_s']:.2f} s |",
                  f"| C mount{', same paths (view)' if cont['view'] else ''} | {cont['c_first_ms']:.3f} ms | "
                  f"{cont['c_last_ms']:.3f} ms | {cont['c_ratio']:.2f} | {cont['c_ratio_medians']:.2f} | | |"]
        if cont["c_abs"]:
            a = cont["c_abs"]
            lines.append(f"| C mount, absolute paths (no view) | {a['first_ms']:.3f} ms | {a['last_ms']:.3f} ms | "
                         f"{a['ratio']:.2f} | {a['ratio_medians']:.2f} | | |")
        lines += [f"| driver's own share (Python - C) | {cont['own_first_ms']:.3f} ms | {cont['own_last_ms']:.3f} ms | "
                  f"{cont['own_last_ms'] / cont['own_first_ms']:.2f} | | | |", ""]
    return "\n".join(lines)


def private_mount_namespace() -> None:
    """Move this process (and the C children it starts) into a mount namespace of its own.

    Other processes on a shared machine read the whole mount table (mountinfo) under the kernel's global
    namespace lock; with 1,000 of our overlays in their table those reads grow long and every mount here
    waits for them, which measures the neighbours rather than the driver. In a private namespace they
    never see our mounts, and whatever is left mounted vanishes with the process.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)  # nothing propagates out


@contextlib.contextmanager
def fresh_ext4(size_gib: int = 4) -> Iterator[str]:
    """A new, empty ext4 (sparse image, loop device) mounted for the run; yields where.

    ext4 keeps a freed inode from being handed out again for five and a half minutes: the allocator
    reads each recently freed inode's table block and skips it (``recently_deleted``, seen with perf).
    After a test suite, or a previous run that removed its 10,000 layer inodes, every mkdir a mount
    makes (overlay's work dir) scans further, more with each container: the C program's own cost then
    grows 1.6-2.6x over 1,000 containers. A fresh filesystem measures the driver, not the last five
    minutes. (The loop device adds its own cost to every mount, so part 1's ratios shrink on it: quote
    part 1 from the real disk.)
    """
    work = tempfile.mkdtemp(prefix="gd-bench-fs-")
    try:
        with loop_filesystem(work, "ext4", size_gib << 30) as mnt:
            yield mnt
    finally:
        shutil.rmtree(work, ignore_errors=True)


def leftover_mounts(path: str) -> list[str]:
    """Mount points still under ``path`` (there should be none)."""
    return [e.mount_point for e in mountinfo.mounts_under(os.path.realpath(path))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=21, help="interleaved rounds per lower count (default 21)")
    ap.add_argument("--lowers", default=",".join(map(str, LOWERS)), help="lower counts (default 1,10,128,500)")
    ap.add_argument("--containers", type=int, default=1000, help="containers for part 2 (0: skip)")
    ap.add_argument("--passes", type=int, default=5, help="get-all/put-all passes in part 2 (default 5)")
    ap.add_argument("--skip-lowers", action="store_true", help="run part 2 only")
    ap.add_argument("--pinned-rounds", type=int, default=11,
                    help="rounds of part 1 again with both sides on one CPU, for contrast (0: skip; default 11)")
    ap.add_argument("--layer-view", choices=("true", "false"), default="true",
                    help="the driver's overlay2.layer_view option (part 1; part 2 measures both ways in C)")
    ap.add_argument("--fresh-ext4", action="store_true",
                    help="run on a new ext4 on a loop device (see fresh_ext4: for part 2 after other runs)")
    ap.add_argument("--shared-namespace", action="store_true",
                    help="mount in this process's mount namespace instead of a private one")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_mount: must run as root (it mounts overlays)", file=sys.stderr)
        return 2
    if shutil.which("gcc") is None:
        print("bench_mount: gcc is needed for the C baseline (apt-get install gcc)", file=sys.stderr)
        return 2
    lowers = tuple(int(x) for x in args.lowers.split(",") if x)
    if not args.shared_namespace:
        private_mount_namespace()
    started = time.perf_counter()
    rows: list[dict] = []
    cont = None
    with fresh_ext4() if args.fresh_ext4 else contextlib.nullcontext(None) as where:
        tmp = tempfile.mkdtemp(prefix="gd-bench-", dir=where)
        try:
            exe = compile_baseline(tmp)
            if not args.skip_lowers:
                rows = bench_lowers(os.path.join(tmp, "chain"), exe, tmp, args.rounds, lowers,
                                    {"overlay2.layer_view": args.layer_view}, args.pinned_rounds)
            if args.containers:
                cont = bench_containers(os.path.join(tmp, "containers"), exe, tmp, args.containers, args.passes)
        finally:
            for mp in reversed(leftover_mounts(tmp)):
                try:
                    syscalls.umount2(mp, syscalls.MNT_DETACH)
                except OSError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    fs = "a fresh ext4 on a loop device" if args.fresh_ext4 else \
        f"{probe.backing_fs(tempfile.gettempdir())} under {tempfile.gettempdir()}"
    print(report(rows, cont, f"{'host' if args.shared_namespace else 'private'} mount namespace; {fs}"))
    print(f"# total {time.perf_counter() - started:.0f}s")
    missed = [r for r in rows if r["ratio"] > TARGET_RATIO] + ([cont] if cont and cont["ratio"] > TARGET_SCALING
                                                              else [])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
