"""Which layer directory a path is, for work done without the root lock (an apply's extraction, a diff
read in place): a layer another process removes, makes again or applies into meanwhile is named —
never read in part or mixed with what replaced it and passed off as whole, never written into."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ..errors import GraphDriverError, LayerChanged, LayerNotFound
from ..kernel import statcalls

if TYPE_CHECKING:
    from ..driver import Driver

T = TypeVar("T")


def identity(path: str) -> tuple[int, int] | None:
    """Which directory ``path`` is (inode, birth time); None when there is none."""
    try:
        seen = statcalls.mount_id(path)
    except FileNotFoundError:
        return None
    return seen.ino, seen.born


def removed(layer_id: str, during: str) -> LayerNotFound:
    """The error for a layer that went while ``during`` ran."""
    return LayerNotFound(f"layer {layer_id} was removed while {during}")


class UnlockedRead:
    """A read of one layer's files made without the root lock, from the moment it is made: :meth:`run`
    and :meth:`chunks` end in the error naming the layer, instead of a result or a missing-file error,
    when the layer was removed, or made again or applied into, before the read finished."""

    def __init__(self, driver: Driver, layer_id: str) -> None:
        self.driver, self.layer_id = driver, layer_id
        self.path = driver.diff_path(layer_id)
        self.before = identity(self.path)

    def problem(self, missing: str | None = None) -> GraphDriverError | None:
        """What happened to the layer since the read began (``missing``: a file of it the read did not
        find); None: nothing."""
        if not self.driver.exists(self.layer_id):
            return removed(self.layer_id, "it was being read")
        if self.before is None:  # missing from the start: not a change, damage
            return LayerNotFound(f"layer {self.layer_id} has no directory {self.path} (damaged: remove it "
                                 f"and make it again)")
        if identity(self.path) != self.before:
            return LayerChanged(f"layer {self.layer_id} changed while it was being read (removed and made "
                                f"again, or applied into); read it again")
        if missing:  # applied into, or written by a container using it
            return LayerChanged(f"layer {self.layer_id} changed while it was being read ({missing} went); "
                                f"read it again")
        return None

    def run(self, work: Callable[[], T]) -> T:
        """``work()``, which reads the layer; its result once the layer is known to be as it was."""
        try:
            result = work()
        except FileNotFoundError as e:
            raise (self.problem(_name(e)) or e) from None
        self._check()
        return result

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks as they come; the error at the end (the reader learns the stream is not the
        layer's) when the layer changed while they were read."""
        try:
            yield from chunks
        except FileNotFoundError as e:
            raise (self.problem(_name(e)) or e) from None
        self._check()

    def _check(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise problem


def _name(err: OSError) -> str:
    """The file a missing-file error names, as text."""
    return os.fsdecode(err.filename) if err.filename else "a file"
