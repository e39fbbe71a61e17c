"""The aufs module's own view of its mounts, read from sysfs (default ``/sys/fs/aufs``).

Per aufs mount there is ``si_<id>/`` (``<id>`` is the ``si=`` value in /proc/mounts, both printed
``%lx``) holding ``br<N>`` (``<path>=<perm>``, N from 0 = top), ``brid<N>`` (the branch's id) and
``xi_path`` (the external inode number file, empty with ``noxino``). Paths are escaped as seq_path does
(``\\040`` for a space). With the module parameter ``brs=0`` there are no ``br<N>``/``brid<N>``; the
branches are then a ``br:`` option in /proc/mounts. A module build also has ``config`` (its
``CONFIG_AUFS_*`` settings, one ``KEY=value`` a line, the branch limit among them). The sysfs root is a
parameter so the reader works on a fixture tree as well.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass

from .mountinfo import unescape

DEFAULT_SYSFS = "/sys/fs/aufs"
_BR = re.compile(r"br(\d+)")
_BRID = re.compile(r"brid(\d+)")
_BRANCH_MAX = re.compile(r"CONFIG_AUFS_BRANCH_MAX_(\d+)=y")


@dataclass(frozen=True)
class SysfsBranch:
    """One ``br<N>``/``brid<N>`` pair as the module reports it."""

    index: int
    path: str
    perm: str
    brid: int | None


@dataclass(frozen=True)
class SiInfo:
    """Everything sysfs says of one aufs mount (``si_<id>``)."""

    si: str
    branches: tuple[SysfsBranch, ...]
    xi_path: str | None

    def gaps(self) -> list[int]:
        """Branch indexes missing between 0 and the highest one shown (should be none)."""
        have = {b.index for b in self.branches}
        top = max(have, default=-1)
        return [i for i in range(top + 1) if i not in have]


def si_of(options: tuple[str, ...] | list[str]) -> str | None:
    """The ``si=<hex>`` value among a mount's options, or None."""
    for o in options:
        if o.startswith("si="):
            return o[3:]
    return None


def br_option(options: tuple[str, ...] | list[str]) -> str | None:
    """The ``br:`` branch list aufs prints in /proc/mounts when it has no sysfs, else None."""
    for o in options:
        if o.startswith("br:"):
            return o[3:]
    return None


class AufsSysfs:
    """Reads ``<root>/si_<id>/...`` and ``<root>/config``."""

    def __init__(self, root: str = DEFAULT_SYSFS, *, retries: int = 5, delay: float = 0.02) -> None:
        self.root = root
        self.retries = retries
        self.delay = delay

    def present(self) -> bool:
        """True when the sysfs directory exists (the module is loaded and sysfs is on)."""
        return os.path.isdir(self.root)

    def si_ids(self) -> list[str]:
        """Every ``si_<id>`` the module shows (one per live aufs mount), as the ``<id>`` part."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n[3:] for n in names if n.startswith("si_"))

    def si_dir(self, si: str) -> str:
        """The directory of mount ``si``."""
        return os.path.join(self.root, f"si_{si}")

    def read(self, si: str) -> SiInfo | None:
        """The branches (top first) and xino path of mount ``si``; None when sysfs has no such mount."""
        d = self.si_dir(si)
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return None
        perms: dict[int, tuple[str, str]] = {}
        brids: dict[int, int] = {}
        for name in names:
            m = _BRID.fullmatch(name)
            if m:
                text = self._read(os.path.join(d, name))
                if text is not None and text.strip().lstrip("-").isdigit():
                    brids[int(m.group(1))] = int(text.strip())
                continue
            m = _BR.fullmatch(name)
            if m:
                text = self._read(os.path.join(d, name))
                if text is not None:
                    perms[int(m.group(1))] = split_br(text)
        xi = self._read(os.path.join(d, "xi_path"))
        xi_path = unescape(xi.strip()) if xi and xi.strip() else None
        branches = tuple(SysfsBranch(i, perms[i][0], perms[i][1], brids.get(i)) for i in sorted(perms))
        return SiInfo(si, branches, xi_path)

    def config(self) -> dict[str, str]:
        """The module's ``CONFIG_AUFS_*`` settings from ``<root>/config`` (empty when built in)."""
        text = self._read(os.path.join(self.root, "config")) or ""
        out = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.startswith("CONFIG_"):
                out[key] = value
        return out

    def branch_max(self) -> int | None:
        """The module's branch limit (CONFIG_AUFS_BRANCH_MAX_<n>=y), or None when it does not say."""
        for key, value in self.config().items():
            m = _BRANCH_MAX.fullmatch(f"{key}={value}")
            if m:
                return int(m.group(1))
        return None

    def _read(self, path: str) -> str | None:
        """A sysfs file's text; None when absent. aufs answers EBUSY while a remount holds its lock."""
        for attempt in range(self.retries + 1):
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    return f.read()
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == self.retries:
                    raise
                time.sleep(self.delay * (attempt + 1))
        return None


def split_br(text: str) -> tuple[str, str]:
    """``<path>=<perm>\\n`` -> (path, perm); the path is unescaped (aufs escapes like mountinfo)."""
    line = text.rstrip("\n")
    path, sep, perm = line.rpartition("=")
    if not sep:
        return unescape(line), ""
    return unescape(path), perm
