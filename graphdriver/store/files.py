"""Small files written atomically (write a temporary file, fsync, rename over)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import CorruptRecord


def write_all(fd: int, data: bytes, path: str, *, sync: bool = False) -> None:
    """Write all of ``data`` to ``fd`` (then fsync it, with ``sync``): a short write (the filesystem filling
    up) is carried on, and the error a write gets (ENOSPC, EDQUOT, EIO) names ``path``."""
    view = memoryview(data)
    try:
        while view:
            n = os.write(fd, view)
            if not n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
        if sync:
            os.fsync(fd)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def write_atomic(path: str, data: bytes | str, mode: int = 0o600, *, sync: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix; on failure
    (a full disk, say) ``path`` is as it was and no temporary file is left (see :func:`replacing`)."""
    with replacing(path, mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


#: What an error writing to standard output names (the command line knows it by this name).
STDOUT = "standard output"


def naming(e: OSError, name: str) -> OSError:
    """``e`` when it names a file, else the same error naming ``name`` (a full disk or a closed pipe names
    nothing: say where it was writing)."""
    return e if e.filename else OSError(e.errno, e.strerror, name)


def spool_file(directory: str) -> BinaryIO:
    """An unnamed temporary file in ``directory``; an error making it (a full or read-only disk) names
    ``directory``, not a file that never was."""
    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError as e:
        raise OSError(e.errno, e.strerror, directory) from None


def touch(path: str, mode: int = 0o600) -> None:
    """An empty file at ``path`` (kept if there): made in one step, nothing to tear, no temporary file for
    a kill to leave behind."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode))


@contextlib.contextmanager
def replacing(path: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` once the block ends without error (a temporary file next
    to it, ``<name>.tmp-<pid>-...``, renamed over it). On any error ``path`` is as it was, nothing else is
    left, and an error that names no file (a full disk, say) names ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.tmp-{os.getpid()}-",  # ".tmp-": see cleanup
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as e:  # no such directory, no room, no permission: the file asked for is the one to name
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        if mode != 0o600:  # mkstemp's
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            if e.filename == tmp:  # the rename (over a directory, say): the temporary name means nothing
                raise OSError(e.errno, e.strerror, path) from None
            raise naming(e, path) from None
        raise


def remove_temporaries(directory: str) -> None:
    """Remove the temporary files :func:`replacing` left in ``directory`` (``<name>.tmp-<pid>-...``): a
    writer killed before its rename. Only with the lock every writer there holds taken: none is live."""
    for name in os.listdir(directory):
        if ".tmp-" in name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def write_json(path: str, obj: Any, *, sync: bool = False) -> None:
    """Atomically write ``obj`` as JSON."""
    write_atomic(path, json.dumps(obj, sort_keys=True), sync=sync)


def read_json(path: str, default: Any = None) -> Any:
    """Read JSON from ``path``; ``default`` when the file is absent; :class:`CorruptRecord` naming it when
    it is not JSON, or not of ``default``'s type (damaged, or edited by hand)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        return default
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptRecord(f"record {path} cannot be read: {e}") from None
    if default is not None and not isinstance(value, type(default)):
        raise CorruptRecord(f"record {path} cannot be read: a JSON {type(value).__name__}, "
                            f"not the {type(default).__name__} expected")
    return value


def read_bytes(path: str) -> bytes | None:
    """A small file's content, or None when absent (os-level reads: a few syscalls, no buffered io)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str, default: str | None = None) -> str | None:
    """Read a small text file, stripped; ``default`` when absent."""
    raw = read_bytes(path)
    return default if raw is None else raw.decode("utf-8").strip()


def nearest_dir(path: str) -> str:
    """``path`` if it is a directory, else the nearest directory above it: where it would be made."""
    where = os.path.abspath(path)
    while not os.path.isdir(where):
        where = os.path.dirname(where)
    return where
