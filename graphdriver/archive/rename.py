"""Put a cleaned name (and hard-link target) into every name field of one entry's headers.

A name such as ``./x/./y/../z`` is extracted as ``x/z`` (Docker cleans each name as Go's ``filepath.Clean``
does), but GNU tar refuses any name with a ``..`` component: the entry's header group (its extended
headers, its header, old GNU sparse blocks) is written out again with the cleaned name in each place a
name can come from (the header's name and prefix fields, a GNU long name, PAX ``path`` and
``GNU.sparse.name``), so no field GNU tar could read holds the old one. Other fields are kept as they are.
"""

from __future__ import annotations

from . import tarformat as tf

#: (typeflag, offset of its header in the group, bytes of data after that header)
Piece = tuple[bytes, int, int]

_NAME_KEYS = ("path", "GNU.sparse.name")


def _placeholder(name: bytes) -> bytes:
    """A header field's stand-in when a longer name lives in an extended header (GNU tar reads that one)."""
    return name.rstrip(b"/").rpartition(b"/")[2][:100] or b"."


def _put_name(hdr: bytearray, fmt: str, name: bytes) -> bool:
    """Write ``name`` into the name (and, ustar, prefix) fields; False when it does not fit there."""
    if len(name) <= 100:
        hdr[0:100] = name.ljust(100, b"\0")
        if fmt == "ustar":
            hdr[345:500] = bytes(155)
        return True
    if fmt == "ustar":
        i = name.rfind(b"/", max(0, len(name) - 101), 156)
        if 0 < i < len(name) - 1:
            hdr[0:100] = name[i + 1:].ljust(100, b"\0")
            hdr[345:500] = name[:i].ljust(155, b"\0")
            return True
    hdr[0:100] = _placeholder(name).ljust(100, b"\0")
    return False


def _sealed(hdr: bytearray, size: int | None = None) -> bytes:
    """The header with ``size`` (when given) and a fresh checksum."""
    if size is not None:
        hdr[124:136] = b"%011o\0" % size
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def _block(hdr: bytes, data: bytes) -> bytes:
    return _sealed(bytearray(hdr), len(data)) + data + bytes(tf.padded(len(data)) - len(data))


def renamed_group(group: bytes, pieces: list[Piece], name: bytes | None, link: bytes | None) -> bytes:
    """``group`` (one entry's header bytes, laid out as ``pieces``, the entry's own header last) with
    ``name`` and ``link`` (None: keep) in every field that carries them."""
    out: list[bytes] = []
    main_off = pieces[-1][1]
    hdr = bytearray(group[main_off:main_off + tf.BLOCK])
    fmt = tf.header_format(bytes(hdr))
    name_elsewhere = any(t == tf.GNU_LONGNAME for t, _, _ in pieces[:-1])
    pax_at: int | None = None
    pax_records: dict[str, bytes] = {}
    for t, off, size in pieces[:-1]:
        head, data = group[off:off + tf.BLOCK], group[off + tf.BLOCK:off + tf.BLOCK + size]
        if t == tf.PAX_X:
            pax_records = tf.parse_pax(data)
            name_elsewhere = name_elsewhere or any(k in pax_records for k in _NAME_KEYS)
            pax_at = len(out)
            out.append(head)  # filled in below, once it is known whether it must carry the name too
            continue
        if t == tf.GNU_LONGNAME and name is not None:
            data = name + b"\0"
        elif t == tf.GNU_LONGLINK and link is not None:
            data = link + b"\0"
        out.append(_block(head, data))
    if name is not None:
        for key in _NAME_KEYS:
            if key in pax_records:
                pax_records[key] = name
        if not _put_name(hdr, fmt, name) and not name_elsewhere:
            pax_records["path"] = name  # ustar only: a name of more than 100 bytes with no fitting split
    if link is not None:
        if "linkpath" in pax_records:
            pax_records["linkpath"] = link
        hdr[157:257] = (link if len(link) <= 100 else _placeholder(link)).ljust(100, b"\0")
    records = b"".join(tf.pax_record(k, v) for k, v in pax_records.items())
    if pax_at is not None:
        out[pax_at] = _block(out[pax_at], records)
    elif records:
        out.append(tf.pax_block(records, name or b""))
    out.append(_sealed(hdr))
    out.append(group[main_off + tf.BLOCK:])  # old GNU sparse map blocks
    return b"".join(out)
