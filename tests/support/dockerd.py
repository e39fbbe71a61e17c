"""A private dockerd (Debian's docker.io 20.10) for tests and benchmarks, and a graphdriver plugin process.

Usage::

    ensure_docker_packages()                    # apt-get installs docker.io containerd runc busybox-static
    with PluginProcess(driver="vfs") as plugin, Dockerd(plugin.name) as d:
        d.docker("import", "-", "img", input=rootfs_tar(...))
        d.docker("run", "--rm", "--network", "none", "img", "true")

:class:`Dockerd` runs ``/usr/sbin/dockerd --experimental`` on private paths under one temp dir (data root,
exec root, pidfile, API socket, an empty config file, its own managed containerd). :meth:`Dockerd.stop`
stops it by PID, then every process still running whose command line names that temp dir (the managed
containerd and its shims), unmounts whatever is left under the temp dir, and removes it.
:class:`PluginProcess` runs ``graphdriver serve docker-plugin`` under a unique name (dockerd discovers it
as ``/run/docker/plugins/<name>.sock``) and stops it with SIGTERM by PID. Everything is importable from
``tests/`` (as ``support.dockerd``) and from bench/ (put ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence

import psutil

from graphdriver.kernel import mountinfo, syscalls
from graphdriver.serve.plugin_config import state_file_for

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
BUSYBOX = "/bin/busybox"
PACKAGES = {"docker.io": DOCKERD, "containerd": "/usr/bin/containerd", "runc": "/usr/sbin/runc",
            "busybox-static": BUSYBOX}
PLUGIN_DIR = "/run/docker/plugins"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_log(path: str) -> str:
    """A daemon's log file so far ("" before it exists)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class DockerError(RuntimeError):
    """A docker CLI call or the daemon failed; the message carries the output."""


def missing_packages() -> list[str]:
    """The Debian packages of :data:`PACKAGES` whose main binary is absent."""
    missing = [pkg for pkg, path in PACKAGES.items() if not os.access(path, os.X_OK)]
    if not os.access(DOCKER, os.X_OK) and "docker.io" not in missing:
        missing.append("docker.io")
    if not os.access("/usr/bin/containerd-shim-runc-v2", os.X_OK) and "containerd" not in missing:
        missing.append("containerd")
    return missing


def ensure_docker_packages() -> None:
    """apt-get install docker.io, containerd, runc and busybox-static when any is missing (as root)."""
    if not missing_packages():
        return
    with open("/tmp/.graphdriver-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        need = missing_packages()
        if not need:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], check=True, env=env,
                       capture_output=True)
    if missing_packages():
        raise DockerError(f"still missing after apt-get install: {missing_packages()}")


def unmount_under(path: str) -> None:
    """Detach every mount at or below ``path`` (innermost first)."""
    for entry in reversed(mountinfo.mounts_under(os.path.realpath(path))):
        with contextlib.suppress(OSError):
            syscalls.umount2(entry.mount_point, syscalls.MNT_DETACH)


