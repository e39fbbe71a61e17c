"""Execute: GNU tar extracting a validated byte stream into a staging directory, fed through a big pipe.

Only bytes the scanner approved are written to tar's stdin, so tar sees exactly the entries that were
judged. tar keeps owners, modes, xattrs, device nodes, hard links and sparse files; Python stays out of
the per-file work. Where an entry must replace an earlier one that tar would not replace as Docker does,
the extraction is cut there (:class:`Extraction`): tar ends, the old path is removed, a new tar goes on.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable

from ..errors import ApplyFailed
from . import tarformat as tf
from .whiteouts import NotADir, open_dir, split

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
PIPE_SIZE = 4 << 20  # root may exceed pipe-max-size; more slack lets Python and tar overlap

TAR_FLAGS = (
    "-x", "-f", "-", "--numeric-owner", "--same-owner", "--same-permissions", "--xattrs",
    "--xattrs-include=*", "--read-full-records", "--blocking-factor=256", "--warning=no-unknown-keyword",
    "--warning=no-timestamp", "--warning=no-alone-zero-block", "--no-acls", "--no-selinux",
    "--delay-directory-restore",  # a directory's times once its last entry is in, wherever that comes
)


def _grow_pipe(fd: int) -> int:
    """Enlarge the pipe (root may exceed pipe-max-size only with CAP_SYS_RESOURCE); its final size."""
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = 1 << 20
    for size in (PIPE_SIZE, limit):
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, size)
            break
        except OSError:
            continue
    return fcntl.fcntl(fd, F_GETPIPE_SZ)


def gnu_tar() -> str:
    """The GNU tar binary (refuses BSD tar: the flags and the name rules above are GNU tar's)."""
    path = shutil.which("tar") or "/usr/bin/tar"
    return path


@functools.lru_cache(maxsize=1)
def dies_with_us() -> tuple[str, ...]:
    """The command prefix that makes tar die with the process that started it (util-linux ``setpriv
    --pdeathsig``; nothing when it is missing): a driver killed mid-apply leaves no tar writing on into
    the staging directory while ``cleanup`` removes it."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


class TarExtractor:
    """A running ``tar -x`` into ``dest``; ``write`` feeds it, ``finish`` waits and checks its status."""

    def __init__(self, dest: str, label: str | None = None) -> None:
        self.dest = dest
        self.label = label or dest
        self._err = tempfile.TemporaryFile()
        env = dict(os.environ, LC_ALL="C.UTF-8")
        self.proc = subprocess.Popen([*dies_with_us(), gnu_tar(), *TAR_FLAGS, "-C", dest], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=self._err, env=env, close_fds=True)
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()
        self.pipe_size = _grow_pipe(self._fd)
        self.broken = False

    def write(self, data: memoryview) -> None:
        """Write all of ``data`` to tar (a dead tar is reported by :meth:`finish`)."""
        if self.broken:
            return
        fd = self._fd
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except BrokenPipeError:
            self.broken = True

    def splice_from(self, source: Callable[[int, int], int]) -> Callable[[int], int]:
        """A splice function for the scanner: ``source(pipe_fd, n)`` into tar's stdin."""
        def splice(n: int) -> int:
            if self.broken:
                raise ApplyFailed(f"extracting {self.label} failed: {self._first_error()}")
            try:
                return source(self._fd, min(n, self.pipe_size))
            except BrokenPipeError:
                self.broken = True
                self.proc.wait()
                raise ApplyFailed(f"extracting {self.label} failed: {self._first_error()}") from None
        return splice

    def finish(self) -> None:
        """Close tar's input and wait; raises ApplyFailed with tar's first error line."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        status = self.proc.wait()
        if status != 0 or self.broken:
            raise ApplyFailed(f"extracting {self.label} failed: {self._first_error()}")
        self._err.close()

    def abort(self) -> None:
        """Stop tar now (the staging directory is discarded by the caller)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self.proc.wait()
        self._err.close()

    def _first_error(self) -> str:
        """tar's first error line; led by what the filesystem lacks when it is full (tar reports a write
        cut short by a full disk as ``Wrote only N of M bytes``, without the errno)."""
        self._err.seek(0)
        lines = [ln.strip() for ln in self._err.read().decode(errors="replace").splitlines() if ln.strip()]
        useful = [ln for ln in lines if "Exiting with failure" not in ln and "Removing leading" not in ln]
        first = (useful or lines or [f"tar exited with status {self.proc.returncode}"])[0][:400]
        full = no_room(self.dest, first)
        return f"{full} (tar: {first})" if full else first


class Extraction:
    """The extraction of one archive into ``dest``: one tar run, or several when cut between entries.

    Each run ends by giving directories their times (tar does that last); entries of a later run, whiteouts
    made afterwards or a removal change them again, so the times of the directories the archive names are
    noted as each run ends and put back by :meth:`restore_dir_times`, as Docker sets them after all entries.
    """

    def __init__(self, dest: str, label: str) -> None:
        self.dest, self.label = dest, label
        self.tar = TarExtractor(dest, label)
        self.dir_times: dict[bytes, tuple[int, int]] = {}
        self.dirs_done = 0  # directory entries whose runs have ended

    def write(self, data: memoryview) -> None:
        self.tar.write(data)

    def splice_from(self, source: Callable[[int, int], int]) -> Callable[[int], int]:
        """A splice function that always feeds the tar running now."""
        return lambda n: self.tar.splice_from(source)(n)

    def cut(self, dirs: Iterable[bytes], remove: Iterable[bytes]) -> None:
        """End the running tar (``dirs``: the directory entries it was given), remove ``remove`` from the
        tree (never through a symlink), start the next tar."""
        self.tar.write(memoryview(tf.ZERO_BLOCK * 2))
        self.finish(dirs)
        for path in remove:
            self._remove(path)
        self.tar = TarExtractor(self.dest, self.label)

    def finish(self, dirs: Iterable[bytes]) -> None:
        """Wait for the running tar (raises ApplyFailed), then note the times of ``dirs``."""
        self.tar.finish()
        self.dirs_done += len(dirs)
        for path in dirs:
            try:
                with open_dir(self.dest, split(path)) as fd:
                    st = os.stat(fd)
            except NotADir:
                continue
            self.dir_times[path] = (st.st_atime_ns, st.st_mtime_ns)

    def abort(self) -> None:
        self.tar.abort()

    def restore_dir_times(self) -> None:
        """Give the directories the archive names the times it gave them."""
        for path, times in sorted(self.dir_times.items(), key=lambda kv: -kv[0].count(b"/")):
            try:
                with open_dir(self.dest, split(path)) as fd:
                    os.utime(fd, ns=times)
            except NotADir:
                continue

    def _remove(self, path: bytes) -> None:
        parts = split(path)
        below = path + b"/"
        self.dir_times = {p: t for p, t in self.dir_times.items() if p != path and not p.startswith(below)}
        try:
            with open_dir(self.dest, parts[:-1]) as fd:
                try:
                    st = os.lstat(parts[-1], dir_fd=fd)
                except FileNotFoundError:
                    return
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(parts[-1], dir_fd=fd)
                else:
                    os.unlink(parts[-1], dir_fd=fd)
        except NotADir:
            return
        except OSError as e:
            raise ApplyFailed(f"extracting {self.label} failed: replacing {os.fsdecode(path)!r}: "
                              f"{e.strerror or e}") from None


#: How GNU tar words a write the filesystem refused for room: a short write has no errno at all.
_NO_ROOM = ("No space left on device", "Disk quota exceeded", "Wrote only")


def filesystem_name(path: str) -> str:
    """The filesystem holding ``path`` as these errors name it: ``<mount point> (<type>)``."""
    import psutil  # only a failed write needs it: one-shot calls stay quick to start

    real = os.path.realpath(path)
    parts = [p for p in psutil.disk_partitions(all=True)
             if real == p.mountpoint or real.startswith(p.mountpoint.rstrip("/") + "/")]
    where = max(parts, key=lambda p: len(p.mountpoint), default=None)
    return f"{where.mountpoint} ({where.fstype})" if where else f"the filesystem holding {path}"


def no_room(path: str, tar_error: str, *, free: bool = True) -> str | None:
    """When ``tar_error`` is a write refused for room: what the filesystem holding ``path`` lacks —
    ``no space left on <mount point> (<type>): N bytes free``, ``no inodes left on ...`` or ``disk quota
    exceeded on ...``; else None. ``free=False`` leaves the count out (taken after what was written is
    gone again, it would tell of room there was not)."""
    if not any(words in tar_error for words in _NO_ROOM):
        return None
    try:
        st = os.statvfs(path)
        name = filesystem_name(path)
    except OSError:
        return None
    if "Disk quota exceeded" in tar_error:
        return f"disk quota exceeded on {name}"
    short_write = "Wrote only" in tar_error or "Cannot write" in tar_error  # data refused: blocks ran out
    if st.f_files and not st.f_ffree and not short_write:  # (tar goes on making empty files meanwhile)
        return f"no inodes left on {name}"
    if not free:
        return f"no space left on {name}"
    return f"no space left on {name}: {st.f_bfree * st.f_frsize} bytes free"  # as root: reserved blocks too
