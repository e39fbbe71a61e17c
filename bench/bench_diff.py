"""diff of a rw layer with 1,000 changed files over a 20,000-file image: native against naive, same run;
then the image grown 10x: native's cost should stay flat. Targets: native >= 10x naive; flat within noise.

    python bench/bench_diff.py [--dir /tmp] [--files 20000] [--changed 1000] [--grow 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from graphdriver import open_driver  # noqa: E402
from graphdriver.archive import diff as diffmod  # noqa: E402


def image_tar(files: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in range(files // 100):
            ti = tarfile.TarInfo(f"usr/lib/d{d:05d}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            t.addfile(ti)
        payload = b"x" * 200
        for i in range(files):
            ti = tarfile.TarInfo(f"usr/lib/d{i // 100:05d}/f{i:06d}")
            ti.size, ti.mode, ti.mtime = len(payload), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


def build(root: str, files: int, changed: int, step: int):
    """An image of ``files`` files and a rw layer changing ``changed`` of them, ``step`` apart (the same
    paths whatever the image size, so only the image grows)."""
    d = open_driver(root, "overlay2")
    d.create("image")
    d.apply_diff("image", None, io.BytesIO(image_tar(files)))
    d.create("rw", "image", rw=True)
    top = d.get("rw")
    try:
        for n, i in enumerate(range(0, files, step)):
            if n >= changed:
                break
            with open(os.path.join(top, f"usr/lib/d{i // 100:05d}/f{i:06d}"), "wb") as f:
                f.write(b"changed %d\n" % i * 20)
    finally:
        d.put("rw")
    return d


def time_diff(d, naive: bool) -> tuple[float, int]:
    t0 = time.perf_counter()
    with diffmod.diff_stream(d, "rw", None, naive=naive) as s:
        n = 0
        while chunk := s.read(1 << 20):
            n += len(chunk)
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--changed", type=int, default=1000)
    ap.add_argument("--grow", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    roots = []
    try:
        r1 = tempfile.mkdtemp(dir=args.dir, prefix="bench-diff-")
        roots.append(r1)
        step = max(1, args.files // args.changed)
        d = build(r1, args.files, args.changed, step)
        print(f"native diff in use: {d.native_diff_reason() is None} ({d.native_diff_reason() or 'exact'})")
        nat, nai = [], []
        for _ in range(args.runs):
            t, n1 = time_diff(d, naive=False)
            nat.append(t)
            t, n2 = time_diff(d, naive=True)
            nai.append(t)
        a, b = statistics.median(nat), statistics.median(nai)
        print(f"{args.files} files, {args.changed} changed: native {a * 1000:.1f} ms ({n1} bytes), "
              f"naive {b * 1000:.1f} ms ({n2} bytes): native is {b / a:.1f}x faster (target >= 10x)")
        d.cleanup()
        if args.grow > 1:
            r2 = tempfile.mkdtemp(dir=args.dir, prefix="bench-diff-big-")
            roots.append(r2)
            big = args.files * args.grow
            d2 = build(r2, big, args.changed, step)
            nat2 = [time_diff(d2, naive=False)[0] for _ in range(args.runs)]
            c = statistics.median(nat2)
            print(f"{big} files, {args.changed} changed: native {c * 1000:.1f} ms: "
                  f"{c / a:.2f}x the {args.files}-file time (flat = ~1.0x)")
            d2.cleanup()
        return 0 if b / a >= 10 else 1  # exit 1: the target missed
    finally:
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
