"""A full disk: one clear error naming what ran out, nothing half-made left, and the same call working
once there is room again. Each backend's root sits on a small tmpfs of its own, filled for real."""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from archive.tarbuild import file, tar
from support.fulldisk import fill, small_tmpfs

from graphdriver import Driver, open_driver
from graphdriver.archive.extract import no_room
from graphdriver.errors import ApplyFailed, GraphDriverError
from graphdriver.store.files import write_atomic

from .util import read, root_state, write


@pytest.fixture
def disk(root: str) -> Iterator[str]:
    """A 4 MiB tmpfs under ``root``: the filesystem the tests fill."""
    with small_tmpfs(os.path.join(root, "disk")) as mnt:
        yield mnt


@pytest.fixture
def store(disk: str, backend: str) -> Driver:
    return open_driver(os.path.join(disk, "store"), backend)


def test_creating_a_layer_on_a_full_disk_fails_whole_and_works_once_there_is_room(store: Driver, disk: str) -> None:
    store.create("base")
    write(os.path.join(store.get("base"), "kept"), "x" * 100_000)
    store.put("base")
    filler = fill(disk)
    before = root_state(store.root)
    with pytest.raises((OSError, GraphDriverError)) as err:
        store.create("child", "base")
    assert "No space left on device" in str(err.value) and store.root in str(err.value)  # names where
    assert root_state(store.root) == before and store.layers() == ["base"]
    os.unlink(filler)
    store.create("child", "base")
    assert read(os.path.join(store.get("child"), "kept")) == "x" * 100_000
    store.put("child")


def test_the_cli_says_it_in_one_line(store: Driver, disk: str) -> None:
    store.create("base")
    fill(disk)
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", store.root, "layer", "create", "child",
                        "--parent", "base"], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "No space left on device" in lines[0] and store.root in lines[0], lines[0]
    assert store.layers() == ["base"]


def test_applying_a_tar_on_a_full_disk_names_the_filesystem_and_changes_nothing(store: Driver, disk: str) -> None:
    store.create("base")
    data = tar(file("big", os.urandom(1 << 20)))
    filler = fill(disk, leave=256 << 10)
    before = root_state(store.root)
    with pytest.raises(ApplyFailed, match=rf"layer base failed: no space left on {disk} \(tmpfs\): \d+ bytes free"):
        store.apply_diff("base", None, io.BytesIO(data))
    assert root_state(store.root) == before
    os.unlink(filler)
    assert store.apply_diff("base", None, io.BytesIO(data)) == 1 << 20
    assert os.path.getsize(os.path.join(store.get("base"), "big")) == 1 << 20
    store.put("base")


def test_a_small_file_replaced_on_a_full_disk_keeps_its_old_content(disk: str) -> None:
    path = os.path.join(disk, "record")
    write_atomic(path, b"old")
    fill(disk, leave=4096)  # room for a page at most: the write below is cut short, then refused
    with pytest.raises(OSError) as err:
        write_atomic(path, b"n" * 40_000)
    assert err.value.errno == errno.ENOSPC and err.value.filename == path
    assert read(path) == "old" and sorted(os.listdir(disk)) == ["filler", "record"]  # no temporary left


def test_a_tar_error_is_put_down_to_the_filesystem_only_when_tar_says_it_had_no_room(root: str, disk: str) -> None:
    fill(disk)
    assert no_room(disk, "tar: x: Cannot open: Permission denied") is None
    assert re.fullmatch(rf"no space left on {disk} \(tmpfs\): \d+ bytes free",
                        no_room(disk, "tar: x: Wrote only 512 of 10240 bytes") or "")
    with small_tmpfs(os.path.join(root, "few"), inodes=8) as few:
        try:
            for i in range(8):
                os.mkdir(os.path.join(few, str(i)))
        except OSError as e:
            assert e.errno == errno.ENOSPC
        assert no_room(few, "tar: d/f: Cannot open: No space left on device") == f"no inodes left on {few} (tmpfs)"
        # a write cut short is blocks running out, though tar went on to use up the inodes with empty files
        assert re.fullmatch(rf"no space left on {few} \(tmpfs\): \d+ bytes free",
                            no_room(few, "tar: big/f204: Wrote only 60416 of 98976 bytes") or "")


def test_a_diff_written_to_a_full_disk_leaves_the_old_file_and_nothing_else(driver: Driver, disk: str) -> None:
    driver.create("base")
    write(os.path.join(driver.get("base"), "big"), "b" * 300_000)
    driver.put("base")
    out = os.path.join(disk, "base.tar")
    write(out, "an older export")
    fill(disk)
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", driver.root, "layer", "diff", "base",
                        "-o", out], capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines == [f"graphdriver: No space left on device ({out})"], r.stderr
    assert read(out) == "an older export" and sorted(os.listdir(disk)) == ["base.tar", "filler"]
