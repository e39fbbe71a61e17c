"""Typed errors. Library code raises these; only the CLI turns them into one line and an exit code."""

from __future__ import annotations


class GraphDriverError(Exception):
    """Base of every error graphdriver raises on purpose. ``str(err)`` is one clear line."""

    exit_code = 1


class InvalidArgument(GraphDriverError):
    """An argument of the Python API of the wrong type or shape (the message names the argument)."""


class InvalidID(InvalidArgument):
    """An id that is not ``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`` or contains ``..`` (or is no string at all)."""


class LayerNotFound(GraphDriverError):
    """No layer with that id (or an unknown parent)."""


class LayerExists(GraphDriverError):
    """A layer with that id is already there."""


class LayerInUse(GraphDriverError):
    """The layer is mounted, has children, or is being read or applied into."""


class LayerBusy(LayerInUse):
    """The layer is being read or applied into (a lease on it is held): ``layer_id``, and ``holders``
    (``name[pid]`` of the processes at work, as far as the kernel's lock table tells)."""

    def __init__(self, message: str, layer_id: str, holders: list[str]) -> None:
        super().__init__(message)
        self.layer_id, self.holders = layer_id, holders


class LayerChanged(GraphDriverError):
    """A layer's files changed (a container writing, a hand at a shell) under a read of it in place."""


class LayerReadFailed(GraphDriverError):
    """The system refused a read of a layer's files (a path past PATH_MAX, an I/O error, ...)."""


class LayerNotMounted(GraphDriverError):
    """``put``/``umount`` of a layer that holds no mount reference."""


class MountFailed(GraphDriverError):
    """The kernel refused a mount, or accepted one that does not match the plan."""


class MountBusy(GraphDriverError):
    """umount2 answered EBUSY; the message names the processes holding it."""


class TooManyLayers(GraphDriverError):
    """A chain deeper than the kernel (or the mount data page) can carry."""


class DriverMismatch(GraphDriverError):
    """The root was first used with another driver."""


class DriverUnsupported(GraphDriverError):
    """The kernel or the backing filesystem cannot run this driver."""


class CorruptRecord(GraphDriverError):
    """A record of the store that cannot be read (damaged, or edited by hand)."""


class NoStore(GraphDriverError):
    """Nothing has been stored at the root yet (no driver is recorded there): a command that only reads,
    or needs something stored, creates no store."""


class BadRoot(GraphDriverError):
    """The root's path cannot hold a store (it, or a path above it, is not a directory)."""


class NotRoot(GraphDriverError):
    """graphdriver mounts and chowns; it needs root."""


class UnsafeArchive(GraphDriverError):
    """A layer tar entry that would escape its layer, or a corrupt stream."""


class StorageOptUnsupported(GraphDriverError):
    """A storage option (like ``size``) this backend or filesystem cannot honour."""


class BadBranchPath(MountFailed):
    """A union branch path the mount option syntax cannot carry (aufs: ``:``, ``=``, ``,``)."""


class CopyFailed(GraphDriverError):
    """A layer copy (vfs) could not reproduce a file; the message names it."""


class ImageNotFound(GraphDriverError):
    """No image with that name, tag, id or id prefix."""


class ContainerNotFound(GraphDriverError):
    """No container with that name, id or id prefix."""


class NameInUse(GraphDriverError):
    """A container name (or an image tag given as a container name) is already taken."""


class ImageInUse(GraphDriverError):
    """``image rm`` of an image that a container still uses."""


class InvalidImage(GraphDriverError):
    """A corrupt or truncated image archive, a digest mismatch, or a missing blob."""


class CommitFailed(GraphDriverError):
    """``container commit`` could not write the new image (a full disk: what ran out, and where)."""


class ContainerRunning(GraphDriverError):
    """The container's rw layer is in use by a running ``container run``."""


class SnapshotNotFound(LayerNotFound):
    """containerd snapshotter: no snapshot with that key (or an unknown parent)."""


class SnapshotExists(LayerExists):
    """containerd snapshotter: a snapshot with that key or name is already there."""


class SnapshotStateError(GraphDriverError):
    """containerd snapshotter: the snapshot is of the wrong kind for the request, or still has children."""


class InvalidSnapshotRequest(GraphDriverError):
    """containerd snapshotter: a malformed request (empty key, bad filter, immutable field in an update)."""


class ApplyFailed(GraphDriverError):
    """Extracting a layer tar failed for a reason other than the archive being unsafe (I/O, tar itself)."""


class ParentMismatch(GraphDriverError):
    """A layer-contents call named a parent that is not the layer's parent where only that one works."""
