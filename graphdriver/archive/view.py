"""The merged view of a stack of layer directories, read without mounting (union rules in Python).

Used only where the kernel's own rules are known to match (no redirect_dir, no metacopy): to look up what
the layers below hold at a path (native changes). Naive comparisons go
through real mounts instead.
"""

from __future__ import annotations

import os
import stat

from .whiteouts import is_overlay_whiteout, overlay_opaque


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class LayerView:
    """Layers (top first) in one whiteout format: ``overlay``, ``aufs`` or ``applied`` (plain trees)."""

    def __init__(self, layers: list[str], fmt: str) -> None:
        self.layers = [os.fsencode(x) for x in layers]
        self.fmt = fmt
        self._dirs: dict[bytes, list[bytes]] = {}
        self._flags: dict[bytes, bytes | None] = {}

    @staticmethod
    def _join(layer: bytes, rel: bytes) -> bytes:
        return layer + b"/" + rel if rel else layer

    def _flag(self, path: bytes) -> bytes | None:
        """overlay.opaque of a directory (cached)."""
        if path not in self._flags:
            self._flags[path] = overlay_opaque(path) if self.fmt == "overlay" else None
        return self._flags[path]

    def _hidden(self, layer: bytes, parent: bytes, name: bytes, path: bytes, st: os.stat_result | None) -> bool:
        """True when ``name`` is whited out in ``layer`` (hiding it there and below)."""
        if self.fmt == "overlay":
            return st is not None and is_overlay_whiteout(path, st, self._flag(self._join(layer, parent)))
        if self.fmt == "aufs" and st is None:
            return _lstat(self._join(layer, parent + b"/.wh." + name if parent else b".wh." + name)) is not None
        return False

    def _opaque(self, path: bytes) -> bool:
        if self.fmt == "overlay":
            return self._flag(path) == b"y"
        if self.fmt == "aufs":
            return _lstat(path + b"/.wh..wh..opq") is not None
        return False

    def dir_layers(self, rel: bytes) -> list[bytes]:
        """The layers contributing entries to directory ``rel`` (empty: not a directory in the view)."""
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        out: list[bytes] = []
        if not rel:
            for layer in self.layers:
                out.append(layer)
                if self._opaque(layer):
                    break
        else:
            parent, _, name = rel.rpartition(b"/")
            for layer in self.dir_layers(parent):
                path = self._join(layer, rel)
                st = _lstat(path)
                if self._hidden(layer, parent, name, path, st):
                    break
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    break
                out.append(layer)
                if self._opaque(path):
                    break
        self._dirs[rel] = out
        return out

    def lookup(self, rel: bytes) -> tuple[bytes, os.stat_result] | None:
        """(path, lstat) of what the view shows at ``rel``, or None."""
        if not rel:
            return (self.layers[0], os.lstat(self.layers[0])) if self.layers else None
        parent, _, name = rel.rpartition(b"/")
        for layer in self.dir_layers(parent):
            path = self._join(layer, rel)
            st = _lstat(path)
            if self._hidden(layer, parent, name, path, st):
                return None
            if st is not None:
                return path, st
        return None

    def listdir(self, rel: bytes) -> dict[bytes, tuple[bytes, os.stat_result]]:
        """The merged directory ``rel``: name -> (path, lstat)."""
        seen: dict[bytes, tuple[bytes, os.stat_result]] = {}
        hidden: set[bytes] = set()
        for layer in self.dir_layers(rel):
            d = self._join(layer, rel)
            flag = self._flag(d) if self.fmt == "overlay" else None
            try:
                names = os.listdir(d)
            except OSError:
                continue
            mine: set[bytes] = set()
            for name in names:
                if name in seen or name in hidden:
                    continue
                path = d + b"/" + name
                if self.fmt == "aufs" and name.startswith(b".wh."):
                    if not name.startswith(b".wh..wh."):
                        mine.add(name[4:])
                    continue
                st = os.lstat(path)
                if self.fmt == "overlay" and is_overlay_whiteout(path, st, flag):
                    hidden.add(name)
                    continue
                seen[name] = (path, st)
            hidden |= mine
        return seen
