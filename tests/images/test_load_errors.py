"""A bad archive is named by what it came from (standard input, the file), never by a temporary copy."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
from imgkit import docker_archive, layer_tar


def _load(root: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", *args],
                          input=data, capture_output=True, timeout=60)


@pytest.mark.parametrize(("data", "why"), [(b"abc", "truncated header"), (b"", "empty file"),
                                           (gzip.compress(b"abc"), "truncated header")])
def test_a_bad_archive_on_standard_input_is_named_so(root, data, why):
    p = _load(root, data=data)
    assert p.returncode == 1
    assert p.stderr.decode() == f"graphdriver: corrupt or truncated archive standard input: {why}\n"
    assert not os.path.exists(os.path.join(root, "images"))  # a failed first load leaves nothing


def test_a_compressed_truncated_save_is_named_by_its_file(tmp_path, root):
    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": os.urandom(20_000)})], ["t:1"])
    data = open(built.path, "rb").read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(data[:len(data) // 2]))
    p = _load(root, "-i", str(cut))
    assert p.returncode == 1
    v1 = data[:64].split(b"/")[0].decode()  # the first member: <v1 id>/VERSION
    assert p.stderr.decode() == f"graphdriver: truncated archive {cut}: {v1}/layer.tar is cut short\n"
    p = _load(root, "-q", data=gzip.compress(data[:len(data) // 2]))
    assert p.stderr.decode() == f"graphdriver: truncated archive standard input: {v1}/layer.tar is cut short\n"
