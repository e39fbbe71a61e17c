"""``container commit``: a new image from a container's read-write layer (never its init layer's files),
recorded with the image it was made from as its parent."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import CommitFailed, ContainerRunning, GraphDriverError
from .files import nearest_dir
from .freeze import paused
from .reference import normalize_ref

if TYPE_CHECKING:
    from .containers import ContainerStore


def commit_container(cs: ContainerStore, ref: str, new_ref: str = "", message: str = "", author: str = "",
                     pause: bool = False) -> str:
    """A new image: the container's image plus one layer holding the rw layer's changes only (none when
    nothing changed: the image's layers are its parent's, as docker's).

    A container in a running ``container run`` is refused, or with ``pause`` its processes are
    stopped (SIGSTOP) while the layer is read, so the snapshot is consistent, then continued.
    """
    from .containers import now

    if new_ref:
        normalize_ref(new_ref)
    with cs.lock.held():
        c = cs.get(ref)
        pid = cs.running_pid(c)
        if pid is not None and not (pause and pid > 0):
            raise ContainerRunning(f"container {c.name} is running (pid {pid}): its rw layer is changing; "
                                   f"commit it after the run ends, or with --pause")
        base_cfg = cs.images.config(c.image)
        chain = cs.images.chain(c.image)
        failed = f"container {c.name}: commit{f' to {new_ref}' if new_ref else ''} failed"
        with paused(pid):
            stream = cs.driver.diff(c.rw_layer, c.init_layer)
            try:
                with no_room_said(failed, "the new image's layer", cs.driver.home):
                    new_chain, diff_id = cs.images.add_layer(stream, chain[-1] if chain else None)
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
        cfg = dict(base_cfg)
        created = now()
        cfg["created"] = created
        cfg["container"] = c.id
        if author:
            cfg["author"] = author
        # As docker's NewChildImage: no changes, no layer (the empty tar's diffID is not appended); the
        # history entry says so
        cfg["rootfs"] = {"type": "layers", "diff_ids": [*base_cfg["rootfs"]["diff_ids"],
                                                        *([diff_id] if new_chain else [])]}
        entry: dict[str, object] = {"created": created, "created_by": f"graphdriver container commit {c.name}"}
        if message:
            entry["comment"] = cfg["comment"] = message  # docker's config has it at the top too
        else:
            cfg.pop("comment", None)
        if author:
            entry["author"] = author
        if not new_chain:
            entry["empty_layer"] = True
        cfg["history"] = [*(base_cfg.get("history") or []), entry]
        try:
            with no_room_said(failed, "the new image's record", cs.images.dir):
                return cs.images.add_image(json.dumps(cfg, separators=(",", ":")).encode(),
                                           [new_ref] if new_ref else [], parent=c.image)
        except BaseException:
            if new_chain and not any(new_chain in cs.images.chain(i) for i in cs.images.ids()):
                cs.images.drop_layer(new_chain.split(":", 1)[1])
            raise


#: How a failure for want of room reads: an OSError's errno, or the words of a store error (the
#: system's, or tar's, which gives no errno for a write cut short: what no_room reads).
_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_ROOM_WORDS = ("No space left on device", "Disk quota exceeded", "Wrote only")
_READ_ONLY = os.strerror(errno.EROFS)  # "Read-only file system"


@contextmanager
def no_room_said(failed: str, what: str, where: str) -> Iterator[None]:
    """A write of ``what`` (under ``where``) refused for room, or by a read-only filesystem, fails as one
    line: ``failed``, what ran out on which filesystem (or which one is read-only), and what could not be
    written where. Other errors pass unchanged."""
    try:
        yield
    except (OSError, GraphDriverError) as e:
        if isinstance(e, OSError):
            if e.errno not in (*_ROOM_ERRNOS, errno.EROFS):
                raise
            named = os.fsdecode(e.filename2 or e.filename or "")  # symlink, rename: the second is made
            path, words = named if os.path.isabs(named) else where, os.strerror(e.errno)
        else:
            path, words = where, str(e)
            if not any(w in words for w in (*_ROOM_WORDS, _READ_ONLY)):
                raise
        from ..archive.extract import filesystem_name, no_room  # a failed write only: psutil stays unloaded

        if _READ_ONLY in words:
            why = f"{filesystem_name(nearest_dir(path))} is a read-only file system"
        else:
            why = no_room(nearest_dir(path), words, free=False) or words  # the failed write is undone by now
        raise CommitFailed(f"{failed}: {why}: could not write {what} ({path})") from e
