"""Shared fixtures: a private state root per test, cleaned up (mounts included) afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from graphdriver.kernel import mountinfo, syscalls
from graphdriver.store.runtime import prune_runtime, runtime_dir


def unmount_all_under(path: str) -> None:
    """Detach every mount at or below ``path`` (innermost first)."""
    for entry in reversed(mountinfo.mounts_under(os.path.realpath(path))):
        try:
            syscalls.umount2(entry.mount_point, syscalls.MNT_DETACH)
        except OSError:
            pass


@pytest.fixture(scope="session", autouse=True)
def _prune_runtime_dirs() -> Iterator[None]:
    """Tests make many short-lived roots: drop the tmpfs runtime dirs of those that are gone."""
    yield
    prune_runtime()


@pytest.fixture
def root() -> Iterator[str]:
    """A fresh graphdriver root under /tmp (a real ext4 directory here), removed with its mounts."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the tests mount for real")
    d = tempfile.mkdtemp(prefix="gd-test-")
    try:
        yield d
    finally:
        unmount_all_under(d)
        for name in os.listdir(d):  # the mount references of each backend home, kept on a tmpfs
            shutil.rmtree(runtime_dir(os.path.join(d, name)), ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
