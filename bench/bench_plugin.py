"""Benchmark: ``docker create`` + ``docker start -a`` + ``docker rm`` of busybox through the graphdriver plugin,
against the same dockerd's built-in overlay2, measured in the same run (target: ratio <= 1.15).

Two private dockerds (Debian's docker.io 20.10) run side by side: one with ``--storage-driver=<plugin>``
(``graphdriver serve docker-plugin --driver overlay2``), one with ``--storage-driver=overlay2``. Both import
the same busybox-static rootfs; then cycles alternate between them so drift hits both alike.

    sudo .venv/bin/python bench/bench_plugin.py [--iterations 30] [--backend overlay2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from support.dockerd import Dockerd, ensure_docker_packages, plugin_dockerd, rootfs_tar  # noqa: E402

TARGET = 1.15


def cycle(d: Dockerd) -> float:
    """One create + start (attached, until exit) + rm; seconds."""
    t0 = time.perf_counter()
    cid = d.docker("create", "--network", "none", "--log-driver", "none", "base", "true").stdout.strip()
    d.docker("start", "-a", cid)
    d.docker("rm", cid)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backend", default="overlay2", help="the plugin's backend (overlay2 or vfs)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_plugin: run as root", file=sys.stderr)
        return 2
    ensure_docker_packages()
    tar = rootfs_tar()
    with plugin_dockerd(args.backend) as (plugin, pd), Dockerd("overlay2") as nd:
        for d in (pd, nd):
            d.docker("import", "-", "base", input=tar)
        for _ in range(args.warmup):
            cycle(pd)
            cycle(nd)
        times: dict[str, list[float]] = {"plugin": [], "native": []}
        for i in range(args.iterations):
            order = (("plugin", pd), ("native", nd)) if i % 2 == 0 else (("native", nd), ("plugin", pd))
            for name, d in order:
                times[name].append(cycle(d))
        requests = sum(1 for line in plugin.log().splitlines() if " GraphDriver." in line)
    med = {k: statistics.median(v) for k, v in times.items()}
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    ratio = med["plugin"] / med["native"]
    print(f"docker create+start+rm of busybox, {args.iterations} cycles each, plugin backend {args.backend}")
    for k in ("native", "plugin"):
        v = sorted(times[k])
        print(f"  {k:6s}: median {med[k] * 1000:7.1f} ms  mean {mean[k] * 1000:7.1f} ms  "
              f"min {v[0] * 1000:7.1f} ms  max {v[-1] * 1000:7.1f} ms")
    print(f"  plugin requests served: {requests}")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"  ratio plugin/native (median): {ratio:.3f}x  (target <= {TARGET}x: {verdict})")
    print(f"  ratio plugin/native (mean):   {mean['plugin'] / mean['native']:.3f}x")
    return 0 if ratio <= TARGET else 1  # exit 1: the target missed


if __name__ == "__main__":
    sys.exit(main())
