"""Differential: one whole docker workflow on dockerd's built-in overlay2 and vfs and on dockerd using the
graphdriver plugin (overlay2 and vfs backends), and the results compared where they must agree.

The workflow: ``docker load`` of a busybox image, a legacy-builder ``docker build`` (ENV, WORKDIR, COPY,
RUN steps adding, changing and deleting files and directories, chmod, a hard link, a whiteout of a
directory, a directory made opaque), ``docker run`` writes (a symlink among them), ``diff``, ``commit``,
``save``, ``export``, ``cp`` into and out of a stopped container, ``system df -v``, ``info``, a dockerd
restart with containers present, ``rm -f`` of a running container, ``container prune`` and ``image rm``.
Everything time-dependent (ids of time-stamped configs, tar mtimes, ages) is left out of the comparison:
layer tars are compared header by header without their times, diffIDs only where no time goes in. The
four daemons run two at a time (module-scoped), each stopped by PID afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support.dockerd import DOCKER, Dockerd, ensure_docker_packages, plugin_dockerd, rootfs_tar

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = ("run", "--network", "none", "--log-driver", "none")
PINNED = "touch -d '2020-01-01 00:00:00'"
DOCKERFILE = f"""FROM base:1
ENV FOO=bar
WORKDIR /work
COPY ctx.txt /work/ctx.txt
RUN mkdir -p /d/sub && echo a > /d/sub/f && echo b > /d/g && ln /d/g /d/hl && ln -s g /d/sym && chmod 700 /d/sub \\
    && {PINNED} /d/sub/f /d/g /d/sub /d /work/ctx.txt /work && {PINNED} -h /d/sym
RUN echo mod >> /etc/passwd && rm -rf /d/sub && rm /etc/motd && mkdir /d/new && {PINNED} /d/new /d /etc/passwd /etc
RUN rm -rf /d && mkdir /d && echo z > /d/z && {PINNED} /d/z /d
"""
#: Built layers whose tars hold no time of the build: base, the first RUN (all pinned), for overlay2 also
#: the last (an opaque directory; vfs writes its deletions as whiteouts stamped with the time of the diff).
DETERMINISTIC = {"overlay2": (0, 3, 5), "vfs": (0, 3)}
WRITES = "mkdir /x && echo 1 > /x/a && rm /etc/group && echo q >> /etc/passwd && rm /bin/ls && ln -s /etc/passwd /l1"


def load_archive() -> bytes:
    """A ``docker save`` archive of the busybox rootfs as ``base:1``, with a fixed config (a fixed image id)."""
    layer = rootfs_tar()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                         "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "history": [{"created": "2024-01-01T00:00:00Z"}]}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["base:1"], "Layers": ["l0/layer.tar"]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("l0/layer.tar", layer), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def headers(layer: bytes) -> list[tuple]:
    """A layer tar's entries without their times."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        return [(t.name, t.type, oct(t.mode), t.uid, t.gid, t.uname, t.gname, t.size, t.linkname,
                 sorted((k, v) for k, v in t.pax_headers.items() if k not in ("mtime", "atime", "ctime")))
                for t in tf]


def saved(d: Dockerd, image: str) -> list[tuple[str, list[tuple]]]:
    """``docker save``: (diffID, headers) per layer, each layer.tar checked against its diffID."""
    with tarfile.open(fileobj=io.BytesIO(d.docker_bytes("save", image))) as tf:
        [entry] = json.load(tf.extractfile("manifest.json"))
        diff_ids = json.load(tf.extractfile(entry["Config"]))["rootfs"]["diff_ids"]
        layers = [tf.extractfile(p).read() for p in entry["Layers"]]
    assert ["sha256:" + hashlib.sha256(b).hexdigest() for b in layers] == diff_ids
    return [(i, headers(b)) for i, b in zip(diff_ids, layers, strict=True)]


def entries(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(t.name, t.type, oct(t.mode), t.uid, t.gid, t.size, t.linkname) for t in tf]


