"""A private containerd 1.6 (Debian's) with our snapshotter as a proxy plugin, and an offline test image.

Used by the real-containerd test and by bench/bench_ctr.py. Everything lives under one temp dir; the
daemon and the snapshotter server are stopped by PID; the shim sockets containerd leaves in
/run/containerd/s are removed by their computed names (never by listing the directory).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

BUSYBOX = "/bin/busybox"
PACKAGES = {"containerd": "/usr/bin/containerd", "runc": "/usr/sbin/runc", "busybox-static": BUSYBOX}
PLUGIN = "graphdriver"
NAMESPACE = "default"
SHIM_SOCKET_DIR = "/run/containerd/s"


def ensure_packages() -> None:
    """apt-get install containerd, runc and busybox-static when missing (root, Debian)."""
    missing = [p for p, path in PACKAGES.items() if not os.path.exists(path)]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, capture_output=True, env=env)


# -- an offline image: docker-save format ----------------------------------------------------------
def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o755, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, 1_600_000_000
    return info


def busybox_layer() -> bytes:
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    entries = [(_entry(d, tarfile.DIRTYPE), b"") for d in ("bin", "etc", "tmp", "proc", "sys", "dev")]
    entries.append((_entry("bin/busybox"), bb))
    entries += [(_entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, "busybox"), b"") for a in ("sh", "cat", "echo", "ls")]
    entries.append((_entry("etc/passwd", mode=0o644), b"root:x:0:0:root:/root:/bin/sh\n"))
    return _tar(entries)


def message_layer(text: str) -> bytes:
    return _tar([(_entry("etc", tarfile.DIRTYPE), b""), (_entry("etc/message", mode=0o644), text.encode())])


def docker_save_tar(path: str, layers: list[bytes], tag: str) -> None:
    """Write a ``docker save`` archive: manifest.json, the config, one tar per layer."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "graphdriver test"} for _ in layers]}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    files = [(config_name, config), *zip(names, layers, strict=True), ("manifest.json", manifest)]
    with tarfile.open(path, "w") as tf:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000
            tf.addfile(info, io.BytesIO(data))


# -- processes ------------------------------------------------------------------------------------
def stop_pid(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_socket(path: str, proc: subprocess.Popen, log: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{proc.args[0]} did not start: {f.read()[-2000:]}")
        time.sleep(0.05)


@dataclass
class Containerd:
    """containerd + our snapshotter, private under ``tmp``. Use as a context manager."""

    driver: str | None = None
    tmp: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="gdctr-"))
    procs: list[subprocess.Popen] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return os.path.join(self.tmp, "c.sock")

    @property
    def snap_socket(self) -> str:
        return os.path.join(self.tmp, "gd.sock")

    @property
    def snap_root(self) -> str:
        return os.path.join(self.tmp, "gd")

    def config(self) -> str:
        t = self.tmp
        return f"""version = 2
root = "{t}/root"
state = "{t}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[debug]
  address = "{t}/debug.sock"
[proxy_plugins]
  [proxy_plugins.{PLUGIN}]
    type = "snapshot"
    address = "{self.snap_socket}"
"""

    def start(self) -> Containerd:
        ensure_packages()
        cfg = os.path.join(self.tmp, "config.toml")
        with open(cfg, "w") as f:
            f.write(self.config())
        args = [sys.executable, "-m", "graphdriver", "serve", "containerd-snapshotter",
                "--socket", self.snap_socket, "--root", self.snap_root]
        if self.driver:
            args += ["--driver", self.driver]
        self._spawn(args, "snapshotter.log", self.snap_socket)
        self._spawn(["containerd", "--config", cfg], "containerd.log", self.address)
        return self

    def _spawn(self, args: list[str], log: str, sock: str) -> None:
        logpath = os.path.join(self.tmp, log)
        with open(logpath, "w") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        _wait_socket(sock, proc, logpath)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ctr", "--address", self.address, *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def run_args(self, snapshotter: str, image: str, cid: str, *cmd: str) -> list[str]:
        self.containers.append(cid)
        return ["run", "--rm", "--snapshotter", snapshotter, "--runc-root", os.path.join(self.tmp, "runc"),
                "--fifo-dir", os.path.join(self.tmp, "fifo"), image, cid, *cmd]

    def log(self, name: str = "containerd.log") -> str:
        with open(os.path.join(self.tmp, name), errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_pid(proc)
        self.procs.clear()
        for cid in self.containers:  # shim sockets: sha256(<grpc address>/<namespace>/<id>)
            for base in (self.address, self.address + ".ttrpc"):
                digest = hashlib.sha256(os.path.join(base, NAMESPACE, cid).encode()).hexdigest()
                path = os.path.join(SHIM_SOCKET_DIR, digest)
                if os.path.lexists(path):
                    os.unlink(path)
        _unmount_under(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Containerd:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mounts_under(path: str) -> list[str]:
    real = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == real or mp.startswith(real + "/"):
                out.append(mp)
    return out


def _unmount_under(path: str) -> None:
    for mp in reversed(mounts_under(path)):
        subprocess.run(["umount", "-l", mp], capture_output=True)
