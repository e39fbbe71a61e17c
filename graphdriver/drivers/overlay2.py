"""overlay2: Docker's on-disk layout, mounted with the kernel's overlayfs and verified afterwards.

Layout under ``<root>/overlay2``::

    l/<26-char link>  -> ../<id>/diff
    <id>/diff/        the layer's own content (the upper dir when it is on top)
    <id>/link         the short link name
    <id>/lower        l/A:l/B:...  (nearest parent first; absent for a base layer)
    <id>/work/        overlayfs work dir
    <id>/merged/      the union mount point
    <id>/committed    present once the layer has a child
    <id>/lowers/      0, 1, ... -> ../../l/<link>: the lower index, made at the first mount of a layer whose
                      ``l/`` links do not fit one page of mount options (ours, not Docker's)
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import ClassVar

from ..driver import Driver, register
from ..errors import MountFailed, StorageOptUnsupported, TooManyLayers
from ..ids import short_link_id
from ..kernel import mountinfo, probe, quota, statcalls, syscalls
from ..kernel.overlay import LayerView, mount_overlay, open_overlay
from ..kernel.quickmount import QuickMount
from ..mounts import MountState
from ..plan.overlay import OVL_MAX_STACK, OverlayPlan, check_overlay, index_links, plan_overlay
from ..store.files import nearest_dir, read_text, touch, write_atomic

#: Mount options that name an overlay's layers: the driver's to set, never ``overlay2.mountopt``'s.
_LAYER_OPTIONS = frozenset({"lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+"})


@register
class Overlay2(Driver):
    """Layers as overlayfs upper/lower dirs, one union mount per ``get`` of a layer with parents."""

    name: ClassVar[str] = "overlay2"
    whiteout_format: ClassVar[str] = "overlay"
    apply_size_is_dir_size: ClassVar[bool] = True
    reserved_ids: ClassVar[frozenset[str]] = frozenset({"l"})
    driver_options: ClassVar[dict[str, tuple[str, ...] | None]] = {
        "overlay2.mount_api": ("auto", "fsconfig", "mount"), "overlay2.layer_view": ("true", "false"),
        "overlay2.mountopt": None, "overlay2.size": None,
        # dockerd 20.10's: skip its check for kernels before 4.0; nothing to skip here (the kernel's own
        # overlay is probed and every mount verified), taken so a daemon.json that names it still opens.
        "overlay2.override_kernel_check": ("1", "t", "T", "TRUE", "true", "True",
                                           "0", "f", "F", "FALSE", "false", "False")}

    @classmethod
    def check_options(cls, options: dict[str, str], root: str) -> None:
        """Also: ``overlay2.mountopt`` adds options but never names layers (each mount's own), and
        ``overlay2.size`` (the default size of a container's layer, as dockerd's) parses and has project
        quota to work with."""
        super().check_options(options, root)
        for opt in filter(None, options.get("overlay2.mountopt", "").split(",")):
            key = opt.partition("=")[0]
            if key in _LAYER_OPTIONS:
                raise StorageOptUnsupported(f"overlay2.mountopt cannot set {key}: the driver names each mount's "
                                            f"layers itself")
            if key == "ro":
                raise StorageOptUnsupported("overlay2.mountopt cannot set ro: a container's layer is written to")
            why = probe.overlay_refuses(opt)  # the kernel asked, nothing mounted: not at the first get
            if why is not None:
                raise StorageOptUnsupported(f"overlay2.mountopt: the kernel's overlay does not take {opt!r} "
                                            f"({why}); it takes overlay's own options, not mount flags")
        if "overlay2.size" in options:
            quota.parse_size(options["overlay2.size"])
            why = quota.project_quota_reason(nearest_dir(root))
            if why is not None:
                raise StorageOptUnsupported(f"overlay2: driver option overlay2.size needs project quota: {why}")

    def default_rw_size(self) -> int | None:
        size = self.options.get("overlay2.size")
        return quota.parse_size(size) if size else None

    @classmethod
    def path_reason(cls, root: str) -> str | None:
        bad = [c for c in (",", ":", "\n", "\\") if c in root]
        return f"the root path contains {bad[0]!r}, which overlay mount options cannot carry" if bad else None

    @classmethod
    def unsupported_reason(cls, root: str) -> str | None:
        if not probe.has_filesystem("overlay"):
            return "the kernel has no overlay filesystem (not in /proc/filesystems)"
        fs = probe.backing_fs(root)
        if fs in ("overlayfs", "aufs"):
            return f"backing filesystem {fs} at {root} cannot hold overlay upper dirs ({fs} on {fs}); use --driver vfs"
        if not probe.supports_d_type(root):
            return f"backing filesystem {fs} at {root} does not report d_type, which overlay needs; use --driver vfs"
        return None

    def setup(self) -> None:
        os.makedirs(self._links, mode=0o700, exist_ok=True)
        #: ``l/<link>`` -> absolute diff dir. A link is random, made once with its layer and removed with
        #: it, and its layer can only go once no layer lists it as a lower: safe to read once per object.
        self._link_dirs: dict[str, str] = {}
        #: layer id -> (identity of its ``merged/`` dir, plan or None for a base layer). A layer's lowers
        #: never change while it exists; a layer removed and made again has another ``merged/``.
        self._plans: dict[str, tuple[tuple[int, int, int], OverlayPlan | None]] = {}
        #: Layers are looked up through a detached copy of the root's mount (see LayerView): relative
        #: paths from the overlay2 directory, as Docker spells mounts too long for a page.
        self._view = LayerView(self.home) if self._view_wanted() else None

    @property
    def layer_view_in_use(self) -> bool:
        """True while layers are looked up through the detached view (relative paths in every mount)."""
        return self._view is not None and self._view.usable

    def _view_wanted(self) -> bool:
        return self.options.get("overlay2.layer_view", "true") == "true"

    # -- layout ---------------------------------------------------------------------------------
    @property
    def _links(self) -> str:
        return os.path.join(self.home, "l")

    def _dir(self, layer_id: str) -> str:
        return f"{self.home}/{layer_id}"  # ids are checked (no slash, no '..'); cheaper than os.path.join

    def layer_path(self, layer_id: str) -> str:
        return self._dir(layer_id)

    def diff_path(self, layer_id: str) -> str:
        return f"{self.home}/{layer_id}/diff"

    def rootfs_path(self, layer_id: str) -> str:
        return self.diff_path(layer_id)

    def mount_point(self, layer_id: str) -> str:
        return f"{self.home}/{layer_id}/merged"

    def _lower_links(self, layer_id: str) -> list[str]:
        lower = read_text(f"{self.home}/{layer_id}/lower", "")
        return lower.split(":") if lower else []

    def _committed(self, layer_id: str) -> bool:
        """The layer has (had) a child: it is mounted read-only from then on, as Docker's overlay2 does."""
        return os.path.exists(f"{self.home}/{layer_id}/committed")

    def _mount_links(self, layer_id: str, own: bool | None = None) -> list[str]:
        """The ``l/`` links a mount of the layer stacks, nearest first: its parents' and, with ``own``
        (default: once it is committed), its own diff on top of them (no upper dir: read-only)."""
        links = self._lower_links(layer_id)
        if self._committed(layer_id) if own is None else own:
            own = read_text(f"{self.home}/{layer_id}/link")
            if not own:
                raise MountFailed(f"layer {layer_id} has no link file")
            links = [f"l/{own}", *links]
        return links

    def needs_mount(self, layer_id: str) -> bool:
        return os.path.exists(f"{self.home}/{layer_id}/lower")

    def locate(self, layer_id: str) -> bool:
        try:  # a lower file: the layer is there (its record was written before it appeared) and mounts
            os.stat(f"{self.home}/{layer_id}/lower")
            return True
        except (FileNotFoundError, NotADirectoryError):
            return super().locate(layer_id)

    def mount_state(self, layer_id: str) -> MountState:
        """One statx of ``merged/`` answers the get path: the layer is there, whether something is
        mounted on it and, when nothing is, which directory it is — the key of the cached plan (a layer
        removed and made again, by any process, has another ``merged/``)."""
        try:
            key = statcalls.unmounted_key(f"{self.home}/{layer_id}/merged")
        except (FileNotFoundError, NotADirectoryError):
            return super().mount_state(layer_id)  # not there: says so
        if key is None:  # mounted (or a kernel that does not say): look closer
            return super().mount_state(layer_id)
        cached = self._plans.get(layer_id)
        if cached is None or cached[0] != key:
            if self._view is not None and self._view.follow():  # a layer new to this object: is the view
                self.lock.renew()  # still of this root? If not, neither is the lock file
            cached = self._plans[layer_id] = (key, self.plan(layer_id) if self.locate(layer_id) else None)
        return MountState(cached[1] is not None, None, cached[1])

    # -- create / remove ------------------------------------------------------------------------
    def build_layer(self, stage: str, layer_id: str, parent: str | None, rw: bool) -> None:
        os.chmod(stage, 0o701)
        os.mkdir(os.path.join(stage, "diff"), 0o755)
        os.mkdir(os.path.join(stage, "work"), 0o700)
        merged = os.path.join(stage, "merged")
        os.mkdir(merged, 0o700)
        # Stamped with this creation's time to the nanosecond: with its inode and birth time, the key by
        # which every process knows its plan for the layer is still right (statcalls.unmounted_key). The
        # kernel's own timestamps may be as coarse as a clock tick, and a layer removed and made again
        # within one often gets the same inode back.
        now = time.time_ns()
        os.utime(merged, ns=(now, now))
        if parent is not None:
            parent_link = read_text(os.path.join(self._dir(parent), "link"))
            if not parent_link:
                raise MountFailed(f"parent layer {parent} has no link file")
            lowers = [f"l/{parent_link}", *self._lower_links(parent)]
            if len(lowers) > OVL_MAX_STACK:  # as Docker's "max depth exceeded": refused before it exists
                raise TooManyLayers(f"layer {layer_id} would have {len(lowers)} lower layers: the kernel's "
                                    f"overlayfs takes at most {OVL_MAX_STACK}")
            write_atomic(os.path.join(stage, "lower"), ":".join(lowers), 0o644)
        link = short_link_id()
        write_atomic(os.path.join(stage, "link"), link, 0o644)
        # The link dangles until the layer is renamed into place: the layer appears in one rename.
        os.symlink(f"../{layer_id}/diff", os.path.join(self._links, link))

    def unbuild_layer(self, stage: str, layer_id: str) -> None:
        """Remove the ``l/`` link this create made (only one leading to this layer: a name another layer
        already had is not ours to remove)."""
        link = read_text(os.path.join(stage, "link"))
        if not link:
            return
        path = os.path.join(self._links, link)
        try:
            if os.readlink(path) == f"../{layer_id}/diff":
                os.unlink(path)
        except OSError:  # not made (the symlink was what failed), or gone
            pass

    def quota_dir(self, stage: str) -> str:
        return os.path.join(stage, "diff")

    def parent_gained_child(self, parent: str) -> None:
        path = os.path.join(self._dir(parent), "committed")
        if not os.path.exists(path):
            touch(path)
            self.restamp(parent)

    def restamp(self, layer_id: str) -> None:
        """Stamp the layer's ``merged/`` directory anew (the key of every process's cached plan and quick
        mount: see :meth:`build_layer`), so each plans its next mount afresh. Through the detached view
        when there is one: a mount on ``merged/`` is not in it, so the directory itself is stamped."""
        now = time.time_ns()
        try:
            if self._view is not None:
                os.utime(f"{layer_id}/merged", ns=(now, now), dir_fd=self._view.fd(), follow_symlinks=False)
            elif statcalls.unmounted_key(f"{self.home}/{layer_id}/merged") is not None:
                os.utime(f"{self.home}/{layer_id}/merged", ns=(now, now), follow_symlinks=False)
        except OSError:  # gone, or no view to be had: the plan cached by this object is dropped all the same
            pass
        self._plans.pop(layer_id, None)

    def unpublish_layer(self, layer_id: str, trash: str) -> None:
        link = read_text(os.path.join(self._dir(layer_id), "link"))
        os.rename(self._dir(layer_id), trash)
        if link:
            self._unlink(os.path.join(self._links, link))
            self._link_dirs.pop(f"l/{link}", None)
        self._plans.pop(layer_id, None)

    def cleanup_backend(self) -> None:
        for name in os.listdir(self._links):
            path = os.path.join(self._links, name)
            if os.path.islink(path) and not os.path.exists(path):
                self._unlink(path)

    # -- plan / execute / verify ----------------------------------------------------------------
    @cached_property
    def mount_api(self) -> str:
        """``auto`` (one page of mount(2) options — past a page of ``l/`` links, by the lower index — else
        fsconfig ``lowerdir+``: kernel 6.8+), ``mount`` (mount(2) only: kernels without lowerdir+, or asked
        for) or ``fsconfig`` (always)."""
        wanted = self.options.get("overlay2.mount_api", "auto")
        if wanted in ("fsconfig", "mount"):
            return wanted
        return "auto" if probe.overlay_lowerdir_plus() else "mount"

    @cached_property
    def _extra_options(self) -> tuple[str, ...]:
        extra = []
        if probe.module_param("overlay", "index") is not None:
            extra.append("index=off")
        mountopt = self.options.get("overlay2.mountopt", "")
        extra += [o for o in mountopt.split(",") if o]
        return tuple(extra)

    def _resolve_lowers(self, layer_id: str, *, own: bool | None = None) -> tuple[list[str], list[str]]:
        """(absolute diff dirs, ``l/`` short links) of what the layer's mount stacks (:meth:`_mount_links`),
        nearest first."""
        links = self._mount_links(layer_id, own)
        known = self._link_dirs
        dirs = []
        for link in links:
            path = known.get(link)
            if path is None:
                target = os.readlink(os.path.join(self.home, link))  # ../<id>/diff
                path = known[link] = os.path.normpath(os.path.join(self._links, target))
            dirs.append(path)
        return dirs, links

    def plan(self, layer_id: str, *, writable: bool | None = None, api: str | None = None) -> OverlayPlan:
        """The overlay mount ``get`` would make for this layer (reads the layout, mounts nothing): its diff
        the upper dir while it has no child, else read-only on top of its parents (``writable`` chooses;
        ``api``, default :attr:`mount_api`)."""
        if writable is None:
            writable = not self._committed(layer_id)  # no child yet: its diff is the upper dir
        dirs, links = self._resolve_lowers(layer_id, own=not writable)
        d = self._dir(layer_id)
        upper, work = (f"{d}/diff", f"{d}/work") if writable else (None, None)
        return plan_overlay(self.mount_point(layer_id), dirs, upper, work, api=api or self.mount_api,
                            short_lowers=links, cwd=self.home, page_size=probe.page_size(),
                            extra=self._extra_options, relative=self.layer_view_in_use, index=f"{layer_id}/lowers")

    def _lower_index(self, layer_id: str, index: str) -> None:
        """Make sure the layer's lower index (see :func:`~graphdriver.plan.overlay.index_links`) holds
        what its ``lower`` file says. Built in the staging dir and renamed into place, it appears whole or
        not at all (``cleanup`` removes a stage a crash left); one found different (edited or damaged:
        the kernel shows its names, not where they lead) is replaced the same way. Read here, on the
        general path — once per driver object and layer; a quick mount trusts what this confirmed."""
        want = index_links(self._mount_links(layer_id), index)
        where = os.path.join(self.home, index)
        try:
            with os.scandir(where) as it:
                if {e.name: os.readlink(e.path) for e in it} == want:
                    return
        except OSError:  # missing, or not a directory of symlinks: (re)built
            pass
        stage = os.path.join(self._staging, f"{layer_id}.lowers.{os.urandom(4).hex()}")
        os.mkdir(stage, 0o700)
        try:
            for name, target in want.items():
                os.symlink(target, os.path.join(stage, name))
            trash = None
            if os.path.lexists(where):  # the wrong one to the trash, the right one in its place
                trash = f"{stage}.old"
                os.rename(where, trash)
            os.rename(stage, where)
        except BaseException:
            self.discard(stage)
            raise
        if trash is not None:
            self.discard(trash)

    def mount_layer(self, layer_id: str, plan: object | None = None) -> int:
        plan = plan if isinstance(plan, OverlayPlan) else self.plan(layer_id)
        if plan.subdir:
            self._lower_index(layer_id, plan.subdir)
        return self._mount_checked(layer_id, plan)

    def _mount_checked(self, layer_id: str, plan: OverlayPlan) -> int:
        """Execute the plan and verify the kernel's mount against it (undone and reported if it differs);
        the mount's id."""
        mount_overlay(plan, self._view)
        if plan.upper:  # shown exactly as planned: known from the option array's bytes
            target, hint = plan.mount_args[0], len(plan.shown_lowers)
            shown = mountinfo.shown(target, statcalls.OVERLAY_MAGIC, plan.shown_prefix, plan.shown_key, hint)
            if shown is not None:
                cached = self._plans.get(layer_id)
                if cached is not None and cached[1] is plan:  # planned for the mount point as it is
                    quick = QuickMount.of(plan, cached[0], shown, self._view, mountinfo.statmount_room(target, hint))
                    if quick is not None:  # the layer's next get, after its put, repeats this mount
                        self._quick[layer_id] = quick
                return shown[0]
        entry = mountinfo.mount_at(plan.target, len(plan.shown_lowers), brief=True)
        problems = check_overlay(plan, entry)
        if problems:
            try:
                syscalls.umount2(plan.target, syscalls.MNT_DETACH)
            except OSError:
                pass
            raise MountFailed(f"layer {layer_id}: the kernel's overlay at {plan.target} does not match the plan "
                              f"({'; '.join(problems)}); unmounted")
        assert entry is not None
        return entry.mnt_id

    def read_only_fd(self, layer_id: str) -> int | None:
        """A detached read-only overlay (its own diff on top of its parents: no upper dir, no work dir,
        nothing written) when the layer is not mounted: fsconfig ``lowerdir+`` only (else None)."""
        if self.mount_api == "mount" or not self.locate(layer_id) or \
                mountinfo.current_mount_id(self.mount_point(layer_id)) is not None:
            return None
        return open_overlay(self.plan(layer_id, writable=False, api="fsconfig"), self._view)

    def check_mount(self, layer_id: str, entry: mountinfo.MountEntry | None) -> list[str]:
        problems = check_overlay(self.plan(layer_id), entry)
        if problems and self._committed(layer_id) and not check_overlay(self.plan(layer_id, writable=True), entry):
            return []  # mounted before it had a child, writable then: as planned at the time
        return problems

    # -- reporting ------------------------------------------------------------------------------
    def metadata(self, layer_id: str) -> dict[str, str]:
        self._require(layer_id)
        d = self._dir(layer_id)
        meta = {"MergedDir": os.path.join(d, "merged"), "UpperDir": os.path.join(d, "diff"),
                "WorkDir": os.path.join(d, "work")}
        dirs, _ = self._resolve_lowers(layer_id, own=False)  # as docker inspect shows it: the parents
        if dirs:
            meta["LowerDir"] = ":".join(dirs)
        return meta

    def backend_status(self) -> list[tuple[str, str]]:
        api = {"fsconfig": "fsconfig lowerdir+",
               "auto": "mount(2) in one page (l/ links, then a lower index), else fsconfig lowerdir+"}.get(
                   self.mount_api, "mount(2) in one page (l/ links, then a lower index)")
        verify = "statmount(2)" if statcalls.statmount_supported() else "/proc/self/mountinfo"
        view = ("by path" if self._view is None else
                "relative, through a detached copy of the root's mount" if self._view.usable else
                "by path (the kernel refused layers on a detached mount)")
        return [("Supports d_type", "true"), ("Mount API", api), ("Layers looked up", view), ("Verified with", verify),
                ("Max lower layers", str(OVL_MAX_STACK))]
