"""Stream a tar through, header by header: parse, let a visitor judge each entry, forward only what passed.

The bytes of an entry (its extended headers, header and data) reach the sink only after the visitor has
accepted the entry, so a consumer behind the sink (GNU tar) never sees an unvalidated header. Data is
passed on in large chunks without being parsed; only headers are looked at. A visitor may also divert an
entry (:data:`DIVERT`): its header bytes go to the entry's :attr:`Entry.divert`, which says where its data
goes instead (aufs pseudo-links: :mod:`.pseudolinks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UnsafeArchive
from . import tarformat as tf
from .names import shown
from .rename import Piece, renamed_group

CHUNK = 1 << 18
FORWARD, DROP, DIVERT = 1, 2, 3

#: PAX keys GNU tar would act on that we do not support (they change how the stream is read or used).
_REFUSED_PAX_PREFIXES = ("GNU.dumpdir", "GNU.volume")
_GLOBAL_OK = frozenset(("comment", "charset", "hdrcharset"))
_SIMPLE_TYPES = frozenset((tf.REG, tf.AREG, tf.CONTIG, tf.DIR, tf.SYMLINK, tf.LINK, tf.CHR, tf.BLK, tf.FIFO))


@dataclass(slots=True)
class Entry:
    """One archive member as GNU tar will see it."""

    name: bytes               # effective member name (raw bytes, as in the archive)
    typeflag: bytes
    linkname: bytes = b""
    size: int = 0             # data bytes stored in the archive
    realsize: int = 0         # logical size (sparse files)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    other_names: tuple[bytes, ...] = ()  # overridden name candidates (checked too, defence in depth)
    new_name: bytes | None = None  # set by the visitor: the name tar must see instead (cleaned)
    new_link: bytes | None = None  # the same for a hard link's target
    #: Its mtime is before 1970 or past 2262: Docker's unpack sets such a time to the epoch (not on symlinks)
    time_out_of_range: bool = False
    #: Set by the visitor: the aufs pseudo-link (``.wh..wh.plnk/<this>``) the entry is, or links to
    pseudo_link: bytes | None = None
    #: Set by the visitor for DIVERT: called with the entry's header bytes and their layout (the sink has
    #: everything before the entry), returns where its data goes (None: dropped). Unset: dropped.
    divert: Callable[[bytes, list[Piece]], Sink | None] | None = None

    @property
    def display(self) -> str:
        """The name for messages (quoted, one line, capped)."""
        return shown(self.name)


Reader = Callable[[int], bytes]
Sink = Callable[[memoryview], None]
Visitor = Callable[[Entry], int]


class TarScanner:
    """Parse ``read``'s tar stream, call ``visit`` per entry, pass accepted bytes to ``write``."""

    def __init__(self, read: Reader, write: Sink, visit: Visitor,
                 readinto: Callable[[memoryview], int] | None = None,
                 splice: Callable[[int], int] | None = None) -> None:
        self._read_src = read
        self._splice = splice  # move n approved bytes from the source to the sink without reading them
        if readinto is not None:
            self._readinto = readinto  # type: ignore[method-assign]
        self._write = write
        self._visit = visit
        self.buf = b""
        self.base = 0   # stream offset of buf[0]
        self.pos = 0    # parse cursor
        self.fwd = 0    # first byte not yet forwarded or dropped
        self.hold: int | None = None  # first byte not yet approved (None: all before pos approved)
        self.entries = 0
        self._pieces: list[Piece] = []  # the headers of the entry being read (see :mod:`.rename`)

    # -- buffer ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        upto = self.pos if self.hold is None else min(self.hold, self.pos)
        if upto > self.fwd:
            self._write(memoryview(self.buf)[self.fwd - self.base:upto - self.base])
            self.fwd = upto

    def flush(self) -> None:
        """Pass on every approved byte now (from a visitor: all before the entry being judged)."""
        self._flush()

    def _ensure(self, n: int) -> bool:
        """Make ``[pos, pos+n)`` buffered; False at end of input."""
        if self.pos + n <= self.base + len(self.buf):
            return True
        self._flush()
        start = self.fwd - self.base
        keep = len(self.buf) - start
        fresh = bytearray(keep + max(CHUNK, n))
        fresh[:keep] = memoryview(self.buf)[start:]
        self.base = self.fwd
        have = keep
        view = memoryview(fresh)
        while self.base + have < self.pos + n:
            got = self._readinto(view[have:])
            if not got:
                break
            have += got
        view.release()
        del fresh[have:]
        self.buf = fresh
        return self.base + have >= self.pos + n

    def _readinto(self, view: memoryview) -> int:
        chunk = self._read_src(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def _take(self, n: int, what: str) -> bytes:
        if not self._ensure(n):
            raise UnsafeArchive(f"truncated layer archive: stream ends inside {what}")
        off = self.pos - self.base
        self.pos += n
        return bytes(self.buf[off:off + n])

    def _skip(self, n: int, forward: bool, entry: Entry) -> None:
        """Move past ``n`` data bytes, forwarding them (approved) or dropping them."""
        end = self.pos + n
        bufend = self.base + len(self.buf)
        if end <= bufend:
            self.pos = end
            if not forward:
                self.fwd = end
            return
        self.pos = bufend
        if forward:
            self._flush()
        left = end - bufend
        if forward and self._splice is not None and left >= CHUNK:
            while left:
                got = self._splice(left)
                if not got:
                    raise UnsafeArchive(f"truncated layer archive: stream ends inside the data of entry "
                                        f"{entry.display}")
                left -= got
            self.buf, self.base = b"", end
            self.pos = self.fwd = end
            return
        while True:
            chunk = self._read_src(CHUNK)
            if not chunk:
                raise UnsafeArchive(f"truncated layer archive: stream ends inside the data of entry {entry.display}")
            if len(chunk) >= left:
                if forward:
                    self._write(memoryview(chunk)[:left])
                self.buf, self.base = chunk, end - left
                self.pos = self.fwd = end
                return
            if forward:
                self._write(memoryview(chunk))
            left -= len(chunk)

    # -- parsing --------------------------------------------------------------------------------
    def run(self) -> int:
        """Scan to the end of the archive; returns the number of entries passed on or dropped."""
        while True:
            start = self.pos
            self.hold = start
            if not self._ensure(tf.BLOCK):
                if self.base + len(self.buf) == start:
                    break  # clean end without the zero blocks (Go's reader accepts this too)
                raise UnsafeArchive("truncated layer archive: stream ends inside a header")
            entry = self._read_group()
            if entry is None:
                break
            action = self._visit(entry)
            if action == FORWARD:
                if entry.new_name is not None or entry.new_link is not None:
                    self._rename(start, entry)
                self.hold = None
                self._skip(tf.padded(entry.size), True, entry)
            elif action == DIVERT and entry.divert is not None:
                self._divert(start, entry, entry.divert)
            else:
                self._flush()  # everything before this entry
                self._skip(tf.padded(entry.size), False, entry)
                self.fwd = self.pos
            self.entries += 1
        # End: pass on two zero blocks instead of whatever followed, then drain the input.
        self.hold = self.pos = max(self.pos, self.fwd)
        self._flush()
        self._write(memoryview(tf.ZERO_BLOCK * 2))
        while self._read_src(CHUNK):
            pass
        return self.entries

    def _rename(self, start: int, entry: Entry) -> None:
        """Pass on the entry's headers (from ``start``, all buffered) with the visitor's names in them."""
        self._flush()  # everything before the entry
        group = bytes(memoryview(self.buf)[start - self.base:self.pos - self.base])
        self._write(memoryview(renamed_group(group, self._pieces, entry.new_name, entry.new_link)))
        self.fwd = self.pos

    def _divert(self, start: int, entry: Entry, divert: Callable[[bytes, list[Piece]], Sink | None]) -> None:
        """Hand the entry's headers (from ``start``, all buffered) to ``divert``, then its data where it says."""
        self._flush()  # everything before the entry
        sink = divert(bytes(memoryview(self.buf)[start - self.base:self.pos - self.base]), self._pieces)
        self.fwd = self.pos
        if sink is None:
            self._skip(tf.padded(entry.size), False, entry)
            return
        write, splice = self._write, self._splice
        self._write, self._splice, self.hold = sink, None, None
        try:
            self._skip(tf.padded(entry.size), True, entry)
            self._flush()
        finally:
            self._write, self._splice = write, splice

    def _read_group(self) -> Entry | None:
        """Read extended headers and the header of one member; None at the end-of-archive block."""
        self._pieces = []
        hdr = self._take(tf.BLOCK, "a header")
        t = hdr[156:157]
        if t in _SIMPLE_TYPES and tf.checksum_ok(hdr):  # the common case: one plain header
            self._pieces.append((t, 0, 0))
            try:
                return self._simple_entry(hdr, tf.header_format(hdr), t)
            except tf.FormatError as e:
                raise UnsafeArchive(f"corrupt layer archive: entry {_hint(hdr)}: {e}") from None
        return self._read_extended(hdr)

    def _read_extended(self, first: bytes) -> Entry | None:
        """The general case: extended headers (PAX, GNU long names) before the member's header."""
        pax: dict[str, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        seen: set[bytes] = set()
        hdr = first
        off = 0  # of hdr in the group
        while True:
            if hdr == tf.ZERO_BLOCK:
                if seen:
                    raise UnsafeArchive("corrupt layer archive: end-of-archive block after an extended header")
                return None
            if not tf.checksum_ok(hdr):
                raise UnsafeArchive(f"corrupt layer archive: bad header checksum at byte {self.pos - tf.BLOCK} "
                                    f"(entry {_hint(hdr)})")
            t = hdr[156:157]
            try:
                fmt = tf.header_format(hdr)
                if t in tf.META_TYPES:
                    if t in seen:
                        raise tf.FormatError(f"two {t.decode()!r} extended headers for one entry")
                    seen.add(t)
                    size = tf.parse_number(hdr[124:136], "size")
                    limit = tf.MAX_LONGNAME if t in (tf.GNU_LONGNAME, tf.GNU_LONGLINK) else tf.MAX_META
                    if size > limit:
                        raise tf.FormatError(f"extended header of {size} bytes (limit {limit})")
                    self._pieces.append((t, off, size))
                    data = self._take(tf.padded(size), "an extended header")[:size]
                    if t == tf.PAX_X:
                        pax = tf.parse_pax(data)
                    elif t == tf.PAX_G:
                        bad = sorted(set(tf.parse_pax(data)) - _GLOBAL_OK)
                        if bad:
                            raise tf.FormatError(f"global PAX header sets {bad[0]!r}")
                    else:
                        value = tf.cstring(data)
                        if data[len(value):].strip(b"\0"):
                            raise tf.FormatError("NUL inside a GNU long name")
                        if t == tf.GNU_LONGNAME:
                            long_name = value
                        else:
                            long_link = value
                    off += tf.BLOCK + tf.padded(size)
                    hdr = self._take(tf.BLOCK, "a header")
                    continue
                self._pieces.append((t, off, 0))
                if not seen and t in _SIMPLE_TYPES:
                    return self._simple_entry(hdr, fmt, t)
                return self._entry(hdr, fmt, t, pax, long_name, long_link)
            except tf.FormatError as e:
                raise UnsafeArchive(f"corrupt layer archive: entry {_hint(hdr)}: {e}") from None

    def _check_sparse_map(self, size: int) -> None:
        """PAX sparse 1.0: the map at the start of the data must account for exactly the stored bytes."""
        nums: list[int] = []
        need, blocks, text = None, 0, b""
        while need is None or len(nums) < need:
            blocks += 1
            if blocks * tf.BLOCK > min(size, 1 << 20):
                raise tf.FormatError("sparse map larger than the entry (or than 1 MiB)")
            if not self._ensure(blocks * tf.BLOCK):
                raise UnsafeArchive("truncated layer archive: stream ends inside a sparse map")
            off = self.pos - self.base
            text = self.buf[off:off + blocks * tf.BLOCK]
            lines = text.split(b"\n")
            nums = []
            for ln in lines[:-1]:
                if not ln.isdigit():
                    raise tf.FormatError("malformed sparse map")
                nums.append(int(ln))
            if nums and need is None:
                need = 1 + 2 * nums[0]
        regions = nums[1:need]
        stored = blocks * tf.BLOCK + sum(tf.padded(n) for n in regions[1::2])
        if stored != tf.padded(size):
            raise tf.FormatError(f"sparse map covers {stored} bytes, the entry stores {size}")

    @staticmethod
    def _simple_entry(hdr: bytes, fmt: str, t: bytes) -> Entry:
        """A member with no extended headers (the common case), read with the same rules as :meth:`_entry`."""
        name = tf.cstring(hdr[0:100])
        if fmt == "ustar" and hdr[345] != 0:
            name = tf.cstring(hdr[345:500]) + b"/" + name
        size = tf.parse_number(hdr[124:136], "size")
        if size and t in tf.HEADER_ONLY_TYPES:
            raise tf.FormatError(f"type {t.decode()!r} entry with {size} bytes of data")
        linkname = tf.cstring(hdr[157:257]) if t in (tf.LINK, tf.SYMLINK) else b""
        return Entry(name=name, typeflag=t, linkname=linkname, size=size, realsize=size, other_names=(name,),
                     time_out_of_range=bool(hdr[136] & 0x80) and tf.time_out_of_range(hdr, {}))

    def _entry(self, hdr: bytes, fmt: str, t: bytes, pax: dict[str, bytes], long_name: bytes | None,
               long_link: bytes | None) -> Entry:
        if pax and fmt != "ustar":
            raise tf.FormatError("PAX extended header before a non-POSIX header")
        if t not in tf.REGULAR_TYPES and t not in tf.HEADER_ONLY_TYPES:
            raise tf.FormatError(f"unsupported entry type {t!r}")
        name = tf.cstring(hdr[0:100])
        if fmt == "ustar" and hdr[345] != 0:
            name = tf.cstring(hdr[345:500]) + b"/" + name
        candidates = [name]
        if long_name is not None:
            name = long_name
            candidates.append(name)
        for key in pax:
            if key.startswith(_REFUSED_PAX_PREFIXES):
                raise tf.FormatError(f"unsupported PAX record {key!r}")
        if "path" in pax:
            name = pax["path"]
            candidates.append(name)
        if "GNU.sparse.name" in pax:
            name = pax["GNU.sparse.name"]
            candidates.append(name)
        linkname = tf.cstring(hdr[157:257])
        if long_link is not None:
            linkname = long_link
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        if b"\0" in name or b"\0" in linkname:
            raise tf.FormatError("NUL in a name")
        size = tf.parse_number(hdr[124:136], "size")
        if "size" in pax:
            size = tf.pax_int(pax["size"], "size")
        if t in tf.HEADER_ONLY_TYPES and size:
            raise tf.FormatError(f"type {t.decode()!r} entry with {size} bytes of data")
        realsize = size
        sparse_keys = [k for k in pax if k.startswith("GNU.sparse.")]
        if t == tf.GNU_SPARSE:
            if sparse_keys:
                raise tf.FormatError("old GNU sparse entry with PAX sparse records")
            realsize = tf.parse_number(hdr[483:495], "sparse real size")
            stored = tf.old_sparse_regions(hdr[386:482], 4)
            ext = hdr[482]
            while ext:
                block = self._take(tf.BLOCK, "a sparse map")
                stored += tf.old_sparse_regions(block[:504], 21)
                ext = block[504]
            if stored != tf.padded(size):
                raise tf.FormatError(f"sparse map covers {stored} bytes, the entry stores {size}")
        elif sparse_keys:
            if pax.get("GNU.sparse.major") != b"1" or pax.get("GNU.sparse.minor") != b"0":
                raise tf.FormatError("unsupported PAX sparse format (only 1.0 is accepted)")
            if t not in (tf.REG, tf.AREG, tf.CONTIG):
                raise tf.FormatError("sparse records on a non-regular entry")
            if "GNU.sparse.realsize" not in pax or "GNU.sparse.name" not in pax:
                raise tf.FormatError("PAX sparse 1.0 entry without its real size or name")
            realsize = tf.pax_int(pax["GNU.sparse.realsize"], "sparse real size")
            self._check_sparse_map(size)
        # Owners, modes, times and device numbers are tar's business: they cannot move an entry or the
        # stream, so they are not parsed here.
        e = Entry(name=name, typeflag=t, linkname=linkname, size=size, realsize=realsize,
                  other_names=tuple(candidates), time_out_of_range=tf.time_out_of_range(hdr, pax))
        if pax:
            for key, value in pax.items():
                if key.startswith("SCHILY.xattr."):
                    e.xattrs[key[len("SCHILY.xattr."):]] = value
        return e


def _hint(hdr: bytes) -> str:
    """The name field of a header, for messages."""
    return shown(tf.cstring(hdr[:100]))
