"""Tar on the wire: header fields, numbers, checksums and PAX records, read and written (pure, no I/O).

Reading is deliberately strict: anything GNU tar could read differently from us (odd numbers, malformed
PAX records, unknown entry types) is refused, because the extractor trusts the headers we validated.
"""

from __future__ import annotations

import posixpath
import zlib

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)

# Entry types.
REG, AREG, CONTIG, LINK, SYMLINK, CHR, BLK, DIR, FIFO = b"0", b"\0", b"7", b"1", b"2", b"3", b"4", b"5", b"6"
GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE, PAX_X, PAX_G = b"L", b"K", b"S", b"x", b"g"
REGULAR_TYPES = frozenset((REG, AREG, CONTIG, GNU_SPARSE))
HEADER_ONLY_TYPES = frozenset((LINK, SYMLINK, CHR, BLK, DIR, FIFO))
META_TYPES = frozenset((GNU_LONGNAME, GNU_LONGLINK, PAX_X, PAX_G))

MAX_META = 16 << 20  # largest extended header we buffer
MAX_LONGNAME = 64 << 10


class FormatError(ValueError):
    """A header or record that is malformed (the caller names the entry)."""


def padded(n: int) -> int:
    """``n`` rounded up to whole blocks."""
    return (n + BLOCK - 1) & ~(BLOCK - 1)


def cstring(field: bytes) -> bytes:
    """A NUL-terminated header field (bytes after the first NUL are ignored, as tar does)."""
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def parse_number(field: bytes, what: str, *, strict: bool = True) -> int:
    """An octal or base-256 numeric field. ``strict``: refuse empty fields (GNU tar refuses them).

    Accepted octal forms are a subset of GNU tar's: leading spaces, octal digits, then only NULs/spaces.
    """
    digits = field.lstrip(b" ").rstrip(b" \0")
    if digits.isdigit() and b"8" not in digits and b"9" not in digits:
        return int(digits, 8)
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            raise FormatError(f"negative {what}")
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    i, n = 0, len(field)
    while i < n and field[i] == 0x20:
        i += 1
    j = i
    while j < n and 0x30 <= field[j] <= 0x37:
        j += 1
    if j == i:
        if not strict and not field[i:].strip(b" \0"):
            return 0
        raise FormatError(f"no number in the {what} field")
    if field[j:].strip(b" \0"):
        raise FormatError(f"garbage in the {what} field")
    return int(field[i:j], 8)


def byte_sum(block: bytes) -> int:
    """Sum of the bytes of a 512-byte block, through adler32 (each 256-byte half sums below its modulus)."""
    view = memoryview(block)
    return (zlib.adler32(view[:256]) & 0xFFFF) + (zlib.adler32(view[256:]) & 0xFFFF) - 2


def checksum_ok(hdr: bytes) -> bool:
    """True when the stored checksum matches the unsigned or the signed sum (both are in use)."""
    field = hdr[148:156]
    if field[6:8] == b"\0 " and field[:6].isdigit() and b"8" not in field and b"9" not in field:
        stored = int(field[:6], 8)  # the usual form
    else:
        try:
            stored = parse_number(field, "checksum")
        except FormatError:
            return False
    unsigned = byte_sum(hdr) - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for b in hdr if b & 0x80) + 256 * sum(1 for b in hdr[148:156] if b & 0x80)
    return stored == signed


def header_format(hdr: bytes) -> str:
    """``ustar`` (prefix field in use), ``gnu`` or ``v7``; anything else is refused."""
    magic = hdr[257:265]
    if magic[:6] == b"ustar\0":
        return "ustar"
    if magic == b"ustar  \0":
        return "gnu"
    if magic == bytes(8):
        return "v7"
    raise FormatError(f"unknown header magic {bytes(magic)!r}")


