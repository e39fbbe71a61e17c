"""Differential: the ``-init`` layer and read-write layer a real dockerd 20.10 (its own overlay2) makes for a
container, and what the container sees at /etc/hosts, /etc/hostname and /etc/resolv.conf, against
``container create`` / ``container run`` here (overlay2 and vfs backends), on ordinary and odd images (no
/etc, no /dev, a symlinked /etc or /etc/hosts, a file /dev/shm, a device /dev/console, ...).

Every init-layer entry agrees in type, mode, owner, size, link target, device number and overlay opacity,
but for the one intended difference (README): dockerd's /etc/hostname, /etc/hosts and /etc/resolv.conf are
empty 0755 placeholders it bind-mounts its real files over at start; here they hold the real content, with
the mode and content dockerd's bind-mounted files have."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator

import pytest
from imgkit import BUSYBOX, docker_archive, ensure_busybox

import graphdriver
from graphdriver import open_driver
from graphdriver.kernel import mountinfo, syscalls
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore
from graphdriver.store.runtime import runtime_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKENDS = ("overlay2", "vfs")
REAL = ("etc/hostname", "etc/hosts", "etc/resolv.conf")  # placeholders there, real files here
D, R, L, C = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE
SHOW = ("for f in /etc/hosts /etc/hostname /etc/resolv.conf; do echo \"== $f\"; cat $f; done; "
        "stat -c '%n %F %a %u:%g %s' /etc/hosts /etc/hostname /etc/resolv.conf /.dockerenv /etc/mtab; "
        "readlink /etc/mtab; hostname")


def _tar(entries: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode, link, dev in entries:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1_700_000_000, link
            if dev:
                ti.devmajor, ti.devminor = dev
            ti.size = len(data) if kind == R else 0
            tf.addfile(ti, io.BytesIO(data) if kind == R else None)
    return buf.getvalue()


def _image(dirs: tuple[str, ...] = ("bin", "etc", "tmp"), extra: tuple = ()) -> bytes:
    ensure_busybox()
    with open(BUSYBOX, "rb") as f:
        entries = [(d, D, b"", 0o755, "", None) for d in dirs] + [("bin/busybox", R, f.read(), 0o755, "", None)]
    entries += [(f"bin/{a}", L, b"", 0o777, "busybox", None) for a in ("sh", "cat", "stat", "hostname", "readlink")]
    return _tar(entries + list(extra))


IMAGES = {
    "plain": lambda: _image(),
    "noetc": lambda: _image(("bin", "tmp")),
    "full": lambda: _image(("bin", "dev", "etc", "sys", "tmp"), (
        ("proc", D, b"", 0o555, "", None), ("etc/hosts", R, b"1.2.3.4 img\n", 0o600, "", None),
        ("etc/hostname", R, b"imghost\n", 0o600, "", None), ("etc/mtab", R, b"mtab\n", 0o644, "", None),
        (".dockerenv", R, b"env\n", 0o600, "", None), ("dev/console", C, b"", 0o620, "", (5, 1)))),
    "hostslink": lambda: _image(extra=(
        ("etc/hosts.real", R, b"9.9.9.9 real\n", 0o644, "", None), ("etc/hosts", L, b"", 0o777, "hosts.real", None),
        ("etc/resolv.conf", L, b"", 0o777, "/run/resolv.conf", None),
        ("etc/mtab", L, b"", 0o777, "../proc/self/mounts", None))),
    "etclink": lambda: _image(("bin", "tmp", "usr", "usr/etc"), (
        ("usr/etc/passwd", R, b"root:x:0:0::/:/bin/sh\n", 0o644, "", None), ("etc", L, b"", 0o777, "usr/etc", None))),
    "shmfile": lambda: _image(("bin", "etc", "tmp", "dev"), (
        ("dev/shm", R, b"shm\n", 0o644, "", None), ("dev/pts", L, b"", 0o777, "/nowhere", None),
        ("sys", R, b"", 0o600, "", None))),
}
#: (image, create options) of each container; graphdriver takes these options as docker does.
CASES = {f"{img}": (img, ()) for img in IMAGES} | {
    "named": ("plain", ("--hostname", "web")),
    "options": ("plain", ("--hostname", "web.example.com", "--add-host", "db:10.0.0.5", "--add-host", "v6:fe80::1",
                          "--dns", "10.0.0.53", "--dns", "10.0.0.54")),
}
COMMITTED = ("plain", "full")  # committed with nothing changed: the init layer's files stay out


def walk(top: str, paths: set[str] | None = None) -> dict[str, dict]:
    """Every entry under ``top`` (or just ``paths``): type, mode, owner, size, target, device, opacity."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, top)
            if paths is not None and rel not in paths:
                continue
            st = os.lstat(full)
            e: dict = {"type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
                       "owner": (st.st_uid, st.st_gid)}
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    e["size"], e["data"] = st.st_size, f.read(4096)
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                e["opaque"] = os.getxattr(full, "trusted.overlay.opaque", follow_symlinks=False)
            except OSError:
                pass
            out[rel] = e
    return out


