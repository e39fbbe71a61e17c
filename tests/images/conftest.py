"""Fixtures for the image and container tests: a driver and stores on the per-test root, and the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from graphdriver import open_driver
from graphdriver.kernel import mountinfo, syscalls
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def store(root):
    """A ContainerStore (its .images, .driver) on the default driver under the test root."""
    return ContainerStore(ImageStore(root, open_driver(root)))


@pytest.fixture
def gd(root):
    """Run the graphdriver CLI on the test root: gd("image", "ls") -> CompletedProcess."""
    def run(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"graphdriver {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p
    return run


@pytest.fixture
def other_root(root):
    """A second, empty root (for save -> load round trips), unmounted and removed after."""
    d = tempfile.mkdtemp(prefix="gd-test-other-")
    try:
        yield d
    finally:
        for entry in reversed(mountinfo.mounts_under(os.path.realpath(d))):
            try:
                syscalls.umount2(entry.mount_point, syscalls.MNT_DETACH)
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)