def build(d: Dockerd, ctx: str) -> None:
    """``docker build`` with the legacy builder, offline."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_BUILDKIT": "0",
           "DOCKER_CONFIG": os.path.join(d.tmp, "cli")}
    res = subprocess.run([DOCKER, "-H", f"unix://{d.sock}", "build", "--network", "none", "-q", "-t", "built:1",
                          ctx], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def workflow(d: Dockerd) -> dict[str, Any]:
    """Run the workflow on one daemon; what must agree, keyed by aspect."""
    def run(*args: str, **kw: Any) -> str:
        return d.docker(*args, **kw).stdout

    r: dict[str, Any] = {}
    run("load", input=load_archive())
    r["load"] = json.loads(run("image", "inspect", "--format", "{{json .}}", "base:1"))
    r["load"] = {k: r["load"][k] for k in ("Id", "RootFS", "Size", "Config", "Created")}
    with tempfile.TemporaryDirectory(prefix="pa-ctx-") as ctx:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(ctx, "ctx.txt"), "w") as f:
            f.write("context\n")
        os.utime(os.path.join(ctx, "ctx.txt"), (1_600_000_000, 1_600_000_000))
        build(d, ctx)
        r["build"] = saved(d, "built:1")
        r["build_sizes"] = (run("image", "inspect", "--format", "{{.Size}}", "built:1"),
                            run("history", "--format", "{{.Size}}", "built:1"))
        r["build_run"] = run(*RUN, "--rm", "built:1", "sh", "-c", "pwd; echo $FOO; cat ctx.txt; ls /d; cat /d/z")
        run(*RUN, "--name", "wr", "base:1", "sh", "-c", WRITES)
        r["diff"] = sorted(run("diff", "wr").splitlines())
        r["size"] = run("container", "inspect", "-s", "--format", "{{.SizeRw}} {{.SizeRootFs}}", "wr")
        r["export"] = sorted(entries(d.docker_bytes("export", "wr")))
        run("commit", "wr", "committed:1")
        r["commit"] = [h for _, h in saved(d, "committed:1")]
        r["commit_size"] = run("image", "inspect", "--format", "{{.Size}}", "committed:1")
        run("cp", os.path.join(ctx, "ctx.txt"), "wr:/x/in.txt")
        run("cp", ctx, "wr:/ctxdir")
    r["cp_out"] = entries(d.docker_bytes("cp", "wr:/x", "-"))
    r["diff_after_cp"] = sorted(run("diff", "wr").splitlines())
    df = json.loads(run("system", "df", "-v", "--format", "{{json .}}"))
    r["df"] = (sorted((i["Repository"], i["Size"], i["SharedSize"], i["UniqueSize"], i["Containers"])
                      for i in df["Images"]), sorted((c["Names"], c["Size"]) for c in df["Containers"]))
    r["info"] = dict(json.loads(run("info", "--format", "{{json .DriverStatus}}")) or []).get("Backing Filesystem")
    run(*RUN, "-d", "--name", "live", "base:1", "sh", "-c", "echo live > /live; exec sleep 600")
    run("create", "--network", "none", "--name", "fresh", "base:1", "cat", "/etc/motd")
    d.restart()
    r["restart_ps"] = sorted(re.sub(r"\(\d+\).*", "", line) for line in
                             run("ps", "-a", "--format", "{{.Names}} {{.Status}}").splitlines())
    run("start", "live")
    r["restart"] = (run("exec", "live", "cat", "/live"), run("start", "-a", "fresh"),
                    sorted(run("diff", "wr").splitlines()))
    r["rm_f"] = d.docker("rm", "-f", "live").returncode
    r["prune"] = run("container", "prune", "-f").splitlines()[-1]
    r["rmi"] = len(run("image", "rm", "committed:1", "built:1").splitlines())
    r["images"] = sorted(run("images", "-a", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}").splitlines())
    return r


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """The workflow's results per daemon: native-overlay2, native-vfs, plugin-overlay2, plugin-vfs."""
    if os.geteuid() != 0:
        pytest.skip("needs root: dockerd and real mounts")
    ensure_docker_packages()

    def native(driver: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with Dockerd(driver) as d:
                return workflow(d)
        return go

    def plugin(driver: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with plugin_dockerd(driver) as (_, d):
                return workflow(d)
        return go

    jobs = {f"{kind}-{b}": make(b) for b in ("overlay2", "vfs") for kind, make in (("native", native),
                                                                                ("plugin", plugin))}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


AGREE = ("load", "build_sizes", "build_run", "diff", "size", "export", "commit", "commit_size", "cp_out",
         "diff_after_cp", "df", "restart_ps", "restart", "rm_f", "prune", "rmi", "images")


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
@pytest.mark.parametrize("aspect", AGREE)
def test_plugin_agrees_with_dockerds_own_driver(runs, backend: str, aspect: str) -> None:
    assert runs[f"plugin-{backend}"][aspect] == runs[f"native-{backend}"][aspect]


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_built_layers_agree_but_for_times(runs, backend: str) -> None:
    """Every built layer has the same entries (times aside); those no time goes into, the same diffID."""
    plugin, native = runs[f"plugin-{backend}"]["build"], runs[f"native-{backend}"]["build"]
    assert [h for _, h in plugin] == [h for _, h in native]
    assert [plugin[i][0] for i in DETERMINISTIC[backend]] == [native[i][0] for i in DETERMINISTIC[backend]]


def test_the_workflow_did_what_it_says(runs) -> None:
    """The agreed results are the expected ones (so agreement is not two equal failures)."""
    r = runs["plugin-overlay2"]
    assert r["diff"] == ["A /l1", "A /x", "A /x/a", "C /bin", "C /etc", "C /etc/passwd", "D /bin/ls",
                         "D /etc/group"]
    assert r["size"].split()[0] == str(len("1\n") + len("root:x:0:0:root:/root:/bin/sh\nq\n") + len("/etc/passwd"))
    assert r["build_run"].split() == ["/work", "bar", "context", "z", "z"]
    assert r["restart"][:2] == ("live\n", "welcome to busybox\n")
    assert r["rm_f"] == 0 and r["rmi"] >= 2 and r["images"][0].startswith("base:1 ")
    # dockerd's vfs has no status lines; the plugin's backends report the backing filesystem as overlay2 does
    assert runs["plugin-vfs"]["info"] == r["info"] == runs["native-overlay2"]["info"] == "extfs"
