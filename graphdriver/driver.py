"""The Driver interface (Docker graphdriver semantics, Python names), the backend registry, open_driver.

A backend subclasses :class:`Driver` and supplies the hooks at the bottom: where a layer lives, how a
staged layer is built and published, and (for union backends, the hooks of
:class:`~graphdriver.mounts.MountRefs`) the mount plan, how to execute it and how to check the kernel's
view of it. Everything generic — id rules, locking, atomic staging, cleanup here; reference counts across
processes and drift detection in :mod:`graphdriver.mounts` — lives once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from .archive.driver_diff import DiffMixin
from .archive.inplace import refuse_applying, take_over
from .checks import check_driver_options, check_parent, id_list, option_keys, string_map
from .errors import (
    CorruptRecord,
    GraphDriverError,
    InvalidID,
    LayerExists,
    LayerInUse,
    LayerNotFound,
    MountBusy,
)
from .ids import check_id
from .kernel import mountinfo, probe
from .kernel.unmount import unmount
from .limits import SizeLimits
from .mounts import Drift, MountRefs, MountState
from .store.files import read_json, touch, write_json
from .store.leases import Lease, holders, in_use, in_use_by_someone
from .store.locks import RootLock
from .store.refs import RefStore
from .store.runtime import prune_runtime, runtime_dir

if TYPE_CHECKING:
    from .kernel.quickmount import QuickMount

__all__ = ["Drift", "Driver", "MountState", "register"]

_REGISTRY: dict[str, type[Driver]] = {}


def register(cls: type[Driver]) -> type[Driver]:
    """Class decorator: make a backend available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