def _norm(text: str, hostname: str) -> str:
    return text.replace(hostname, "HOSTNAME")


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("initlayer")
    out = []
    for name, layer in IMAGES.items():
        out.append(str(d / f"{name}.tar"))
        docker_archive(out[-1], [layer()], [f"init/{name}:1"])
    return out


@pytest.fixture(scope="module")
def dockerd(archives: list[str]) -> dict[str, dict]:
    """Per case: dockerd's init-layer and rw-layer entries before start, the files it bind-mounts at start,
    what the container printed, and the layers of the image committed from it."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from support.dockerd import Dockerd, ensure_docker_packages

    ensure_docker_packages()
    runs: dict[str, dict] = {}
    with Dockerd("overlay2") as d:
        for path in archives:
            d.docker("load", "-i", path)
        for case, (img, opts) in CASES.items():
            cid = d.docker("create", "--network", "none", *opts, f"init/{img}:1", "sh", "-c", SHOW).stdout.strip()
            info = json.loads(d.docker("inspect", cid).stdout)[0]
            data, hostname = info["GraphDriver"]["Data"], info["Config"]["Hostname"]
            run = {"init": walk(data["LowerDir"].split(":")[0]), "rw": walk(data["UpperDir"]), "hostname": hostname}
            out = d.docker("start", "-a", cid)
            run["out"] = _norm(out.stdout, hostname)
            real = walk(os.path.join(d.data_root, "containers", cid), {"hosts", "hostname", "resolv.conf"})
            run["real"] = {"etc/" + n: e for n, e in real.items()}
            run["rw_after"] = walk(data["UpperDir"])
            if case in COMMITTED:
                d.docker("commit", cid, f"init/c-{case}:1")
                image = json.loads(d.docker("image", "inspect", f"init/c-{case}:1").stdout)[0]
                run["layers"] = image["RootFS"]["Layers"]
            runs[case] = run
    return runs


@pytest.fixture(scope="module", params=BACKENDS)
def ours(request: pytest.FixtureRequest, archives: list[str]) -> Iterator[tuple[str, dict, dict]]:
    """The same per case here: (backend, {case: run}, {image: vfs tree}), runs keyed as :func:`dockerd`'s."""
    backend = request.param
    root = tempfile.mkdtemp(prefix="gd-test-init-")
    tree = os.path.dirname(os.path.dirname(graphdriver.__file__))
    env = {**os.environ, "PYTHONPATH": tree}

    def gd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "--driver", backend, *args],
                              capture_output=True, text=True, env=env, cwd=tree, timeout=120)

    runs: dict[str, dict] = {}
    try:
        store = ContainerStore(ImageStore(root, open_driver(root, backend)))
        for path in archives:
            store.images.load(path)
        for case, (img, opts) in CASES.items():
            made = gd("container", "create", f"init/{img}:1", "--name", case, *opts)
            if made.returncode:
                runs[case] = {"error": made.stderr}  # the case fails, not the fixture
                continue
            c = store.get(case)
            init_dir, rw_dir = _layer_dir(root, backend, c.init_layer), _layer_dir(root, backend, c.rw_layer)
            run = {"init": walk(init_dir), "rw": walk(rw_dir), "hostname": c.hostname}
            run["out"] = _norm(gd("container", "run", case, "--", "sh", "-c", SHOW).stdout, c.hostname)
            run["rw_after"] = walk(rw_dir)
            if case in COMMITTED:
                new = store.commit(case, f"init/c-{case}:1")
                run["layers"] = store.images.config(new)["rootfs"]["diff_ids"]
            runs[case] = run
        image_dirs = {}
        if backend == "vfs":  # a vfs layer is a whole tree: the image's, to tell the init entries apart
            for img in IMAGES:
                (top,) = store.images.config(store.images.resolve(f"init/{img}:1"))["rootfs"]["diff_ids"]
                image_dirs[img] = walk(_layer_dir(root, backend, top.split(":", 1)[1]))  # one layer: chainID
        yield backend, runs, image_dirs
    finally:
        for entry in reversed(mountinfo.mounts_under(os.path.realpath(root))):  # none, unless a step failed
            syscalls.umount2(entry.mount_point, syscalls.MNT_DETACH)
        for name in os.listdir(root):
            shutil.rmtree(runtime_dir(os.path.join(root, name)), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _layer_dir(root: str, backend: str, layer: str) -> str:
    """A layer's own content: overlay2's diff dir, vfs's whole tree."""
    return os.path.join(root, "overlay2", layer, "diff") if backend == "overlay2" else os.path.join(root, "vfs",
                                                                                                     "dir", layer)


def _init_entries(backend: str, run: dict, image: dict, docker_paths: set[str]) -> dict[str, dict]:
    """The init layer's own entries: overlay2's diff dir as it is; on vfs, the paths dockerd's init layer
    holds (the rest of the tree must be the image's, unchanged)."""
    if backend == "overlay2":
        return run["init"]
    rest = {p: e for p, e in run["init"].items() if p not in docker_paths}
    assert rest == {p: e for p, e in image.items() if p not in docker_paths}
    return {p: e for p, e in run["init"].items() if p in docker_paths}


def _drop(entries: dict[str, dict], *keys: str) -> dict[str, dict]:
    return {p: {k: v for k, v in e.items() if k not in keys} for p, e in entries.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_init_layer_entries_are_dockerds(dockerd, ours, case):
    backend, runs, images = ours
    theirs, mine = dockerd[case], runs[case]
    assert "error" not in mine
    img = CASES[case][0]
    entries = _init_entries(backend, mine, images.get(img, {}), set(theirs["init"]))
    expected = dict(theirs["init"])
    for p in REAL:  # the intended difference: the real file (dockerd's bind-mounted one) in the layer
        assert expected[p]["type"] == stat.S_IFREG and expected[p]["mode"] == "0o755" and expected[p]["size"] == 0
        real = theirs["real"][p]
        expected[p] = {**expected[p], "mode": real["mode"], "size": real["size"],
                       "data": _norm(real["data"].decode(), theirs["hostname"]).encode()}
        entries[p] = {**entries[p], "data": _norm(entries[p]["data"].decode(), mine["hostname"]).encode()}
    if backend == "vfs":
        expected, entries = _drop(expected, "opaque"), _drop(entries, "opaque")
    assert entries == expected


@pytest.mark.parametrize("case", list(CASES))
def test_rw_layer_and_what_the_container_sees_are_dockers(dockerd, ours, case):
    backend, runs, _ = ours
    theirs, mine = dockerd[case], runs[case]
    assert "error" not in mine
    assert theirs["rw"] == {} and theirs["rw_after"] == {}
    if backend == "overlay2":  # a vfs rw layer is a whole tree
        assert mine["rw"] == {} and mine["rw_after"] == {}
    assert mine["out"] == theirs["out"]


@pytest.mark.parametrize("case", COMMITTED)
def test_commit_leaves_the_init_layer_out(dockerd, ours, case):
    """Nothing changed in the rw layer: docker's commit adds no layer, and neither does ours."""
    _, runs, _ = ours
    assert len(dockerd[case]["layers"]) == 1
    assert runs[case]["layers"] == dockerd[case]["layers"]
