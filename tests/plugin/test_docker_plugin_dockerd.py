"""graphdriver as a real dockerd's storage driver (Debian's docker.io 20.10, ``--experimental``).

For each backend (overlay2, vfs) a plugin process and a private dockerd using it are started once for the
module; a second private dockerd on its built-in overlay2 gets the same inputs for comparison. Everything
is stopped by PID afterwards, even when a test fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator

import pytest
from support.dockerd import Dockerd, DockerError, ensure_docker_packages, plugin_dockerd, rootfs_tar

import graphdriver
from graphdriver.kernel import mountinfo

pytestmark = [pytest.mark.integration]

BACKENDS = ["overlay2", "vfs"]
RUN = ["run", "--network", "none", "--log-driver", "none"]
CHANGE = "echo hello > /hello.txt && rm /etc/motd"
# Only additions and modifications, with every touched entry's mtime pinned: the layer tar is a pure
# function of the inputs, so two dockerds must agree on its digest.
PINNED = ("mkdir -p /data && echo x > /data/f && echo y >> /etc/passwd && "
          "touch -d '2020-01-01 00:00:00' /data/f /data /etc/passwd /etc")


def diff_implemented() -> bool:
    from graphdriver.archive import driver_diff

    with open(driver_diff.__file__) as f:
        return "raise NotImplementedError" not in f.read()


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: dockerd and real mounts")
    if not diff_implemented():
        pytest.skip("apply_diff/diff are not implemented yet (graphdriver/archive); dockerd needs them")
    ensure_docker_packages()


@pytest.fixture(scope="module")
def native() -> Iterator[Dockerd]:
    """A private dockerd on its own overlay2: the reference."""
    with Dockerd("overlay2") as d:
        d.docker("import", "-", "base", input=rootfs_tar())
        yield d


@pytest.fixture(scope="module", params=BACKENDS)
def env(request) -> Iterator[tuple]:
    """(plugin, dockerd, backend) with the busybox rootfs imported as ``base``."""
    with plugin_dockerd(request.param) as (plugin, d):
        d.docker("import", "-", "base", input=rootfs_tar())
        yield plugin, d, request.param


def lines(text: str) -> list[str]:
    return sorted(x for x in text.splitlines() if x.strip())


def saved_layers(d: Dockerd, image: str) -> tuple[list[str], list[str]]:
    """``docker save``: the image's diffIDs, and the sha256 of each layer.tar in the archive."""
    data = d.docker_bytes("save", image)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]
        config = json.load(tf.extractfile(manifest["Config"]))
        digests = ["sha256:" + hashlib.sha256(tf.extractfile(p).read()).hexdigest() for p in manifest["Layers"]]
    return config["rootfs"]["diff_ids"], digests


def top_layer_headers(d: Dockerd, image: str) -> list[tuple]:
    """The tar headers of the image's top layer as ``docker save`` gives it (name, type, mode, owner, time)."""
    with tarfile.open(fileobj=io.BytesIO(d.docker_bytes("save", image))) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]
        layer = tf.extractfile(manifest["Layers"][-1]).read()
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        return [(t.name, t.type, oct(t.mode), t.uid, t.gid, t.uname, t.gname, t.mtime, t.size, dict(t.pax_headers))
                for t in lt]


def plugin_home(d: Dockerd, plugin) -> str:
    return os.path.join(d.data_root, plugin.name)


def test_dockerd_uses_the_plugin(env) -> None:
    plugin, d, backend = env
    assert d.docker("info", "--format", "{{.Driver}}").stdout.strip() == plugin.name
    status = dict(json.loads(d.docker("info", "--format", "{{json .DriverStatus}}").stdout))
    assert status["Backing Filesystem"] == "extfs"
    assert "GraphDriver.Init" in plugin.log() and "GraphDriver.ApplyDiff" in plugin.log()


