"""aufs: Docker's aufs layout, union-mounted with the aufs module and verified through /sys/fs/aufs.

Layout under ``<root>/aufs``::

    diff/<id>/      the layer's own content (a branch; the rw branch when it is on top)
    layers/<id>     the layer's ancestors, nearest first, one id a line (empty for a base layer)
    mnt/<id>/       the union mount point

A layer with ancestors is union-mounted on ``get``; a layer without any, image or container layer, is its
diff dir (nothing to unite), as Docker's aufs ``Get`` does. The layer's own branch is on top,
``br:<diff/id>=rw:<diff/parent>=ro+wh:...``, so a fresh layer can be filled through its mount (Docker's
aufs always mounted its top ``=rw``). A read-only layer -- an image layer that others already stack on,
whose content must no longer change under them -- mounts every branch ``ro+wh`` and ``MS_RDONLY``.
After each mount the branch list the module reports under ``si_<id>`` must equal the plan.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from functools import cached_property
from typing import ClassVar

from plumbum import local

from ..driver import Driver, register
from ..errors import LayerInUse, MountFailed, TooManyLayers
from ..kernel import mountinfo, probe, syscalls
from ..kernel.aufs_sysfs import DEFAULT_SYSFS, AufsSysfs, si_of
from ..kernel.unmount import unmount
from ..plan.aufs import (
    DEFAULT_BRANCH_MAX,
    FORBIDDEN,
    UDBA_DEFAULT,
    UDBA_MODES,
    AufsOptions,
    AufsPlan,
    Branch,
    check_aufs,
    check_branch_path,
    layer_branches,
    plan_aufs,
    probe_data,
)
from ..store.files import read_json, read_text, write_atomic, write_json
from ..store.runtime import boot_id

log = logging.getLogger(__name__)

NO_AUFS = "kernel has no aufs (not in /proc/filesystems)"
#: tmpfs directories for the xino file, first found wins (Docker used /dev/shm/aufs.xino; here one per root).
XINO_DIRS = ("/dev/shm", "/run")
XINO_NAME = "aufs.xino"


@register
class Aufs(Driver):
    """Layers as aufs branches; one union mount per ``get`` of a layer with parents or of an rw layer."""

    name: ClassVar[str] = "aufs"
    whiteout_format: ClassVar[str] = "aufs"
    apply_size_is_dir_size: ClassVar[bool] = True
    driver_options: ClassVar[dict[str, tuple[str, ...] | None]] = {"aufs.udba": UDBA_MODES}
    #: Where the module keeps its sysfs tree (a parameter so tests can point it at a fixture tree).
    sysfs_root: ClassVar[str] = DEFAULT_SYSFS

    @classmethod
    def path_reason(cls, root: str) -> str | None:
        bad = [c for c in FORBIDDEN if c in os.path.realpath(root)]
        return f"the root path contains {bad[0]!r}, which aufs branch options cannot carry" if bad else None

    @classmethod
    def unsupported_reason(cls, root: str) -> str | None:
        if not probe.has_filesystem("aufs"):
            return NO_AUFS
        why = backing_fs_reason(probe.backing_fs(root), AufsSysfs(cls.sysfs_root).config())
        return f"{why} (at {root}); use --driver vfs" if why else None

    def setup(self) -> None:
        for d in (self._diff_root, self._layers_root, self._mnt_root):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.sysfs = AufsSysfs(self.sysfs_root)

    # -- layout ---------------------------------------------------------------------------------
    @property
    def _diff_root(self) -> str:
        return os.path.join(self.home, "diff")

    @property
    def _layers_root(self) -> str:
        return os.path.join(self.home, "layers")

    @property
    def _mnt_root(self) -> str:
        return os.path.join(self.home, "mnt")

    def layers_file(self, layer_id: str) -> str:
        """``layers/<id>``: the layer's ancestors, nearest first."""
        return os.path.join(self._layers_root, layer_id)

    def layer_path(self, layer_id: str) -> str:
        return os.path.join(self._diff_root, layer_id)

    def diff_path(self, layer_id: str) -> str:
        return os.path.join(self._diff_root, layer_id)

    def mount_point(self, layer_id: str) -> str:
        return os.path.join(self._mnt_root, layer_id)

    def rootfs_path(self, layer_id: str) -> str:
        return self.mount_point(layer_id) if self.needs_mount(layer_id) else self.diff_path(layer_id)

    def needs_mount(self, layer_id: str) -> bool:
        """True when ``layers/<id>`` names ancestors: as Docker's aufs Get, a layer without any (a
        container's on ``scratch`` too) is its diff dir, with nothing to unite."""
        return bool(self.layer_chain(layer_id))

    def read_only(self, layer_id: str) -> bool:
        """True for an image layer with children: its branch is ``ro+wh`` even on top, and it mounts read-only."""
        return not self.is_rw(layer_id) and bool(self.children(layer_id))

    def layer_chain(self, layer_id: str) -> list[str]:
        """The ids in ``layers/<id>`` (nearest first); the metadata's parent chain when the file is gone."""
        text = read_text(self.layers_file(layer_id))
        if text is None:
            return self.ancestors(layer_id)
        return [line.strip() for line in text.splitlines() if line.strip()]

    def branches(self, layer_id: str) -> list[Branch]:
        """The layer's aufs branches, top first, as absolute real paths."""
        real = os.path.realpath(self._diff_root)
        return layer_branches(os.path.join(real, layer_id), [os.path.join(real, a) for a in self.layer_chain(layer_id)],
                              read_only=self.read_only(layer_id))

    # -- create / remove ------------------------------------------------------------------------
    def build_layer(self, stage: str, layer_id: str, parent: str | None, rw: bool) -> None:
        chain = [parent, *self.layer_chain(parent)] if parent is not None else []
        if len(chain) + 1 > self.branch_max:
            raise TooManyLayers(f"layer {layer_id} would need {len(chain) + 1} aufs branches; the module takes "
                                f"at most {self.branch_max}")
        os.mkdir(os.path.join(stage, "diff"), 0o755)
        os.mkdir(os.path.join(stage, "mnt"), 0o755)
        write_atomic(os.path.join(stage, "layers"), "".join(f"{a}\n" for a in chain), 0o644)

    def quota_dir(self, stage: str) -> str:
        return os.path.join(stage, "diff")

    def publish_layer(self, stage: str, layer_id: str, parent: str | None) -> None:
        """``layers/<id>`` and ``mnt/<id>`` first, then the one rename of ``diff/<id>`` that makes the layer
        exist. A crash in between leaves only entries without a diff dir, which cleanup removes."""
        layers, mnt = self.layers_file(layer_id), self.mount_point(layer_id)
        try:
            os.replace(os.path.join(stage, "layers"), layers)
            os.rename(os.path.join(stage, "mnt"), mnt)
            os.rename(os.path.join(stage, "diff"), self.layer_path(layer_id))
        except BaseException:
            if not os.path.isdir(self.layer_path(layer_id)):
                self._unlink(layers)
                _rmdir(mnt)
            raise
        _rmdir(stage)

    def unpublish_layer(self, layer_id: str, trash: str) -> None:
        mnt = self.mount_point(layer_id)
        if os.path.ismount(mnt):
            raise LayerInUse(f"layer {layer_id} is still mounted at {mnt} (no reference holds it; run cleanup)")
        os.mkdir(trash, 0o700)
        os.rename(self.layer_path(layer_id), os.path.join(trash, "diff"))
        if os.path.lexists(self.layers_file(layer_id)):
            os.rename(self.layers_file(layer_id), os.path.join(trash, "layers"))
        if os.path.isdir(mnt):
            os.rename(mnt, os.path.join(trash, "mnt"))

    def cleanup_backend(self) -> None:
        """Drop ``layers/<id>`` and ``mnt/<id>`` entries that have no ``diff/<id>`` (a crash mid-publish)."""
        for name in os.listdir(self._layers_root):
            if ".tmp-" in name or not os.path.isdir(self.layer_path(name)):
                self._unlink(os.path.join(self._layers_root, name))
        for name in os.listdir(self._mnt_root):
            path = os.path.join(self._mnt_root, name)
            if not os.path.isdir(self.layer_path(name)) and not os.path.ismount(path):
                _rmdir(path)

    # -- what the module accepts ----------------------------------------------------------------
    @cached_property
    def branch_max(self) -> int:
        """The module's branch limit (from its sysfs ``config``; 127, the default build, otherwise)."""
        return self.sysfs.branch_max() or DEFAULT_BRANCH_MAX

    @cached_property
    def mount_options(self) -> AufsOptions:
        """``dio``, ``xino=`` on tmpfs and ``dirperm1`` where a probe mount accepts them, and ``udba``.

        The probe runs once per boot; its answer is kept in ``<home>/.aufs-probe`` so every process (and
        ``verify``) plans the same options.
        """
        udba = self.options.get("aufs.udba", UDBA_DEFAULT)
        cache = os.path.join(self.home, ".aufs-probe")
        found = read_json(cache, {})
        if found.get("boot_id") != boot_id():
            with self.lock.held():
                found = {"boot_id": boot_id(), **self._probe_options()}
                write_json(cache, found)
        return AufsOptions(dio=bool(found.get("dio")), dirperm1=bool(found.get("dirperm1")),
                           xino=found.get("xino") or None, udba=udba)

    def _probe_options(self) -> dict[str, object]:
        """Mount a one-branch aufs with each candidate option; keep the options the module takes."""
        xino = _tmpfs_xino(self.home)
        _clear_stale_xino(xino)
        work = tempfile.mkdtemp(prefix="aufs-probe.", dir=self._staging)
        base, target = os.path.join(work, "base"), os.path.join(work, "mnt")
        os.mkdir(base)
        os.mkdir(target)

        def accepts(data: str) -> bool:
            try:
                syscalls.mount("none", target, "aufs", 0, data)
            except OSError:
                return False
            unmount(target)
            return True

        try:
            found = {name: accepts(data) for name, data in probe_data(base, xino).items()}
            return {"dio": found["dio"], "dirperm1": found["dirperm1"], "xino": xino if found.get("xino") else None}
        finally:
            if os.path.ismount(target):
                syscalls.umount2(target, syscalls.MNT_DETACH)
            shutil.rmtree(work, ignore_errors=True)

    # -- plan / execute / verify ----------------------------------------------------------------
    def plan(self, layer_id: str) -> AufsPlan:
        """The aufs mount ``get`` would make for this layer (reads the layout, mounts nothing)."""
        branches = self.branches(layer_id)
        for b in branches:  # refuse bad paths before anything touches the kernel, the option probe included
            check_branch_path(b.path)
        return plan_aufs(self.mount_point(layer_id), branches, self.mount_options,
                         read_only=self.read_only(layer_id), page_size=probe.page_size(),
                         branch_max=self.branch_max)

    def mount_layer(self, layer_id: str, plan: object | None = None) -> int:
        plan = plan if isinstance(plan, AufsPlan) else self.plan(layer_id)
        os.makedirs(plan.target, mode=0o755, exist_ok=True)
        ro = syscalls.MS_RDONLY if plan.read_only else 0
        _clear_stale_xino(plan.options.xino)
        for n, (remount, data) in enumerate(plan.calls()):
            try:
                syscalls.mount("none", plan.target, "aufs", ro | (syscalls.MS_REMOUNT if remount else 0), data)
            except OSError as e:
                if n:
                    _detach(plan.target)
                step = f"remount {n} of {len(plan.appends)} (append)" if remount else "mount"
                raise MountFailed(f"layer {layer_id}: aufs {step} at {plan.target} failed: "
                                  f"{e.strerror or e}") from None
        entry = mountinfo.mount_at(plan.target)
        problems = self._check(plan, entry)
        if problems:
            _detach(plan.target)
            raise MountFailed(f"layer {layer_id}: the kernel's aufs at {plan.target} does not match the plan "
                              f"({'; '.join(problems)}); unmounted")
        assert entry is not None
        return entry.mnt_id

    def unmount_layer(self, layer_id: str) -> bool:
        """``auplink <mnt> flush`` (settles pseudo-links into the rw branch) when aufs-tools is there, then
        umount2 with EBUSY retries. False when nothing was mounted."""
        target = self.mount_point(layer_id)
        if mountinfo.current_mount_id(target) is None:
            return False
        auplink = shutil.which("auplink")
        if auplink:
            code, _out, err = local[auplink][target, "flush"].run(retcode=None)
            if code != 0:
                log.warning("auplink %s flush exited %s: %s", target, code, err.strip())
        return unmount(target)

    def check_mount(self, layer_id: str, entry: mountinfo.MountEntry | None) -> list[str]:
        return self._check(self.plan(layer_id), entry)

    def _check(self, plan: AufsPlan, entry: mountinfo.MountEntry | None) -> list[str]:
        si = si_of(entry.options) if entry is not None else None
        try:
            info = self.sysfs.read(si) if si else None
        except OSError as e:  # EBUSY past the retries, E2BIG for a path longer than a page: drift, not a crash
            return [f"cannot read {self.sysfs.si_dir(si or '')}: {e.strerror or e}"]
        return check_aufs(plan, entry, info)

    # -- reporting ------------------------------------------------------------------------------
    def metadata(self, layer_id: str) -> dict[str, str]:
        """Docker's aufs GetMetadata returns nil: no GraphDriver data (the branches are :meth:`plan`'s)."""
        self._require(layer_id)
        return {}

    def status(self) -> list[tuple[str, str]]:
        """Docker's aufs order first: Root Dir, Backing Filesystem, Dirs, Dirperm1 Supported; then ours."""
        pairs = super().status()
        return [p for p in pairs if p[0] == "Root Dir"] + [p for p in pairs if p[0] != "Root Dir"]

    def layer_files(self) -> int:
        """How many files ``layers/`` holds: what Docker's aufs Status reports as Dirs."""
        with os.scandir(self._layers_root) as it:
            return sum(1 for e in it if not e.is_dir(follow_symlinks=False))

    def backend_status(self) -> list[tuple[str, str]]:
        opts = self.mount_options
        return [("Root Dir", self.home), ("Dirs", str(self.layer_files())),
                ("Dirperm1 Supported", str(opts.dirperm1).lower()),
                ("Mount Options", ",".join(opts.render()) or "(module defaults)"),
                ("Branch Limit", str(self.branch_max)),
                ("Verified with", f"{self.sysfs.root}/si_<id>/br*, brid*, xi_path"),
                ("auplink", shutil.which("auplink") or "not installed (aufs-tools)")]


