"""`container run` of a busybox image, and the bad-input cases: one line, non-zero exit, nothing half made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import time

import pytest
from imgkit import busybox_layer, docker_archive, layer_tar, tree_state

from graphdriver.kernel import mountinfo


@pytest.fixture
def busybox(tmp_path, store):
    built = docker_archive(str(tmp_path / "bb.tar"), [busybox_layer()], ["busybox:test"])
    store.images.load(built.path)
    return built


def _netns_names() -> set[str]:
    try:
        return set(os.listdir("/var/run/netns"))
    except FileNotFoundError:
        return set()


def test_run_busybox(store, gd, busybox, root):
    store.create("busybox:test", name="bb", hostname="bb-host")
    before_ns = _netns_names()
    p = gd("container", "run", "bb", "--", "sh", "-c", "echo hi > /x; hostname", check=True)
    assert p.stdout.strip() == "bb-host"
    c = store.get("bb")
    assert open(os.path.join(store.driver.diff_path(c.rw_layer), "x")).read() == "hi\n"
    # a fresh network namespace with only lo, a PID namespace where sh is pid 1, a /proc of its own
    p = gd("container", "run", "bb", "--", "sh", "-c", "echo $$; ls /sys/class/net 2>/dev/null; cat /proc/1/comm",
           check=True)
    lines = p.stdout.split()
    assert lines[0] == "1"
    # nothing left behind: no mount under the root, no netns, no reference
    assert store.driver.mount_count(c.rw_layer) == 0
    assert mountinfo.mounts_under(os.path.realpath(root)) == []
    assert _netns_names() == before_ns
    # exit codes pass through
    assert gd("container", "run", "bb", "--", "sh", "-c", "exit 7").returncode == 7
    # /x shows in docker diff, and not the init layer's files
    diff = gd("container", "diff", "bb", check=True).stdout.splitlines()
    assert "A /x" in diff and not any("hostname" in line for line in diff)


def test_commit_refused_while_running(store, gd, busybox, root):
    store.create("busybox:test", name="busy")
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "container", "run", "busy",
                             "--", "sh", "-c", "echo started; read line"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        images_before = tree_state(os.path.join(root, "images"))
        layers_before = store.driver.layers()
        p = gd("container", "commit", "busy", "busy:snap")
        assert p.returncode != 0 and "running" in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert tree_state(os.path.join(root, "images")) == images_before
        assert store.driver.layers() == layers_before
        p = gd("container", "rm", "busy")
        assert p.returncode != 0 and "running" in p.stderr
        assert "yes" in gd("container", "ls", check=True).stdout
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        finally:
            _stop(proc)
    assert proc.returncode == 0
    gd("container", "commit", "busy", "busy:snap", check=True)


def test_rm_force_stops_a_run(store, gd, busybox, root):
    store.create("busybox:test", name="victim")
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "container", "run", "victim",
                             "--", "sh", "-c", "echo started; read line"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        gd("container", "rm", "--force", "victim", check=True)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert store.all() == []
    assert [x for x in store.driver.layers() if x.startswith(tuple("0123456789abcdef"))] == \
        [store.images.top_layer(busybox.image_id)]
    assert mountinfo.mounts_under(os.path.realpath(root)) == []


def _stop(proc: subprocess.Popen) -> None:
    """End a `container run` we started: SIGTERM (it cleans up), SIGKILL only if that fails."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _snapshot(store, root):
    return (tree_state(os.path.join(root, "images")), tree_state(os.path.join(root, "containers")),
            store.driver.layers())


def _one_line_failure(p):
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphdriver: "), p.stderr
    return lines[0]


