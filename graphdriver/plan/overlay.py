"""Pure planning and checking of overlay mounts: no I/O here.

A plan says exactly what the kernel is asked for; :func:`check_overlay` compares the kernel's view of a
mount (a :class:`~graphdriver.kernel.mountinfo.MountEntry`) with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from ..errors import MountFailed, TooManyLayers
from ..kernel.mountinfo import MountEntry
from ..kernel.statcalls import leads_with

#: The kernel's overlayfs stack limit (OVL_MAX_STACK): lower layers in one mount.
OVL_MAX_STACK = 500
#: fsconfig(2) takes string values of at most this many bytes (longer paths go by file descriptor).
FSCONFIG_VALUE_MAX = 255
_FORBIDDEN = (",", ":", "\n", "\\")


@dataclass(frozen=True)
class OverlayPlan:
    """One overlay mount: ``lowers`` nearest first, as passed to the kernel.

    ``api`` is ``fsconfig`` (one ``lowerdir+`` per layer, by path or by fd) or ``mount`` (mount(2) with
    one page of option data). Relative paths are resolved from ``cwd`` when it is set.
    """

    target: str
    lowers: tuple[str, ...]
    upper: str | None
    work: str | None
    api: str
    cwd: str | None = None
    extra: tuple[str, ...] = ()
    #: The same lower layers spelled the other way (absolute dirs for ``l/`` links and back), or ().
    same_lowers: tuple[str, ...] = ()
    #: Where the other spelling's relative paths start (an absolute plan has no ``cwd``).
    relative_to: str | None = None
    #: A directory below ``cwd`` the relative paths start from instead (the layer's lower index).
    subdir: str | None = None
    #: The layer's lower index (below ``cwd`` or ``relative_to``), used or not: checks look there too.
    index: str | None = None

    def mount_data(self) -> str:
        """The mount(2) option string."""
        parts = [f"lowerdir={':'.join(self.lowers)}"]
        if self.upper:
            parts += [f"upperdir={self.upper}", f"workdir={self.work}"]
        return ",".join(parts + list(self.extra))

    @cached_property
    def mount_args(self) -> tuple[bytes, bytes]:
        """(target, option data) as mount(2) takes them."""
        return os.fsencode(self.target), os.fsencode(self.mount_data())

    @cached_property
    def fs_params(self) -> tuple[tuple[bytes, bytes | str | None], ...]:
        """The filesystem context's parameters in order, as fsconfig takes them: (key, value) with a
        bytes value by string, a str value (a path too long for a string) by file descriptor, None a flag.
        """
        params: list[tuple[bytes, bytes | str | None]] = [(b"source", b"overlay")]
        for p in self.lowers:
            raw = os.fsencode(p)
            params.append((b"lowerdir+", raw if len(raw) <= FSCONFIG_VALUE_MAX else p))
        if self.upper:
            params += [(b"upperdir", os.fsencode(self.upper)), (b"workdir", os.fsencode(self.work or ""))]
        for opt in self.extra:
            key, eq, value = opt.partition("=")
            params.append((os.fsencode(key), os.fsencode(value) if eq else None))
        return tuple(params)

    @cached_property
    def shown_lowers(self) -> bytes:
        """The lowers as statmount's option array shows them when the kernel took them as planned, each
        option after a NUL (the one ending the option before it)."""
        if self.api == "fsconfig":
            return b"".join(b"\0lowerdir+=" + os.fsencode(p) for p in self.lowers) + b"\0"
        return b"\0lowerdir=" + os.fsencode(":".join(self.lowers)) + b"\0"

    @cached_property
    def shown_prefix(self) -> bytes:
        """The options as overlay shows them first when it took the plan: the lowers, then the upper and
        work dir, each ending in a NUL."""
        return self.shown_lowers[1:] + b"".join(option[1:] for _, option in self.shown_dirs if option is not None)

    @cached_property
    def shown_key(self) -> bytes:
        """The lowers' key as it starts an option after a NUL (``\\0lowerdir+=`` or ``\\0lowerdir=``)."""
        return self.shown_lowers[:self.shown_lowers.index(b"=") + 1]

    @cached_property
    def shown_dirs(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """(key as the option array shows it after a NUL, the whole planned option or None) for the upper
        and work dir."""
        return tuple((b"\0" + key + b"=", None if value is None else b"\0" + key + b"=" + os.fsencode(value) + b"\0")
                     for key, value in ((b"upperdir", self.upper), (b"workdir", self.work)))

    @property
    def start(self) -> str | None:
        """The directory relative paths are resolved from (None: every path is absolute)."""
        return os.path.join(self.cwd, self.subdir) if self.cwd and self.subdir else self.cwd

    def resolve(self, path: str) -> str:
        """An absolute form of a (possibly relative) planned path."""
        base = self.start or self.relative_to
        return path if os.path.isabs(path) or not base else os.path.join(base, path)


def _check_paths(paths: list[str]) -> None:
    joined = "\0".join(paths)  # one scan per character over all paths; the culprit is looked up on a hit
    if not any(c in joined for c in _FORBIDDEN):
        return
    for p in paths:
        bad = [c for c in _FORBIDDEN if c in p]
        if bad:
            raise MountFailed(f"path {p!r} contains {bad[0]!r}, which overlay mount options cannot carry")


def index_names(count: int) -> list[str]:
    """The names in a lower index of ``count`` layers, nearest first: 0, 1, ... in hex."""
    return [f"{i:x}" for i in range(count)]


def index_links(short_lowers: list[str], index: str) -> dict[str, str]:
    """What a lower index holds: each name's symlink target, the ``l/`` link relative to the index dir
    (both relative to the same ``cwd``)."""
    up = os.path.relpath(".", index)
    return {name: os.path.join(up, link) for name, link in zip(index_names(len(short_lowers)), short_lowers,
                                                                 strict=True)}


def plan_overlay(target: str, lowers: list[str], upper: str | None, work: str | None, *, api: str,
                 short_lowers: list[str] | None = None, cwd: str | None = None,
                 page_size: int = 4096, extra: tuple[str, ...] = (), relative: bool = False,
                 index: str | None = None) -> OverlayPlan:
    """Plan an overlay mount of ``lowers`` (absolute, nearest first) under ``upper``/``work``.

    ``api``: ``mount`` (mount(2): the whole option data in one page, minus the NUL), ``fsconfig``
    (fsopen/fsconfig ``lowerdir+``, one call per lower, any number up to :data:`OVL_MAX_STACK`) or
    ``auto`` (mount(2) while the data fits a page, as Docker does — one syscall — else fsconfig).
    Paths are absolute while they fit one page, else ``short_lowers`` relative to ``cwd`` (Docker's
    ``l/`` links), which the kernel parses, looks up and shows back (in every mountinfo read and the
    statmount that verifies the mount) at a third of the length. What cannot be carried raises
    :class:`TooManyLayers` before anything is mounted; so does anything past :data:`OVL_MAX_STACK`.
    ``relative`` (with ``short_lowers`` and ``cwd``): the short form at any size, upper and work relative
    to ``cwd`` too — for an executor that resolves them through a detached copy of ``cwd``'s mount
    (:class:`~graphdriver.kernel.overlay.LayerView`).
    ``index`` (with ``short_lowers`` and ``cwd``): a directory below ``cwd`` that holds (or will hold:
    :func:`index_links`) one symlink per lower named 0, 1, ... in hex. When even the ``l/`` links do not
    fit a page, mount(2) takes the lowers by those names, relative to the index (500 lowers: 2 KB of
    options instead of 14.5 KB over 500 fsconfig calls, and a tenth of the text for every reader of the
    mount table).
    """
    if not lowers:
        raise MountFailed(f"overlay at {target} needs at least one lower layer")
    if len(lowers) > OVL_MAX_STACK:
        raise TooManyLayers(f"{len(lowers)} lower layers: the kernel's overlayfs takes at most {OVL_MAX_STACK}")
    _check_paths([*lowers, *(p for p in (upper, work) if p)])
    if api not in ("fsconfig", "mount", "auto"):
        raise ValueError(f"unknown mount api {api!r}")
    limit = page_size - 1
    short_ok = short_lowers is not None and cwd is not None
    relative = relative and short_ok
    same = tuple(short_lowers or ())  # the same layers spelled the other way, for checking

    def absolute(how: str) -> OverlayPlan:
        return OverlayPlan(target, tuple(lowers), upper, work, how, None, extra, same, cwd if same else None,
                           index=index)

    def short(how: str, *, dirs_too: bool = True) -> OverlayPlan:
        assert short_lowers is not None and cwd is not None

        def rel(p: str | None) -> str | None:
            return os.path.relpath(p, cwd) if p and dirs_too else p

        return OverlayPlan(target, tuple(short_lowers), rel(upper), rel(work), how, cwd, extra, tuple(lowers),
                           index=index)

    def indexed(how: str) -> OverlayPlan:
        assert short_lowers is not None and cwd is not None and index is not None
        start = os.path.join(cwd, index)

        def rel(p: str | None) -> str | None:
            return os.path.relpath(p, start) if p else p

        return OverlayPlan(target, tuple(index_names(len(lowers))), rel(upper), rel(work), how, cwd, extra,
                           tuple(lowers), subdir=index, index=index)

    if api != "fsconfig":
        size = 0
        spellings = ([] if relative else [absolute]) + ([short] if short_ok else []) + \
            ([indexed] if short_ok and index else [])
        for spell in spellings:  # the first that fits a page
            plan = spell("mount")
            size = len(plan.mount_data().encode())
            if size <= limit:
                return plan
        if api == "mount":
            raise TooManyLayers(f"{len(lowers)} lower layers need {size} bytes of mount data; mount(2) takes "
                                f"{limit} on this kernel (no fsconfig lowerdir+ here)")
    if relative:
        return short("fsconfig")
    if not short_ok or sum(len(p) + 1 for p in lowers) <= limit:
        return absolute("fsconfig")
    # Only the lowers go short: upper and work stay as docker inspect shows them.
    return short("fsconfig", dirs_too=False)


def kernel_lowers(entry: MountEntry) -> list[str]:
    """The lower layers the kernel reports for an overlay mount, nearest first."""
    plus = entry.option_values("lowerdir+")
    if plus:
        return plus
    legacy = entry.option_values("lowerdir")
    return legacy[0].split(":") if legacy else []


def check_overlay(plan: OverlayPlan, entry: MountEntry | None) -> list[str]:
    """Differences between the plan and the kernel's view of the mount (empty: they agree)."""
    if entry is None:
        return [f"no mount at {plan.target}"]
    problems = []
    if entry.fs_type != "overlay":
        problems.append(f"{plan.target} is a {entry.fs_type} mount, not overlay")
        return problems
    if plan.upper and entry.read_only:
        problems.append("mounted read-only although an upper dir was planned (the kernel dropped it)")
    if entry.option_blob and _shown_as_planned(plan, entry.option_blob):
        return problems
    got = kernel_lowers(entry)
    want = list(plan.lowers)
    if got != want and not _same_layers(plan, got):
        problems.append(f"lower layers differ: planned {len(want)}, kernel shows {len(got)}"
                        + (f" (first difference at #{_first_diff(want, got)})" if got else ""))
    for key, value in (("upperdir", plan.upper), ("workdir", plan.work)):
        shown = entry.option_values(key)
        if value is None:
            if shown:
                problems.append(f"unexpected {key}={shown[0]}")
        elif shown != [value] and [plan.resolve(s) for s in shown] != [plan.resolve(value)] and \
                [_real_layer(plan, s) for s in shown] != [os.path.realpath(plan.resolve(value))]:
            problems.append(f"{key} is {shown[0] if shown else 'missing'}; planned {value}")
    return problems


def _shown_as_planned(plan: OverlayPlan, blob: bytes) -> bool:
    """True when statmount's option array (``blob``) shows the planned lowers, upper and work dir byte
    for byte: the lowers as one run, each key nowhere else.

    Byte searches instead of decoding and comparing every option (500 lowers at most). False means
    "look closer" (the option-by-option comparison decides), never "they differ".
    """
    if plan.upper and leads_with(blob, plan.shown_prefix, plan.shown_key):
        return True  # as overlay shows them: the lowers, then upper and work (each once), and no more lowers
    blob = b"\0" + blob  # every option now starts after a NUL
    want, key = plan.shown_lowers, plan.shown_key
    at = blob.find(want)
    if at < 0 or blob.find(key) != at or blob.find(key, at + len(want) - 1) >= 0:
        return False
    for name, option in plan.shown_dirs:
        if blob.count(name) != (option is not None) or option is not None and option not in blob:
            return False
    return True


def _same_layers(plan: OverlayPlan, got: list[str]) -> bool:
    """``got`` names the planned lowers, spelled another way (a process with another setting, or a
    version without lower indexes, mounted it). Symlinks are read when the names alone disagree: the
    one place this module looks at the filesystem, on the slow path only."""
    if len(got) != len(plan.lowers):
        return False
    shown = [os.path.normpath(plan.resolve(p)) for p in got]
    if any(shown == [os.path.normpath(plan.resolve(p)) for p in want] for want in (plan.lowers, plan.same_lowers)
           if want):
        return True
    dirs = plan.lowers if plan.cwd is None else plan.same_lowers  # the absolute ones
    return [_real_layer(plan, p) for p in got] == [os.path.realpath(p) for p in dirs]


def _real_layer(plan: OverlayPlan, path: str) -> str:
    """Where a lower shown relative to some directory of the plan's (which one the mount's maker used is
    unknown: the index, the overlay2 dir) really is; reads symlinks."""
    if os.path.isabs(path):
        return os.path.realpath(path)
    bases = (plan.start, plan.cwd, plan.relative_to,
             os.path.join(plan.cwd or plan.relative_to or "", plan.index) if plan.index else None)
    for base in bases:
        if base and os.path.lexists(os.path.join(base, path)):
            return os.path.realpath(os.path.join(base, path))
    return path


def _first_diff(a: list[str], b: list[str]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
