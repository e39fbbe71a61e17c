"""``graphdriver serve containerd-snapshotter``: containerd's snapshots service as a proxy plugin."""

from __future__ import annotations

import logging
import os
import sys

from plumbum import cli

from ..errors import StorageOptUnsupported
from .app import top
from .serve import setup_logging


class ContainerdSnapshotterCmd(cli.Application):
    """Serve containerd's snapshots gRPC service on a unix socket ([proxy_plugins.NAME] type = "snapshot")."""

    socket_path = cli.SwitchAttr(["--socket"], str, default=None,
                                 help="socket path (default /run/graphdriver/containerd-snapshotter.sock)")
    snap_root = cli.SwitchAttr(["--root"], str, default=None,
                               help="snapshotter root (default <global --root>/containerd, "
                                    "/var/lib/graphdriver/containerd)")
    snap_driver = cli.SwitchAttr(["--driver"], str, default=None,
                                 help="overlay2 (default: overlay mounts) or vfs (full copies, bind mounts)")
    debug = cli.Flag(["--debug"], help="log every failed request")

    def main(self) -> int:
        from ..serve import containerd_snapshotter as cs

        app = top(self)
        if app.storage_opts:  # never silently ignored: the snapshotter's mounts take no driver options
            raise StorageOptUnsupported("serve containerd-snapshotter takes no --storage-opt (its overlay "
                                        "mounts are containerd's to make)")
        setup_logging(self.debug)
        path = self.socket_path or cs.DEFAULT_SOCKET
        root = self.snap_root or (os.path.join(app.root, "containerd") if app.root_given else cs.DEFAULT_ROOT)
        log = logging.getLogger("graphdriver.serve.containerd_snapshotter")
        if not self.debug:
            log.setLevel(logging.WARNING)
        cs.serve(path, root, self.snap_driver or app.driver_name,
                 ready=lambda: print(f"graphdriver: serving containerd snapshotter on {path} (root {root})",
                                     file=sys.stderr, flush=True))
        return 0