def test_bad_input(tmp_path, store, gd, busybox, root):
    store.create("busybox:test", name="taken")
    good = docker_archive(str(tmp_path / "good.tar"), [layer_tar({"a": "1"}), layer_tar({"b": "PAYLOAD-B"})],
                          ["good:1"])
    data = open(good.path, "rb").read()
    (tmp_path / "truncated.tar").write_bytes(data[: len(data) // 3])
    (tmp_path / "corrupt.tar").write_bytes(b"\x1f\x8b" + os.urandom(5000))
    (tmp_path / "mismatch.tar").write_bytes(data.replace(b"PAYLOAD-B", b"PAYLOAD-X"))
    with tarfile.open(good.path) as src, tarfile.open(tmp_path / "missing.tar", "w") as dst:
        first_layer = next(m.name for m in src.getmembers() if m.name.endswith("layer.tar"))
        for m in src.getmembers():
            if m.name != first_layer:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    before = _snapshot(store, root)
    cases = {
        ("image", "load", "-q", "-i", str(tmp_path / "truncated.tar")): "truncated|corrupt",
        ("image", "load", "-q", "-i", str(tmp_path / "corrupt.tar")): "corrupt|truncated",
        ("image", "load", "-q", "-i", str(tmp_path / "mismatch.tar")): "mismatch",
        ("image", "load", "-q", "-i", str(tmp_path / "missing.tar")): "missing blob",
        ("image", "load", "-q", "-i", str(tmp_path / "nope.tar")): "no such archive",
        ("image", "inspect", "nosuch:1"): "no such image",
        ("image", "rm", "nosuch"): "no such image",
        ("image", "save", "nosuch", "-o", str(tmp_path / "out.tar")): "no such image",
        ("container", "create", "nosuch:1"): "no such image",
        ("container", "create", "busybox:test", "--name", "taken"): "already in use",
        ("container", "inspect", "nosuch"): "no such container",
        ("container", "commit", "nosuch", "x:1"): "no such container",
        ("container", "rm", "nosuch"): "no such container",
        ("container", "run", "nosuch", "--", "true"): "no such container",
        ("container", "commit", "taken", "BAD:ref"): "invalid reference",
        ("container", "create", "busybox:test", "--add-host", "bad"): "add-host",
    }
    for args, pattern in cases.items():
        line = _one_line_failure(gd(*args))
        assert re.search(pattern, line), (args, line)
        assert _snapshot(store, root) == before, args
    assert not os.path.exists(tmp_path / "out.tar")
    assert [n for n in os.listdir(tmp_path) if n.startswith(".save-")] == []


def test_netns_addresses_and_run_inside_it(store, gd, busybox, root):
    from pyroute2 import NetNS, netns

    name = f"gdtest-run-{os.getpid()}"
    netns.create(name)
    try:
        with NetNS(name) as ns:
            idx = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=idx, state="up")
            ns.addr("add", index=idx, address="192.0.2.44", prefixlen=32)
        gd("container", "create", "busybox:test", "--name", "netc", "--hostname", "web", "--netns", name,
           "--add-host", "db:10.1.1.1", "--dns", "192.0.2.53", check=True)
        m = store.mount("netc")
        try:
            hosts = open(os.path.join(m, "etc/hosts")).read().splitlines()
            assert "192.0.2.44\tweb" in hosts and "10.1.1.1\tdb" in hosts
            assert open(os.path.join(m, "etc/resolv.conf")).read() == "nameserver 192.0.2.53\n"
        finally:
            store.umount("netc")
        p = gd("container", "run", "netc", "--", "ip", "-4", "addr", check=True)
        assert "192.0.2.44" in p.stdout  # the command ran in that namespace
        doc = store.inspect("netc")
        assert doc["NetworkSettings"]["Addresses"] == ["192.0.2.44"]
    finally:
        netns.remove(name)


def test_sigterm_to_run_still_cleans_up(store, busybox, root):
    import signal

    store.create("busybox:test", name="term")
    before_ns = _netns_names()
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "container", "run", "term",
                             "--", "sh", "-c", "echo started; sleep 60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode != 0
    assert store.running_pid(store.get("term")) is None
    assert mountinfo.mounts_under(os.path.realpath(root)) == []
    assert _netns_names() == before_ns


def test_rm_of_mounted_container_needs_force(store, gd, busybox, root):
    store.create("busybox:test", name="mnt")
    store.mount("mnt")
    before = _snapshot(store, root)
    line = _one_line_failure(gd("container", "rm", "mnt"))
    assert "mounted" in line and _snapshot(store, root) == before
    gd("container", "rm", "-f", "mnt", check=True)
    assert mountinfo.mounts_under(os.path.realpath(root)) == []


def test_commit_with_pause_takes_a_consistent_snapshot(store, gd, busybox, root):
    import signal

    store.create("busybox:test", name="busyloop")
    script = ("echo line-0 > /counter; echo started; i=0; "
              "while true; do echo line-$i > /c.tmp; mv /c.tmp /counter; i=$((i+1)); done")
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "container", "run", "busyloop",
                             "--", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        new_id = gd("container", "commit", "--pause", "busyloop", "busy:paused", check=True).stdout.strip()
        top = store.images.top_layer(new_id)
        text = open(os.path.join(store.driver.diff_path(top), "counter")).read()
        assert re.fullmatch(r"line-\d+\n", text), text  # renamed into place whole: never half there
        assert proc.poll() is None  # the run goes on after the pause
        rw = os.path.join(store.driver.diff_path(store.get("busyloop").rw_layer), "counter")
        first = int(open(rw).read().split("-")[1])
        time.sleep(0.5)
        assert int(open(rw).read().split("-")[1]) > first  # the loop was continued after the snapshot
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        _stop(proc)
    assert mountinfo.mounts_under(os.path.realpath(root)) == []


def test_sigkill_of_run_takes_the_command_along(store, gd, busybox, root):
    import signal

    import psutil

    c = store.create("busybox:test", name="killed")
    proc = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "container", "run", "killed",
                             "--", "sh", "-c", "echo started; while true; do sleep 1; done"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        kids = psutil.Process(proc.pid).children(recursive=True)
        assert kids
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert alive == []
    finally:
        _stop(proc)
    assert any(n.startswith(f"gd-{c.id[:12]}-") for n in _netns_names())  # a SIGKILL can't clean up...
    gd("container", "run", "killed", "--", "true", check=True)
    assert not any(n.startswith(f"gd-{c.id[:12]}-") for n in _netns_names())  # ...the next run does
    gd("container", "rm", "--force", "killed", check=True)
    assert mountinfo.mounts_under(os.path.realpath(root)) == []
