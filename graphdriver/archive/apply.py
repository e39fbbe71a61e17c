"""ApplyDiff: a layer tar into an existing layer, validated, fast, all or nothing.

Plan: who the layers below are and in which whiteout format. Execute: scan the (decompressed) stream,
forward approved bytes to GNU tar extracting into a fresh staging tree next to the layer (cut where a
later entry must replace an earlier one first; aufs pseudo-links resolved in the stream, :mod:`.pseudolinks`),
translate the whiteouts recorded on the way, give the directories the times the archive gave them, then
publish under the root lock (one rename, or a journaled merge).
Verify: tar's exit status, and the layer is untouched unless everything succeeded.
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import TYPE_CHECKING, BinaryIO

from ..errors import LayerInUse, LayerNotFound, ParentMismatch
from ..store.leases import Lease
from . import tarformat as tf
from .compress import open_stream, readinto_of, splice_of
from .extract import Extraction
from .inplace import hold, removed, take_over
from .inscope import LayerTree
from .merge import publish
from .pseudolinks import PseudoLinks
from .safety import PathGuard
from .scan import DIVERT, DROP, FORWARD, Entry, TarScanner
from .whiteouts import translate_overlay, xattr_prefix

if TYPE_CHECKING:
    from ..driver import Driver


def check_parent(driver: Driver, layer_id: str, parent: str | None) -> str | None:
    """The layer's real parent; refuses a ``parent`` argument naming another layer."""
    real = driver.parent(layer_id)
    if parent and parent != real:
        raise ParentMismatch(f"layer {layer_id} has parent {real or 'none'}, not {parent}")
    return real


def layer_tree(driver: Driver, layer_id: str) -> LayerTree | None:
    """The layer directory when the tar's parent paths can meet its symlinks: only on vfs, whose layer
    directory is a full copy of its parent (an entry is extracted where such a symlink leads inside the
    layer, as Docker's chrooted unpack writes it). overlay2 and aufs extract into the layer's own diff
    directory, where a directory the tar makes hides a lower symlink of that name in the union, as
    Docker's do."""
    if driver.whiteout_format != "applied":
        return None
    return LayerTree(driver.diff_path(layer_id))


def overlay_xattr_prefix(driver: Driver) -> str:
    """The xattr namespace the backend's overlay mounts read whiteouts from."""
    return xattr_prefix(tuple(getattr(driver, "_extra_options", ()) or ()))


def _refuse_mounted(driver: Driver, layer_id: str) -> None:
    """A layer's files must not change under those using it — a live mount, or (vfs) a ``get`` not yet
    put — nor a layer others are built on under them (their content, and any mount of theirs, would
    change with it)."""
    if driver.mount_count(layer_id):
        state = "mounted" if driver.needs_mount(layer_id) else "in use (got and not yet put)"
        raise LayerInUse(f"layer {layer_id} is {state}; apply into it once it is released")
    kids = driver.children(layer_id)
    if kids:
        raise LayerInUse(f"layer {layer_id} has children ({', '.join(kids)}): a layer others are built on "
                         f"stays as it is; apply into a layer before building on it")


def _require_same(driver: Driver, layer_id: str, lease: Lease) -> None:
    """With the lock held: the layer is still the directory the apply leased (a lease keeps the library
    out, not a hand at a shell); :class:`LayerNotFound` if it went."""
    if not driver.exists(layer_id) or not lease.still_there():
        raise removed(layer_id, "a diff was being applied to it")


def _visit(entry: Entry, guard: PathGuard, tar: Extraction, scanner: TarScanner, links: PseudoLinks) -> int:
    """The guard's verdict; when an earlier entry must go first, tar is cut before this one."""
    action = guard.visit(entry)
    made: Entry | None = entry  # whose header tar gets for this name
    if action == DIVERT:
        links.divert(entry)
        made = guard.pseudo_links[entry.pseudo_link] if entry.typeflag == tf.LINK else None  # type: ignore[index]
    if action != DROP and made is not None:  # the last entry of a name decides its time
        key = posixpath.normpath((entry.new_name or entry.name).lstrip(b"/") or b".")
        if made.time_out_of_range and made.typeflag != tf.SYMLINK:
            guard.epoch_times.add(key)
        else:
            guard.epoch_times.discard(key)
    if guard.clear:
        scanner.flush()
        dirs = guard.dir_entries[tar.dirs_done:]
        if action == FORWARD and entry.typeflag == tf.DIR:
            dirs = dirs[:-1]  # this entry's own: the next run extracts it
        tar.cut(dirs, guard.clear)
        guard.clear = []
    return action