class Driver(MountRefs, DiffMixin, SizeLimits, ABC):
    """A layer store on one backend under ``<root>/<name>``.

    Layers appear atomically: built in ``<home>/.staging`` and renamed into place. Mutations hold a
    root-wide lock (processes and threads). Mount references live in a tmpfs runtime dir
    (``store.runtime.runtime_dir``) and are checked against the kernel's mount table on every use.
    """

    name: ClassVar[str]
    #: How deletions are stored on disk: "overlay" (0:0 char device, trusted.overlay.opaque=y),
    #: "aufs" (.wh.<name> files kept as they are) or "applied" (vfs: deletions carried out).
    whiteout_format: ClassVar[str] = "applied"
    #: ``apply_diff`` answers the layer directory's size (a symlink counts its target's length), as Docker's
    #: overlay2 and aufs do; else the tar's file sizes, as its naive ApplyDiff (vfs).
    apply_size_is_dir_size: ClassVar[bool] = False
    #: Held while open_driver's driver is open (registry: no other process unmakes the store under it).
    store_lease: Lease | None = None

    def __init__(self, root: str, options: dict[str, str] | None = None) -> None:
        self.root = os.path.realpath(root)  # one identity (and the kernel shows mounts by the real path)
        self.home = self.home_at(self.root)
        self.options = option_keys(options)
        self.check_options(self.options, self.root)  # before anything is made
        for d in (self.home, self._staging, self._meta, self._children_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.lock = RootLock(os.path.join(self.home, ".lock"))
        self.refs = RefStore(self._refs_dir, self.home)
        #: layer id -> how to mount it again as this object last did (backends that can: overlay2)
        self._quick: dict[str, QuickMount] = {}
        self.setup()

    # -- paths of the generic state -------------------------------------------------------------
    @property
    def _staging(self) -> str:
        return os.path.join(self.home, ".staging")

    @property
    def _meta(self) -> str:
        return os.path.join(self.home, ".meta")

    @property
    def _refs_dir(self) -> str:
        return runtime_dir(self.home)

    def _meta_path(self, layer_id: str) -> str:
        return f"{self.home}/.meta/{layer_id}"  # ids are checked: no slash, no '..'

    @property
    def _children_dir(self) -> str:
        return os.path.join(self.home, ".children")

    def _child_marker(self, parent: str, child: str) -> str:
        return os.path.join(self._children_dir, f"{parent}@{child}")

    # -- the public interface ------------------------------------------------------------------
    #: Ids a backend's own layout uses (overlay2's ``l`` links directory).
    reserved_ids: ClassVar[frozenset[str]] = frozenset()
    #: The driver options (``--storage-opt KEY=VALUE``) this backend takes: key -> the values it
    #: allows, or None for a value the backend checks itself (:meth:`check_options`).
    driver_options: ClassVar[dict[str, tuple[str, ...] | None]] = {}

    @classmethod
    def home_at(cls, root: str) -> str:
        """The backend's directory under ``root`` (an absolute path)."""
        return os.path.join(root, cls.name)

    @classmethod
    def check_options(cls, options: dict[str, str], root: str) -> None:
        """Refuse a driver option this backend does not take, or a value it cannot use, before the store
        is touched: a misspelled option is an error (as dockerd's ``overlay2: unknown option``), never
        silently ignored. Backends check their free-form values (None in :attr:`driver_options`) on top."""
        check_driver_options(cls.name, cls.driver_options, options)

    @classmethod
    def check_create(cls, layer_id: str, parent: str | None, storage_opt: dict[str, str] | None,
                     where: str) -> tuple[str | None, int | None]:
        """What :meth:`create` checks before it touches the store, for layers under ``where`` (a store not
        made yet: the directory it would be made in): the id (valid, not one the backend's own layout
        uses), the parent's id and the storage options. Returns (the parent or None, the ``size`` limit
        in bytes or None)."""
        check_id(layer_id)
        if layer_id in cls.reserved_ids:
            raise InvalidID(f"invalid layer id {layer_id!r}: reserved by the {cls.name} layout")
        return check_parent(parent), cls.storage_opt_size(where, string_map(storage_opt, "storage_opt"))

    def create(self, layer_id: str, parent: str | None = None, *, rw: bool = False,
               storage_opt: dict[str, str] | None = None, mount_label: str = "") -> None:
        """Make layer ``layer_id`` on ``parent`` (None: a base layer). ``rw``: a container's layer."""
        parent, size = self.check_create(layer_id, parent, storage_opt, self.home)
        if size is None and rw:
            size = self.default_rw_size()
        with self.lock.held():
            if self.exists(layer_id):
                raise LayerExists(f"layer {layer_id} already exists")
            if parent is not None:
                if not self.exists(parent):
                    raise LayerNotFound(f"parent layer {parent} not found")
                refuse_applying(self._staging, parent, layer_id)
            stage = os.path.join(self._staging, f"{layer_id}.{uuid.uuid4().hex[:8]}.create")
            os.mkdir(stage, 0o700)
            try:
                self.build_layer(stage, layer_id, parent, rw)
                if size is not None:
                    self.limit_size(stage, size)
                write_json(self._meta_path(layer_id), {"parent": parent or "", "rw": rw, "created": time.time()})
                if parent is not None:  # before the layer is visible: a parent never misses a child
                    touch(self._child_marker(parent, layer_id))
                self.publish_layer(stage, layer_id, parent)
            except BaseException:
                if not os.path.lexists(self.layer_path(layer_id)):
                    self.unbuild_layer(stage, layer_id)
                shutil.rmtree(stage, ignore_errors=True)
                if not os.path.lexists(self.layer_path(layer_id)):
                    self._unlink(self._meta_path(layer_id))
                    if parent is not None:
                        self._unlink(self._child_marker(parent, layer_id))
                raise
            if parent is not None:
                self.parent_gained_child(parent)

    def remove(self, layer_id: str) -> None:
        """Remove a layer that is neither mounted, nor being read or applied into, nor a parent."""
        self.remove_all([layer_id])

    def remove_all(self, layer_ids: Iterable[str]) -> None:
        """Remove these layers, children before parents, all or none: every one is checked — neither
        mounted, nor being read or applied into, nor the parent of a layer that stays — and held (an
        exclusive lease) before the first goes. A container's layer and its ``-init`` layer go so. A
        string is one id; an id named twice counts once."""
        layer_ids = id_list(layer_ids)
        with self.lock.held():
            going = set(layer_ids)
            for layer_id in layer_ids:
                self._require(layer_id)
                kids = [k for k in self.children(layer_id) if k not in going]
                if kids:
                    raise LayerInUse(f"layer {layer_id} has children: {', '.join(sorted(kids))}")
                if self.mount_count(layer_id):
                    raise LayerInUse(f"layer {layer_id} is mounted ({self.mount_count(layer_id)} references)")
            leases: list[Lease | None] = []
            trash: list[str] = []
            try:
                for layer_id in layer_ids:  # nobody reading or applying into any of them
                    leases.append(take_over(None, layer_id, self.diff_path(layer_id), "remove"))
                for layer_id in layer_ids:
                    trash.append(self._unpublish(layer_id))
            finally:
                for lease in leases:
                    if lease is not None:
                        lease.release()
            for path in trash:
                self.discard(path)

    def _unpublish(self, layer_id: str) -> str:
        """Make the layer and its records go (the lock held, the layer checked); the trash to discard."""
        trash = os.path.join(self._staging, f"{layer_id}.{uuid.uuid4().hex[:8]}.remove")
        parent = self.parent(layer_id)
        self.unpublish_layer(layer_id, trash)
        self._quick.pop(layer_id, None)
        if parent is not None:
            self._unlink(self._child_marker(parent, layer_id))
        self._unlink(self._meta_path(layer_id))
        self.refs.drop(layer_id)
        return trash

    def held(self, layer_id: str) -> bool:
        """The layer is mounted, or being read or applied into (what a remove would be refused for,
        children aside)."""
        return self.exists(layer_id) and (bool(self.mount_count(layer_id)) or in_use(self.diff_path(layer_id)))

    def exists(self, layer_id: str) -> bool:
        """True when the layer is there (a bad id is simply absent)."""
        try:
            check_id(layer_id)
        except GraphDriverError:
            return False
        return self._present(layer_id)

    def _present(self, layer_id: str) -> bool:
        """The layer directory and its record are both there (``layer_id`` already checked)."""
        return os.path.isdir(self.layer_path(layer_id)) and os.path.exists(self._meta_path(layer_id))

    def parent(self, layer_id: str) -> str | None:
        """The layer's parent id, or None for a base layer."""
        self._require(layer_id)
        meta = read_json(self._meta_path(layer_id), {})
        return meta.get("parent") or None

    def is_rw(self, layer_id: str) -> bool:
        """True for a container's read-write layer."""
        return bool(read_json(self._meta_path(check_id(layer_id)), {}).get("rw"))

    def ancestors(self, layer_id: str) -> list[str]:
        """The layer's parents, nearest first."""
        out: list[str] = []
        cur = self.parent(layer_id)
        while cur:
            if cur == layer_id or cur in out:  # records edited by hand: parents can only be older
                raise CorruptRecord(f"layer {layer_id}: its parents loop back to {cur} ({self._meta_path(cur)})")
            out.append(cur)
            cur = read_json(self._meta_path(cur), {}).get("parent") or None
        return out

    def layers(self) -> list[str]:
        """Every complete layer id, sorted."""
        try:
            names = os.listdir(self._meta)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if ".tmp-" not in n and os.path.isdir(self.layer_path(n)))

    def children(self, layer_id: str) -> list[str]:
        """Ids of the layers whose parent is ``layer_id`` (from ``.children/<parent>@<child>`` markers)."""
        prefix = check_id(layer_id) + "@"
        with os.scandir(self._children_dir) as it:
            kids = [e.name[len(prefix):] for e in it if e.name.startswith(prefix) and ".tmp-" not in e.name]
        return sorted(k for k in kids if self.exists(k))

    def status(self) -> list[tuple[str, str]]:
        """Docker's ``Status``: backend facts as (key, value) pairs."""
        return [("Backing Filesystem", probe.backing_fs(self.home)), *self.backend_status(),
                *self.diff_status(), ("Layers", str(len(self.layers())))]

    def cleanup(self) -> list[str]:
        """Unmount every mount under this root, drop references, and remove what was half made. Staging
        directories of work under way (leased: an apply extracting, a probe) are left to their owners:
        returned, each with the processes at work (``<path> (in use by name[pid])``)."""
        with self.lock.held():
            staged = [os.path.join(self._staging, name) for name in sorted(os.listdir(self._staging))]
            live = [path for path in staged if in_use_by_someone(path)]
            inside_live = tuple(path + "/" for path in live)
            busy: list[MountBusy] = []
            for entry in reversed(mountinfo.mounts_under(self.home)):
                if not entry.mount_point.startswith(inside_live):
                    try:
                        unmount(entry.mount_point)
                    except MountBusy as e:  # the others are unmounted and the rest tidied all the same
                        busy.append(e)
            if not busy:  # with a mount left, its count stays
                self.refs.remove()
                prune_runtime()
            for path in staged:
                if path not in live:
                    self.discard(path)
            for name in os.listdir(self._meta):
                if ".tmp-" in name or not os.path.isdir(self.layer_path(name)):
                    self._unlink(self._meta_path(name))
            for name in os.listdir(self._children_dir):
                parent, _, child = name.partition("@")
                if ".tmp-" in name or not self.exists(child) or not self.exists(parent):
                    self._unlink(os.path.join(self._children_dir, name))
            self.cleanup_backend()
        if busy:
            raise MountBusy("; ".join(str(e) for e in busy))
        return [f"{path} (in use by {', '.join(holders(path)) or 'a process that just finished'})" for path in live]

    # -- helpers ------------------------------------------------------------------------------
    def _require(self, layer_id: str) -> None:
        check_id(layer_id)
        if not self._present(layer_id):
            raise LayerNotFound(f"layer {layer_id} not found")

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    @contextmanager
    def staged(self, prefix: str) -> Iterator[str]:
        """A new directory in the staging area for work done without the root lock, leased to the caller
        (``cleanup`` leaves it alone while the work runs) and removed afterwards."""
        with self.lock.held():  # made and leased before a cleanup can look at it
            path = tempfile.mkdtemp(prefix=prefix, dir=self._staging)
            lease = Lease.take(path, shared=False)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            if lease is not None:
                lease.release()

    def discard(self, path: str) -> None:
        """Remove a staged or trashed tree (it is invisible already)."""
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            self._unlink(path)

    # -- backend hooks --------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def unsupported_reason(cls, root: str) -> str | None:
        """None when this backend can run under ``root`` (an existing directory: the root, or where it
        would be made), else why not (one line)."""

    @classmethod
    def path_reason(cls, root: str) -> str | None:
        """Why the root's path itself (made yet or not) cannot serve this backend, or None."""
        return None

    def setup(self) -> None:
        """Create the backend's own directories under ``home``."""

    @abstractmethod
    def layer_path(self, layer_id: str) -> str:
        """The directory whose presence means the layer exists."""

    @abstractmethod
    def build_layer(self, stage: str, layer_id: str, parent: str | None, rw: bool) -> None:
        """Populate the staging directory ``stage`` (it becomes the layer on publish)."""

    def unbuild_layer(self, stage: str, layer_id: str) -> None:
        """Undo what :meth:`build_layer` made outside ``stage`` (a create that failed before publishing)."""

    def publish_layer(self, stage: str, layer_id: str, parent: str | None) -> None:
        """Make the staged layer visible in one rename."""
        os.rename(stage, self.layer_path(layer_id))

    def unpublish_layer(self, layer_id: str, trash: str) -> None:
        """Make the layer invisible in one rename into ``trash``."""
        os.rename(self.layer_path(layer_id), trash)

    def parent_gained_child(self, parent: str) -> None:
        """Called once a child of ``parent`` exists."""

    @abstractmethod
    def diff_path(self, layer_id: str) -> str:
        """The directory holding this layer's own content (overlay2 ``diff/``, vfs the copy)."""

    @abstractmethod
    def rootfs_path(self, layer_id: str) -> str:
        """Where the layer's root filesystem is seen when no union mount is needed."""

    def backend_status(self) -> list[tuple[str, str]]:
        """Backend-specific Status pairs."""
        return []

    @abstractmethod
    def metadata(self, layer_id: str) -> dict[str, str]:
        """Docker's GetMetadata: the ``GraphDriver.Data`` map."""

    def cleanup_backend(self) -> None:
        """Remove backend leftovers of a crash (dangling links and such)."""
