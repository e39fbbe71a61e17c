"""Small files written atomically (write a temporary file, fsync, rename over)."""

from __future__ import annotations

import json
import os
from typing import Any


def write_atomic(path: str, data: bytes | str, mode: int = 0o600, *, sync: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.tmp-{os.getpid()}-{id(raw):x}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, raw)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path: str, obj: Any, *, sync: bool = False) -> None:
    """Atomically write ``obj`` as JSON."""
    write_atomic(path, json.dumps(obj, sort_keys=True), sync=sync)


def read_json(path: str, default: Any = None) -> Any:
    """Read JSON from ``path``; ``default`` when the file is absent."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


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

