"""Tar-split: remember a layer tar's exact bytes without keeping its file contents twice.

A layer's diffID is the sha256 of its exact tar stream; ``image save`` must hand back those same bytes, but
the driver only keeps the extracted files. As the tar streams past, :class:`TarSplitRecorder` keeps every
byte that is not a regular file's payload (headers, PAX and long-name records, padding, the end blocks)
and, for each payload, only the path and size. :func:`reassemble` interleaves the kept bytes with the
payloads read back from the layer's own content directory. The caller checks the result against the
diffID, so a layer whose files changed on disk is caught, never silently passed off.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator

from ..errors import InvalidImage

BLOCK = 512
_REG_TYPES = (b"0", b"\0", b"7")
_KNOWN_NO_PAYLOAD = (b"1", b"2", b"3", b"4", b"5", b"6")
_HEADER, _RAW, _FILE, _TRAIL = range(4)


def _number(field: bytes) -> int:
    """A tar header number: NUL/space padded octal, or base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x3F
        for b in field[1:]:
            value = (value << 8) | b
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored == unsigned


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1:pos + length].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        out[key] = value
        pos += length
    return out


def clean_name(name: bytes) -> bytes:
    """A tar entry name relative to the layer root (``./a//b/`` -> ``a/b``)."""
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    return b"/".join(parts)


def _pad(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


class TarSplitRecorder:
    """Feed a tar stream through :meth:`feed`; :meth:`result` gives the compact, compressed record."""

    def __init__(self) -> None:
        self._ops = bytearray()
        self._raw = bytearray()
        self._state = _HEADER
        self._hdr = bytearray()
        self._left = 0
        self._meta_left = 0
        self._meta = bytearray()
        self._meta_kind = b""
        self._next_name: bytes | None = None
        self._next_size: int | None = None
        self._next_sparse = False
        self._pending_pad = 0
        self.files = 0
        self._seen: set[bytes] = set()
        #: A path whose payload appears twice (the first copy is gone from disk): not reproducible.
        self.duplicate: bytes | None = None

    def _flush_raw(self) -> None:
        if self._raw:
            self._ops += b"R" + struct.pack("<Q", len(self._raw)) + self._raw
            self._raw.clear()

    def feed(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the tar stream."""
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n:
            if self._state == _HEADER:
                take = min(BLOCK - len(self._hdr), n - pos)
                self._hdr += view[pos:pos + take]
                pos += take
                if len(self._hdr) == BLOCK:
                    block = bytes(self._hdr)
                    self._hdr.clear()
                    self._header(block)
            elif self._state == _RAW:
                take = min(self._left, n - pos)
                chunk = view[pos:pos + take]
                self._raw += chunk
                if self._meta_left:
                    m = min(self._meta_left, take)
                    self._meta += chunk[:m]
                    self._meta_left -= m
                    if not self._meta_left:
                        self._meta_done()
                self._left -= take
                pos += take
                if not self._left:
                    self._state = _HEADER
            elif self._state == _FILE:
                take = min(self._left, n - pos)
                self._left -= take
                pos += take
                if not self._left:
                    self._state, self._left = (_RAW, self._pending_pad) if self._pending_pad else (_HEADER, 0)
            else:
                self._raw += view[pos:]
                pos = n

    def _header(self, block: bytes) -> None:
        self._raw += block
        if block == bytes(BLOCK):
            return
        if not _checksum_ok(block):
            self._state = _TRAIL  # past the end-of-archive marker, or not a tar: keep the rest verbatim
            return
        kind = block[156:157]
        size = _number(block[124:136])
        if self._next_size is not None and kind not in (b"x", b"g", b"L", b"K"):
            size = self._next_size
        if kind in (b"x", b"L"):
            self._meta_kind, self._meta_left = kind, size
            self._meta.clear()
        if kind == b"S" or (kind in _REG_TYPES and self._next_sparse):
            self._state = _TRAIL  # sparse files: keep the rest of the stream verbatim (exact, if larger)
            return
        if kind in _REG_TYPES and size > 0:
            name = self._next_name
            if name is None:
                name = block[0:100].split(b"\0", 1)[0]
                if block[257:263] == b"ustar\0":
                    prefix = block[345:500].split(b"\0", 1)[0]
                    if prefix:
                        name = prefix + b"/" + name
            self._flush_raw()
            cname = clean_name(name)
            self._ops += b"F" + struct.pack("<QI", size, len(cname)) + cname
            self.files += 1
            if cname in self._seen and self.duplicate is None:
                self.duplicate = cname
            self._seen.add(cname)
            self._state, self._left, self._pending_pad = _FILE, size, _pad(size)
        elif kind in _KNOWN_NO_PAYLOAD or size <= 0:
            self._state = _HEADER
        else:
            self._state, self._left = _RAW, size + _pad(size)
        if kind not in (b"x", b"g", b"L", b"K"):
            self._next_name, self._next_size, self._next_sparse = None, None, False

    def _meta_done(self) -> None:
        data = bytes(self._meta)
        if self._meta_kind == b"L":
            self._next_name = data.split(b"\0", 1)[0]
        else:
            rec = _pax_records(data)
            if b"path" in rec:
                self._next_name = rec[b"path"]
            if b"size" in rec:
                self._next_size = int(rec[b"size"])
            if any(k.startswith(b"GNU.sparse") for k in rec):
                self._next_sparse = True

    def result(self) -> bytes:
        """The compressed record (call once the whole stream was fed)."""
        if self._hdr:
            self._raw += self._hdr
            self._hdr.clear()
        self._flush_raw()
        return zlib.compress(bytes(self._ops), 1)


Op = tuple[bytes, bytes | None, int]  # (raw bytes, or None for a file), file name, file size


def parse(record: bytes) -> list[Op]:
    """Decode a record made by :class:`TarSplitRecorder`."""
    try:
        data = zlib.decompress(record)
    except zlib.error as e:
        raise InvalidImage(f"corrupt tar-split record: {e}") from None
    ops: list[Op] = []
    pos = 0
    while pos < len(data):
        tag = data[pos:pos + 1]
        if tag == b"R":
            (length,) = struct.unpack_from("<Q", data, pos + 1)
            ops.append((data[pos + 9:pos + 9 + length], None, length))
            pos += 9 + length
        elif tag == b"F":
            size, nlen = struct.unpack_from("<QI", data, pos + 1)
            ops.append((b"", data[pos + 13:pos + 13 + nlen], size))
            pos += 13 + nlen
        else:
            raise InvalidImage("corrupt tar-split record")
    return ops


def total_size(ops: list[Op]) -> int:
    """The length of the reassembled tar."""
    return sum(size for _, _, size in ops)


def reassemble(ops: list[Op], content_dir: str, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The original tar's bytes: kept bytes interleaved with payloads read from ``content_dir``."""
    for raw, name, size in ops:
        if name is None:
            yield raw
            continue
        path = os.path.join(content_dir, os.fsdecode(name))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise InvalidImage(f"layer file {name.decode(errors='replace')} is gone from {content_dir} "
                               f"({e.strerror})") from None
        try:
            left = size
            while left:
                buf = os.read(fd, min(chunk, left))
                if not buf:
                    raise InvalidImage(f"layer file {name.decode(errors='replace')} in {content_dir} "
                                       f"is shorter than when it was loaded")
                left -= len(buf)
                yield buf
        finally:
            os.close(fd)
