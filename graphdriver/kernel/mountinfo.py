"""The kernel's own view of mounts: /proc/self/mountinfo, and one mount at a time via statmount(2)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache

from . import statcalls

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space and so on)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def split_options(opts: str) -> tuple[str, ...]:
    """Split a superblock option string on commas (mountinfo escapes commas inside values)."""
    return tuple(unescape(o) for o in opts.split(",") if o)


@dataclass(eq=False)
class MountEntry:
    """One mount as the kernel reports it.

    The fs options come parsed (``parsed``, from mountinfo) or as statmount's array (``option_blob``:
    NUL-terminated strings), which is decoded only when :attr:`options` is asked for: an overlay of 500
    lowers carries 500 of them, and the planned lowers can be compared with the blob as it is.
    """

    mnt_id: int
    mount_point: str
    fs_type: str
    source: str
    read_only: bool
    parsed: tuple[str, ...] = ()
    option_blob: bytes = b""

    @cached_property
    def options(self) -> tuple[str, ...]:
        """The fs options, in the kernel's order (``rw``/``ro`` left out)."""
        return statcalls.decode_option_blob(self.option_blob) if self.option_blob else self.parsed

    def option_values(self, key: str) -> list[str]:
        """Every value given for ``key`` (``lowerdir+`` repeats), in order."""
        return list(self._values.get(key, ()))

    @cached_property
    def _values(self) -> dict[str, list[str]]:
        """``key=value`` options grouped by key, in order (one pass: overlays carry 500 lowers)."""
        out: dict[str, list[str]] = {}
        for opt in self.options:
            key, eq, value = opt.partition("=")
            if eq:
                out.setdefault(key, []).append(value)
        return out

    def has_flag(self, flag: str) -> bool:
        """True when ``flag`` is among the options."""
        return flag in self.options


def parse_mountinfo_line(line: str) -> MountEntry:
    """Parse one line of /proc/<pid>/mountinfo."""
    left, _, right = line.rstrip("\n").partition(" - ")
    fields = left.split(" ")
    fstype, source, sb_opts = (right.split(" ") + ["", "", ""])[:3]
    mnt_opts = fields[5].split(",")
    sb = split_options(sb_opts)
    return MountEntry(
        mnt_id=int(fields[0]),
        mount_point=unescape(fields[4]),
        fs_type=fstype,
        source=unescape(source),
        read_only="ro" in mnt_opts or "ro" in sb,
        parsed=tuple(o for o in sb if o not in ("rw", "ro")),
    )


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount in this mount namespace, in mount order."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return [parse_mountinfo_line(line) for line in f if line.strip()]


def mounts_under(prefix: str, entries: list[MountEntry] | None = None) -> list[MountEntry]:
    """Mounts whose mount point is ``prefix`` or below it."""
    prefix = prefix.rstrip("/")
    entries = read_mountinfo() if entries is None else entries
    return [e for e in entries if e.mount_point == prefix or e.mount_point.startswith(prefix + "/")]


@lru_cache(maxsize=1)
def statmount_ok() -> bool:
    """True when mounts are read with statmount(2) (asked of the kernel once)."""
    return statcalls.statmount_supported()


def _root_id(path: str) -> statcalls.MountID | None:
    """statx's mount id of ``path`` when a mount's root is there; None when not (or no such path)."""
    try:
        mid = statcalls.mount_id(path)
    except FileNotFoundError:
        return None
    return mid if mid.is_mount_root else None


def mount_at(path: str, size_hint: int = 0, *, brief: bool = False) -> MountEntry | None:
    """The mount whose root is at ``path``, or None when nothing is mounted there.

    Uses statx + statmount (cost independent of how many mounts exist) where the kernel has them,
    else scans mountinfo for the topmost mount at that point. ``size_hint``: the bytes of options
    expected (statmount's first buffer is sized from it). ``brief``: statmount leaves out the mount
    point and source (empty), which a plan check never reads.
    """
    mid = _root_id(path)
    if mid is None:
        return None
    if mid.unique and statmount_ok():
        sm = statcalls.statmount(mid.mnt_id, statmount_room(path, size_hint), brief=brief)
        return MountEntry(sm.mnt_id, sm.mount_point, sm.fs_type, sm.source, sm.read_only,
                          option_blob=sm.option_blob)
    real = os.path.realpath(path)
    found = [e for e in read_mountinfo() if e.mount_point == real]
    if not found:
        return None
    # Name the mount as statx does (current_mount_id): on 6.8+ that is the unique id, not mountinfo's.
    return replace(found[-1], mnt_id=mid.mnt_id) if mid.mnt_id else found[-1]


def shown(path: str | bytes, magic: int, prefix: bytes, key: bytes,
          size_hint: int = 0) -> tuple[int, int, int, int] | None:
    """The check after a mount, at the cost of its two syscalls: :func:`statcalls.shown` where the kernel
    has statmount. (mount id, parent mount id, root inode, root birth time) when the mount whose root is
    at ``path`` is a read-write mount of the filesystem with superblock ``magic`` whose option array
    :func:`statcalls.leads_with` ``prefix`` (and ``key`` nowhere after it); None: look closer
    (:func:`mount_at`), it says neither yes nor no."""
    if not statmount_ok():
        return None
    return statcalls.shown(os.fsencode(path), magic, prefix, key, statmount_room(path, size_hint))


def statmount_room(path: str | bytes, size_hint: int = 0) -> int:
    """statmount's first buffer for the mount at ``path`` (:func:`mount_at`, :func:`shown`), with
    ``size_hint`` bytes of options expected."""
    return 2048 + len(path) + size_hint + (size_hint >> 3)


def current_mount_id(path: str) -> int | None:
    """The mount id at ``path`` when ``path`` is a mount root, else None. One statx call."""
    mid = _root_id(path)
    if mid is None:
        return None
    if mid.mnt_id == 0:  # statx without STATX_MNT_ID (kernels before 5.8): mountinfo has the id
        entry = mount_at(path)
        return entry.mnt_id if entry is not None else None
    return mid.mnt_id
