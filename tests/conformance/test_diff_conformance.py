"""Docker's graphtest DiffApply (10 files) and Changes, on every backend that runs here (others skip).

Files are written through the mounted root filesystem (get/put), as graphtest does; the diff of one layer
applied onto a fresh child of the same base must reproduce it, with ApplyDiff's size equal to DiffSize.
"""

from __future__ import annotations

import io
import os
import random

import pytest

from graphdriver import Driver

from .util import layer_id


def content(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def add_many_files(d: Driver, layer: str, count: int, seed: int) -> None:
    root = d.get(layer)
    try:
        for i in range(0, count, 100):
            dirpath = os.path.join(root, f"directory-{i}")
            os.makedirs(dirpath, 0o755, exist_ok=True)
            for j in range(min(100, count - i)):
                p = os.path.join(dirpath, f"file-{j}")
                with open(p, "wb") as f:
                    f.write(content(64, seed + i + j))
                os.chmod(p, 0o755)
    finally:
        d.put(layer)


def check_many_files(d: Driver, layer: str, count: int, seed: int) -> None:
    root = d.get(layer)
    try:
        for i in range(0, count, 100):
            for j in range(min(100, count - i)):
                with open(os.path.join(root, f"directory-{i}", f"file-{j}"), "rb") as f:
                    assert f.read() == content(64, seed + i + j), f"directory-{i}/file-{j}"
    finally:
        d.put(layer)


def change_many_files(d: Driver, layer: str, count: int, seed: int) -> list[tuple[str, int]]:
    """Modify every third file, add one next to every third, remove every third; the expected changes."""
    root = d.get(layer)
    changes: list[tuple[str, int]] = []
    try:
        for i in range(0, count, 100):
            rel_dir = f"/directory-{i}"
            changes.append((rel_dir, 0))
            for j in range(min(100, count - i)):
                if j % 3 == 0:
                    path = f"{rel_dir}/file-{j}"
                    with open(root + path, "wb") as f:
                        f.write(content(64, seed + i + j))
                    changes.append((path, 0))
                elif j % 3 == 1:
                    path = f"{rel_dir}/file-{seed}-{j}"
                    with open(root + path, "wb") as f:
                        f.write(content(64, seed + i + j))
                    changes.append((path, 1))
                else:
                    path = f"{rel_dir}/file-{j}"
                    os.remove(root + path)
                    changes.append((path, 2))
    finally:
        d.put(layer)
    return changes


def _write(d: Driver, layer: str, rel: str, data: bytes | None) -> None:
    root = d.get(layer)
    try:
        p = os.path.join(root, rel)
        if data is None:
            os.makedirs(p, 0o755, exist_ok=True)
        else:
            with open(p, "wb") as f:
                f.write(data)
    finally:
        d.put(layer)


def _remove(d: Driver, layer: str, *rels: str) -> None:
    import shutil

    root = d.get(layer)
    try:
        for rel in rels:
            p = os.path.join(root, rel)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
    finally:
        d.put(layer)


def _exists(d: Driver, layer: str, rel: str) -> bool:
    root = d.get(layer)
    try:
        return os.path.lexists(os.path.join(root, rel))
    finally:
        d.put(layer)


@pytest.mark.parametrize("file_count", [10])
def test_diff_apply(driver: Driver, file_count: int) -> None:
    base, upper, diff = layer_id(1), layer_id(2), layer_id(3)
    delete_file, delete_content, delete_dir = "file-remove.txt", b"This file should get removed in upper!", "var/lib"
    driver.create(base)
    add_many_files(driver, base, file_count, 3)
    _write(driver, base, delete_file, delete_content)
    _write(driver, base, delete_dir, None)

    driver.create(upper, base)
    add_many_files(driver, upper, file_count, 6)
    _remove(driver, upper, delete_file, delete_dir)
    diff_size = driver.diff_size(upper, None)

    driver.create(diff, base)
    check_many_files(driver, diff, file_count, 3)
    assert _exists(driver, diff, delete_file)
    with driver.diff(upper, base) as arch:
        blob = arch.read()
    applied = driver.apply_diff(diff, base, io.BytesIO(blob))
    assert applied == diff_size, f"apply diff size {applied}, diff size {diff_size}"
    check_many_files(driver, diff, file_count, 6)
    assert not _exists(driver, diff, delete_file)
    assert not _exists(driver, diff, delete_dir)
    assert _exists(driver, diff, "var")


def test_changes(driver: Driver) -> None:
    base, upper = layer_id(11), layer_id(12)
    driver.create(base)
    add_many_files(driver, base, 20, 3)
    driver.create(upper, base)
    expected = change_many_files(driver, upper, 20, 6)
    got = driver.changes(upper, base)
    assert sorted(got) == sorted(expected)
