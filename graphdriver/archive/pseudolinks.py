"""aufs pseudo-links in a layer tar, resolved as Docker's unpack resolves them.

Docker's aufs driver could export a layer holding regular files under the top-level ``.wh..wh.plnk/``
(aufs's pseudo-link directory) and hard links naming them. moby's ``UnpackLayer`` (pkg/archive/diff.go)
writes such a file (a regular entry whose cleaned name starts with ``.wh..wh.plnk``) into a temporary
directory under its base name, never into the layer; a hard link whose cleaned target starts with
``.wh..wh.plnk`` is then made as a *new regular file* at the link's own name, from that file's header
(mode, owner, times, xattrs) and content (``createTarFile`` with the pseudo-linked file's header): every
link is a copy of its own (one link each), and nothing of ``.wh..wh.plnk`` stays in the layer.

Here the guard (:mod:`.safety`) judges both kinds of entry and answers DIVERT. A pseudo-linked file's
header bytes and data are kept in an unlinked temporary file in the apply's work directory (beside the
staging tree, never inside it); a link to it is replaced, in the stream GNU tar reads, by those headers
renamed to the link's path followed by the kept data. tar then writes a regular file there in archive
order, as Docker does, with the same checks on the link's name as any entry. Nothing is read from the
disk but what the archive itself gave, so a pseudo-link cannot reach a file outside the layer.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO

from ..errors import ApplyFailed
from . import tarformat as tf
from .rename import Piece, renamed_group
from .scan import Entry, Sink

CHUNK = 1 << 20


class PseudoLinks:
    """The aufs pseudo-linked files of one apply, kept in ``work``; ``write`` feeds the extraction."""

    def __init__(self, work: str, write: Sink) -> None:
        self._work = work
        self._write = write
        self._spool: BinaryIO | None = None  # made at the first pseudo-linked file: most layers have none
        self._end = 0
        self._kept: dict[bytes, tuple[bytes, list[Piece], int, int]] = {}  # name -> headers, layout, offset, length

    def divert(self, entry: Entry) -> None:
        """Route an entry the guard diverted: a pseudo-linked file is kept, a link to one becomes a copy."""
        key = entry.pseudo_link
        assert key is not None
        if entry.typeflag == tf.LINK:
            name = entry.new_name
            assert name is not None
            entry.divert = lambda _group, _pieces: self._copy(key, name)
        else:
            entry.divert = lambda group, pieces: self._keep(key, group, pieces, tf.padded(entry.size))

    def close(self) -> None:
        """Let the kept data go (the spool has no name: closing it frees it)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._kept.clear()

    def _keep(self, key: bytes, group: bytes, pieces: list[Piece], length: int) -> Sink:
        """Note the file's headers; its data (``length`` bytes, padded) goes to the spool."""
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(dir=self._work, prefix="plnk-")
        self._kept[key] = (group, list(pieces), self._end, length)  # a later one of the same name wins
        return self._append

    def _append(self, data: memoryview) -> None:
        assert self._spool is not None
        fd = self._spool.fileno()
        while data:
            n = os.pwrite(fd, data, self._end)
            self._end += n
            data = data[n:]

    def _copy(self, key: bytes, name: bytes) -> None:
        """Pass on the kept file ``key`` as a regular file named ``name`` (its headers renamed, its data)."""
        group, pieces, start, length = self._kept[key]
        assert self._spool is not None
        self._write(memoryview(renamed_group(group, pieces, name, None)))
        fd, off, end = self._spool.fileno(), start, start + length
        while off < end:
            chunk = os.pread(fd, min(CHUNK, end - off), off)
            if not chunk:
                raise ApplyFailed(f"aufs pseudo-link {os.fsdecode(key)!r}: its kept copy ends early")
            self._write(memoryview(chunk))
            off += len(chunk)