def test_run_diff_commit_inspect(env, native) -> None:
    plugin, d, backend = env
    c1 = f"c1-{backend}"
    d.docker(*RUN, "--name", c1, "base", "sh", "-c", CHANGE)
    native.docker(*RUN, "--name", c1, "base", "sh", "-c", CHANGE)
    changes = lines(d.docker("diff", c1).stdout)
    assert changes == ["A /hello.txt", "C /etc", "D /etc/motd"]
    assert changes == lines(native.docker("diff", c1).stdout)

    d.docker("commit", c1, "img2")
    out = d.docker(*RUN, "--rm", "img2", "sh", "-c", "cat /hello.txt; test -e /etc/motd || echo motd-gone")
    assert out.stdout.split() == ["hello", "motd-gone"]

    info = json.loads(d.docker("image", "inspect", "img2").stdout)[0]["GraphDriver"]
    assert info["Name"] == plugin.name
    if backend == "overlay2":
        data = info["Data"]
        assert set(data) == {"LowerDir", "MergedDir", "UpperDir", "WorkDir"}
        assert data["UpperDir"].startswith(plugin_home(d, plugin) + "/overlay2/")
        with open(os.path.join(data["UpperDir"], "hello.txt")) as f:
            assert f.read() == "hello\n"
        assert os.path.exists(os.path.join(data["UpperDir"], "etc", "motd"))  # the whiteout
        assert len(data["LowerDir"].split(":")) == 1
    else:
        assert not info["Data"]  # Docker's vfs reports no data either

    # docker save: every layer.tar is exactly the layer its diffID names
    diff_ids, digests = saved_layers(d, "img2")
    assert len(diff_ids) == 2 and digests == diff_ids
    # the base layer: the same input as the native dockerd gives the same diffID
    native_ids, native_digests = saved_layers(native, "base")
    assert diff_ids[:1] == native_ids == native_digests
    # the native dockerd loads the plugin's image and saves it back with the same diffIDs
    native.docker("load", input=d.docker_bytes("save", "img2"))
    assert saved_layers(native, "img2") == (diff_ids, diff_ids)
    d.docker("rm", c1)
    native.docker("rm", c1)


def test_commit_diff_ids_match_native(env, native) -> None:
    plugin, d, backend = env
    ids, headers = {}, {}
    ctr, img = f"pinned-{backend}", f"pinned-img-{backend}"
    for name, daemon in (("plugin", d), ("native", native)):
        daemon.docker(*RUN, "--name", ctr, "base", "sh", "-c", PINNED)
        assert lines(daemon.docker("diff", ctr).stdout) == [
            "A /data", "A /data/f", "C /etc", "C /etc/passwd"]
        daemon.docker("commit", ctr, img)
        ids[name] = saved_layers(daemon, img)
        headers[name] = top_layer_headers(daemon, img)
        daemon.docker("rm", ctr)
        daemon.docker("rmi", img)
    assert ids["plugin"][0] == ids["plugin"][1]
    assert headers["plugin"] == headers["native"]  # readable first: which tar header fields differ
    assert ids["plugin"] == ids["native"]


def test_load_native_image_then_save_it_back(env, native) -> None:
    """A two-layer image from the native dockerd goes in through ApplyDiff on a parent, and comes out of
    ``docker save`` (reassembled from the plugin's files) with every layer.tar matching its diffID."""
    plugin, d, backend = env
    name = f"native-two-{backend}"
    script = "mkdir -p /srv && echo served > /srv/index && rm /etc/group"
    native.docker(*RUN, "--name", name, "base", "sh", "-c", script)
    native.docker("commit", name, name)
    native.docker("rm", name)
    want = saved_layers(native, name)
    d.docker("load", input=native.docker_bytes("save", name))
    assert saved_layers(d, name) == want
    out = d.docker(*RUN, "--rm", name, "sh", "-c", "cat /srv/index; test -e /etc/group || echo group-gone")
    assert out.stdout.split() == ["served", "group-gone"]
    d.docker("rmi", name)
    native.docker("rmi", name)


