"""Mount reference counts that survive across processes and restarts: one shared table per root.

The table is the file ``refs`` in the root's runtime directory (:mod:`.runtime`), mapped into
every process that uses the root (``mmap``, shared): reading or changing a count is a memory access, and
one ``fstat`` per operation checks the table is still the root's — ``get`` and ``put`` do no file I/O.
Writers hold the root lock.

Layout (little-endian)::

    header, 128 bytes   magic (8) | boot id (40, NUL padded) | capacity in slots (u32) | retired (u32)
                        | slots ever assigned (u32)
    slot i, 144 bytes   layer id (128, NUL padded) | count (u64) | mount id (u64)

The kernel's mount table is the truth: the driver checks a count's mount id against it on every use, and
a table written in an earlier boot reads as empty (a tmpfs empties at reboot anyway). A layer keeps its
slot while its count is zero (its next ``get`` finds it again); a full table reuses such slots, else
doubles. Growing reserves the space first (``posix_fallocate``): a full tmpfs fails that call with ENOSPC
instead of killing a later write with SIGBUS. A table being removed (``cleanup``) is first marked retired
in place, so every process that has it mapped maps the new one at its next use; one removed any other
way is noticed at the start of the next operation (one fstat: the file has no name left), and so is one
cut short by hand (it is started afresh, not read past its end).
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import threading
from functools import lru_cache
from typing import NamedTuple

from .leases import Lease
from .runtime import boot_id

MAGIC = b"GDREFS1\n"
HEADER = 128
SLOT = 144
ID_SIZE = 128
FIRST_CAPACITY = 64
_BOOT = slice(8, 48)
_HEAD = struct.Struct("<III")  # capacity, retired, assigned
_HEAD_AT = 48
_RETIRED = struct.Struct("<I")
_RETIRED_AT = _HEAD_AT + 4
_REF = struct.Struct("<QQ")  # count, mount id


@lru_cache(maxsize=1)
def _boot_field() -> bytes:
    return boot_id().encode().ljust(_BOOT.stop - _BOOT.start, b"\0")


class Ref(NamedTuple):
    """A layer's mount references: how many, and which kernel mount they share (0: none needed)."""

    count: int = 0
    mnt_id: int = 0


#: (mapping, offset) -> (count, mount id), and (mapping, offset, count, mount id): a slot's count read and
#: written where :meth:`RefStore.live_slot` says it lies.
count_at = _REF.unpack_from
set_count_at = _REF.pack_into


def _write_slot(mm: mmap.mmap, at: int, ref: Ref) -> None:
    """The count and mount id of the slot at ``at`` (a count below zero is zero, and names no mount)."""
    count = max(ref.count, 0)
    _REF.pack_into(mm, at + ID_SIZE, count, ref.mnt_id if count else 0)


class RefRecord:
    """One layer's slot: ``ref`` as read, :meth:`set` stores another (callers hold the root lock between)."""

    __slots__ = ("_store", "_id", "ref", "_mm", "_at")

    def __init__(self, store: RefStore, layer_id: str, ref: Ref, mm: mmap.mmap | None = None, at: int = -1) -> None:
        self._store = store
        self._id = layer_id
        self.ref = ref
        self._mm = mm  # the mapping the slot was found in, and where
        self._at = at

    def set(self, ref: Ref) -> None:
        """Store ``ref`` (the layer gets a slot when it had none)."""
        mm = self._mm
        if mm is not None and mm is self._store._mm:  # the slot read is still this layer's (slots change
            _write_slot(mm, self._at, ref)            # under the root lock only, and this table is current)
        else:
            self._store._put(self._id, ref)
        self.ref = ref