def parse_pax(data: bytes) -> dict[str, bytes]:
    """PAX records ``"<len> <key>=<value>\\n"``; later records override earlier ones."""
    out: dict[str, bytes] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            if data[pos:].strip(b"\0"):
                raise FormatError("data after the PAX padding")
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0 or not data[pos:sp].isdigit():
            raise FormatError("malformed PAX record length")
        length = int(data[pos:sp])
        end = pos + length
        if length <= sp - pos + 1 or end > n or data[end - 1] != 0x0A:
            raise FormatError("malformed PAX record")
        key, eq, value = data[sp + 1:end - 1].partition(b"=")
        if not eq or not key:
            raise FormatError("PAX record without a key")
        out[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return out


def pax_int(value: bytes, what: str) -> int:
    """A decimal PAX value (sizes, ids)."""
    if not value.isdigit():
        raise FormatError(f"bad PAX {what} {value[:32]!r}")
    return int(value)


# -- writing ------------------------------------------------------------------------------------
def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def fits_octal(value: int, width: int) -> bool:
    """True when ``value`` fits a ``width``-byte octal field."""
    return 0 <= value < 8 ** (width - 1)


def pax_record(key: str, value: bytes) -> bytes:
    """One PAX record, its length prefix counting itself."""
    body = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


_MAGIC_SUM = sum(b"ustar\x0000")


def build_header(name: bytes, typeflag: bytes, *, size: int = 0, mode: int = 0, uid: int = 0, gid: int = 0,
                 mtime: int = 0, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
                 uname: bytes = b"", gname: bytes = b"", prefix: bytes = b"") -> bytes:
    """One ustar header block. Fields that do not fit must go to PAX records first (see tarwriter).

    ``mode`` may carry the file-type bits (``0o100644``), as Docker's layer tars do. ``prefix``: the
    ustar name prefix of a long name split as :func:`split_ustar` does.
    """
    if not (uid < 0o7777777 and gid < 0o7777777 and 0 <= size < 0o77777777777 and 0 <= mtime < 0o77777777777):
        uid, gid = (uid if fits_octal(uid, 8) else 0), (gid if fits_octal(gid, 8) else 0)
        size, mtime = (size if fits_octal(size, 12) else 0), (mtime if fits_octal(mtime, 12) else 0)
    dev = b"%07o\0%07o\0" % (devmajor, devminor) if (devmajor or devminor) and devmajor < 0o7777777 \
        and devminor < 0o7777777 else b"0000000\x000000000\0"
    name, linkname, prefix = name[:100], linkname[:100], prefix[:155]
    nums = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode & 0o7777777, uid, gid, size, mtime)
    names = uname[:32].ljust(32, b"\0") + gname[:32].ljust(32, b"\0")
    head = name.ljust(100, b"\0") + nums
    tail = typeflag + linkname.ljust(100, b"\0") + b"ustar\x0000" + names + dev + prefix.ljust(167, b"\0")
    chk = sum(name) + sum(nums) + typeflag[0] + sum(linkname) + _MAGIC_SUM + sum(names) + sum(dev) + sum(prefix) \
        + 8 * 32
    return head + b"%06o\0 " % chk + tail


def to_ascii(raw: bytes) -> bytes:
    """``raw`` as Go's tar writer puts a string into a header field: every byte outside ASCII, and NUL,
    dropped (the full name goes to a PAX record)."""
    if raw.isascii() and b"\0" not in raw:
        return raw
    return bytes(c for c in raw if 0 < c < 0x80)


def split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) of a name longer than 100 bytes that ustar's prefix field can carry, split at a
    slash as Go's tar writer splits it; None when it cannot (non-ASCII, or no slash that fits)."""
    length = len(name)
    if length <= 100 or not name.isascii():
        return None
    if length > 156:
        length = 156
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    if i <= 0 or len(name) - i - 1 > 100 or len(name) - i - 1 == 0 or i > 155:
        return None
    return name[:i], name[i + 1:]


def pax_header_name(name: bytes) -> bytes:
    """The name of the ``x`` header block before entry ``name``: ``<dir>/PaxHeaders.0/<base>``, in ASCII,
    at most 100 bytes, no trailing slash (Go's writer; a directory ``d/`` gives ``d/PaxHeaders.0``)."""
    head, _, base = name.rpartition(b"/")
    joined = posixpath.normpath(b"/".join(p for p in (head, b"PaxHeaders.0", base) if p))
    return to_ascii(joined)[:100].rstrip(b"/")


def pax_block(records: bytes, name: bytes) -> bytes:
    """An ``x`` header followed by its padded record data, as Go's tar writer makes it (a minimal header:
    name, mode, owner and time zero, size; no device numbers), so that layer tars hash as Docker's."""
    hname = pax_header_name(name)
    nums = b"0000000\x000000000\x000000000\x00%011o\x0000000000000\x00" % len(records)
    chk = sum(hname) + sum(nums) + PAX_X[0] + _MAGIC_SUM + 8 * 32
    hdr = hname.ljust(100, b"\0") + nums + b"%06o\0 " % chk + PAX_X + bytes(100) + b"ustar\x0000" + bytes(247)
    return hdr + records + bytes(padded(len(records)) - len(records))


#: The last second Docker's unpack keeps as given (Go's time.Unix(0, 0) + (1<<63 - 1) ns, in 2262).
MAX_TIME = 9223372036


def time_out_of_range(hdr: bytes, pax: dict[str, bytes]) -> bool:
    """The member's mtime (a PAX ``mtime`` record, else the header's field) is before 1970 or past
    :data:`MAX_TIME` (only a record or a base-256 field can say so; tar judges a malformed one)."""
    if "mtime" in pax:
        try:
            value = float(pax["mtime"])
        except ValueError:
            return False
        return value < 0 or value > MAX_TIME
    field = hdr[136:148]
    if field[0] & 0x80 and field[0] != 0xFF:
        return parse_number(field, "mtime") > MAX_TIME
    return False


def old_sparse_regions(area: bytes, count: int) -> int:
    """Bytes of archive data (whole blocks per region, as tar reads them) of an old GNU sparse map area."""
    total = 0
    for i in range(count):
        rec = area[i * 24:(i + 1) * 24]
        if not rec.strip(b"\0"):
            break
        parse_number(rec[:12], "sparse offset")
        total += padded(parse_number(rec[12:], "sparse length"))
    return total
