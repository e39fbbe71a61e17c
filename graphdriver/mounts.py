"""Mount references: ``get`` and ``put`` counted across processes in the root's shared table, checked
against the kernel's mount table (the truth), and ``verify`` listing where the two differ; with the hooks
a union backend overrides to plan, mount and check its mounts.

:class:`MountRefs` is a mixin of :class:`~graphdriver.driver.Driver`, which holds the lock, the table and
the layout these methods use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .archive.inplace import refuse_mounting_applying
from .errors import LayerNotFound, LayerNotMounted, MountFailed
from .ids import check_id
from .kernel import mountinfo
from .kernel.unmount import unmount
from .store.refs import Ref, count_at, set_count_at

if TYPE_CHECKING:
    from .kernel.quickmount import QuickMount
    from .store.locks import RootLock
    from .store.refs import RefStore


class MountState(NamedTuple):
    """Whether ``get`` mounts a union for a layer, the kernel's mount id at its mount point (None: nothing
    mounted) and, when the backend planned the mount while looking, that plan."""

    mounts: bool
    mnt_id: int | None
    plan: object | None = None


@dataclass(frozen=True)
class Drift:
    """A difference between what this root expects and what the kernel shows."""

    layer: str
    problem: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.problem}"


class MountRefs:
    """``get``/``put`` reference counting, ``mount_count`` and ``verify``, and the union-mount hooks."""

    lock: RootLock
    refs: RefStore
    _staging: str  # where an apply's leased ``<id>.apply-*`` directory shows it under way
    #: layer id -> how to mount it again as this object last did (backends that can: overlay2)
    _quick: dict[str, QuickMount]

    def get(self, layer_id: str, mount_label: str = "") -> str:
        """The path of the layer's root filesystem, mounting it on first use (reference counted)."""
        try:
            quick = self._quick.get(layer_id)  # a layer this object mounted before (so a valid id)
        except TypeError:  # unhashable: no id (free on the hot path: a try costs nothing until it raises)
            check_id(layer_id)  # raises InvalidArgument naming it
            raise
        with self.lock:
            if quick is not None:
                slot = self.refs.live_slot(layer_id)
                if slot is not None and not count_at(*slot)[0]:
                    mnt_id = quick.mount()
                    if mnt_id:
                        set_count_at(*slot, 1, mnt_id)
                        return quick.path
                    self._quick.pop(layer_id, None)  # not as it was: the general path finds out why
            return self._get(check_id(layer_id))

    def _get(self, layer_id: str) -> str:
        """``get`` the general way (the lock held, the id checked): the count, the layout and the kernel
        looked at, the mount planned (or a plan cached for the layout as it is) made and verified."""
        rec = self.refs.record(layer_id)
        ref = rec.ref
        state = self.mount_state(layer_id)
        if not state.mounts:
            if not ref.count:  # a first reference: no apply may be under way (it refuses one held)
                refuse_mounting_applying(self._staging, layer_id)
            rec.set(Ref(ref.count + 1, 0))
            return self.rootfs_path(layer_id)
        target = self.mount_point(layer_id)
        current = state.mnt_id
        if current is None:
            refuse_mounting_applying(self._staging, layer_id)  # (the quick path: see :meth:`restamp`)
            rec.set(Ref(1, self.mount_layer(layer_id, state.plan)))
            return target
        if ref.count and ref.mnt_id == current:
            rec.set(Ref(ref.count + 1, current))
            return target
        problems = self.check_mount(layer_id, mountinfo.mount_at(target))
        if problems:
            raise MountFailed(f"layer {layer_id}: a foreign mount sits at {target} "
                              f"({'; '.join(problems)}); run cleanup")
        rec.set(Ref(max(ref.count, 1) + 1, current))
        return target

    def put(self, layer_id: str) -> None:
        """Drop one reference; the last one unmounts."""
        try:
            quick = self._quick.get(layer_id)
        except TypeError:  # as in get
            check_id(layer_id)
            raise
        with self.lock:
            if quick is not None:
                slot = self.refs.live_slot(layer_id)
                if slot is not None:
                    count, mnt_id = count_at(*slot)
                    if count == 1 and mnt_id and quick.unmount():  # as below, minus the looking up
                        set_count_at(*slot, 0, 0)
                        return
            self._put(check_id(layer_id))

    def _put(self, layer_id: str) -> None:
        """``put`` the general way (the lock held, the id checked)."""
        rec = self.refs.record(layer_id)
        ref = rec.ref
        # A record naming a mount was written by a get that mounted this layer (a mounted layer
        # cannot be removed): no need to look at the layout again.
        if not (ref.mnt_id and ref.count) and not self.locate(layer_id):
            if not ref.count:
                raise LayerNotMounted(f"layer {layer_id} is not mounted")
            rec.set(Ref(ref.count - 1, 0))
            return
        if ref.count > 1 and mountinfo.current_mount_id(self.mount_point(layer_id)) is not None:
            rec.set(Ref(ref.count - 1, ref.mnt_id))
            return
        if ref.count > 1 or not self.unmount_layer(layer_id):  # the kernel shows nothing there
            self.refs.drop(layer_id)
            raise LayerNotMounted(f"layer {layer_id} is not mounted")
        rec.set(Ref())  # zeroed in place

    def mount_count(self, layer_id: str) -> int:
        """Live references to the layer's mount (0 when the kernel shows it unmounted)."""
        ref = self.refs.read(check_id(layer_id))
        if not ref.count or not self.needs_mount(layer_id):
            return ref.count
        return ref.count if mountinfo.current_mount_id(self.mount_point(layer_id)) is not None else 0

    def verify(self) -> list[Drift]:
        """Every mount this root holds, checked against the kernel; what differs is returned."""
        drift: list[Drift] = []
        with self.lock.held():
            refs = self.refs.all()
            expected = set()
            for layer_id, ref in sorted(refs.items()):
                if not self.exists(layer_id):
                    drift.append(Drift(layer_id, "holds references but the layer is gone"))
                    continue
                if not self.needs_mount(layer_id):
                    continue
                target = self.mount_point(layer_id)
                expected.add(target)
                current = mountinfo.current_mount_id(target)
                if current is None:
                    drift.append(Drift(layer_id, f"expected a mount at {target}; the kernel shows none"))
                    continue
                if current != ref.mnt_id:
                    drift.append(Drift(layer_id, f"the mount at {target} was replaced "
                                                 f"(mount id {ref.mnt_id} became {current})"))
                for problem in self.check_mount(layer_id, mountinfo.mount_at(target)):
                    drift.append(Drift(layer_id, problem))
            for entry in mountinfo.mounts_under(self.home):
                if entry.mount_point not in expected:
                    drift.append(Drift("-", f"unexpected {entry.fs_type} mount at {entry.mount_point}"))
        return drift

    # -- union-mount hooks (a backend without mounts keeps these) ---------------------------------
    def needs_mount(self, layer_id: str) -> bool:
        """True when ``get`` must mount a union."""
        return False

    def mount_state(self, layer_id: str) -> MountState:
        """What ``get`` needs to know first (:class:`MountState`); :class:`LayerNotFound` when the layer
        is absent. The id is checked."""
        if not self.locate(layer_id):
            return MountState(False, None)
        return MountState(True, mountinfo.current_mount_id(self.mount_point(layer_id)))

    def locate(self, layer_id: str) -> bool:
        """:meth:`needs_mount` of a layer that must exist (:class:`LayerNotFound` if not); the id is checked.

        The get/put path's one look at the layout: a backend may answer with a single syscall.
        """
        if not self._present(layer_id):
            raise LayerNotFound(f"layer {layer_id} not found")
        return self.needs_mount(layer_id)

    def mount_point(self, layer_id: str) -> str:
        """Where the union is mounted."""
        return self.rootfs_path(layer_id)

    def mount_layer(self, layer_id: str, plan: object | None = None) -> int:
        """Plan (unless :meth:`mount_state` just did: ``plan``), execute and verify the union mount;
        returns the kernel's mount id."""
        raise NotImplementedError(f"{self.name} does not mount")

    def restamp(self, layer_id: str) -> None:
        """Make every process plan the layer's next mount afresh, by the general path: a quick mount
        (``get`` repeating its last mount: overlay2) of it is not made again. Called, the lock held, when
        the layer gains a child (it mounts read-only from then on) and when a diff starts being applied
        into it (the general path refuses a mount meanwhile)."""

    def read_only_fd(self, layer_id: str) -> int | None:
        """For a read of the layer's root filesystem: the descriptor of a detached read-only mount of it,
        made without writing anything (the caller closes it), or None when ``get`` serves the read (no
        union needed, one mounted already, or a backend that cannot). The lock is held."""
        return None

    def unmount_layer(self, layer_id: str) -> bool:
        """Undo :meth:`mount_layer`; False when nothing was mounted."""
        return unmount(self.mount_point(layer_id))

    def check_mount(self, layer_id: str, entry: mountinfo.MountEntry | None) -> list[str]:
        """Compare the kernel's view of a mount with the plan; return the differences."""
        return [] if entry is not None else ["not mounted"]
