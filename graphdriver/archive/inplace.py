"""Work on a layer's files in place without the root lock — an apply's extraction, a diff, changes or
size read — held by a lease on the layer's directory (:mod:`graphdriver.store.leases`).

While the lease is held no ``remove`` and no other apply's publishing can take the directory: they are
refused, naming the processes at work. What the lease cannot stop — files deleted by a container using
the layer, a directory removed by hand — still ends the work in an error naming the layer, never in a
result passed off as the layer's.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ..errors import GraphDriverError, LayerBusy, LayerChanged, LayerNotFound, LayerReadFailed
from ..store.leases import Lease, holders, in_use
from .names import shown

if TYPE_CHECKING:
    from ..driver import Driver

T = TypeVar("T")
PATH_MAX = 4096  # Linux's, with the terminating NUL

#: How often a lease is taken again when the directory was replaced while it was waited for (an apply
#: publishing into an empty layer renames a new directory into place).
_ATTEMPTS = 5


def removed(layer_id: str, during: str) -> LayerNotFound:
    """The error for a layer that went while ``during`` ran."""
    return LayerNotFound(f"layer {layer_id} was removed while {during}")


def hold(driver: Driver, layer_id: str) -> Lease:
    """A shared lease on the layer's directory (``diff_path``), taken once the directory there is the
    layer's: waits only for a remove or a publish under way."""
    path = driver.diff_path(layer_id)
    for _ in range(_ATTEMPTS):
        try:
            lease = Lease.take(path, shared=True)
        except FileNotFoundError:
            lease = None
        if lease is not None and lease.still_there() and driver.exists(layer_id):
            return lease
        if lease is not None:
            lease.release()
        if not driver.exists(layer_id):
            raise LayerNotFound(f"layer {layer_id} not found")
        if lease is None:
            raise LayerNotFound(f"layer {layer_id} has no directory {path} (damaged: remove it and make it again)")
    raise LayerChanged(f"layer {layer_id} keeps being replaced; try again")


def take_over(lease: Lease | None, layer_id: str, path: str, what: str) -> Lease | None:
    """With the root lock held: the exclusive lease a change to the layer's directory needs (``lease``, a
    shared one this caller holds, converted; else a new one). Refuses, naming who works on the layer,
    when another process or thread holds a lease on it; None when the directory is missing (nothing to
    hold)."""
    try:
        if lease is not None:
            if lease.convert(shared=False):
                return lease
        else:
            got = Lease.take(path, shared=False, wait=False)
            if got is not None:
                return got
    except FileNotFoundError:
        return None
    who = holders(path)
    raise LayerBusy(f"cannot {what} layer {layer_id}: it is being read or applied into (a diff, changes, size "
                    f"or apply under way{' in ' + ', '.join(who) if who else ''}); try again when it is done",
                    layer_id, who)


def applier(staging: str, layer_id: str) -> list[str] | None:
    """With the root lock held: when a diff is being applied into ``layer_id`` (its staging directory
    ``<id>.apply-XXXXXXXX`` in ``staging`` leased; a lease dies with its holder, so what a crash left does
    not count), ``name[pid]`` of who applies (empty when the kernel does not tell); else None."""
    prefix = f"{layer_id}.apply-"
    for name in os.listdir(staging):
        path = os.path.join(staging, name)
        if name.startswith(prefix) and "." not in name[len(prefix):] and in_use(path):
            return holders(path)
    return None


def refuse_applying(staging: str, parent: str, child: str) -> None:
    """With the root lock held: refuse to make ``child`` on ``parent`` while a diff is being applied into
    ``parent``: the apply would change the layer under its child, and be refused at its end after all its
    work."""
    who = applier(staging, parent)
    if who is not None:
        raise LayerBusy(f"cannot create layer {child} on {parent}: a diff is being applied into {parent}"
                        f"{' (in ' + ', '.join(who) + ')' if who else ''}; create it once the apply is done",
                        parent, who)


def refuse_mounting_applying(staging: str, layer_id: str) -> None:
    """With the root lock held: refuse a ``get`` (a first reference, a mount) of a layer a diff is being
    applied into: its files would change under the user, and the apply be refused at its end."""
    who = applier(staging, layer_id)
    if who is not None:
        raise LayerBusy(f"cannot mount layer {layer_id}: a diff is being applied into it"
                        f"{' (in ' + ', '.join(who) + ')' if who else ''}; mount it once the apply is done",
                        layer_id, who)


class LayerRead:
    """A read of one layer's files in place, under a shared lease from the moment it is made until
    :meth:`release` (``run`` releases by itself; a stream over :meth:`chunks` on close)."""

    def __init__(self, driver: Driver, layer_id: str) -> None:
        self.driver, self.layer_id = driver, layer_id
        self.path = driver.diff_path(layer_id)
        self.lease = hold(driver, layer_id)

    def release(self) -> None:
        self.lease.release()

    def problem(self, missing: str | None = None) -> GraphDriverError | None:
        """What happened to the layer since the read began (``missing``: a file of it the read did not
        find); None: nothing."""
        if not self.driver.exists(self.layer_id) or not self.lease.still_there():
            return removed(self.layer_id, "it was being read")  # by hand: the lease keeps the library out
        if missing:  # written by a container using it
            return LayerChanged(f"layer {self.layer_id} changed while it was being read ({missing} went); "
                                f"read it again")
        return None

    def run(self, work: Callable[[], T], *, keep: bool = False) -> T:
        """``work()``, which reads the layer; its result once the layer is known to be as it was. The
        lease is released when it returns or fails, unless ``keep`` (more is read afterwards)."""
        try:
            try:
                result = work()
            except FileNotFoundError as e:
                raise (self.problem(_name(e)) or e) from None
            except OSError as e:
                raise (self.problem() or self.failed(e)) from None
            self._check()
            return result
        finally:
            if not keep:
                self.release()

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks as they come; the error at the end (the reader learns the stream is not the
        layer's) when the layer changed while they were read."""
        try:
            yield from chunks
        except FileNotFoundError as e:
            raise (self.problem(_name(e)) or e) from None
        except OSError as e:
            raise (self.problem() or self.failed(e)) from None
        self._check()

    def failed(self, err: OSError) -> LayerReadFailed:
        """One line for a read the system refused: the layer, what failed, the path (its middle cut)."""
        what = err.strerror or str(err)
        if err.filename:
            path = os.fsencode(err.filename)
            what += f" at {shown(path)}"
            if err.errno == errno.ENAMETOOLONG and len(path) >= PATH_MAX:
                what += f" (a path of {len(path)} bytes: the system takes {PATH_MAX - 1} at most)"
        return LayerReadFailed(f"reading layer {self.layer_id} failed: {what}")

    def _check(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise problem


def _name(err: OSError) -> str:
    """The file a missing-file error names, as text (its middle cut when long)."""
    return shown(os.fsencode(err.filename))[1:-1] if err.filename else "a file"
