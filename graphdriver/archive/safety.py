"""Judge each tar entry before it is extracted: names, links, whiteouts (pure bookkeeping, no I/O).

Rules (an entry breaking one is refused with one line naming it):

- names are relative after leading ``/`` are stripped, and cleaned as Docker cleans them (``./x/./y/../z``
  is ``x/z``, which is what is extracted: the visitor sets :attr:`Entry.new_name`); a ``..`` that climbs
  above the root, a NUL or an empty name is refused; a trailing ``/`` only on directories;
- no entry goes through a symlink made earlier by the same archive; a non-directory made by the archive
  cannot be a parent; (vfs, whose layer directory holds the layers below) an entry whose parent path goes
  through a symlink already there is extracted where that symlink leads *inside the layer*, as Docker's
  chrooted unpack writes it (:mod:`.inscope`; the visitor sets :attr:`Entry.new_name`), and refused when
  it leads nowhere there;
- a later entry replaces an earlier one of the same name (a directory over a directory is kept, as Docker
  does); where GNU tar would not replace it as Docker does (a directory, a symlink it creates late, a
  symlink a directory would go through), the old path is listed in ``clear`` for the caller to remove
  before the entry is extracted;
- hard links name an earlier non-directory entry of the same archive (the target cleaned the same way);
- aufs pseudo-links, as Docker's unpack takes them: a regular file whose cleaned name starts with
  ``.wh..wh.plnk`` is kept aside by its base name (DIVERT: never extracted, it counts in the size), and a
  hard link whose cleaned target starts with it becomes a regular file at its own name with that file's
  content and header (DIVERT; :mod:`.pseudolinks`); a link to one no earlier entry gave is refused;
- whiteouts (``.wh.<name>``) are not directories, do not name ``.``/``..``, and no entry lives inside one;
  aufs's own ``.wh..wh.*`` entries (all but the opaque marker) and what lies inside them are dropped;
- no ``trusted.overlay.*``/``user.overlay.*`` xattrs (they would forge whiteouts or redirects).

The guard also records what the extractor will not see (whiteouts, opaque markers) for the whiteout step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ApplyFailed, UnsafeArchive
from . import tarformat as tf
from .inscope import DIR, OTHER, SYMLINK, LayerTree, NotThere, resolve
from .names import clean_name, has_dotdot
from .scan import DIVERT, DROP, FORWARD, Entry

WH = b".wh."
WH_META = b".wh..wh."
PLNK = b".wh..wh.plnk"  # aufs's pseudo-link directory (Docker's WhiteoutLinkDir: matched as a name prefix)
OPAQUE = b".wh..wh..opq"
__all__ = ["DIR", "OTHER", "SYMLINK", "PathGuard", "escapes", "tar_delays"]


def escapes(link_dir: tuple[bytes, ...], target: bytes) -> bool:
    """True when a symlink in ``link_dir`` pointing at ``target`` leaves the root (host semantics)."""
    if target.startswith(b"/"):
        return True
    depth = len(link_dir)
    for p in target.split(b"/"):
        if p == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif p and p != b".":
            depth += 1
    return False


def tar_delays(target: bytes) -> bool:
    """True for a symlink GNU tar makes only at its end (a placeholder file stands in until then): an
    absolute target or one with a ``..`` component."""
    return target.startswith(b"/") or b".." in target.split(b"/")


@dataclass
class PathGuard:
    """Validates entries for one apply and remembers what they made."""

    whiteout_format: str                 # "overlay", "aufs" or "applied"
    layer: LayerTree | None = None       # vfs: the layer directory, whose symlinks entries may go through
    kinds: dict[bytes, str] = field(default_factory=dict)
    symlinks: dict[bytes, bytes] = field(default_factory=dict)
    explicit_dirs: set[bytes] = field(default_factory=set)
    whiteouts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (dir, name)
    opaques: list[bytes] = field(default_factory=list)
    dir_entries: list[bytes] = field(default_factory=list)  # directory entries in archive order
    epoch_times: set[bytes] = field(default_factory=set)  # entries whose time unpacks as the epoch (apply)
    pseudo_links: dict[bytes, Entry] = field(default_factory=dict)  # aufs .wh..wh.plnk files by base name
    clear: list[bytes] = field(default_factory=list)  # to remove before the entry just visited is extracted
    size: int = 0
    link_bytes: int = 0  # symlink targets' lengths: a directory's size counts them (lstat's st_size)
    _checked: set[bytes] = field(default_factory=lambda: {b""})
    _gone: set[bytes] = field(default_factory=set)  # paths the archive's whiteouts delete (vfs)

    def refuse(self, entry: Entry, reason: str) -> UnsafeArchive:
        return UnsafeArchive(f"unsafe layer archive: entry {entry.display}: {reason}")

    def visit(self, e: Entry) -> int:
        """FORWARD (extract it), DROP (recorded here instead) or DIVERT (an aufs pseudo-link, or a hard
        link to one: :attr:`Entry.pseudo_link` names it); raises UnsafeArchive."""
        name = e.name
        is_dir = e.typeflag == tf.DIR
        if (b".." not in name and b".wh." not in name and b"//" not in name and b"/./" not in name
                and not name.startswith((b"/", b"./")) and name and not e.xattrs and len(e.other_names) == 1
                and (is_dir or not name.endswith(b"/"))):
            path = name[:-1] if name.endswith(b"/") else name  # the common case: already a clean relative path
            parent = path.rpartition(b"/")[0]
            if parent not in self._checked:
                path = self._redirect(e, path, parent, self._check_parents(e, tuple(path.split(b"/")), parent))
        else:
            parts = self._slow_checks(e, is_dir)
            if parts is None:
                return DROP
            if not parts:
                return FORWARD  # the layer root's own entry
            if _pseudo_file(e, parts):
                e.pseudo_link = parts[-1]
                self.pseudo_links[parts[-1]] = e
                self.size += e.realsize
                return DIVERT
            path = b"/".join(parts)
            parent = path.rpartition(b"/")[0]
            base = parts[-1]
            if base.startswith(WH):
                return self._whiteout(e, parts, parent, base, path)
            path = self._redirect(e, path, parent, self._check_parents(e, parts, parent))
        self._replacing(path, is_dir)
        t = e.typeflag
        if t == tf.LINK:
            return self._hardlink(e, path)
        if t == tf.SYMLINK:
            if not e.linkname:
                raise self.refuse(e, "symlink with an empty target")
            self.kinds[path] = SYMLINK
            self.symlinks[path] = e.linkname
            self.link_bytes += len(e.linkname)
        elif is_dir:
            self.kinds[path] = DIR
            self.explicit_dirs.add(path)
            self.dir_entries.append(path)
        else:
            self.kinds[path] = OTHER
            self.symlinks.pop(path, None)
            if t in tf.REGULAR_TYPES:
                self.size += e.realsize
        return FORWARD

    # -- rules ----------------------------------------------------------------------------------
    def _slow_checks(self, e: Entry, is_dir: bool) -> tuple[bytes, ...] | None:
        """Name rules for anything unusual; the cleaned components (``()``: the root), or None for aufs
        metadata (DROP)."""
        try:
            parts = clean_name(e.name)
            for other in e.other_names:
                try:
                    clean_name(other)
                except ValueError as err:
                    raise ValueError(f"{err} (in an overridden name field)") from None
        except ValueError as err:
            raise self.refuse(e, str(err)) from None
        if any(has_dotdot(n) for n in e.other_names):  # GNU tar would refuse it: give it the clean name
            e.new_name = b"/".join(parts) if parts else b"./"
        if e.name.endswith(b"/") and not is_dir:
            raise self.refuse(e, "trailing '/' on a non-directory")
        for key in e.xattrs:
            if key.startswith(("trusted.overlay.", "user.overlay.")):
                raise self.refuse(e, f"xattr {key} is reserved for overlayfs")
        if not parts:
            if not is_dir:
                raise self.refuse(e, "names the layer root but is not a directory")
            self.explicit_dirs.add(b"")
            self.dir_entries.append(b"")
            return parts
        for i, comp in enumerate(parts[:-1]):
            if comp.startswith(WH):
                if comp.startswith(WH_META):  # inside aufs's own metadata dirs (.wh..wh.plnk and such): not content
                    return parts if _pseudo_file(e, parts) else None
                raise self.refuse(e, f"lies inside whiteout {os.fsdecode(b'/'.join(parts[:i + 1]))!r}")
        return parts

    def _check_parents(self, e: Entry, parts: tuple[bytes, ...], parent: bytes) -> bytes:
        """Check the parents of ``parts`` (``parent``: their path); the parent's real path (vfs: where a
        symlink of the layer on the way leads, inside the layer), ``parent`` itself when nothing redirects."""
        if parent in self._checked:
            return parent
        names = parts[:-1]
        if self.layer is not None:
            try:
                real = resolve(names, lambda p: self._archive_dir(e, p), self._deleted, self.layer)
            except NotThere as err:
                raise ApplyFailed(f"layer archive entry {e.display}: {err}") from None
            names = names if real is None else real
        else:
            for i in range(1, len(names) + 1):
                prefix = b"/".join(names[:i])
                if prefix not in self._checked:
                    self._archive_dir(e, prefix)
        for i in range(1, len(names) + 1):
            self._checked.add(b"/".join(names[:i]))
        return b"/".join(names)

    def _archive_dir(self, e: Entry, prefix: bytes) -> bool:
        """True when the archive made (or makes, as a parent) a directory at ``prefix``; refuses ``e`` when
        it made a symlink or a non-directory there."""
        kind = self.kinds.get(prefix)
        if kind == SYMLINK:
            raise self.refuse(e, f"goes through symlink {os.fsdecode(prefix)!r} -> "
                                 f"{os.fsdecode(self.symlinks[prefix])!r} made earlier in the same archive")
        if kind == OTHER:
            raise self.refuse(e, f"parent {os.fsdecode(prefix)!r} is not a directory in this archive")
        return kind == DIR or prefix in self._checked

    def _deleted(self, path: bytes) -> bool:
        """The archive deleted what the layer holds at ``path`` (a whiteout, or an opaque parent)."""
        return path in self._gone or path.rpartition(b"/")[0] in self.opaques

    @staticmethod
    def _redirect(e: Entry, path: bytes, parent: bytes, real_parent: bytes) -> bytes:
        """The entry's path under its real parent; the name tar is given when that differs."""
        if real_parent == parent:
            return path
        base = path.rpartition(b"/")[2]
        e.new_name = real_parent + b"/" + base if real_parent else base
        return e.new_name

    def _hardlink(self, e: Entry, path: bytes) -> int:
        """FORWARD, or DIVERT for a link to an aufs pseudo-link (it is made a file of its own at ``path``)."""
        try:
            tparts = clean_name(e.linkname)
        except ValueError as err:
            raise self.refuse(e, f"hard link target: {err}") from None
        if not tparts:
            raise self.refuse(e, "hard link to the layer root")
        if tparts[0].startswith(PLNK):
            if tparts[-1] not in self.pseudo_links:
                raise self.refuse(e, f"hard link to aufs pseudo-link {os.fsdecode(b'/'.join(tparts))!r}, which no "
                                     "earlier regular file of this archive gives")
            e.pseudo_link, e.new_name, e.new_link = tparts[-1], path, None
            self.kinds[path] = OTHER
            self.symlinks.pop(path, None)
            return DIVERT
        target = b"/".join(tparts)
        parent = target.rpartition(b"/")[0]
        real_parent = self._check_parents(e, tparts, parent)
        if real_parent != parent:  # through a symlink of the layer: the file it names (link(2) follows it)
            target = real_parent + b"/" + tparts[-1] if real_parent else tparts[-1]
        if has_dotdot(e.linkname) or real_parent != parent:
            e.new_link = target
        kind = self.kinds.get(target)
        if kind is None:
            raise self.refuse(e, f"hard link to {os.fsdecode(target)!r}, which is not an earlier entry of this "
                                 "archive (outside the layer)")
        if kind == DIR:
            raise self.refuse(e, f"hard link to directory {os.fsdecode(target)!r}")
        if target == path:
            raise self.refuse(e, "hard link to itself")
        self.kinds[path] = kind
        if kind == SYMLINK:
            self.symlinks[path] = self.symlinks[target]
        else:
            self.symlinks.pop(path, None)
        return FORWARD

    def _whiteout(self, e: Entry, parts: tuple[bytes, ...], parent: bytes, base: bytes, path: bytes) -> int:
        if base.startswith(WH_META) and base != OPAQUE:
            return DROP  # aufs bookkeeping (.wh..wh.aufs, .wh..wh.plnk/ and such): never content (as Docker)
        if e.typeflag == tf.DIR:
            raise self.refuse(e, "a whiteout entry that is a directory")
        keep = self.whiteout_format == "aufs"
        if base != OPAQUE:
            victim = base[len(WH):]
            if victim in (b"", b".", b".."):
                raise self.refuse(e, f"whiteout names {os.fsdecode(victim) or 'nothing'!r}")
        try:
            if base == OPAQUE and parts[:-1]:  # the opaque directory itself is not followed (Docker's Walk)
                above = self._check_parents(e, parts[:-1], parent.rpartition(b"/")[0])
                parent = above + b"/" + parts[-2] if above else parts[-2]
                self._archive_dir(e, parent)  # but never one the archive made a symlink or a file
            else:
                parent = self._check_parents(e, parts, parent)
        except ApplyFailed:
            return DROP  # through a symlink leading nowhere: nothing to delete (Docker's RemoveAll: no error)
        if base == OPAQUE:
            self.opaques.append(parent)
        else:
            self.whiteouts.append((parent, victim))
            if self.layer is not None:
                self._gone.add(parent + b"/" + victim if parent else victim)
        if keep:
            self.kinds[path] = OTHER
            return FORWARD
        return DROP

    def _replacing(self, path: bytes, is_dir: bool) -> None:
        """An entry named ``path`` comes: note what an earlier one there needs (Docker: the last one wins)."""
        old = self.kinds.get(path)
        if old is None and path in self._checked:
            old = DIR  # made as a parent of earlier entries
        if old is None or (old == DIR and is_dir):
            return
        if old == DIR or (old == SYMLINK and (is_dir or tar_delays(self.symlinks[path]))):
            self.clear.append(path)
        if old == DIR:
            self._forget_dir(path)
        self.kinds.pop(path, None)
        self.symlinks.pop(path, None)

    def _forget_dir(self, path: bytes) -> None:
        """``path`` stops being a directory: forget it and everything that was below it."""
        below = path + b"/"
        self._checked = {p for p in self._checked if p != path and not p.startswith(below)}
        for table in (self.kinds, self.symlinks):
            for p in [p for p in table if p.startswith(below)]:
                del table[p]
        self.explicit_dirs = {p for p in self.explicit_dirs if p != path and not p.startswith(below)}


def _pseudo_file(e: Entry, parts: tuple[bytes, ...]) -> bool:
    """A file aufs pseudo-links name: a regular entry whose cleaned name starts with ``.wh..wh.plnk`` (Docker
    keeps only these of its ``.wh..wh.*`` entries, and only those its tar reader calls regular)."""
    return parts[0].startswith(PLNK) and e.typeflag in (tf.REG, tf.AREG)