def backing_fs_reason(fs: str, config: dict[str, str]) -> str | None:
    """Why aufs cannot keep its branches on filesystem ``fs`` (Docker's name), or None.

    Docker's aufs driver refuses aufs, btrfs and ecryptfs; the module itself refuses ecryptfs and aufs
    branches, and ramfs ones unless built with CONFIG_AUFS_BR_RAMFS (``config``: its sysfs ``config``).
    overlayfs is refused here too: a union of a union."""
    if fs in ("aufs", "overlayfs"):
        return f"backing filesystem {fs} cannot hold aufs branches"
    if fs in ("btrfs", "ecryptfs"):
        return f"aufs is not supported over {fs} (Docker's aufs driver refuses it)"
    if fs == "ramfs" and config.get("CONFIG_AUFS_BR_RAMFS") != "y":
        return "the aufs module takes no ramfs branch (it was not built with CONFIG_AUFS_BR_RAMFS)"
    return None


def _tmpfs_xino(home: str) -> str | None:
    """``<tmpfs dir>/aufs.<root hash>.xino`` in the first of :data:`XINO_DIRS` on tmpfs, else None (the
    module's default). One name per root: aufs creates the file O_EXCL and unlinks it at once, and this
    root's lock serialises its own mounts, so the name cannot collide."""
    tag = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:12]
    for d in XINO_DIRS:
        try:
            if os.path.isdir(d) and probe.backing_fs(d) == "tmpfs":
                return os.path.join(os.path.realpath(d), XINO_NAME.replace(".", f".{tag}.", 1))
        except OSError:
            continue
    return None


def _clear_stale_xino(path: str | None) -> None:
    """Remove a leftover xino file (aufs unlinks its own at once; one still there would make it fail EEXIST)."""
    if path and os.path.isfile(path) and not os.path.islink(path):
        os.unlink(path)


def _detach(target: str) -> None:
    try:
        syscalls.umount2(target, syscalls.MNT_DETACH)
    except OSError:
        pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
