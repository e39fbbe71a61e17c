"""Containers: an ``<id>-init`` layer and an ``<id>`` read-write layer on an image, as dockerd makes them.

State lives in ``<root>/containers/<id>.json`` (written atomically, changed under the image store's lock).
``<root>/containers/<id>.run`` is flock-ed by a running ``container run``; commit and rm look at it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re
import secrets
import signal
import time
from dataclasses import asdict, dataclass, field

from ..errors import (
    ContainerNotFound,
    ContainerRunning,
    CorruptRecord,
    GraphDriverError,
    LayerBusy,
    LayerChanged,
    LayerNotFound,
    LayerNotMounted,
    NameInUse,
)
from . import initlayer
from .files import read_json, remove_temporaries, write_json
from .images import ImageStore
from .marks import WorkMarks

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")


def now() -> str:
    """A timestamp as docker writes them (UTC, microseconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Container:
    """One container's record."""

    id: str
    name: str
    image: str
    hostname: str
    created: str
    extra_hosts: list[list[str]] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    netns: str = ""
    addresses: list[str] = field(default_factory=list)

    @property
    def init_layer(self) -> str:
        return f"{self.id}-init"

    @property
    def rw_layer(self) -> str:
        return self.id


class ContainerStore:
    """Containers over an :class:`ImageStore` (same root, same driver, same lock)."""

    def __init__(self, images: ImageStore) -> None:
        self.images = images
        self.driver = images.driver
        self.lock = images.lock
        self.dir = os.path.join(images.root, "containers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._creating = WorkMarks(self.dir, ".creating")  # from before a create's first layer to its record

    def _path(self, cid: str) -> str:
        return os.path.join(self.dir, cid + ".json")

    def run_lock_path(self, cid: str) -> str:
        """The file a running ``container run`` holds locked."""
        return os.path.join(self.dir, cid + ".run")

    def all(self) -> list[Container]:
        """Every container, oldest first."""
        out = []
        for n in os.listdir(self.dir):
            if n.endswith(".json") and ".tmp-" not in n:
                rec = read_json(os.path.join(self.dir, n), {})
                if rec:
                    try:
                        out.append(Container(**rec))
                    except TypeError as e:  # fields missing or unknown
                        raise CorruptRecord(f"record {os.path.join(self.dir, n)} cannot be read: {e}") from None
        return sorted(out, key=lambda c: c.created)

    def get(self, ref: str) -> Container:
        """A container by name (``/name`` too, as docker's), full id, or unique id prefix."""
        cs = self.all()
        if ref.startswith("/") and len(ref) > 1:
            ref = ref[1:]
        for c in cs:
            if ref in (c.name, c.id):
                return c
        hits = [c for c in cs if re.fullmatch(r"[0-9a-f]+", ref) and c.id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ContainerNotFound(f"container id prefix {ref} is ambiguous")
        raise ContainerNotFound(f"no such container: {ref}")

    def images_in_use(self) -> dict[str, list[str]]:
        """Image id -> the names of the containers that use it."""
        users: dict[str, list[str]] = {}
        for c in self.all():
            users.setdefault(c.image, []).append(c.name)
        return users

    # -- create / remove --------------------------------------------------------------------------
    def create(self, image_ref: str, name: str = "", hostname: str = "", add_hosts: list[str] = (),
               dns: list[str] = (), netns: str = "") -> Container:
        """Make the init and rw layers on the image; nothing remains when any step fails."""
        extra = [initlayer.parse_add_host(h) for h in add_hosts]
        dns = [initlayer.check_dns(d) for d in dns]
        given, name = name, name[1:] if name.startswith("/") else name  # docker's names are /name: --name /web
        if given and not _NAME_RE.fullmatch(name):
            raise GraphDriverError(f"invalid container name {given!r}: want [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        if hostname and not _HOSTNAME_RE.fullmatch(hostname):
            raise GraphDriverError(f"invalid hostname {hostname!r}")
        addresses = initlayer.netns_addresses(netns) if netns else []
        with self.lock.held():
            self.recover()
            image_id = self.images.resolve(image_ref)
            if name and any(c.name == name for c in self.all()):
                raise NameInUse(f"container name {name} is already in use")
            cid = secrets.token_hex(32)
            c = Container(cid, name or f"c_{cid[:12]}", image_id, hostname or cid[:12], now(),
                          [list(e) for e in extra], list(dns), netns, addresses)
            entries = initlayer.plan(c.hostname, addresses, extra, c.dns, initlayer.read_host_resolv())
            top = self.images.top_layer(image_id)
            made: list[str] = []
            with self._creating.around(cid):  # a kill from here to the record: recover() undoes it
                try:
                    self.driver.create(c.init_layer, top)
                    made.append(c.init_layer)
                    path = self.driver.get(c.init_layer)
                    try:
                        initlayer.write(path, entries)
                    finally:
                        self.driver.put(c.init_layer)
                    self.driver.create(c.rw_layer, c.init_layer, rw=True)
                    made.append(c.rw_layer)
                    write_json(self._path(cid), asdict(c))
                except BaseException:
                    for layer in reversed(made):
                        try:
                            self.driver.remove(layer)
                        except GraphDriverError:
                            pass
                    raise
            return c

    def recover(self) -> list[str]:
        """Undo what kills cut short: image layers half applied (:meth:`ImageStore.recover`), and creates
        whose mark has no record (their layers are unmounted and removed; with a record the create had
        finished). The container ids undone; the lock is held by the caller or taken here."""
        undone = []
        with self.lock.held():
            self.images.recover()
            remove_temporaries(self.dir)  # a record a kill cut short while written
            for cid in self._creating.left():
                if not os.path.exists(self._path(cid)):
                    self._put_and_remove([cid, cid + "-init"])  # only the dead create held them
                    undone.append(cid)
                self._creating.clear(cid)
            for name in os.listdir(self.dir):  # removals a kill cut short: their records are set aside
                if name.endswith(".removing"):
                    cid = name[:-len(".removing")]
                    self._put_and_remove([cid, cid + "-init"])
                    self._forget(cid)
                    undone.append(cid)
        return undone

    def _put_and_remove(self, layers: list[str]) -> None:
        """Unmount (every reference: only the dead process held them) and remove those of ``layers`` that
        are still there, in order (a container's rw layer before the -init layer it is built on)."""
        for layer in layers:
            if self.driver.exists(layer):
                for _ in range(self.driver.mount_count(layer)):
                    self.driver.put(layer)
                self.driver.remove(layer)

    def running_pid(self, c: Container) -> int | None:
        """The pid of the ``container run`` holding this container, or None."""
        path = self.run_lock_path(c.id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def remove(self, ref: str, force: bool = False) -> Container:
        """Remove both layers and the record. Mounted or running: refused unless ``force``."""
        with self.lock.held():
            c = self.get(ref)
            pid = self.running_pid(c)
            if pid is not None:
                if not force or pid <= 0:
                    raise ContainerRunning(f"container {c.name} is running (pid {pid}); stop it or use --force")
                self._stop(c, pid)
            refs = self.driver.mount_count(c.rw_layer) if self.driver.exists(c.rw_layer) else 0
            if refs and not force:
                raise ContainerRunning(f"container {c.name} is mounted ({refs} references); "
                                       f"umount it or use --force")
            for _ in range(refs):
                try:
                    self.driver.put(c.rw_layer)
                except LayerNotMounted:
                    break
            layers = [layer for layer in (c.rw_layer, c.init_layer) if self.driver.exists(layer)]
            # The record goes first (renamed aside, atomically): a kill from here on leaves no container
            # listed without its layers; recover() finishes what is set aside.
            os.rename(self._path(c.id), self._removing_path(c.id))
            try:
                self.driver.remove_all(layers)  # both or neither
            except LayerBusy as e:  # a diff or changes of one of them under way
                os.rename(self._removing_path(c.id), self._path(c.id))
                kind = "read-write" if e.layer_id == c.rw_layer else "init"
                raise LayerBusy(f"container {c.name} is being read (a diff or changes of its {kind} layer under "
                                f"way{' in ' + ', '.join(e.holders) if e.holders else ''}); try again when it is "
                                f"done", e.layer_id, e.holders) from None
            except BaseException:
                os.rename(self._removing_path(c.id), self._path(c.id))
                raise
            self._forget(c.id)
            return c

    def _removing_path(self, cid: str) -> str:
        """Where a container's record waits while its layers are removed."""
        return os.path.join(self.dir, cid + ".removing")

    def _forget(self, cid: str) -> None:
        """Drop what is left of a removed container's files (its set-aside record, its run lock)."""
        for p in (self._removing_path(cid), self.run_lock_path(cid)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def _stop(self, c: Container, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while self.running_pid(c) is not None:
            if time.monotonic() > deadline:
                raise ContainerRunning(f"container {c.name} did not stop after SIGKILL to pid {pid}")
            time.sleep(0.02)

    def remove_image(self, ref: str, force: bool = False) -> list[str]:
        """``image rm``: refused while a container uses the image; ``force``: by id, an image with several
        names too."""
        with self.lock.held():
            return self.images.remove(ref, self.images_in_use(), force)

    def prune_images(self, all_unused: bool = False) -> tuple[list[str], int]:
        """``image prune``: remove the images no container uses that have no name (``all_unused``: every
        image no container uses), the layers only they held, and layers no image holds. Returns what was
        done (``image rm``'s lines) and the bytes of layer content freed."""
        with self.lock.held():
            self.recover()  # a container create cut short holds image layers
            in_use = self.images_in_use()
            done: list[str] = []
            freed = 0
            while heads := [i for i in self.images.ids() if i not in in_use and not self.images.children(i)
                            and (all_unused or not self.images.tags_of(i))]:  # a parent after its children
                sizes = {c: int(self.images.layer_info(c).get("size", 0)) for c in self.images.chain(heads[0])}
                lines, dropped = self.images.remove_freeing(heads[0], in_use, force=True)
                done += lines
                freed += sum(sizes.get(c, 0) for c in dropped)
            lines, loose = self._drop_loose_layers()
            return done + lines, freed + loose

    def _drop_loose_layers(self) -> tuple[list[str], int]:
        """Image layers that no image holds — what a load or a commit killed before its image was recorded
        leaves — removed top first (a layer anything is built on stays); ``image rm``'s lines for them
        and the bytes freed. The lock is held (a load in progress holds it too)."""
        held = {c for image_id in self.images.ids() for c in self.images.chain(image_id)}
        loose = {"sha256:" + n[:-len(".json")] for n in os.listdir(self.images.layerdb) if n.endswith(".json")}
        loose -= held
        loose -= {c for c in loose if self.driver.held(c.split(":", 1)[1])}  # for a prune after the hold
        done: list[str] = []
        freed = 0
        while tops := [c for c in sorted(loose) if not self.driver.children(c.split(":", 1)[1])]:
            for c in tops:
                freed += int(self.images.layer_info(c).get("size", 0))
                self.images.drop_layer(c.split(":", 1)[1])
                done.append(f"Deleted: {c}")
                loose.discard(c)
        return done, freed

    # -- mounts and contents ----------------------------------------------------------------------
    def mount(self, ref: str) -> str:
        """Mount the container's rootfs (one more reference); returns its path. Under the lock: never
        between a ``remove``'s look at the mounts and its removal of the layers."""
        with self.lock.held():
            c = self.get(ref)
            return self.driver.get(c.rw_layer)

    def umount(self, ref: str) -> None:
        """Drop one mount reference (a container not mounted is named)."""
        with self.lock.held():
            c = self.get(ref)
            try:
                self.driver.put(c.rw_layer)
            except LayerNotMounted:
                raise LayerNotMounted(f"container {c.name} is not mounted") from None

    def changes(self, ref: str) -> list[tuple[str, int]]:
        """``docker diff``: the rw layer's changes against the init layer (read without the lock: a
        container removed meanwhile is named)."""
        c = self.get(ref)
        try:
            return self.driver.changes(c.rw_layer, c.init_layer)
        except (LayerNotFound, LayerChanged):
            with self.lock.held():  # a remove under way finishes first
                gone = not os.path.exists(self._path(c.id))
            if gone:
                raise ContainerNotFound(f"container {c.name} was removed while it was being read") from None
            raise

    def inspect(self, ref: str) -> dict:
        """``docker inspect``'s shape for a container (under the lock: of one container, not half removed)."""
        with self.lock.held():
            c = self.get(ref)
            pid = self.running_pid(c)
            mounts = self.driver.mount_count(c.rw_layer)
            data = self.driver.metadata(c.rw_layer)
        return {
            "Id": c.id, "Created": c.created, "Name": "/" + c.name, "Image": c.image,
            "State": {"Running": pid is not None, "Pid": pid or 0, "Mounted": mounts},
            "Config": {"Hostname": c.hostname, "Image": c.image},
            "HostConfig": {"ExtraHosts": [f"{n}:{ip}" for n, ip in c.extra_hosts], "Dns": c.dns,
                           "NetworkMode": f"ns:{initlayer.netns_path(c.netns)}" if c.netns else "none"},
            "NetworkSettings": {"Addresses": c.addresses},
            "GraphDriver": {"Name": self.driver.name, "Data": data},
            "Layers": {"Init": c.init_layer, "RW": c.rw_layer},
        }

    # -- commit -----------------------------------------------------------------------------------
    def commit(self, ref: str, new_ref: str = "", message: str = "", author: str = "",
               pause: bool = False) -> str:
        """A new image from the container's rw layer (see commit.py); returns its id."""
        from .commit import commit_container

        return commit_container(self, ref, new_ref, message, author, pause)
