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
    assert given == "search corp.example\nnameserver 1.1.1.1\noptions edns0\n"  # the host's search, options
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
    assert "\th1" not in (rootfs / "etc" / "hosts").read_text()  # no addresses: no line for the hostname


def test_write_never_follows_a_symlinked_dir_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(outside), rootfs / "etc")
    initlayer.write(str(rootfs), initlayer.plan("h", [], [], ["1.1.1.1"], ""))
    assert os.listdir(outside) == []
    assert stat.S_ISDIR(os.lstat(rootfs / "etc").st_mode)  # the symlink replaced by a directory, as dockerd does
    assert (rootfs / "etc" / "hostname").read_text() == "h\n"


def test_write_replaces_what_is_not_a_directory_as_dockerd(tmp_path):
    """moby's initlayer.Setup unlinks every non-directory on an entry's path and makes the entry anew."""
    rootfs = tmp_path / "rootfs"
    for d in ("dev", "etc", "proc", "usr/etc"):
        (rootfs / d).mkdir(parents=True)
    (rootfs / "dev" / "shm").write_text("shm\n")  # a file where a mount point directory goes
    os.symlink("/nowhere", rootfs / "dev" / "pts")
    os.mknod(rootfs / "dev" / "console", 0o620 | stat.S_IFCHR, os.makedev(5, 1))
    (rootfs / "sys").write_text("")
    (rootfs / "etc" / "mtab").write_text("mtab\n")
    (rootfs / ".dockerenv").write_text("env\n")
    os.chmod(rootfs / ".dockerenv", 0o600)
    os.symlink("hosts.real", rootfs / "etc" / "hosts")
    (rootfs / "proc" / "keep").write_text("")
    initlayer.write(str(rootfs), initlayer.plan("h", [], [], ["1.1.1.1"], ""))
    for d in ("dev/shm", "dev/pts", "sys"):
        st = os.lstat(rootfs / d)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, d
    for f in ("dev/console", ".dockerenv"):
        st = os.lstat(rootfs / f)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_size == 0, f
    assert os.readlink(rootfs / "etc" / "mtab") == "/proc/mounts"
    assert stat.S_ISREG(os.lstat(rootfs / "etc" / "hosts").st_mode)
    assert not (rootfs / "etc" / "hosts.real").exists()
    assert (rootfs / "proc" / "keep").exists()  # a directory is kept with what is in it
    os.unlink(rootfs / "etc" / "hostname")
    os.mkdir(rootfs / "etc" / "hostname")  # dockerd keeps it, and its start fails to bind-mount a file there
    with pytest.raises(GraphDriverError, match="is a directory"):
        initlayer.write(str(rootfs), initlayer.plan("h", [], [], ["1.1.1.1"], ""))


def test_hosts_and_resolv_conf_are_dockerds():
    """What dockerd 20.10 writes (seen with a bind-mounted host resolv.conf, --network none)."""
    hosts = initlayer.hosts_file("web", [], [("db", "10.0.0.5")]).decode()
    assert hosts.splitlines()[-1] == "10.0.0.5\tdb" and "web" not in hosts
    assert initlayer.hosts_file("a.b", ["10.0.0.2"], []).decode().splitlines()[-1] == "10.0.0.2\ta.b a"
    bridged = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
               "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n10.0.0.5\tdb\n10.99.0.2\tweb\n")
    assert initlayer.hosts_file("web", ["10.99.0.2"], [("db", "10.0.0.5")]).decode() == bridged  # a bridge network's
    mixed = ("# a comment\nsearch corp.example lab.example\nnameserver 127.0.0.53\nnameserver 10.1.2.3\n"
             "nameserver 2001:db8::53\noptions edns0 ndots:3\n")
    assert initlayer.resolv_conf([], mixed) == (b"# a comment\nsearch corp.example lab.example\n"
                                                b"nameserver 10.1.2.3\noptions edns0 ndots:3\n")
    assert initlayer.resolv_conf(["1.1.1.1"], mixed) == (b"search corp.example lab.example\nnameserver 1.1.1.1\n"
                                                         b"options edns0 ndots:3\n")
    loop = "nameserver 127.0.0.1\nsearch s.example\n"
    assert initlayer.resolv_conf([], loop) == b"search s.example\n\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert initlayer.resolv_conf(["1.1.1.1"], loop) == b"search s.example\nnameserver 1.1.1.1\n"


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
