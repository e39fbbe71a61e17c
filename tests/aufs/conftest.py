"""Fixtures for the aufs tests: a driver on a private root (no kernel aufs needed for the layout), fixture
sysfs trees shaped like /sys/fs/aufs, and the skip marker for tests that mount aufs for real."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from graphdriver.drivers.aufs import NO_AUFS, Aufs
from graphdriver.kernel import probe
from graphdriver.kernel.aufs_sysfs import AufsSysfs

HAVE_AUFS = probe.has_filesystem("aufs")
#: Tests that mount aufs skip on kernels without it, with exactly this reason.
requires_aufs = pytest.mark.skipif(not HAVE_AUFS, reason=NO_AUFS)


@pytest.fixture
def aufs(root: str) -> Iterator[Aufs]:
    """An aufs layer store under ``root``, built directly (open_driver refuses a kernel without aufs;
    creating, listing and removing layers needs no mount)."""
    yield Aufs(root)


SysfsWriter = Callable[..., AufsSysfs]


@pytest.fixture
def sysfs_tree(tmp_path) -> SysfsWriter:
    """Write ``<tmp>/sysfs/si_<si>/{br<N>,brid<N>,xi_path}`` (and ``config``); returns a reader on it.

    As the module does: ``br<N>`` holds ``<path>=<perm>\\n``, ``brid<N>`` ``<id>\\n``, and ``xi_path`` is
    always there (the xino path and a newline; empty with ``noxino``). ``branches=[]`` is a module loaded
    with ``brs=0``, which lists no ``br<N>``/``brid<N>`` (the ``br:`` mount option carries them then)."""
    top = tmp_path / "sysfs"
    top.mkdir()

    def write(si: str, branches: list[str], *, brids: list[int] | None = None, xi_path: str = "",
              config: str | None = None) -> AufsSysfs:
        d = top / f"si_{si}"
        d.mkdir(exist_ok=True)
        for old in os.listdir(d):
            os.unlink(d / old)
        ids = list(range(100, 100 + len(branches))) if brids is None else brids
        for i, br in enumerate(branches):
            (d / f"br{i}").write_text(br + "\n")
        for i, brid in enumerate(ids):
            (d / f"brid{i}").write_text(f"{brid}\n")
        (d / "xi_path").write_text(xi_path + "\n" if xi_path else "")
        if config is not None:
            (top / "config").write_text(config)
        return AufsSysfs(str(top), retries=0)

    return write