def test_parallel_containers(env) -> None:
    """dockerd drives the plugin from several goroutines at once: four runs in parallel all succeed."""
    from concurrent.futures import ThreadPoolExecutor

    plugin, d, backend = env

    def run(i: int) -> str:
        return d.docker(*RUN, "--rm", "base", "sh", "-c", f"echo {i} > /mine && cat /mine").stdout.strip()

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(run, range(4))) == ["0", "1", "2", "3"]
    assert mountinfo.mounts_under(plugin_home(d, plugin)) == []


def test_restart_with_containers_present(env) -> None:
    plugin, d, backend = env
    d.docker(*RUN, "--name", "stopped", "base", "sh", "-c", "echo kept > /kept")
    d.docker(*RUN, "-d", "--stop-timeout", "1", "--name", "running", "base", "sleep", "600")
    assert d.docker("inspect", "-f", "{{.State.Running}}", "running").stdout.strip() == "true"
    d.restart()
    assert d.docker("info", "--format", "{{.Driver}}").stdout.strip() == plugin.name
    assert lines(d.docker("diff", "stopped").stdout) == ["A /kept"]
    d.docker("start", "running")
    assert d.docker("inspect", "-f", "{{.State.Running}}", "running").stdout.strip() == "true"
    out = d.docker("start", "-a", "stopped")  # runs its command again on the same rw layer
    assert out.returncode == 0
    assert d.docker("exec", "running", "cat", "/etc/motd").stdout == "welcome to busybox\n"
    assert d.docker(*RUN, "--rm", "base", "echo", "after-restart").stdout.strip() == "after-restart"
    # the plugin restarts under a running container: the mount and its reference survive in the kernel and
    # on disk, so the new plugin process unmounts it when dockerd stops the container
    plugin.stop()
    plugin.start()
    assert d.docker("exec", "running", "cat", "/etc/motd").stdout == "welcome to busybox\n"
    d.docker("stop", "-t", "1", "running")
    home = plugin_home(d, plugin)
    assert mountinfo.mounts_under(home) == []
    d.docker("start", "running")
    assert d.docker("inspect", "-f", "{{.State.Running}}", "running").stdout.strip() == "true"
    d.docker("rm", "-f", "running", "stopped")


def test_rm_and_rmi_leave_nothing(env) -> None:
    plugin, d, backend = env
    d.docker(*RUN, "-d", "--stop-timeout", "1", "--name", "victim", "base", "sh", "-c", "echo v > /v; sleep 600")
    d.docker("commit", "victim", "victim-img")
    home = plugin_home(d, plugin)
    assert any(m.mount_point.startswith(home) for m in mountinfo.mounts_under(home)) == (backend == "overlay2")
    ids = d.docker("ps", "-aq").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids)
    tags = d.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    if tags:
        d.docker("rmi", *tags)
    assert d.docker("images", "-aq").stdout.split() == []
    # no mount anywhere under the daemon's temp dir, no layer left in the plugin's store
    assert mountinfo.mounts_under(home) == []
    assert [m.mount_point for m in d.mounts() if m.mount_point != d.data_root] == []
    driver = graphdriver.open_driver(home, backend)
    assert driver.layers() == []
    assert driver.refs.all() == {}
    assert driver.verify() == []
    store = driver.home
    for name in os.listdir(store):  # internal dot-dirs and the link/layer dirs may stay, empty
        path = os.path.join(store, name)
        if name in (".lock", ".native-diff-probe"):  # the lock and the kept verdict of the diff probe
            continue
        assert os.path.isdir(path) and (name.startswith(".") or name in ("l", "dir")), f"left behind: {path}"
        assert os.listdir(path) == [], f"{path} is not empty: {os.listdir(path)[:5]}"
    # ...and the daemon still works after removing everything
    d.docker("import", "-", "base", input=rootfs_tar())
    assert d.docker(*RUN, "--rm", "base", "echo", "ok").stdout.strip() == "ok"


def test_storage_opt_size_is_refused_clearly(env) -> None:
    _, d, _ = env
    with pytest.raises(DockerError, match="size"):
        d.docker("create", "--storage-opt", "size=1G", "base", "true")
