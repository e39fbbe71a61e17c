"""apply_diff against GNU ``tar -xf`` on the same layer tar, same filesystem, same run, warm page cache.

Layer: ~200 MB in 20,000 entries (19,000 regular files from a few bytes to 8 MB, 500 symlinks, 500 hard
links, 200 directories). Target: apply_diff throughput >= 0.8x GNU tar's.

    python bench/bench_apply.py [--dir /tmp] [--driver overlay2] [--runs 3] [--files 20000] [--mb 200]

``--dir`` on a tmpfs makes it CPU-bound (the hardest case: GNU tar's own work is then smallest); on a disk
filesystem both sides mostly wait for the disk. Runs alternate tar and apply_diff so load hits both alike.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from graphdriver import open_driver  # noqa: E402


def make_layer_tar(path: str, files: int, total_mb: int, seed: int = 7) -> tuple[int, int]:
    """Write the benchmark layer to ``path``; returns (entries, content bytes)."""
    rng = random.Random(seed)
    pool = os.urandom(9 << 20)
    regular = files - 1000
    large = 10
    medium = regular // 20
    small = regular - medium - large
    budget = total_mb << 20
    large_size = budget * 2 // 5 // large
    medium_size = budget * 2 // 5 // medium
    small_avg = budget // 5 // small
    names: list[str] = []
    content = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for d in range(200):
            ti = tarfile.TarInfo(f"usr/share/pkg{d:03d}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            t.addfile(ti)
        sizes = [large_size] * large + [medium_size] * medium + [rng.randint(0, 2 * small_avg) for _ in range(small)]
        rng.shuffle(sizes)
        for i, size in enumerate(sizes):
            name = f"usr/share/pkg{i % 200:03d}/file-{i:05d}.dat"
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = size, 0o644, 1700000000, 0, 0
            start = rng.randint(0, len(pool) - size - 1) if size < len(pool) else 0
            t.addfile(ti, io.BytesIO(pool[start:start + size]))
            names.append(name)
            content += size
        for i in range(500):
            ti = tarfile.TarInfo(f"usr/share/pkg{i % 200:03d}/link-{i:03d}")
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, os.path.basename(names[i]), 1700000000
            t.addfile(ti)
        for i in range(500):
            ti = tarfile.TarInfo(f"usr/share/pkg{(i + 1) % 200:03d}/hard-{i:03d}")
            ti.type, ti.linkname, ti.mtime = tarfile.LNKTYPE, names[1000 + i], 1700000000
            t.addfile(ti)
    return files, content


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def time_gnu_tar(tar_path: str, work: str) -> float:
    dest = tempfile.mkdtemp(dir=work, prefix="gnutar-")
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", tar_path, "-C", dest], check=True)
    dt = time.perf_counter() - t0
    shutil.rmtree(dest)
    return dt


def time_apply(tar_path: str, work: str, driver_name: str, n: int) -> tuple[float, int]:
    root = tempfile.mkdtemp(dir=work, prefix="gdroot-")
    try:
        d = open_driver(root, driver_name)
        d.create(f"layer{n}")
        os.sync()
        with open(tar_path, "rb") as f:
            t0 = time.perf_counter()
            size = d.apply_diff(f"layer{n}", None, f)
            dt = time.perf_counter() - t0
        d.cleanup()
        return dt, size
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--driver", default="overlay2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mb", type=int, default=200)
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir=args.dir, prefix="bench-apply-")
    try:
        tar_path = os.path.join(work, "layer.tar")
        entries, content = make_layer_tar(tar_path, args.files, args.mb)
        # overlay2 and aufs answer the layer directory's size, where a symlink counts its target's length
        with tarfile.open(tar_path) as t:
            links = sum(len(m.linkname.encode()) for m in t if m.issym())
        tar_bytes = os.path.getsize(tar_path)
        print(f"layer tar: {tar_bytes / 1e6:.1f} MB, {entries} entries, {content / 1e6:.1f} MB of content; "
              f"driver {args.driver} on {args.dir}")
        warm(tar_path)
        gnu, ours = [], []
        for i in range(args.runs):
            warm(tar_path)
            gnu.append(time_gnu_tar(tar_path, work))
            warm(tar_path)
            dt, size = time_apply(tar_path, work, args.driver, i)
            ours.append(dt)
            assert size == content + (links if args.driver != "vfs" else 0), (size, content, links)
            print(f"run {i}: GNU tar {gnu[-1]:.3f}s  apply_diff {dt:.3f}s  ratio {gnu[-1] / dt:.2f}x")
        g, o = statistics.median(gnu), statistics.median(ours)
        print(f"median: GNU tar {g:.3f}s ({tar_bytes / g / 1e6:.0f} MB/s)  apply_diff {o:.3f}s "
              f"({tar_bytes / o / 1e6:.0f} MB/s)")
        ratios = sorted(a / b for a, b in zip(gnu, ours, strict=True))
        print(f"apply_diff throughput / GNU tar throughput = {g / o:.2f}x of the medians, "
              f"{statistics.median(ratios):.2f}x median of per-run ratios, best {ratios[-1]:.2f}x (target >= 0.80x)")
        return 0 if tar_bytes / o >= 0.8 * tar_bytes / g else 1  # exit 1: the target missed
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