def epoch_times(stage: bytes | str, names: set[bytes]) -> None:
    """Give the extracted ``names`` (not symlinks) the epoch as their times, as Docker's unpack does for a
    time before 1970 or past 2262 (its Chtimes): the layer then holds, and exports, what dockerd's does."""
    top = os.fsencode(stage)
    for name in sorted(names):
        path = top + b"/" + name
        try:
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                os.utime(path, ns=(0, 0), follow_symlinks=False)
        except FileNotFoundError:  # replaced by a whiteout's device, or never made: nothing to set
            continue


def apply_layer(driver: Driver, layer_id: str, parent: str | None, stream: BinaryIO) -> int:
    """Extract ``stream`` into layer ``layer_id``; returns the size Docker's driver of that kind answers.

    That is the bytes of file content written for vfs (the naive ApplyDiff: the sum of the tar's sizes),
    and the layer directory's size for overlay2 and aufs (their ApplyDiff answers ``directory.Size``, in
    which a symlink counts its target's length), so ``docker images`` agree with dockerd's own drivers.
    """
    check_parent(driver, layer_id, parent)
    _refuse_mounted(driver, layer_id)  # early, to spare the work; checked again under the lock
    fmt = driver.whiteout_format
    target = driver.diff_path(layer_id)
    lease: Lease | None = hold(driver, layer_id)  # no remove, no other publish, until this one is done
    try:
        with driver.staged(f"{layer_id}.apply-") as work:  # a create or a get of the layer refused from now on
            with driver.lock.held():  # a child or mount made before is seen here, not after all the work
                driver.restamp(layer_id)  # and no quick mount (overlay2) skips the get's look at the staging
                _refuse_mounted(driver, layer_id)
            stage, trash = os.path.join(work, "root"), os.path.join(work, "trash")
            try:
                os.mkdir(trash, 0o700)
                os.mkdir(stage, 0o700)
                st = os.lstat(target)
                os.chown(stage, st.st_uid, st.st_gid)
                os.chmod(stage, stat.S_IMODE(st.st_mode))
                guard = PathGuard(fmt, layer=layer_tree(driver, layer_id))
                read, _kind = open_stream(stream)
                tar = Extraction(stage, f"layer {layer_id}")
                links = PseudoLinks(work, tar.write)
                try:
                    source = splice_of(read)
                    scanner = TarScanner(read, tar.write, lambda e: _visit(e, guard, tar, scanner, links),
                                         readinto_of(read), tar.splice_from(source) if source else None)
                    scanner.run()
                    tar.finish(guard.dir_entries[tar.dirs_done:])
                except BaseException:
                    tar.abort()
                    raise
                finally:
                    links.close()
                if fmt == "overlay":
                    translate_overlay(stage, guard.whiteouts, guard.opaques, overlay_xattr_prefix(driver))
                tar.restore_dir_times()
                epoch_times(stage, guard.epoch_times)
            except (FileNotFoundError, LayerNotFound):
                with driver.lock.held():  # the layer went (by hand): say which layer
                    _require_same(driver, layer_id, lease)
                raise
            with driver.lock.held():
                _require_same(driver, layer_id, lease)
                _refuse_mounted(driver, layer_id)
                lease = take_over(lease, layer_id, target, "apply a diff to")  # no reader left mid-read
                publish(stage, target, trash, guard, fmt)
            return guard.size + (guard.link_bytes if driver.apply_size_is_dir_size else 0)
    finally:
        if lease is not None:
            lease.release()
