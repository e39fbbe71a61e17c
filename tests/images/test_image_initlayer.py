"""The init layer's contents (plan and write), reference names, and the CLI's shape."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from graphdriver.errors import GraphDriverError
from graphdriver.store import initlayer
from graphdriver.store.images import normalize_ref

HOST_RESOLV = "nameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch corp.example\noptions edns0\n"


def test_plan_contents():
    entries = {e.path: e for e in initlayer.plan("web1", ["10.0.0.5"], [("db", "10.0.0.9")], [], HOST_RESOLV)}
    assert set(entries) >= {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab",
                            "dev/console", "dev/pts", "dev/shm", "proc", "sys"}
    assert entries["etc/hostname"].content == b"web1\n"
    hosts = entries["etc/hosts"].content.decode().splitlines()
    assert "127.0.0.1\tlocalhost" in hosts and "10.0.0.9\tdb" in hosts and "10.0.0.5\tweb1" in hosts
    resolv = entries["etc/resolv.conf"].content.decode()
    assert "nameserver 10.1.2.3" in resolv and "127.0.0.53" not in resolv  # loopback resolvers dropped
    assert "search corp.example" in resolv
    assert entries["etc/mtab"].kind == "symlink" and entries["etc/mtab"].target == "/proc/mounts"
    assert {entries[p].kind for p in ("dev/pts", "dev/shm", "proc", "sys")} == {"dir"}
    given = initlayer.resolv_conf(["1.1.1.1"], HOST_RESOLV).decode()
    assert given == "nameserver 1.1.1.1\n"
    assert "8.8.8.8" in initlayer.resolv_conf([], "nameserver 127.0.0.1\n").decode()


def test_write_into_rootfs(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hostname").write_text("image-hostname\n")
    (rootfs / "proc").mkdir(mode=0o555)
    initlayer.write(str(rootfs), initlayer.plan("h1", [], [], ["9.9.9.9"], ""))
    assert (rootfs / "etc" / "hostname").read_text() == "h1\n"
    assert os.readlink(rootfs / "etc" / "mtab") == "/proc/mounts"
    assert stat.S_ISREG(os.lstat(rootfs / "dev" / "console").st_mode)
    assert stat.S_IMODE(os.stat(rootfs / "proc").st_mode) == 0o555  # kept as the image had it
    assert (rootfs / ".dockerenv").exists()
    assert "127.0.1.1\th1" in (rootfs / "etc" / "hosts").read_text()


def test_write_never_follows_a_symlinked_dir_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(outside), rootfs / "etc")
    with pytest.raises(GraphDriverError, match="not a directory"):
        initlayer.write(str(rootfs), initlayer.plan("h", [], [], ["1.1.1.1"], ""))
    assert os.listdir(outside) == []


def test_bad_host_and_dns():
    with pytest.raises(GraphDriverError, match="add-host"):
        initlayer.parse_add_host("nocolon")
    with pytest.raises(GraphDriverError, match="dns"):
        initlayer.check_dns("not-an-ip")
    assert initlayer.parse_add_host("v6:::1") == ("v6", "::1")


def test_netns_addresses_reads_a_namespace():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from pyroute2 import NetNS, netns

    name = f"gdtest-{os.getpid()}"
    netns.create(name)
    try:
        with NetNS(name) as ns:
            idx = ns.link_lookup(ifname="lo")[0]  # no dummy/veth modules needed: an address on lo
            ns.link("set", index=idx, state="up")
            ns.addr("add", index=idx, address="192.0.2.7", prefixlen=32)
        assert initlayer.netns_addresses(name) == ["192.0.2.7"]
    finally:
        netns.remove(name)
    with pytest.raises(GraphDriverError, match="not found"):
        initlayer.netns_addresses(name)


def test_normalize_ref():
    assert normalize_ref("busybox") == "busybox:latest"
    assert normalize_ref("docker.io/library/busybox:1.36") == "busybox:1.36"
    assert normalize_ref("localhost:5000/a/b") == "localhost:5000/a/b:latest"
    for bad in ("UPPER", "a@sha256:00", "a:b:c:", "", "a:"):
        with pytest.raises(GraphDriverError):
            normalize_ref(bad)


def test_cli_shape():
    run = [sys.executable, "-m", "graphdriver"]
    out = subprocess.run(run + ["image", "--help"], capture_output=True, text=True).stdout
    for cmd in ("load", "ls", "inspect", "rm", "save", "tag"):
        assert cmd in out
    out = subprocess.run(run + ["container", "--help"], capture_output=True, text=True).stdout
    for cmd in ("create", "mount", "umount", "ls", "inspect", "diff", "commit", "rm", "run"):
        assert cmd in out
    out = subprocess.run(run + ["container", "run", "--help"], capture_output=True, text=True).stdout
    assert "NOT a container runtime" in out
