"""``layer apply|diff|changes|diff-size``: layer tars in and out of a layer (no storage logic here)."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from typing import BinaryIO

from plumbum import cli

from ..archive.diff import KIND_LETTER
from ..store.files import replacing
from .app import emit, top, writing_stdout
from .image import stores_if_any

PROGRESS_MIN = 32 << 20  # show progress for inputs at least this big (or of unknown size)


class _Progress:
    """A reader wrapper printing ``<read> / <total>`` to stderr at most a few times a second."""

    def __init__(self, stream: BinaryIO, total: int | None) -> None:
        self.stream, self.total, self.done = stream, total, 0
        self.last = 0.0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.done += len(data)
        now = time.monotonic()
        if now - self.last > 0.2 or not data:
            self.last = now
            mb = self.done / 1e6
            if self.total:
                pct = 100 * self.done / self.total
                bar = "#" * int(pct / 4)
                sys.stderr.write(f"\r[{bar:<25}] {pct:5.1f}% {mb:8.1f} MB")
            else:
                sys.stderr.write(f"\r{mb:8.1f} MB read")
            if not data:
                sys.stderr.write("\n")
            sys.stderr.flush()
        return data


def _input(path: str) -> tuple[BinaryIO, int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    f = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    return f, os.fstat(f.fileno()).st_size


class LayerApply(cli.Application):
    """Extract a layer tar (plain, gzip, zstd, xz or bzip2) into layer ID; prints the bytes of content written."""

    parent_id = cli.SwitchAttr(["--parent"], str, default=None, help="the layer's parent (checked)")
    input_path = cli.SwitchAttr(["-i", "--input"], str, default="-", help="tar file, or - for stdin")

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        if self.input_path == "-" and sys.stdin.isatty():
            print("graphdriver: refusing to read a tar from a terminal (use -i FILE or a pipe)", file=sys.stderr)
            return 2
        stream, total = _input(self.input_path)
        try:
            src: BinaryIO = stream
            if sys.stderr.isatty() and (total is None or total >= PROGRESS_MIN):
                src = _Progress(stream, total)  # type: ignore[assignment]
            stores = stores_if_any(self)
            if stores is not None:
                from ..store.keepers import check_apply

                check_apply(stores, layer_id)
            size = d.apply_diff(layer_id, self.parent_id, src)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        emit(self, {"ID": layer_id, "Size": size}, str(size))
        return 0


class LayerDiff(cli.Application):
    """Write layer ID's changes (against its parent, or --parent P) as an uncompressed layer tar."""

    parent_id = cli.SwitchAttr(["--parent"], str, default=None, help="compare against this layer")
    output_path = cli.SwitchAttr(["-o", "--output"], str, default="-", help="tar file, or - for stdout")

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        if self.output_path == "-" and sys.stdout.isatty():
            print("graphdriver: refusing to write a tar to a terminal (use -o FILE or a pipe)", file=sys.stderr)
            return 2
        if self.output_path != "-" and os.path.isdir(self.output_path):  # refused before the diff is made
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.output_path)
        with d.diff(layer_id, self.parent_id) as stream:
            if self.output_path == "-":
                with writing_stdout():
                    shutil.copyfileobj(stream, sys.stdout.buffer, 1 << 20)
                    sys.stdout.buffer.flush()
            else:
                with replacing(self.output_path) as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
        return 0


def json_text(name: str) -> str:
    """A file name for JSON: bytes that are not UTF-8 become U+FFFD, as Go's encoding/json writes them
    (a lone surrogate escape is refused by strict parsers)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class LayerChanges(cli.Application):
    """List layer ID's changes like ``docker diff``: ``A /added``, ``C /changed``, ``D /deleted``."""

    parent_id = cli.SwitchAttr(["--parent"], str, default=None, help="compare against this layer")

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        found = d.changes(layer_id, self.parent_id)
        emit(self, [{"Path": json_text(p), "Kind": k} for p, k in found],
             "\n".join(f"{KIND_LETTER[k]} {p}" for p, k in found))
        return 0


class LayerDiffSize(cli.Application):
    """Bytes of file content layer ID adds or changes against its parent (or --parent P)."""

    parent_id = cli.SwitchAttr(["--parent"], str, default=None, help="compare against this layer")

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        size = d.diff_size(layer_id, self.parent_id)
        emit(self, {"ID": layer_id, "Size": size}, str(size))
        return 0
