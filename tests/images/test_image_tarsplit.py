"""Tar-split: the recorded bytes plus the extracted files give back the exact tar."""

from __future__ import annotations

import io
import os
import random
import tarfile

import pytest

from graphdriver.errors import InvalidImage
from graphdriver.store import tarsplit


def _tar(fmt: int) -> bytes:
    buf = io.BytesIO()
    rnd = random.Random(7)
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        def add(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = kind, link, 1_600_000_000
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
        add("dir", kind=tarfile.DIRTYPE)
        for size in (0, 1, 511, 512, 513, 100_000):
            add(f"dir/f{size}", rnd.randbytes(size))
        add("./dotted", None, tarfile.DIRTYPE)
        add("dotted/x", b"x")
        add("d/" + "long" * 40 + "/name.bin", b"long name payload")
        add("sym", kind=tarfile.SYMTYPE, link="dir/f1")
        add("hard", kind=tarfile.LNKTYPE, link="dir/f1")
        add("linkto" + "y" * 120, kind=tarfile.SYMTYPE, link="t" * 150)
        add("unicodé/ファイル", "ü".encode() * 300)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reassembles_exact_bytes(tmp_path, fmt):
    if fmt == tarfile.USTAR_FORMAT:
        data = _tar_ustar()
    else:
        data = _tar(fmt)
    rec = tarsplit.TarSplitRecorder()
    rnd = random.Random(1)
    pos = 0
    while pos < len(data):  # odd chunk sizes cross every header/payload boundary
        step = rnd.choice([1, 7, 511, 512, 513, 4096, 65536])
        rec.feed(data[pos:pos + step])
        pos += step
    ops = tarsplit.parse(rec.result())
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        payload = sum(m.size for m in tf.getmembers() if m.isreg())
        tf.extractall(tmp_path, filter="tar")
    assert tarsplit.total_size(ops) == len(data)
    assert b"".join(tarsplit.reassemble(ops, str(tmp_path))) == data
    kept = sum(len(r) for r, name, _ in ops if name is None)
    assert kept == len(data) - payload  # payloads are not kept twice


def _tar_ustar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        name = "p" * 90 + "/" + "q" * 60 + "/file"  # needs the ustar prefix field
        info = tarfile.TarInfo(name)
        info.size = 3000
        tf.addfile(info, io.BytesIO(b"z" * 3000))
    return buf.getvalue()


def test_changed_file_is_caught(tmp_path):
    data = _tar(tarfile.PAX_FORMAT)
    rec = tarsplit.TarSplitRecorder()
    rec.feed(data)
    ops = tarsplit.parse(rec.result())
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(tmp_path, filter="tar")
    with open(tmp_path / "dir" / "f513", "wb") as f:
        f.write(b"short")
    with pytest.raises(InvalidImage, match="shorter"):
        b"".join(tarsplit.reassemble(ops, str(tmp_path)))
    os.unlink(tmp_path / "dir" / "f513")
    with pytest.raises(InvalidImage, match="gone"):
        b"".join(tarsplit.reassemble(ops, str(tmp_path)))


def test_corrupt_record():
    with pytest.raises(InvalidImage):
        tarsplit.parse(b"not zlib")


def test_duplicate_payload_is_flagged():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for data in (b"first", b"second"):
            info = tarfile.TarInfo("same")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    rec = tarsplit.TarSplitRecorder()
    rec.feed(buf.getvalue())
    assert rec.duplicate == b"same"