def processes_naming(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``text`` (a private temp path: ours)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and any(text in arg for arg in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop_pid(pid: int, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Signal one process by PID and wait for it; SIGKILL after ``timeout``."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
            proc.wait(10)


def rootfs_tar(extra: dict[str, bytes] | None = None, mtime: int = 1_600_000_000) -> bytes:
    """A small busybox-static root filesystem as a deterministic tar (same bytes on every call)."""
    buf = io.BytesIO()
    applets = ["sh", "ls", "cat", "echo", "rm", "touch", "mkdir", "sleep", "true", "test", "stat", "find"]
    files = {"etc/motd": b"welcome to busybox\n", "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
             "etc/group": b"root:x:0:\n", **(extra or {})}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, kind: bytes, data: bytes = b"", mode: int = 0o755, link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, mtime, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for d in ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var"):
            add(d, tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        with open(BUSYBOX, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, f.read())
        for a in applets:
            add(f"bin/{a}", tarfile.SYMTYPE, link="busybox", mode=0o777)
        for name, data in sorted(files.items()):
            add(name, tarfile.REGTYPE, data, mode=0o644)
    return buf.getvalue()


def _ping(sock: str) -> bool:
    conn = http.client.HTTPConnection("localhost", timeout=5)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sock)
        conn.sock = s
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class PluginProcess:
    """``graphdriver serve docker-plugin`` as a child process under a unique name."""

    def __init__(self, driver: str, name: str | None = None, root: str | None = None, debug: bool = False,
                 program: Sequence[str] = ("-m", "graphdriver")) -> None:
        self.name = name or f"gdtest-{uuid.uuid4().hex[:10]}"
        self.driver = driver
        self.root = root
        self.socket = os.path.join(PLUGIN_DIR, f"{self.name}.sock")
        self.debug = debug
        self.log_path = os.path.join(tempfile.gettempdir(), f"{self.name}.log")
        self.program = list(program)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> PluginProcess:
        cmd = [sys.executable, *self.program, "serve", "docker-plugin", "--name", self.name,
               "--driver", self.driver]
        if self.root:
            cmd += ["--root", self.root]
        if self.debug:
            cmd.append("--debug")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO)
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DockerError(f"plugin {self.name} did not start:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        """The plugin's log so far."""
        return read_log(self.log_path)

    def stop(self) -> None:
        """SIGTERM by PID (in-flight requests finish), then make sure the socket is gone (the log stays)."""
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout=60)
            self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def forget(self) -> None:
        """Remove the plugin's record of dockerd's Init (kept across plugin restarts, dropped at the end)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_file_for(self.name))

    def remove_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)

    def __enter__(self) -> PluginProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.forget()
        if exc[0] is None:
            self.remove_log()


class Dockerd:
    """A private dockerd with its own managed containerd; everything lives under :attr:`tmp`."""

    def __init__(self, storage_driver: str, extra_args: Sequence[str] = (), storage_opts: Sequence[str] = ()) -> None:
        self.storage_driver = storage_driver
        self.extra_args = list(extra_args) + [f"--storage-opt={o}" for o in storage_opts]
        self.tmp = tempfile.mkdtemp(prefix="gdd-", dir="/tmp")  # short: the API socket path must fit 108 bytes
        self.data_root = os.path.join(self.tmp, "data")
        self.exec_root = os.path.join(self.tmp, "exec")
        self.sock = os.path.join(self.tmp, "docker.sock")
        self.pidfile = os.path.join(self.tmp, "docker.pid")
        self.log_path = os.path.join(self.tmp, "dockerd.log")
        self.proc: subprocess.Popen[bytes] | None = None
        with open(os.path.join(self.tmp, "daemon.json"), "w") as f:
            f.write("{}\n")

    def command(self) -> list[str]:
        """The dockerd command line."""
        return [DOCKERD, "--experimental", f"--storage-driver={self.storage_driver}",
                "--data-root", self.data_root, "--exec-root", self.exec_root, "--pidfile", self.pidfile,
                "-H", f"unix://{self.sock}", "--iptables=false", "--ip-masq=false", "--bridge=none",
                "--config-file", os.path.join(self.tmp, "daemon.json"), "--userland-proxy=false",
                "--ip6tables=false", "--log-level=info", *self.extra_args]

    def start(self, timeout: float = 60.0) -> Dockerd:
        """Start dockerd and wait until its API answers ``/_ping``."""
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.sock) and _ping(self.sock)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log()[-4000:]
                self.stop()
                raise DockerError(f"dockerd ({self.storage_driver}) did not come up:\n{tail}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        """dockerd's log so far."""
        return read_log(self.log_path)

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``/usr/bin/docker -H unix://<tmp>/docker.sock ARGS``; DockerError on failure when ``check``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = os.path.join(self.tmp, "cli")
        res = subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], input=input, capture_output=True,
                             timeout=timeout, env=env)
        out = subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(errors="replace"),
                                          res.stderr.decode(errors="replace"))
        if check and res.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} failed ({res.returncode}): {out.stderr.strip()}")
        return out

    def docker_bytes(self, *args: str, timeout: float = 120.0) -> bytes:
        """Run docker and return its raw stdout (``save`` and such); DockerError on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = os.path.join(self.tmp, "cli")
        res = subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], capture_output=True, timeout=timeout,
                             env=env)
        if res.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} failed ({res.returncode}): {res.stderr.decode().strip()}")
        return res.stdout

    def stop_daemon(self, timeout: float = 60.0) -> None:
        """Stop dockerd by PID (it stops its containers and its containerd), keeping its data."""
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid, timeout)
            self.proc.wait()
        for p in processes_naming(self.tmp):  # the managed containerd and shims, if dockerd left them
            stop_pid(p.pid, 10)

    def restart(self, timeout: float = 60.0) -> Dockerd:
        """Stop dockerd (containers present stay on disk) and start it again on the same data."""
        self.stop_daemon()
        return self.start(timeout)

    def stop(self) -> None:
        """Stop everything started for this daemon, unmount what it left under :attr:`tmp`, remove it."""
        self.stop_daemon()
        unmount_under(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def mounts(self) -> list[mountinfo.MountEntry]:
        """The kernel's mounts under this daemon's temp dir."""
        return mountinfo.mounts_under(os.path.realpath(self.tmp))

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def plugin_dockerd(driver: str, debug: bool = False, **plugin_args) -> Iterator[tuple[PluginProcess, Dockerd]]:
    """A plugin serving ``driver`` and a private dockerd using it; both stopped by PID afterwards.

    The plugin's log (``PluginProcess.log_path``) is kept when the block raised, removed otherwise.
    """
    plugin = PluginProcess(driver, debug=debug, **plugin_args).start()
    daemon = None
    try:
        daemon = Dockerd(plugin.name).start()
        yield plugin, daemon
        plugin.remove_log_on_stop = True
    finally:
        if daemon is not None:
            daemon.stop_daemon()
        plugin.stop()
        plugin.forget()
        if getattr(plugin, "remove_log_on_stop", False):
            plugin.remove_log()
        if daemon is not None:
            daemon.stop()
