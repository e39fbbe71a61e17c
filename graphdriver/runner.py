"""``container run``: run one command chrooted into a container's merged rootfs, to check the rootfs.

A checking tool, not a container runtime: no cgroups, no capabilities dropped, no seccomp, no user
namespace. The command gets new mount, UTS, PID and network namespaces (the network namespace made with
pyroute2, ``lo`` up; or the container's ``--netns``), the container's hostname, a fresh /proc and a small
tmpfs /dev. Writes land in the container's read-write layer.

Process layout: this process mounts the rootfs and makes the netns; a child joins the netns, unshares
mount/UTS/PID namespaces and forks pid 1 of the new PID namespace, which chroots and execs the command.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import stat
import sys

from .driver import Driver
from .errors import ContainerRunning, GraphDriverError
from .kernel import syscalls
from .store import initlayer
from .store.containers import Container, ContainerStore

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOEXEC = 0x8
PR_SET_PDEATHSIG = 1
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def command_for(config: dict, argv: list[str]) -> list[str]:
    """The command to run: ``argv``, else the image's Entrypoint + Cmd (plan: pure)."""
    cfg = config.get("config") or {}
    entry = list(cfg.get("Entrypoint") or [])
    cmd = list(argv) if argv else list(cfg.get("Cmd") or [])
    full = entry + cmd
    if not full:
        raise GraphDriverError("no command given and the image has no Entrypoint or Cmd")
    return full


def environment(config: dict, hostname: str) -> dict[str, str]:
    """The command's environment: the image's Env over a default PATH, HOSTNAME and HOME (pure)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root"}
    for item in (config.get("config") or {}).get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    if os.environ.get("TERM"):
        env.setdefault("TERM", os.environ["TERM"])
    return env


def _make_dev() -> None:
    """A tmpfs /dev with the usual character devices (inside the new mount namespace, after chroot)."""
    syscalls.mount("tmpfs", "/dev", "tmpfs", syscalls.MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    for d in ("pts", "shm"):
        os.mkdir(f"/dev/{d}", 0o755)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")


def _pid1(rootfs: str, argv: list[str], env: dict[str, str], workdir: str) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the PID namespace dies with its parent
    os.chroot(rootfs)
    os.chdir("/")
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | MS_NOEXEC)
    _make_dev()
    if workdir:
        os.chdir(workdir)
    os.execvpe(argv[0], argv, env)


def _child(rootfs: str, netns_file: str, hostname: str, argv: list[str], env: dict[str, str],
           workdir: str) -> int:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a killed `container run` takes its command along
    fd = os.open(netns_file, os.O_RDONLY | os.O_CLOEXEC)
    _setns(fd, CLONE_NEWNET)
    os.close(fd)
    _unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID)
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    socket.sethostname(hostname)
    pid = os.fork()
    if pid == 0:
        try:
            _pid1(rootfs, argv, env, workdir)
        except OSError as e:
            print(f"graphdriver: container run: {argv[0]}: {e.strerror or e}", file=sys.stderr)
        os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _wait_forwarding(pid: int) -> int:
    """Wait for the child; SIGINT/SIGTERM/SIGHUP to us end it (SIGKILL), so our cleanup still runs."""
    def forward(signum: int, frame: object) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    saved = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return os.waitstatus_to_exitcode(status)


def _remove_stale_netns(short_id: str) -> None:
    """Remove ``gd-<id>-<pid>`` namespaces left by a run that was killed (its pid is gone)."""
    from pyroute2 import netns

    try:
        names = os.listdir(initlayer.NETNS_DIR)
    except FileNotFoundError:
        return
    for name in names:
        prefix, _, pid = name.rpartition("-")
        if prefix == f"gd-{short_id}" and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            netns.remove(name)


def _new_netns(name: str) -> str:
    from pyroute2 import NetNS, netns

    netns.create(name)
    try:
        with NetNS(name) as ns:
            idx = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=idx, state="up")
    except BaseException:
        netns.remove(name)
        raise
    return initlayer.netns_path(name)


def run(containers: ContainerStore, ref: str, argv: list[str]) -> int:
    """Run ``argv`` (default: the image's command) in container ``ref``; returns its exit code."""
    c: Container = containers.get(ref)
    driver: Driver = containers.driver
    config = containers.images.config(c.image)
    argv = command_for(config, argv)
    env = environment(config, c.hostname)
    workdir = (config.get("config") or {}).get("WorkingDir") or ""
    lock_fd = os.open(containers.run_lock_path(c.id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ContainerRunning(f"container {c.name} is already running") from None
        rootfs = driver.get(c.rw_layer)
        made_netns = ""
        try:
            if c.netns:
                netns_file = initlayer.netns_path(c.netns)
                if not os.path.exists(netns_file):
                    raise GraphDriverError(f"network namespace {c.netns} not found ({netns_file})")
            else:
                _remove_stale_netns(c.id[:12])
                made_netns = f"gd-{c.id[:12]}-{os.getpid()}"
                netns_file = _new_netns(made_netns)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 127
                try:
                    code = _child(rootfs, netns_file, c.hostname, argv, env, workdir)
                except BaseException as e:  # noqa: BLE001  (report and leave the child)
                    print(f"graphdriver: container run: {e}", file=sys.stderr)
                os._exit(code)
            os.ftruncate(lock_fd, 0)
            os.pwrite(lock_fd, f"{pid}\n".encode(), 0)
            return _wait_forwarding(pid)
        finally:
            if made_netns:
                from pyroute2 import netns

                netns.remove(made_netns)
            driver.put(c.rw_layer)
    finally:
        os.close(lock_fd)