class RefStore:
    """The reference table of one root. Callers that change it hold the root lock; reads need none."""

    def __init__(self, directory: str, home: str = "") -> None:
        self.dir = directory
        self.home = home
        self.table = os.path.join(directory, "refs")
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._slots: dict[str, tuple[int, bytes]] = {}  # layer id -> (offset of its slot, padded id)
        self._switch = threading.RLock()

    # -- the mapping ---------------------------------------------------------------------------
    def _mapped(self, create: bool, linked: bool = False) -> mmap.mmap | None:
        """The live table, mapped (None: there is none and ``create`` is False).

        A retired table (removed by another process's ``cleanup``) is dropped for the current one; a
        table another process grew is mapped again at its new size. ``linked`` (once per operation, one
        fstat): also drop a table removed or cut short by other means. ``create``
        (writers, under the lock): make the table, or start it afresh when it is not ours or from an
        earlier boot.
        """
        mm = self._mm
        if mm is not None and not (linked and self._gone(len(mm))):
            capacity, retired, _ = _HEAD.unpack_from(mm, _HEAD_AT)
            if not retired and HEADER + capacity * SLOT <= len(mm):
                return mm
        with self._switch:  # readers in other threads may come this way at the same time
            if self._mm is not mm:
                return self._mapped(create)  # another thread switched already
            return self._switch_table(create)

    def _gone(self, mapped: int) -> bool:
        """The table file has no name left, or is shorter than ``mapped`` (cut by hand: reading past its
        end would raise SIGBUS) — either way no table to use."""
        try:
            st = os.fstat(self._fd)
        except OSError:
            return True
        return st.st_nlink == 0 or st.st_size < mapped

    def _switch_table(self, create: bool) -> mmap.mmap | None:
        mm = self._mm
        if mm is not None and not self._gone(len(mm)):
            capacity, retired, _ = _HEAD.unpack_from(mm, _HEAD_AT)
            if not retired:
                return self._map(HEADER + capacity * SLOT)  # grown by another process
        self._forget()
        try:
            self._fd = os.open(self.table, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
            lease = self._make_dir()
            try:
                return self._start(FIRST_CAPACITY)
            finally:
                lease.release()  # the table names the directory's root from here on (.home)
        size = os.fstat(self._fd).st_size
        if size >= HEADER:
            mm = self._map(size)
            capacity, retired, _ = _HEAD.unpack_from(mm, _HEAD_AT)
            if mm[:8] == MAGIC and mm[_BOOT] == _boot_field() and not retired and HEADER + capacity * SLOT <= size:
                return mm
        if not create:  # not a table of this boot: it reads as empty until a writer replaces it
            self._forget()
            return None
        return self._start(FIRST_CAPACITY)

    def _map(self, size: int) -> mmap.mmap:
        # An earlier mapping is not closed: a reader in another thread may be using it (it goes when
        # the last reference does).
        self._mm = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._slots.clear()
        return self._mm

    def _start(self, capacity: int) -> mmap.mmap:
        """A fresh, empty table of ``capacity`` slots, made aside and renamed into place (a process
        reading the one it replaces never sees it change size under its mapping)."""
        old = self._mm
        if old is not None and old[:8] == MAGIC:
            _RETIRED.pack_into(old, _RETIRED_AT, 1)  # retired: its mappers move to the new one
        self._forget()
        size = HEADER + capacity * SLOT
        stage = f"{self.table}.tmp-{os.getpid()}"
        fd = os.open(stage, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # ENOSPC here, not SIGBUS later
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            mm[:8] = MAGIC
            mm[_BOOT] = _boot_field()
            _HEAD.pack_into(mm, _HEAD_AT, capacity, 0, 0)
            os.rename(stage, self.table)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(stage)
            except FileNotFoundError:
                pass
            raise
        self._fd = fd
        self._mm = mm
        return mm

    def _forget(self) -> None:
        self._mm = None
        self._slots.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _make_dir(self) -> Lease:
        """Create the directory on first use, naming the root it belongs to (see :func:`prune_runtime`):
        returned leased (shared), for the caller to hold until the table is in it. Until then it names no
        root, or one only partly written: another root's ``cleanup`` would take it for a leftover, but
        passes over a directory that is leased; one it removed in the meantime is made again."""
        from .files import write_atomic
        from .runtime import mount_namespace

        for _ in range(5):
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                lease = Lease.take(self.dir, shared=True)
            except FileNotFoundError:  # pruned just now
                continue
            assert lease is not None  # a waiting take always gets it
            if lease.still_there():
                try:
                    # the namespace the root's path is seen from first, then the path: whole or not there
                    write_atomic(os.path.join(self.dir, ".mntns"), mount_namespace())
                    write_atomic(os.path.join(self.dir, ".home"), self.home)
                except BaseException:
                    lease.release()
                    raise
                return lease
            lease.release()
        raise FileNotFoundError(f"the runtime directory {self.dir} was removed each time it was made")

    # -- slots ---------------------------------------------------------------------------------
    def _held_at(self, mm: mmap.mmap, layer_id: str) -> int:
        """The offset of ``layer_id``'s slot where this process found it before, if it is still there; -1."""
        held = self._slots.get(layer_id)
        if held is not None:
            at, key = held
            if at + SLOT <= len(mm) and mm[at:at + ID_SIZE] == key:
                return at
        return -1

    def _find(self, mm: mmap.mmap, layer_id: str) -> int:
        """The offset of ``layer_id``'s slot, or -1."""
        at = self._held_at(mm, layer_id)
        if at >= 0:
            return at
        key = layer_id.encode().ljust(ID_SIZE, b"\0")
        _, _, assigned = _HEAD.unpack_from(mm, _HEAD_AT)
        end = min(HEADER + assigned * SLOT, len(mm))  # a reader's mapping may predate a growth
        at = mm.find(key, HEADER, end)
        while at >= 0 and (at - HEADER) % SLOT:
            at = mm.find(key, at + 1, end)
        if at >= 0:
            self._slots[layer_id] = (at, key)
        return at

    def _claim(self, mm: mmap.mmap, layer_id: str) -> int:
        """A slot for ``layer_id``: the next never used, else one whose count is zero, else a doubled table."""
        capacity, _, assigned = _HEAD.unpack_from(mm, _HEAD_AT)
        if assigned < capacity:
            at = HEADER + assigned * SLOT
            _HEAD.pack_into(mm, _HEAD_AT, capacity, 0, assigned + 1)
        else:
            at = next((a for a in range(HEADER, HEADER + capacity * SLOT, SLOT)
                       if not _REF.unpack_from(mm, a + ID_SIZE)[0]), -1)
            if at < 0:
                mm = self._grow(capacity * 2)
                at = HEADER + capacity * SLOT
                _HEAD.pack_into(mm, _HEAD_AT, capacity * 2, 0, capacity + 1)
        key = layer_id.encode().ljust(ID_SIZE, b"\0")
        _write_slot(mm, at, Ref())
        mm[at:at + ID_SIZE] = key
        self._slots[layer_id] = (at, key)
        return at

    def _grow(self, capacity: int) -> mmap.mmap:
        with self._switch:
            os.posix_fallocate(self._fd, 0, HEADER + capacity * SLOT)
            return self._map(HEADER + capacity * SLOT)

    def _put(self, layer_id: str, ref: Ref, linked: bool = False) -> None:
        """Store ``ref`` in ``layer_id``'s slot (claimed when it has none and the count is not zero)."""
        mm = self._mapped(create=True, linked=linked)
        assert mm is not None
        at = self._find(mm, layer_id)
        if at < 0:
            if ref.count <= 0:
                return
            at = self._claim(mm, layer_id)
            mm = self._mm  # grown, perhaps: mapped again
            assert mm is not None
        _write_slot(mm, at, ref)

    # -- the interface -------------------------------------------------------------------------
    def record(self, layer_id: str) -> RefRecord:
        """``layer_id``'s slot, read now, to rewrite with :meth:`RefRecord.set`."""
        mm = self._mapped(create=False, linked=True)
        at = self._find(mm, layer_id) if mm is not None else -1
        if at < 0:
            return RefRecord(self, layer_id, Ref())
        return RefRecord(self, layer_id, Ref._make(_REF.unpack_from(mm, at + ID_SIZE)), mm, at)

    def live_slot(self, layer_id: str) -> tuple[mmap.mmap, int] | None:
        """Where ``layer_id``'s count lies, (mapping, offset) for :data:`count_at` and
        :data:`set_count_at`, when this process found its slot before and the table is still the root's
        live one (the operation's one fstat); None: go through :meth:`record`. Callers hold the lock."""
        mm = self._mm
        if mm is None or _RETIRED.unpack_from(mm, _RETIRED_AT)[0] or self._gone(len(mm)):
            return None
        at = self._held_at(mm, layer_id)
        return (mm, at + ID_SIZE) if at >= 0 else None

    def read(self, layer_id: str) -> Ref:
        """The stored reference, or an empty one (no slot, no table, or a table of an earlier boot)."""
        return self.record(layer_id).ref

    def write(self, layer_id: str, ref: Ref) -> None:
        """Store ``ref``; a zero count zeroes an existing slot (and claims none)."""
        self._put(layer_id, ref, linked=True)

    def drop(self, layer_id: str) -> None:
        """Forget ``layer_id``'s references (its slot is free for another layer)."""
        mm = self._mapped(create=False, linked=True)
        at = self._find(mm, layer_id) if mm is not None else -1
        if mm is not None and at >= 0:
            _write_slot(mm, at, Ref())
            mm[at:at + ID_SIZE] = bytes(ID_SIZE)
            self._slots.pop(layer_id, None)

    def all(self) -> dict[str, Ref]:
        """Every layer with a live reference."""
        mm = self._mapped(create=False, linked=True)
        if mm is None:
            return {}
        _, _, assigned = _HEAD.unpack_from(mm, _HEAD_AT)
        out = {}
        for at in range(HEADER, min(HEADER + assigned * SLOT, len(mm)), SLOT):
            count, mnt_id = _REF.unpack_from(mm, at + ID_SIZE)
            if count:
                name = mm[at:at + ID_SIZE].rstrip(b"\0").decode()
                if name:
                    out[name] = Ref(count, mnt_id)
        return out

    def remove(self) -> None:
        """Forget every reference of this root (its runtime directory goes too). Processes that have
        the table mapped see it retired and map the next one."""
        with self._switch:
            mm = self._mapped(create=False)
            if mm is not None:
                _RETIRED.pack_into(mm, _RETIRED_AT, 1)
            self._forget()
            shutil.rmtree(self.dir, ignore_errors=True)
