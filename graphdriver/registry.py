"""The backend registry, the default-driver choice, and :func:`open_driver`."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import shutil
from collections.abc import Sequence

from .checks import option_keys
from .driver import _REGISTRY, Driver
from .errors import BadRoot, DriverMismatch, DriverUnsupported, NoStore, NotRoot
from .store.files import nearest_dir, read_text, write_all
from .store.leases import Lease

DEFAULT_ROOT = "/var/lib/graphdriver"
#: The built-in backends (each in its own module under graphdriver/drivers/), in the order the default
#: is chosen.
PRIORITY = ("overlay2", "aufs", "vfs")
#: How many times an open starts again when the store it opens is unmade under it (see unmake_store).
_OPEN_TRIES = 5


def backend(name: str) -> type[Driver] | None:
    """The backend called ``name`` (a built-in one imported on first use: a process pays only for the
    backends it opens), or None when there is none."""
    if name not in _REGISTRY and name in PRIORITY:
        importlib.import_module(f"{__package__}.drivers.{name}")
    return _REGISTRY.get(name)


def backends() -> dict[str, type[Driver]]:
    """Every registered backend by name (importing the built-in ones)."""
    for name in PRIORITY:
        backend(name)
    return dict(_REGISTRY)


def _record_path(root: str) -> str:
    return os.path.join(root, "driver")


def root_path(root: str) -> str:
    """The root's one identity, however it is spelled (symlinks, ``//``): its real path. An empty root is
    refused (it would be the current directory)."""
    if not root:
        raise BadRoot("the root is empty: give a directory (--root, GRAPHDRIVER_ROOT)")
    return os.path.realpath(root)


def default_driver(where: str, root: str | None = None) -> str:
    """The first backend in :data:`PRIORITY` that can run in directory ``where`` with root path ``root``
    (default: ``where``; a root not made yet is judged where it would be made)."""
    reasons = []
    for name in PRIORITY:
        cls = backend(name)
        if cls is None:
            continue
        why = cls.path_reason(root or where) or cls.unsupported_reason(where)
        if why is None:
            return name
        reasons.append(f"{name}: {why}")
    raise DriverUnsupported("no storage driver can run here (" + "; ".join(reasons) + ")")


def recorded_driver(root: str) -> str | None:
    """The driver recorded at ``root``; None while nothing has been stored there. :class:`BadRoot` when
    ``root``, or the nearest path above it that exists, is not a directory."""
    root = root_path(root)
    try:
        return read_text(_record_path(root)) or None
    except NotADirectoryError:
        where = root
        while not os.path.lexists(where):
            where = os.path.dirname(where)
        if os.path.isdir(where):  # made a directory meanwhile: read again
            return read_text(_record_path(root)) or None
        raise BadRoot(f"root {root} is not a directory" if where == root else
                      f"root {root} cannot be made: {where} is not a directory") from None


def chosen_driver(root: str, name: str | None = None) -> str:
    """The driver :func:`open_driver` would use at ``root``, creating nothing: ``name``, else the one
    recorded there, else the best that can run there. A root not made yet is judged by the nearest
    directory above it that exists (the filesystem it would be made on)."""
    root = root_path(root)
    return _choose(root, name, recorded_driver(root))


def _choose(root: str, name: str | None, recorded: str | None) -> str:
    """:func:`chosen_driver`, the record already read. The directory judged going while it is probed (a
    new store unmade by another process, with the root it had made) is no error: the next one up is
    judged instead."""
    for _ in range(_OPEN_TRIES):
        where = nearest_dir(root)
        try:
            return _choose_at(where, root, name, recorded)
        except FileNotFoundError:
            if os.path.isdir(where):
                raise
    return _choose_at(nearest_dir(root), root, name, recorded)


def _choose_at(where: str, root: str, name: str | None, recorded: str | None) -> str:
    """:func:`_choose`, judging the filesystem at ``where``."""
    if name is None:
        name = recorded or default_driver(where, root)
    cls = backend(name)
    if cls is None:
        raise DriverUnsupported(f"unknown driver {name!r} (known: {', '.join(sorted(backends()))})")
    if recorded and recorded != name:
        raise DriverMismatch(f"root {root} was created with driver {recorded}; it cannot be opened with {name}")
    why = cls.path_reason(root) or cls.unsupported_reason(where)
    if why is not None:
        raise DriverUnsupported(f"driver {name} cannot run at {root}: {why}")
    return name


def open_driver(root: str = DEFAULT_ROOT, name: str | None = None,
                options: dict[str, str] | None = None, *,
                require_root: bool = True, create: bool = True) -> Driver:
    """Open the layer store at ``root`` with backend ``name`` (default: the recorded one, else the best).
    ``create``: make the store (and record the driver) if nothing is stored there yet; without it, such
    a root is left as it is and :class:`NoStore` raised."""
    if require_root and os.geteuid() != 0:
        raise NotRoot("graphdriver must run as root (it mounts filesystems and keeps owners)")
    root = root_path(root)
    if not create and not recorded_driver(root):
        raise NoStore(f"nothing is stored at {root} yet (no layer store there)")
    made = not os.path.isdir(root)
    try:
        return _open(root, name, options)
    except BaseException:
        # A refused open leaves no trace: not even the root directory it had to make to probe — unless
        # another process opening it at the same time has claimed it meanwhile.
        if made and not recorded_driver(root):
            shutil.rmtree(root, ignore_errors=True)
        raise


def _open(root: str, name: str | None, options: dict[str, str] | None) -> Driver:
    """The driver, holding its store's lease (see :func:`_lease_store`) from before it touches the
    store, with its name recorded."""
    for _ in range(_OPEN_TRIES):
        try:
            os.makedirs(root, mode=0o711, exist_ok=True)  # again after an unmaking removed the root it made
            recorded = recorded_driver(root)
            chosen = _choose(root, name, recorded)  # probes the root's filesystem
            cls = backend(chosen)
            assert cls is not None  # chosen_driver found it
            cls.check_options(option_keys(options), root)  # before anything is made
            lease = _lease_store(cls.home_at(root))
        except FileNotFoundError:
            if os.path.isdir(root):
                raise
            continue  # the root itself went: unmade by another process (a failed first load), as below
        if lease is None:  # unmade by another process meanwhile (a failed first load): open it afresh
            continue
        try:
            driver = cls(root, options)
            claimed = _claim(root, chosen)  # read under its lock (written when missing: a store made again)
            if claimed != chosen:  # another process opened the new root first, with another driver
                raise DriverMismatch(f"root {root} was created with driver {claimed}; it cannot be opened "
                                     f"with {chosen}")
        except BaseException:
            lease.release()
            raise
        driver.store_lease = lease
        return driver
    raise NoStore(f"the store at {root} was removed each time it was opened ({_OPEN_TRIES} times); try again")


def _lease_store(home: str) -> Lease | None:
    """A shared lease on the driver's directory (made if missing), held while the driver is open: no
    other process's :func:`unmake_store` removes a store this one has open. Taken before the driver makes
    or reads anything in its store. None when an unmaking removed the directory while the lease waited."""
    os.makedirs(home, mode=0o700, exist_ok=True)
    try:
        lease = Lease.take(home, shared=True)  # waits while an unmaking holds it exclusively
    except (FileNotFoundError, NotADirectoryError):
        return None
    assert lease is not None  # a waiting take always gets it
    if lease.still_there():
        return lease
    lease.release()
    return None


def _claim(root: str, name: str) -> str:
    """Record ``name`` as the root's driver unless a driver is recorded already; the recorded one. Under
    a lock on the root directory (of two processes opening a new root at once, one records, the other
    reads it), in one write to the record itself: no temporary file for a kill to leave, and a record
    found empty under the lock (a claim cut short) is claimed again."""
    path = _record_path(root)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        recorded = read_text(path)
        if recorded:
            return recorded
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, f"{name}\n".encode(), path)
        finally:
            os.close(fd)
        return name
    finally:
        os.close(dfd)  # and the lock with it


def unmake_store(driver: Driver, others: Sequence[str], root_made: bool) -> bool:
    """Undo a store that a failed first command has just made (an ``image load`` of a damaged archive on
    a new root): ``driver``'s home, the directories ``others`` (the image and container stores'), the
    driver record and, when ``root_made``, the root itself — only while nothing at all is stored in any of
    them (no layer, nothing staged, no file but a lock), checked under the driver's lock, and no other
    driver object, in this process or another, has the store open (its lease). True when undone: the root
    is as the command found it, and another ``--driver`` can be chosen for it."""
    lease = driver.store_lease
    with driver.lock.held():
        if driver.layers() or not all(_holds_nothing(d) for d in (driver.home, *others)):
            return False
        if lease is None or not lease.convert(shared=False):  # another process has the store open
            if lease is not None:
                lease.convert(shared=True)  # as it was
            return False
        # The leased directory goes last: an open that waits for the lease finds it gone, and everything
        # else with it, and makes the store afresh.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_record_path(driver.root))
        driver.refs.remove()
        for d in (*others, driver.home):
            shutil.rmtree(d, ignore_errors=True)
        lease.release()
        driver.store_lease = None
    if root_made:
        with contextlib.suppress(OSError):  # not empty: something else came meanwhile, and stays
            os.rmdir(driver.root)
    return True


def _holds_nothing(top: str) -> bool:
    """No file under ``top`` but lock files (directories of an empty store's layout only)."""
    for _, _, files in os.walk(top):
        if any(name != ".lock" for name in files):
            return False
    return True
