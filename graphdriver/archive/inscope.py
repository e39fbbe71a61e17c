"""Where an entry lands in a layer directory that already holds symlinks (vfs: the full copy of its parent).

Docker's vfs applies a layer with moby's ``UnpackLayer`` run chrooted in the layer directory
(``chrootarchive``: the unpack sees the layer as ``/``). So the kernel follows a symlink on an entry's
parent path — absolute or relative, ``..`` stopping at the root — *inside the layer*: ``var/run/x`` under
``var/run -> /run`` is written to ``<layer>/run/x`` and the symlink stays; a symlink that leads to nothing
there (or to a non-directory) makes the unpack fail. The entry's own last component is never followed (an
entry named as a symlink replaces it, a directory too).

:func:`resolve` finds that real parent the same way, in Python, over the layer directory as the archive has
changed it so far, without following anything on the host: only paths whose every parent was seen to be a
real directory are looked at, so nothing outside the layer is ever read or written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

#: Kinds recorded per path (the archive's, and the layer directory's).
DIR, SYMLINK, OTHER = "d", "l", "f"
MAXSYMLINKS = 40  # Linux's limit on symlinks followed in one lookup (ELOOP past it)


class NotThere(Exception):
    """The parent path does not lead to a directory in the layer (Docker's unpack fails there too)."""


class LayerTree:
    """The layer directory an apply writes into, looked up by relative path (bytes, no symlink on the way)."""

    def __init__(self, top: str) -> None:
        self.top = os.fsencode(top)

    def kind(self, rel: bytes) -> str | None:
        """DIR, SYMLINK, OTHER or None (nothing there) at ``rel``, whose parents are real directories."""
        try:
            mode = os.lstat(self.top + b"/" + rel).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        return DIR if stat.S_ISDIR(mode) else SYMLINK if stat.S_ISLNK(mode) else OTHER

    def readlink(self, rel: bytes) -> bytes:
        return os.readlink(self.top + b"/" + rel)


def resolve(parts: tuple[bytes, ...], archive_dir: Callable[[bytes], bool], gone: Callable[[bytes], bool],
            tree: LayerTree) -> tuple[bytes, ...] | None:
    """The real path of the directory ``parts`` when a symlink of the layer lies on the way, else None.

    ``archive_dir(path)``: the archive made (or will make) a directory there, which wins over the layer's
    entry (it may raise for an archive's own symlink or file); ``gone(path)``: the archive deleted what the
    layer has there. Raises :class:`NotThere` for a symlink leading to nothing, to a non-directory, or
    round in a loop.
    """
    out: list[bytes] = []
    real: list[bool] = []  # the layer holds a real directory at out[:i + 1]
    todo = [(p, False) for p in reversed(parts)]  # (component, came from a symlink's target)
    hops = 0
    via = b""
    while todo:
        comp, from_link = todo.pop()
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if out:  # at the root, '..' is the root (as in a chroot)
                out.pop()
                real.pop()
            continue
        path = b"/".join([*out, comp])
        kind = tree.kind(path) if (not real or real[-1]) and not gone(path) else None
        if archive_dir(path):
            out.append(comp)
            real.append(kind == DIR)
            continue
        if kind == SYMLINK:
            hops += 1
            if hops > MAXSYMLINKS:
                raise NotThere(f"too many levels of symlinks at {os.fsdecode(path)!r}")
            target = tree.readlink(path)
            if target.startswith(b"/"):
                out.clear()
                real.clear()
            todo.extend((p, True) for p in reversed(target.split(b"/")))
            via = via or path
            continue
        if via and (kind == OTHER or (kind is None and from_link)):
            what = "is not a directory" if kind == OTHER else "does not exist"
            raise NotThere(f"goes through symlink {os.fsdecode(via)!r} -> {os.fsdecode(tree.readlink(via))!r}, "
                           f"but {os.fsdecode(path)!r} {what} in the layer (symlinks resolve inside the layer, "
                           "as in Docker's chrooted unpack)")
        out.append(comp)
        real.append(kind == DIR)
    return tuple(out) if via else None
