"""Image load and container create: graphdriver against dockerd 20.10 (Debian's docker.io, overlay2).

Builds a 10-layer, ~200 MB docker-save tarball in Python, then in the same run and on the same filesystem:
``graphdriver image load`` (fresh root each round) against ``docker load`` of the same file on a private
dockerd that this script starts and stops (by PID, via tests/support/dockerd.py); then ``container
create`` against ``docker create``. Prints medians and ratios (ours / docker: below 1.0 means faster).

Run as root: ``.venv/bin/python bench/bench_load.py [--rounds 3] [--mb 200] [--creates 10]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
# The CLI runs below (python -m graphdriver) import this checkout too, not whichever copy the interpreter has
# installed (an editable install of another checkout, when run from outside the project directory).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)

from support.dockerd import Dockerd, ensure_docker_packages, unmount_under  # noqa: E402


def build_layer(index: int, size: int, rnd: random.Random) -> bytes:
    """A layer of ``size`` bytes of file content: a few large files and many small ones."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        d = tarfile.TarInfo(f"layer{index}")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        left, n = size, 0
        while left > 0:
            chunk = min(left, rnd.choice([4096, 16384, 65536, 1 << 20, 4 << 20]))
            info = tarfile.TarInfo(f"layer{index}/f{n:05d}")
            info.size, info.mode, info.mtime = chunk, 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(rnd.randbytes(chunk)))
            left -= chunk
            n += 1
    return buf.getvalue()


def build_image(path: str, layers: int, total_mb: int) -> str:
    """Write a legacy docker-save tarball; returns its tag."""
    rnd = random.Random(42)
    blobs = [build_layer(i, total_mb * (1 << 20) // layers, rnd) for i in range(layers)]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["true"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids},
                      "history": [{"created_by": f"layer {i}"} for i in range(layers)]}).encode()
    cfg_hex = hashlib.sha256(cfg).hexdigest()
    tag = "bench/load:1"
    with tarfile.open(path, "w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        names = []
        for i, b in enumerate(blobs):
            names.append(f"{hashlib.sha256(f'{i}'.encode()).hexdigest()}/layer.tar")
            add(names[-1], b)
        add(cfg_hex + ".json", cfg)
        add("manifest.json", json.dumps([{"Config": cfg_hex + ".json", "RepoTags": [tag], "Layers": names}]).encode())
    return tag


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--creates", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_load: run as root", file=sys.stderr)
        return 1
    ensure_docker_packages()
    work = tempfile.mkdtemp(prefix="gd-bench-load-", dir="/tmp")
    gd = [sys.executable, "-m", "graphdriver"]
    try:
        archive = os.path.join(work, "image.tar")
        tag = build_image(archive, args.layers, args.mb)
        print(f"image: {args.layers} layers, {os.path.getsize(archive) / 1e6:.0f} MB tarball at {archive}")
        ours, theirs, root, status = [], [], "", 0
        with Dockerd("overlay2") as d:
            docker = [d.docker("version", "--format", "{{.Server.Version}}").stdout.strip()]
            for r in range(args.rounds):
                if root:
                    unmount_under(root)
                    shutil.rmtree(root, ignore_errors=True)
                root = os.path.join(work, f"root{r}")
                subprocess.run(["sync"], check=True)
                ours.append(timed([*gd, "--root", root, "image", "load", "-q", "-i", archive]))
                if r:
                    d.docker("rmi", tag)
                subprocess.run(["sync"], check=True)
                t = time.perf_counter()
                d.docker("load", "-q", "-i", archive)
                theirs.append(time.perf_counter() - t)
            lo, ld = statistics.median(ours), statistics.median(theirs)
            print(f"load   graphdriver {lo:.2f}s  docker {docker[0]} {ld:.2f}s  ratio {lo / ld:.2f}x "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in ours)} vs {', '.join(f'{x:.2f}' for x in theirs)})")
            print(f"       target <= 1.0x: {'met' if lo <= ld else 'NOT met'}")
            status = 0 if lo <= ld else 1  # exit 1: the target missed
            so = [timed([*gd, "--root", root, "image", "save", tag, "-o", os.path.join(work, "ours.tar")])
                  for _ in range(args.rounds)]
            sd = [timed(["/usr/bin/docker", "-H", f"unix://{d.sock}", "save", "-o", os.path.join(work, "theirs.tar"),
                         tag]) for _ in range(args.rounds)]
            print(f"save   graphdriver {statistics.median(so):.2f}s  docker {statistics.median(sd):.2f}s  "
                  f"ratio {statistics.median(so) / statistics.median(sd):.2f}x")
            oc = [timed([*gd, "--root", root, "container", "create", tag]) for _ in range(args.creates)]
            dc = [timed(["/usr/bin/docker", "-H", f"unix://{d.sock}", "create", "--network", "none", tag])
                  for _ in range(args.creates)]
            co, cd = statistics.median(oc), statistics.median(dc)
            print(f"create graphdriver {co * 1000:.0f}ms  docker {cd * 1000:.0f}ms  ratio {co / cd:.2f}x "
                  f"(CLI to CLI, median of {args.creates}; graphdriver's includes Python start-up)")
            from graphdriver import open_driver
            from graphdriver.store.containers import ContainerStore
            from graphdriver.store.images import ImageStore
            store = ContainerStore(ImageStore(root, open_driver(root)))
            lib = []
            for _ in range(args.creates):
                t = time.perf_counter()
                store.create(tag)
                lib.append(time.perf_counter() - t)
            cl = statistics.median(lib)
            print(f"create graphdriver library call {cl * 1000:.1f}ms  ratio to docker create {cl / cd:.2f}x")
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
