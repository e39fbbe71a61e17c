"""Layer streams as they come: plain, gzip, zstd (also bzip2 and xz), told apart by their magic bytes."""

from __future__ import annotations

import bz2
import lzma
import os
import stat
import zlib
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from ..errors import UnsafeArchive

GZIP, ZSTD, BZIP2, XZ = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00"
_RAW_CHUNK = 1 << 20

Read = Callable[[int], bytes]


def _raw_reader(stream: BinaryIO) -> Read:
    """read(n) on the stream (at most n bytes, b"" at the end)."""
    return stream.read


def detect(head: bytes) -> str:
    """``gzip``, ``zstd``, ``bzip2``, ``xz`` or ``plain``."""
    if head.startswith(GZIP):
        return "gzip"
    if head.startswith(ZSTD):
        return "zstd"
    if head.startswith(BZIP2):
        return "bzip2"
    if head.startswith(XZ):
        return "xz"
    return "plain"


class _Plain:
    """An uncompressed stream after its first bytes were peeked at; ``read`` and ``readinto``.

    A regular file is then read by offset (pread), and its bytes can be spliced straight into a pipe.
    """

    def __init__(self, stream: BinaryIO, head: bytes) -> None:
        self.stream, self.head = stream, head
        self.direct = getattr(stream, "readinto", None)
        self.fd, self.offset = -1, 0
        try:
            fd = stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self.fd, self.offset, self.head = fd, stream.tell() - len(head), b""
        except (AttributeError, OSError, ValueError):
            pass

    def read(self, n: int) -> bytes:
        if self.fd >= 0:
            data = os.pread(self.fd, n, self.offset)
            self.offset += len(data)
            return data
        if self.head:
            first, self.head = self.head, b""
            return first + self.stream.read(n - len(first)) if n > len(first) else first
        return self.stream.read(n)

    def readinto(self, view: memoryview) -> int:
        if self.fd >= 0:
            got = os.preadv(self.fd, [view], self.offset)
            self.offset += got
            return got
        if self.head or self.direct is None:
            chunk = self.read(len(view))
            view[:len(chunk)] = chunk
            return len(chunk)
        return self.direct(view) or 0

    def splice(self, pipe_fd: int, n: int) -> int:
        """Move up to ``n`` bytes to a pipe in the kernel (regular files only); 0 at the end."""
        got = os.splice(self.fd, pipe_fd, n, offset_src=self.offset)
        self.offset += got
        return got


def readinto_of(read: Read) -> Callable[[memoryview], int] | None:
    """The copy-saving reader behind ``read`` when there is one."""
    owner = getattr(read, "__self__", None)
    return owner.readinto if isinstance(owner, _Plain) else None


def splice_of(read: Read) -> Callable[[int, int], int] | None:
    """``splice(pipe_fd, n)`` when ``read`` reads a regular file (data then never enters Python)."""
    owner = getattr(read, "__self__", None)
    return owner.splice if isinstance(owner, _Plain) and owner.fd >= 0 else None


class _Decompressing:
    """read(n) over a decompressor object fed from a raw reader; multi-member gzip is followed."""

    def __init__(self, raw: Read, head: bytes, factory: Callable[[], object], name: str) -> None:
        self.raw, self.pending, self.factory, self.name = raw, head, factory, name
        self.dec = factory()
        self.out = b""
        self.done = False

    def _more(self) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.raw(_RAW_CHUNK)

    def read(self, n: int) -> bytes:
        while not self.out and not self.done:
            if self.dec.eof:  # type: ignore[attr-defined]
                rest = self.dec.unused_data + self.pending  # type: ignore[attr-defined]
                self.pending = b""
                if self.name in ("gzip", "zstd"):  # another member or frame may follow
                    rest = rest.lstrip(b"\0")
                    while not rest:
                        more = self._more()
                        if not more:
                            break
                        rest = more.lstrip(b"\0")
                    if rest:
                        self.dec, self.pending = self.factory(), rest
                        continue
                self.done = True
                break
            data = self._more()
            if not data:
                raise UnsafeArchive(f"truncated layer archive: the {self.name} stream ends early")
            try:
                self.out = self.dec.decompress(data)  # type: ignore[attr-defined]
            except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, zstandard.ZstdError) as e:
                raise UnsafeArchive(f"corrupt layer archive: bad {self.name} data ({e})") from None
        out, self.out = self.out[:n], self.out[n:]
        return out


def open_stream(stream: BinaryIO) -> tuple[Read, str]:
    """(read(n) of the uncompressed tar, compression name)."""
    raw = _raw_reader(stream)
    head = b""
    while len(head) < 6:
        chunk = raw(6 - len(head))
        if not chunk:
            break
        head += chunk
    kind = detect(head)
    if kind == "plain":
        return _Plain(stream, head).read, kind
    factory: Callable[[], object] = {
        "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
        "bzip2": bz2.BZ2Decompressor,
        "xz": lzma.LZMADecompressor,
        "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
    }[kind]
    return _Decompressing(raw, head, factory, kind).read, kind
