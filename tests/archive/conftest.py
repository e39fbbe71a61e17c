"""Fixtures of the archive tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def sentinel() -> Iterator[str]:
    """A directory outside any root that hostile layers aim at (``s/file``, ``s/sub``)."""
    d = tempfile.mkdtemp(prefix="gd-sentinel-")
    s = os.path.join(d, "s")
    os.makedirs(os.path.join(s, "sub"))
    with open(os.path.join(s, "file"), "w") as f:
        f.write("precious")
    yield s
    shutil.rmtree(d, ignore_errors=True)
