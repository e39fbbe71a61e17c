"""The tar reader in isolation: numbers, checksums, PAX records, chunk boundaries, dropping, draining."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from graphdriver.archive import tarformat as tf
from graphdriver.archive.compress import open_stream
from graphdriver.archive.safety import PathGuard, escapes
from graphdriver.archive.scan import DROP, FORWARD, TarScanner
from graphdriver.errors import UnsafeArchive

from .tarbuild import directory, file, hardlink, pax, symlink, tar


@pytest.mark.parametrize("field,value", [(b"0000644\0", 0o644), (b"  644 \0\0", 0o644), (b"000000000012", 10),
                                         (b"\x80" + bytes(10) + b"\x05", 5), (b"17777777777\0", 0o17777777777)])
def test_numbers_accepted(field, value):
    assert tf.parse_number(field, "x") == value


@pytest.mark.parametrize("field", [b"12_3\0", b"12 34\0", b"+12\0", b"\t12\0", b"129\0", b"12\0 3", b"", b"  \0",
                                   b"\xff" * 12, b"0x12\0"])
def test_numbers_refused(field):
    with pytest.raises(tf.FormatError):
        tf.parse_number(field, "x")


def test_checksum_signed_and_unsigned():
    h = bytearray(tf.build_header(b"\xe9t\xe9", tf.REG, size=3))
    assert tf.checksum_ok(bytes(h))
    signed = sum(h[:148]) + sum(h[156:]) + 256 - 256 * sum(1 for b in h if b & 0x80)
    h[148:156] = b"%06o\0 " % signed
    assert tf.checksum_ok(bytes(h))
    h[0] ^= 1
    assert not tf.checksum_ok(bytes(h))


def test_pax_records_round_trip_and_strictness():
    blob = tf.pax_record("path", b"a" * 300) + tf.pax_record("SCHILY.xattr.user.x", b"\x00\n=bin")
    assert tf.parse_pax(blob) == {"path": b"a" * 300, "SCHILY.xattr.user.x": b"\x00\n=bin"}
    for bad in (b"5 a=b\n", b"x path=a\n", b"9 path=a", b"7 =abc\n"):
        with pytest.raises(tf.FormatError):
            tf.parse_pax(bad)


def scan(blob: bytes, fmt: str = "overlay", read_size: int | None = None) -> tuple[bytes, PathGuard]:
    out = bytearray()
    guard = PathGuard(fmt)
    src = io.BytesIO(blob)
    read = (lambda n: src.read(min(n, read_size))) if read_size else src.read
    TarScanner(read, lambda mv: out.extend(mv), guard.visit).run()
    return bytes(out), guard


def names_of(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        return [m.name for m in t]


@pytest.mark.parametrize("read_size", [None, 1, 7, 511, 513, 4096])
def test_forwarded_bytes_survive_any_chunking(read_size):
    blob = tar(directory("d"), file("d/a", os.urandom(3000)), pax({"path": "d/" + "long" * 60}),
               file("ignored", b"x" * 700), symlink("d/l", "a"), hardlink("d/h", "d/a"), file("d/.wh.gone"),
               file("d/z", b"end"))
    out, guard = scan(blob, read_size=read_size)
    assert names_of(out) == ["d", "d/a", "d/" + "long" * 60, "d/l", "d/h", "d/z"]  # whiteout dropped
    assert guard.whiteouts == [(b"d", b"gone")]
    assert guard.size == 3000 + 700 + 3
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        assert t.extractfile("d/z").read() == b"end"


def test_aufs_keeps_whiteouts_and_drops_aufs_metadata():
    out, guard = scan(tar(file(".wh.x"), file(".wh..wh.aufs"), file(".wh..wh.plnk/123.456", b"zz"), file("y")),
                      fmt="aufs")
    assert names_of(out) == [".wh.x", "y"]
    assert guard.whiteouts == [(b"", b"x")]


def test_trailing_data_is_drained_and_clean_eof_accepted():
    src = io.BytesIO(tar(file("a", b"1")) + b"garbage after the end" * 100)
    out = bytearray()
    TarScanner(src.read, lambda mv: out.extend(mv), PathGuard("overlay").visit).run()
    assert src.read() == b""
    assert names_of(bytes(out)) == ["a"]
    no_trailer = tar(file("a", b"1"))[:-1024]
    out2, _ = scan(no_trailer)
    assert names_of(out2) == ["a"]


def test_nothing_is_forwarded_before_its_header_is_judged():
    """The sink never receives the bytes of an entry the visitor refused."""
    blob = tar(file("good", b"g" * 100), file("../bad", b"b" * 100))
    got = bytearray()

    def visit(e):
        if e.name == b"../bad":
            assert b"../bad" not in got
            raise UnsafeArchive("refused")
        return FORWARD

    with pytest.raises(UnsafeArchive):
        TarScanner(io.BytesIO(blob).read, lambda mv: got.extend(mv), visit).run()
    assert b"../bad" not in got


def test_drop_action_removes_the_whole_entry():
    blob = tar(pax({"path": "x" * 200}), file("short", b"data" * 300), file("kept", b"k"))
    got = bytearray()
    TarScanner(io.BytesIO(blob).read, lambda mv: got.extend(mv),
               lambda e: DROP if e.name.startswith(b"x") else FORWARD).run()
    assert names_of(bytes(got)) == ["kept"]


def test_escapes():
    assert escapes((), b"/etc")
    assert escapes((b"a",), b"../../x")
    assert not escapes((b"a",), b"../x")
    assert not escapes((b"a", b"b"), b"c/../../d")


@pytest.mark.parametrize("compress", ["gzip", "zstd", "bzip2", "xz", "plain"])
def test_magic_detection(compress, tmp_path):
    import subprocess

    raw = tar(file("f", b"hello"))
    p = tmp_path / "t.tar"
    p.write_bytes(raw)
    if compress != "plain":
        cmd = {"gzip": ["gzip", "-k"], "zstd": None, "bzip2": ["bzip2", "-k"], "xz": ["xz", "-k"]}[compress]
        if cmd is None:
            import zstandard
            data = zstandard.ZstdCompressor().compress(raw)
        else:
            subprocess.run(cmd + [str(p)], check=True)
            data = (tmp_path / ("t.tar." + {"gzip": "gz", "bzip2": "bz2", "xz": "xz"}[compress])).read_bytes()
    else:
        data = raw
    read, kind = open_stream(io.BytesIO(data))
    assert kind == compress
    out = b""
    while chunk := read(4096):
        out += chunk
    assert out == raw


@pytest.mark.parametrize("blob", [bytes(range(1, 256)) * 80,  # garbage: a bad checksum, junk for a name
                                  tar(pax({"path": "x" * 500 + "/../../y"}), file("z"))])
def test_names_in_messages_are_capped(blob):
    with pytest.raises(UnsafeArchive) as err:
        TarScanner(io.BytesIO(blob).read, lambda mv: None, PathGuard("overlay").visit).run()
    msg = str(err.value)
    assert "\u2026" in msg and len(msg) < 250, msg
