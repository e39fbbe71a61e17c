"""The hostile layer corpus: each case is a tar (built at test time, aimed at a sentinel directory outside
the root) that apply_diff must refuse, with the entry it must name (None: the stream as a whole is bad).

The layer below the target holds ``lower_abs -> <sentinel>`` and ``lower_rel -> ../../..(many)/<sentinel>``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma

import zstandard

from graphdriver.archive import tarformat as tf

from .tarbuild import (
    data_blocks,
    directory,
    end,
    file,
    fix_checksum,
    gnu_long,
    hardlink,
    header,
    pax,
    symlink,
    tar,
)


def lower_layer(sentinel: str) -> bytes:
    """The parent layer's content: symlinks that point out of the layer, and ordinary files."""
    return tar(directory("etc"), file("etc/passwd", b"root:x:0:0\n"),
               symlink("lower_abs", sentinel), symlink("lower_rel", "../" * 12 + sentinel.lstrip("/")),
               symlink("inside", "etc"), directory("dir"), file("dir/keep", b"keep"))


def corpus(sentinel: str) -> list[tuple[str, bytes, str | None]]:
    """(case id, tar bytes, name the error must mention)."""
    s = sentinel
    rel_out = "../" * 12 + s.lstrip("/")
    ok = file("ok", b"fine")  # a benign entry first: proves nothing of it is published on failure
    payload = file("../pwned", b"x")
    cases: list[tuple[str, bytes, str | None]] = [
        ("dotdot", tar(ok, file("../escape", b"x")), "../escape"),
        ("dotdot-deep", tar(ok, file("a/../../escape", b"x")), "a/../../escape"),
        ("dotdot-abs", tar(ok, file("/../../" + s.lstrip("/") + "/pwned", b"x")), "pwned"),
        ("dotdot-dir", tar(ok, directory("..")), ".."),
        ("dotdot-middle", tar(ok, directory("a"), file("a/b/../../../escape", b"x")), "a/b/../../../escape"),
        ("dotdot-dot-start", tar(ok, file("./x/./../../escape", b"x")), "./x/./../../escape"),
        ("dotdot-dir-deep", tar(ok, directory("a/b/../../..")), "a/b/../../.."),
        ("pax-overridden-dotdot", tar(ok, pax({"path": "innocent"}), file("../../pwned", b"x")), "innocent"),
        ("hardlink-dotdot-deep", tar(ok, hardlink("h", "ok/../../ok")), "h"),
        ("whiteout-dotdot-deep", tar(ok, file("a/../../.wh.passwd")), "a/../../.wh.passwd"),
        ("pax-path-dotdot", tar(ok, pax({"path": "../../pwned"}), file("innocent", b"x")), "../../pwned"),
        ("gnu-longname-dotdot", tar(ok, gnu_long(b"../" * 40 + b"pwned"), file("innocent", b"x",
                                                                               magic=b"ustar  \0")), "pwned"),
        ("symlink-abs-then-write", tar(ok, symlink("evil", s), file("evil/pwned", b"x")), "evil/pwned"),
        ("symlink-rel-then-write", tar(ok, symlink("evil", rel_out), file("evil/pwned", b"x")), "evil/pwned"),
        ("symlink-inside-then-write", tar(ok, directory("b"), symlink("a", "b"), file("a/x", b"x")), "a/x"),
        ("symlink-chain", tar(ok, symlink("a", "b"), symlink("b", s), file("a/pwned", b"x")), "a/pwned"),
        ("symlink-deep-parent", tar(ok, directory("d"), symlink("d/evil", s), file("d/evil/sub/pwned", b"x")),
         "d/evil/sub/pwned"),
        ("hardlink-through-symlink", tar(ok, symlink("evil", s), hardlink("h", "evil/file")), "h"),
        ("hardlink-name-through-symlink", tar(ok, symlink("evil", s), hardlink("evil/h", "ok")), "evil/h"),
        ("hardlink-abs", tar(ok, hardlink("h", "/etc/passwd")), "h"),
        ("hardlink-dotdot", tar(ok, hardlink("h", "../../../../etc/passwd")), "h"),
        ("hardlink-sentinel", tar(ok, hardlink("h", s + "/file")), "h"),
        ("hardlink-lower-file", tar(ok, hardlink("h", "etc/passwd")), "h"),
        ("hardlink-to-dir", tar(ok, directory("d"), hardlink("h", "d")), "h"),
        ("hardlink-to-self", tar(ok, hardlink("ok", "ok")), "ok"),
        ("hardlink-forward", tar(ok, hardlink("h", "later"), file("later", b"x")), "h"),
        # aufs pseudo-links (.wh..wh.plnk/): only a regular file the archive gives can be one
        ("plnk-missing", tar(ok, hardlink("h", ".wh..wh.plnk/1.2")), ".wh..wh.plnk/1.2"),
        ("plnk-before-its-file", tar(ok, hardlink("h", ".wh..wh.plnk/1.2"), file(".wh..wh.plnk/1.2", b"x")),
         ".wh..wh.plnk/1.2"),
        ("plnk-symlink-out", tar(ok, symlink(".wh..wh.plnk/1.2", s + "/file"), hardlink("h", ".wh..wh.plnk/1.2")),
         ".wh..wh.plnk/1.2"),
        ("plnk-hardlink-out", tar(ok, hardlink(".wh..wh.plnk/1.2", "/etc/passwd"),
                                  hardlink("h", ".wh..wh.plnk/1.2")), ".wh..wh.plnk/1.2"),
        ("plnk-dotdot", tar(ok, file(".wh..wh.plnk/1.2", b"x"), hardlink("h", ".wh..wh.plnk/../../etc/passwd")),
         "h"),
        ("plnk-link-through-symlink", tar(ok, file(".wh..wh.plnk/1.2", b"x"), symlink("evil", s),
                                          hardlink("evil/h", ".wh..wh.plnk/1.2")), "evil/h"),
        ("whiteout-dotdot", tar(ok, file(".wh..."), file("x")), ".wh..."),
        ("whiteout-empty", tar(ok, file("d/.wh.")), "d/.wh."),
        ("whiteout-dot", tar(ok, file("d/.wh..")), "d/.wh.."),
        ("whiteout-parent-dotdot", tar(ok, file("../.wh.passwd")), "../.wh.passwd"),
        ("whiteout-is-dir", tar(ok, directory(".wh.etc")), ".wh.etc"),
        ("inside-whiteout", tar(ok, file(".wh.etc/passwd", b"x")), ".wh.etc/passwd"),
        ("whiteout-through-symlink", tar(ok, symlink("evil", s), file("evil/.wh.file")), "evil/.wh.file"),
        ("opaque-through-symlink", tar(ok, symlink("evil", s), file("evil/.wh..wh..opq")), "evil/.wh..wh..opq"),
        ("nul-in-pax-path", tar(ok, pax({"path": b"evil\0/../../x"}), file("innocent", b"x")), None),
        ("nul-in-longname", tar(ok, gnu_long(b"abc\0../../x"), file("innocent", b"x", magic=b"ustar  \0")), None),
        ("nul-in-pax-linkpath", tar(ok, pax({"linkpath": b"ok\0x"}), symlink("l", "x")), None),
        ("truncated-data", tar(ok, file("big", b"y" * 5000))[:1024 + 512 + 2048], "big"),
        ("truncated-header", tar(ok, file("big", b"y" * 10))[:1024 + 300], None),
        ("truncated-pax", (ok + pax({"path": "long" * 100}))[:512 * 3 + 100], None),
        ("bad-checksum", ok + header("x", size=0)[:148] + b"0000000\0" + header("x")[156:] + end(), "x"),
        ("gzip-corrupt", _corrupt(gzip.compress(tar(ok, file("f", b"z" * 4000)))), None),
        ("gzip-truncated", gzip.compress(tar(ok, file("f", bytes(range(256)) * 40)))[:-60], None),
        ("zstd-truncated", zstandard.ZstdCompressor().compress(tar(ok, file("f", bytes(range(256)) * 40)))[:-40],
         None),
        ("bzip2-truncated", bz2.compress(tar(ok, file("f", bytes(range(256)) * 40)))[:-40], None),
        ("xz-corrupt", _corrupt(lzma.compress(tar(ok, file("f", b"q" * 4000)))), None),
        ("garbage", bytes(range(256)) * 8, None),
        ("type-volume", tar(ok, header("vol", b"V")), "vol"),
        ("type-multivolume", tar(ok, header("mv", b"M", size=0)), "mv"),
        ("type-dumpdir", tar(ok, header("dd", b"D", size=0)), "dd"),
        ("symlink-with-data", tar(ok, header("l", tf.SYMLINK, size=512, linkname="x") + payload), "l"),
        ("dir-with-data", tar(ok, header("d/", tf.DIR, size=512) + payload), "d/"),
        ("hardlink-with-data", tar(ok, header("h", tf.LINK, size=512, linkname="ok") + payload), "h"),
        ("pax-before-gnu-header", tar(ok, pax({"path": "innocent"}), file("../pwned", b"x", magic=b"ustar  \0")),
         None),
        ("global-pax-path", tar(ok, pax({"path": "../pwned"}, tf.PAX_G), file("x")), None),
        ("two-pax-headers", tar(ok, pax({"path": "a"}), pax({"path": "../b"}), file("x")), None),
        ("pax-sparse-0.1", tar(ok, pax({"GNU.sparse.map": "0,10", "GNU.sparse.size": "10"}),
                               file("sp", b"x" * 10)), None),
        ("pax-sparse-1.0-desync", tar(ok, pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                               "GNU.sparse.name": "sp", "GNU.sparse.realsize": "4096"}),
                                      header("GNUSparseFile/sp", size=512) + data_blocks(b"1\n0\n3000\n") + payload),
         None),
        ("old-gnu-sparse-desync", tar(ok, _old_sparse("sp", stored=512, regions=[(0, 3000)]) + payload), None),
        ("forged-overlay-opaque", tar(ok, pax({"SCHILY.xattr.trusted.overlay.opaque": "y"}), directory("d")),
         None),
        ("forged-overlay-redirect", tar(ok, pax({"SCHILY.xattr.trusted.overlay.redirect": "/etc"}),
                                        directory("d")), None),
        ("forged-user-overlay-whiteout", tar(ok, pax({"SCHILY.xattr.user.overlay.whiteout": ""}), file("w")),
         None),
        ("v7-dir-trailing-slash-data", tar(ok, header("d/", tf.AREG, size=512, magic=bytes(8)) + payload), "d/"),
        ("size-garbage", tar(ok, header("x", size_field=b"0000001 7\0")), "x"),
        ("size-negative-base256", tar(ok, header("x", size_field=b"\xff" * 12)), "x"),
        ("huge-pax-header", ok + header("PaxHeaders/x", tf.PAX_X, size=64 << 20) + end(), None),
        ("root-as-file", tar(ok, file("./", b"")), "./"),
        ("file-as-parent", tar(ok, file("f", b"x"), file("f/x", b"y")), "f/x"),
        ("unknown-magic", tar(ok, header("x", magic=b"xxxxx\x0000")), "x"),
        ("dumpdir-pax", tar(ok, pax({"GNU.dumpdir": "Yfoo"}), directory("d")), None),
    ]
    return cases


def _corrupt(blob: bytes) -> bytes:
    b = bytearray(blob)
    for i in range(20, len(b) - 20, 7):
        b[i] ^= 0x5A
    return bytes(b)


def _old_sparse(name: str, stored: int, regions: list[tuple[int, int]]) -> bytes:
    h = bytearray(header(name, tf.GNU_SPARSE, size=stored, magic=b"ustar  \0"))
    for i, (off, n) in enumerate(regions[:4]):
        h[386 + i * 24:386 + i * 24 + 12] = b"%011o\0" % off
        h[398 + i * 24:398 + i * 24 + 12] = b"%011o\0" % n
    h[483:495] = b"%011o\0" % max(off + n for off, n in regions)
    return fix_checksum(bytes(h))
