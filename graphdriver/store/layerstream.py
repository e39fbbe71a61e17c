"""A layer blob as it streams into ``apply_diff``: decompressed on the fly (gzip, zstd, xz, bzip2 by magic
bytes), its blob digest and its diffID (sha256 of the uncompressed tar) taken, and a tar-split recorded."""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import zlib
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from ..errors import InvalidImage
from .tarsplit import TarSplitRecorder

CHUNK = 1 << 20


def compression_of(head: bytes) -> str:
    """"gzip", "zstd", "xz", "bzip2" or "" (plain) from a stream's first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"BZh"):
        return "bzip2"
    return ""


class Decoder:
    """Incremental decompression of one of :func:`compression_of`'s kinds, concatenated members too."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._d = self._new()

    def _new(self):  # noqa: ANN202
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "zstd":
            return zstandard.ZstdDecompressor().decompressobj()
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        if self.kind == "bzip2":
            return bz2.BZ2Decompressor()
        return None

    def decode(self, data: bytes) -> bytes:
        if self._d is None:
            return data
        out = []
        try:
            while data:
                out.append(self._d.decompress(data))
                data = self._d.unused_data if self._d.eof else b""
                if data:
                    self._d = self._new()
        except (zlib.error, zstandard.ZstdError, lzma.LZMAError, OSError, EOFError) as e:
            raise InvalidImage(f"corrupt {self.kind} stream: {e}") from None
        return b"".join(out)

    def finish(self) -> None:
        if self._d is not None and not self._d.eof:
            raise InvalidImage(f"truncated {self.kind} stream")


class LayerStream(io.RawIOBase):
    """A blob as read by ``apply_diff``: decompressed, hashed twice, tar-split recorded on the way.

    ``progress(n)`` is called with the count of blob bytes read so far.
    """

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._progress = progress
        self.blob_hash = hashlib.sha256()
        self.diff_hash = hashlib.sha256()
        self.split = TarSplitRecorder()
        self.blob_size = 0
        self.size = 0
        self._decoder: Decoder | None = None
        self._buf = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._eof:
            chunk = self._raw.read(CHUNK)
            if not chunk:
                self._eof = True
                if self._decoder is not None:  # an empty blob is an empty tar (docker's reader: at EOF)
                    self._decoder.finish()
                return
            self.blob_hash.update(chunk)
            self.blob_size += len(chunk)
            if self._decoder is None:
                self._decoder = Decoder(compression_of(chunk[:8]))
            data = self._decoder.decode(chunk)
            self.diff_hash.update(data)
            self.split.feed(data)
            self.size += len(data)
            self._buf = memoryview(data)
            if self._progress:
                self._progress(self.blob_size)

    def readinto(self, b) -> int:  # noqa: ANN001
        self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        self._fill()
        out = self._buf[:n].tobytes()
        self._buf = self._buf[n:]
        return out

    def drain(self) -> None:
        """Read what the consumer left (trailing padding), so the digests cover the whole blob."""
        while True:
            self._buf = memoryview(b"")
            self._fill()
            if self._eof and not self._buf:
                return

    @property
    def blob_digest(self) -> str:
        return "sha256:" + self.blob_hash.hexdigest()

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.diff_hash.hexdigest()
