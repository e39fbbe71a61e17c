"""Marks of work in progress: a file named after the work, made before its first step and removed after
its last (or after its own undo, when it fails). A mark left behind is work a kill cut short; whoever takes
the store's lock next can find it and undo what it made."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .files import touch


class WorkMarks:
    """The marks ``<directory>/<key><suffix>`` of one kind of work."""

    def __init__(self, directory: str, suffix: str) -> None:
        self.directory = directory
        self.suffix = suffix

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key + self.suffix)

    @contextmanager
    def around(self, key: str) -> Iterator[None]:
        """Marked while the block runs; unmarked when it ends, by returning or by raising."""
        touch(self._path(key))
        try:
            yield
        finally:
            os.unlink(self._path(key))

    def left(self) -> list[str]:
        """The keys of work that was cut short (with the store's lock held: nobody is doing it now)."""
        return sorted(n[:-len(self.suffix)] for n in os.listdir(self.directory) if n.endswith(self.suffix))

    def clear(self, key: str) -> None:
        """Forget a mark once what it stood for is undone (or turned out finished)."""
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
