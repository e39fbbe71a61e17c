"""The top-level ``graphdriver`` application, its global switches, and error handling.

Subcommand groups live in their own modules (layer.py, image.py, ...); :mod:`.commands` attaches them,
most by name so that they are imported only when they run; :func:`main` imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from plumbum import cli

from ..checks import option_keys
from ..driver import Driver
from ..errors import GraphDriverError, NoStore, StorageOptUnsupported
from ..registry import DEFAULT_ROOT, backend, chosen_driver, open_driver
from ..store.files import STDOUT, naming, nearest_dir


def key_values(items: list[str], switch: str) -> dict[str, str]:
    """``KEY=VALUE`` switches as a dict; an item without ``=`` is refused, never dropped."""
    bad = [o for o in items if "=" not in o]
    if bad:
        raise StorageOptUnsupported(f"{switch} takes KEY=VALUE, not {bad[0]!r}")
    return dict(o.split("=", 1) for o in items)


class GraphDriverApp(cli.Application):
    """Stack container image layers on the kernel's union filesystems, and prove what was mounted."""

    PROGNAME = "graphdriver"
    VERSION = "0.1.0"
    SUBCOMMAND_HELPMSG = False  # a subcommand's line is its description ("; see ... --help" on each was noise)

    root = cli.SwitchAttr(["--root"], str, default=os.environ.get("GRAPHDRIVER_ROOT", DEFAULT_ROOT),
                          help="state root (env GRAPHDRIVER_ROOT)", envname="GRAPHDRIVER_ROOT")
    driver_name = cli.SwitchAttr(["--driver"], str, default=None, help="overlay2, aufs or vfs (default: best)")
    as_json = cli.Flag(["--json"], help="print JSON")
    storage_opts = cli.SwitchAttr(["--storage-opt"], str, list=True, help="driver option KEY=VALUE")

    _driver: Driver | None = None

    @property
    def root_given(self) -> bool:
        """True when the root was chosen (``--root`` or GRAPHDRIVER_ROOT), not the default."""
        return os.path.abspath(self.root) != DEFAULT_ROOT

    def driver(self, *, create: bool = False) -> Driver:
        """The Driver for ``--root``/``--driver`` (opened once per run). Only commands that store
        something ``create`` the store: any other on a root where nothing is stored yet gets
        :class:`~graphdriver.errors.NoStore` and leaves the root as it was (no directory made, no
        driver recorded)."""
        if self._driver is None:
            opts = option_keys(key_values(self.storage_opts, "--storage-opt"))
            try:
                self._driver = open_driver(self.root, self.driver_name, opts, create=create)
            except NoStore:  # the options are checked all the same: a typo is not an empty answer
                self.new_store_backend().check_options(opts, nearest_dir(self.root))
                raise
        return self._driver

    def new_store_backend(self) -> type[Driver]:
        """The backend a store made at ``--root`` would get (nothing made): to check a call before it
        makes one."""
        cls = backend(chosen_driver(self.root, self.driver_name))
        assert cls is not None  # chosen_driver found it
        return cls

    def stored_driver(self) -> Driver | None:
        """:meth:`driver`, or None while nothing is stored at the root (commands that list or check:
        nothing there is an answer, not an error)."""
        try:
            return self.driver()
        except NoStore:
            return None

    def main(self, *args: str) -> int:
        if args:
            print(f"graphdriver: unknown command {args[0]!r}", file=sys.stderr)
            return 2
        if not self.nested_command:
            self.help()
            return 0
        return 0


class CommandGroup(cli.Application):
    """A group of subcommands (``layer``, ``image``, ...): alone, it prints its help."""

    SUBCOMMAND_HELPMSG = False

    def main(self, *args: str) -> int:
        if args:
            print(f"graphdriver {self.PROGNAME.split()[-1]}: unknown command {args[0]!r}", file=sys.stderr)
            return 2
        if not self.nested_command:
            self.help()
        return 0


def top(app: cli.Application) -> GraphDriverApp:
    """The GraphDriverApp above a (nested) subcommand instance."""
    while not isinstance(app, GraphDriverApp):
        app = app.parent
    return app


@contextlib.contextmanager
def writing_stdout() -> Iterator[None]:
    """A failed write of the command's output (a full disk, a closed pipe) names standard output."""
    try:
        yield
    except OSError as e:
        raise naming(e, STDOUT) from None


def say(text: str) -> None:
    """Print a line of the command's output."""
    with writing_stdout():
        print(text)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], right: Collection[int] = ()) -> str:
    """Columns two spaces apart, each as wide as its widest cell or header (``right``: the indexes of
    columns aligned right, numbers); the last column is not padded."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    last = len(header) - 1
    return "\n".join("  ".join(c.rjust(w) if i in right else c if i == last else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))) for row in cells)


def each(names: Iterable[str], act: Callable[[str], None]) -> int:
    """``act`` on every name, as docker does for ``rm`` of several: a failure is one line on stderr and
    the rest go on; the exit status is 1 when any failed."""
    failed = False
    for name in names:
        try:
            act(name)
        except GraphDriverError as e:
            print(f"graphdriver: {e}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def emit(app: cli.Application, obj: Any, text: str | None = None) -> None:
    """Print ``obj`` as JSON (``--json`` or no text form), else ``text``; an empty text form prints
    nothing (an empty list of changes is no output, as ``docker diff``'s)."""
    if top(app).as_json or text is None:
        say(json.dumps(obj, indent=2, sort_keys=False))
    elif text:
        say(text)


def shown_path(path: str, most: int = 300) -> str:
    """A path for a one-line message: past ``most`` characters its middle is cut to '…' (a root near
    PATH_MAX made every error line 4 KB long)."""
    return path if len(path) <= most else f"{path[:most // 2]}\u2026{path[-(most // 2 - 1):]}"


def main() -> None:
    """Entry point of the console script: one clear line and a non-zero exit for any failure."""
    from . import commands  # noqa: F401  (attaches every subcommand)

    try:
        try:
            GraphDriverApp.run(exit=True)
        finally:
            with writing_stdout():
                sys.stdout.flush()  # output still buffered fails here, not unreported at exit
    except GraphDriverError as e:
        print(f"graphdriver: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        where = f" ({shown_path(os.fsdecode(e.filename))})" if e.filename else ""
        print(f"graphdriver: {e.strerror or e}{where}", file=sys.stderr)
        if e.filename == STDOUT:  # what could not be written is dropped: nothing more to report at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
