"""containerd's ``containerd.services.snapshots.v1.Snapshots`` gRPC service on a unix socket.

containerd loads it as a proxy plugin::

    [proxy_plugins.graphdriver]
      type = "snapshot"
      address = "/run/graphdriver/containerd-snapshotter.sock"

This module only translates: protobuf messages to :class:`~.snapshots.snapshotter.Snapshotter` calls, and
graphdriver errors to gRPC status codes. The storage logic lives in :mod:`graphdriver.serve.snapshots`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2

from ..errors import (
    DriverUnsupported,
    GraphDriverError,
    InvalidSnapshotRequest,
    SnapshotExists,
    SnapshotNotFound,
    SnapshotStateError,
    TooManyLayers,
)
from .proto import mount_pb2, snapshots_pb2, snapshots_pb2_grpc
from .snapshots.mounts import MountPlan
from .snapshots.snapshotter import Snapshotter
from .snapshots.store import Snapshot
from .unix_http import prepare_socket_path, remove_socket, socket_inode

DEFAULT_SOCKET = "/run/graphdriver/containerd-snapshotter.sock"
DEFAULT_ROOT = "/var/lib/graphdriver/containerd"
#: Infos per List response message (containerd's own server batches too).
LIST_BATCH = 100

log = logging.getLogger(__name__)

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (SnapshotNotFound, grpc.StatusCode.NOT_FOUND),
    (SnapshotExists, grpc.StatusCode.ALREADY_EXISTS),
    (SnapshotStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (TooManyLayers, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidSnapshotRequest, grpc.StatusCode.INVALID_ARGUMENT),
]


def status_code(err: BaseException) -> grpc.StatusCode:
    """The gRPC code containerd's errdefs expect for ``err``."""
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.UNKNOWN if isinstance(err, GraphDriverError) else grpc.StatusCode.INTERNAL


def _mounts(plan: MountPlan) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=m.type, source=m.source, options=list(m.options)) for m in plan.mounts]


def _info(s: Snapshot) -> snapshots_pb2.Info:
    info = snapshots_pb2.Info(name=s.key, parent=s.parent, kind=int(s.kind), labels=s.labels)
    info.created_at.FromNanoseconds(s.created)
    info.updated_at.FromNanoseconds(s.updated)
    return info


def _rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler; a graphdriver (or OS) error aborts the call with its code and one-line message."""

    def handler(self: SnapshotsServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except (GraphDriverError, OSError) as e:
            code = status_code(e)
            log.log(logging.INFO if code != grpc.StatusCode.INTERNAL else logging.ERROR, "%s: %s: %s",
                    fn.__name__, code.name, e)
            context.abort(code, str(e))

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


class SnapshotsServicer(snapshots_pb2_grpc.SnapshotsServicer):
    """The ten RPCs of containerd's snapshots service, on one :class:`Snapshotter`."""

    def __init__(self, snapshotter: Snapshotter) -> None:
        self.sn = snapshotter

    @_rpc
    def Prepare(self, request, context):  # noqa: N802  (gRPC method names)
        plan = self.sn.prepare(request.key, request.parent, dict(request.labels))
        return snapshots_pb2.PrepareSnapshotResponse(mounts=_mounts(plan))

    @_rpc
    def View(self, request, context):  # noqa: N802
        plan = self.sn.view(request.key, request.parent, dict(request.labels))
        return snapshots_pb2.ViewSnapshotResponse(mounts=_mounts(plan))

    @_rpc
    def Mounts(self, request, context):  # noqa: N802
        return snapshots_pb2.MountsResponse(mounts=_mounts(self.sn.mounts(request.key)))

    @_rpc
    def Commit(self, request, context):  # noqa: N802
        self.sn.commit(request.name, request.key, dict(request.labels))
        return empty_pb2.Empty()

    @_rpc
    def Remove(self, request, context):  # noqa: N802
        self.sn.remove(request.key)
        return empty_pb2.Empty()

    @_rpc
    def Stat(self, request, context):  # noqa: N802
        return snapshots_pb2.StatSnapshotResponse(info=_info(self.sn.stat(request.key)))

    @_rpc
    def Update(self, request, context):  # noqa: N802
        # Only labels are mutable: name picks the snapshot; kind, parent and times in the request are ignored.
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        snap = self.sn.update(request.info.name, dict(request.info.labels), paths)
        return snapshots_pb2.UpdateSnapshotResponse(info=_info(snap))

    def List(self, request, context):  # noqa: N802
        try:
            infos = [_info(s) for s in self.sn.walk(list(request.filters))]
        except (GraphDriverError, OSError) as e:
            context.abort(status_code(e), str(e))
        for i in range(0, len(infos), LIST_BATCH):
            yield snapshots_pb2.ListSnapshotsResponse(info=infos[i:i + LIST_BATCH])

    @_rpc
    def Usage(self, request, context):  # noqa: N802
        use = self.sn.usage(request.key)
        return snapshots_pb2.UsageResponse(size=use.size, inodes=use.inodes)

    @_rpc
    def Cleanup(self, request, context):  # noqa: N802
        removed = self.sn.cleanup()
        if removed:
            log.info("cleanup removed %d unreferenced director%s", len(removed), "y" if len(removed) == 1 else "ies")
        return empty_pb2.Empty()


def make_server(socket_path: str, snapshotter: Snapshotter, workers: int = 8) -> grpc.Server:
    """A started-later gRPC server bound to ``unix:socket_path``: a stale socket there (nobody listening)
    is replaced; anything else there, or a socket another process serves, is refused (SocketInUse)."""
    prepare_socket_path(socket_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    snapshots_pb2_grpc.add_SnapshotsServicer_to_server(SnapshotsServicer(snapshotter), server)
    if server.add_insecure_port(f"unix:{os.path.abspath(socket_path)}") == 0:
        raise DriverUnsupported(f"cannot listen on unix socket {socket_path}")
    return server


def serve(socket_path: str, root: str, driver: str | None = None,
          ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; then stop, remove the socket and close the store.

    The two signals are blocked before any gRPC thread exists (threads inherit the mask) and taken with
    sigwait in this thread: a signal can neither land in a gRPC thread nor beat the handler at start-up.
    """
    prepare_socket_path(socket_path)  # before the store is opened and cleaned: refused if another serves it
    sigs = {signal.SIGTERM, signal.SIGINT}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    sn = Snapshotter(root, driver)
    inode = None
    try:
        leftovers = sn.cleanup()  # whatever a crash left: unrecorded snapshot and staging directories
        if leftovers:
            log.info("removed %d leftover directories from an earlier run", len(leftovers))
        server = make_server(socket_path, sn)
        inode = socket_inode(socket_path)
        server.start()
        if ready:
            ready()
        got = signal.sigwait(sigs)
        log.info("%s: stopping", signal.Signals(got).name)
        server.stop(grace=5).wait()
    finally:
        if inode is not None:
            remove_socket(socket_path, inode)  # only our own: never one another server took over
        sn.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
