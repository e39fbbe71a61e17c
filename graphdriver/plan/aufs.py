"""Pure planning of aufs mounts: branch strings, mount options, page-size splitting. No I/O here.

aufs takes its branches as ``br:<dir>=<perm>:<dir>=<perm>...`` in the mount(2) data, which the kernel
copies one page at most (aufs silently clips the rest). A plan therefore holds the data of the first
mount (the options and as many branches as fit) and the data of the ``MS_REMOUNT`` calls that add the
remaining branches, in order, with ``append:<dir>=<perm>`` (Docker's aufs driver splits the same way).
At mount time aufs reads simple flags, then branches, then ``xino``, whatever their order in the data.

The kernel's branch list is read from sysfs ``si_<id>/br<N>``; with the module parameter ``brs=0`` (or
no sysfs) aufs lists no ``br<N>`` and prints the branches as a last ``br:`` option in /proc/mounts
instead, which the check then reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import BadBranchPath, MountFailed, TooManyLayers
from ..kernel.aufs_sysfs import SiInfo, br_option, si_of
from ..kernel.mountinfo import MountEntry

#: The branch limit of an aufs built with the default CONFIG_AUFS_BRANCH_MAX_127.
DEFAULT_BRANCH_MAX = 127
#: Branch permissions as aufs prints them: the container's layer, and every layer below it.
PERM_RW = "rw"
PERM_RO_WH = "ro+wh"
#: Characters the aufs option syntax cannot carry in a branch path (``:`` separates branches, ``=``
#: starts the permission, ``,`` separates options, a newline ends a sysfs line).
FORBIDDEN = (":", "=", ",", "\n")
#: udba (user's direct branch access) modes; ``reval`` is the module's default and is not shown.
UDBA_MODES = ("reval", "none", "notify")
UDBA_DEFAULT = "reval"


@dataclass(frozen=True)
class Branch:
    """One aufs branch: a directory and its permission (``rw``, ``ro+wh``...)."""

    path: str
    perm: str

    def __str__(self) -> str:
        return f"{self.path}={self.perm}"


@dataclass(frozen=True)
class AufsOptions:
    """The non-branch mount options: chosen from what the module accepts (see the driver's probe)."""

    dio: bool = False
    dirperm1: bool = False
    xino: str | None = None
    udba: str = UDBA_DEFAULT

    def render(self) -> list[str]:
        """The options as mount(2) data items, in a fixed order."""
        out = []
        if self.dio:
            out.append("dio")
        if self.xino:
            out.append(f"xino={self.xino}")
        if self.dirperm1:
            out.append("dirperm1")
        if self.udba != UDBA_DEFAULT:
            out.append(f"udba={self.udba}")
        return out

    def shown(self) -> list[str]:
        """The options aufs lists in /proc/mounts for this choice (it hides defaults, and xino with sysfs)."""
        return [o for o in self.render() if not o.startswith("xino=")]


@dataclass(frozen=True)
class AufsPlan:
    """One aufs mount: ``branches`` top first; ``data`` for mount(2), ``appends`` for each MS_REMOUNT."""

    target: str
    branches: tuple[Branch, ...]
    options: AufsOptions
    read_only: bool
    data: str
    appends: tuple[str, ...] = field(default=())

    def calls(self) -> list[tuple[bool, str]]:
        """Every mount(2) call in order, as (is_remount, data)."""
        return [(False, self.data), *((True, a) for a in self.appends)]


def probe_data(base: str, xino: str | None) -> dict[str, str]:
    """The mount data that probes each option on a one-branch aufs of ``base``.

    ``dio`` and ``dirperm1`` are tried with ``noxino``: without an ``xino=`` the module opens its default
    xino (``<branch>/.aufs.xino``, or ``/tmp/.aufs.xino`` when the branch filesystem cannot hold one, e.g.
    xfs or btrfs) O_EXCL and refuses an unfit filesystem, and that failure would read as the option's.
    ``xino`` is tried alone (Docker's probe gives ``xino=/dev/shm/aufs.xino`` for the same reason)."""
    out = {"dio": f"dio,noxino,br:{base}=rw", "dirperm1": f"dirperm1,noxino,br:{base}=rw"}
    if xino:
        out["xino"] = f"xino={xino},br:{base}=rw"
    return out


def check_branch_path(path: str) -> None:
    """Refuse a branch path aufs cannot take: relative, or holding ``:``, ``=``, ``,`` or a newline."""
    if not os.path.isabs(path):
        raise BadBranchPath(f"aufs branch {path!r} is not an absolute path")
    for c in FORBIDDEN:
        if c in path:
            raise BadBranchPath(f"aufs branch {path!r} contains {c!r}, which the aufs option syntax cannot carry")


def layer_branches(top: str, lowers: list[str], *, read_only: bool) -> list[Branch]:
    """The branch list of a layer: its own dir on top (``rw``, or ``ro+wh`` when read-only), then its
    parents' dirs nearest first, each ``ro+wh`` (read-only, whiteouts honoured)."""
    return [Branch(top, PERM_RO_WH if read_only else PERM_RW), *(Branch(p, PERM_RO_WH) for p in lowers)]


def plan_aufs(target: str, branches: list[Branch], options: AufsOptions, *, read_only: bool,
              page_size: int = 4096, branch_max: int = DEFAULT_BRANCH_MAX) -> AufsPlan:
    """Plan the mount of ``branches`` (top first) at ``target``.

    Each mount(2) data string holds at most ``page_size - 1`` bytes (the page minus the NUL). The first
    carries the options and as many branches as fit; the rest go into ``append:`` remounts, packed as
    many per call as fit. Past ``branch_max`` branches, or with a bad path, nothing is planned.
    """
    if not branches:
        raise MountFailed(f"aufs at {target} needs at least one branch")
    if len(branches) > branch_max:
        raise TooManyLayers(f"{len(branches)} branches exceed the aufs branch limit of {branch_max} "
                            f"(CONFIG_AUFS_BRANCH_MAX_{branch_max})")
    if options.udba not in UDBA_MODES:
        raise MountFailed(f"unknown aufs udba mode {options.udba!r} (known: {', '.join(UDBA_MODES)})")
    for b in branches:
        check_branch_path(b.path)
    if options.xino:
        check_branch_path(options.xino)
    limit = page_size - 1
    head = ",".join(options.render())
    data = (head + "," if head else "") + "br:" + str(branches[0])
    if _size(data) > limit:
        raise MountFailed(f"aufs branch {branches[0].path!r} is too long for one page of mount data ({limit} bytes)")
    index = 1
    while index < len(branches) and _size(data) + 1 + _size(str(branches[index])) <= limit:
        data += ":" + str(branches[index])
        index += 1
    appends: list[str] = []
    current = ""
    for b in branches[index:]:
        item = f"append:{b}"
        if _size(item) > limit:
            raise MountFailed(f"aufs branch {b.path!r} is too long for one page of mount data ({limit} bytes)")
        if current and _size(current) + 1 + _size(item) > limit:
            appends.append(current)
            current = ""
        current = f"{current},{item}" if current else item
    if current:
        appends.append(current)
    return AufsPlan(target, tuple(branches), options, read_only, data, tuple(appends))


def planned_branches(data_items: list[str]) -> list[Branch]:
    """The branches a sequence of mount data strings adds, in order (the inverse of :func:`plan_aufs`).

    Reads ``br:``/``br=`` and ``append:``/``append=`` (the module takes either separator)."""
    out: list[Branch] = []
    for data in data_items:
        for item in data.split(","):
            key, value = _option(item)
            if key == "br":
                out += parse_branch_list(value, first=not out)
            elif key == "append":
                out.append(parse_branch(value, first=not out))
    return out


def _option(item: str) -> tuple[str, str]:
    """``br:x``/``br=x`` -> ("br", "x"), the same for ``append``; ("", "") for any other option."""
    for name in ("br", "append"):
        if item.startswith(name) and item[len(name):len(name) + 1] in (":", "="):
            return name, item[len(name) + 1:]
    return "", ""


def parse_branch_list(text: str, *, first: bool = True) -> list[Branch]:
    """``<dir>=<perm>:<dir>=<perm>...`` (a ``br:`` value) -> branches, top first. As aufs does, the list
    ends at the first empty item (a trailing ``:`` is harmless); ``first``: the list starts at branch 0."""
    out: list[Branch] = []
    for item in text.split(":"):
        if not item:
            break
        out.append(parse_branch(item, first=first and not out))
    return out


def parse_branch(text: str, *, first: bool = False) -> Branch:
    """``<path>=<perm>`` (as in mount data, sysfs ``br<N>`` and the ``br:`` option) -> :class:`Branch`.

    A branch given without ``=`` gets aufs's default: ``rw`` for the first branch (``first``), ``ro``
    for every other.
    """
    path, sep, perm = text.rpartition("=")
    if not sep:
        return Branch(text, PERM_RW if first else "ro")
    return Branch(path, perm)


def compare_branches(want: list[Branch], got: list[Branch]) -> list[str]:
    """Differences between planned and actual branch lists (path, order, permission)."""
    problems = []
    if len(got) != len(want):
        problems.append(f"the kernel shows {len(got)} branches; the plan has {len(want)}")
    for i, (w, g) in enumerate(zip(want, got, strict=False)):
        if os.path.normpath(w.path) != os.path.normpath(g.path):
            problems.append(f"branch {i} is {g.path} (planned {w.path})")
            break  # one shift makes every later index differ; the first tells the story
        if w.perm != g.perm:
            problems.append(f"branch {i} ({g.path}) is {g.perm} (planned {w.perm})")
    return problems


def check_aufs(plan: AufsPlan, entry: MountEntry | None, info: SiInfo | None) -> list[str]:
    """Differences between the plan and the kernel's view: the mount (``entry``, from mountinfo or
    statmount) and the module's sysfs record of it (``info``, from ``si_<id>``). Empty: they agree."""
    if entry is None:
        return [f"no mount at {plan.target}"]
    if entry.fs_type != "aufs":
        article = "an" if entry.fs_type[:1] in "aeiou" else "a"
        return [f"{plan.target} is {article} {entry.fs_type} mount, not aufs"]
    problems: list[str] = []
    si = si_of(entry.options)
    got: list[Branch] | None = None
    if info is not None:
        if si is not None and info.si != si:
            problems.append(f"sysfs record si_{info.si} is not the mount's si={si}")
        if info.branches:
            got = [Branch(b.path, b.perm) for b in info.branches]
            problems += _sysfs_branch_problems(info)
        if plan.options.xino and info.xi_path != plan.options.xino:
            problems.append(f"xino is {info.xi_path or 'off'} (planned {plan.options.xino})")
    if got is None:  # no sysfs, or the module loaded with brs=0: the branches are a br: option
        shown = br_option(entry.options)
        if shown is None:
            where = f"si_{si}" if si else "the mount (no si= option)"
            said = (f"sysfs has no record of {where}" if info is None else
                    f"sysfs lists no br<N> under {where} (module parameter brs=0?) and the mount shows no br:")
            return [*problems, f"{said}; the branch list cannot be checked"]
        got = parse_branch_list(shown)
    problems += compare_branches(list(plan.branches), got)
    for opt in plan.options.shown():
        if opt not in entry.options:
            problems.append(f"option {opt} is missing from the mount")
    if plan.options.xino and "noxino" in entry.options:
        problems.append(f"the mount runs with noxino (planned xino={plan.options.xino})")
    if entry.read_only != plan.read_only:
        problems.append(f"mounted {'read-only' if entry.read_only else 'read-write'} "
                        f"(planned {'read-only' if plan.read_only else 'read-write'})")
    return problems


def _sysfs_branch_problems(info: SiInfo) -> list[str]:
    """What is wrong with sysfs's own record: a missing ``br<N>``, a missing or repeated ``brid<N>``."""
    problems = []
    if info.gaps():
        problems.append("sysfs skips branch " + ", ".join(f"br{i}" for i in info.gaps()))
    missing_id = [b.index for b in info.branches if b.brid is None]
    if missing_id:
        problems.append("sysfs has no brid for branch " + ", ".join(str(i) for i in missing_id))
    ids = [b.brid for b in info.branches if b.brid is not None]
    if len(set(ids)) != len(ids):
        problems.append(f"sysfs shows duplicate branch ids {sorted(ids)}")
    return problems


def _size(s: str) -> int:
    return len(s.encode())
