"""The ``serve`` group: long-running servers that let other runtimes use graphdriver.

``serve docker-plugin`` lives here; ``serve containerd-snapshotter`` in :mod:`.serve_containerd`,
imported when it runs.
"""

from __future__ import annotations

import logging
import sys

from plumbum import cli

from .app import CommandGroup, key_values, top


class ServeApp(CommandGroup):
    """Serve graphdriver to another runtime (docker-plugin, ...)."""


ServeApp.subcommand("containerd-snapshotter", f"{__package__}.serve_containerd.ContainerdSnapshotterCmd")


def setup_logging(debug: bool) -> None:
    """One line per event on stderr; DEBUG adds request and reply bodies."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@ServeApp.subcommand("docker-plugin")
class DockerPluginCmd(cli.Application):
    """Serve Docker's graphdriver plugin protocol on a unix socket (dockerd --experimental --storage-driver=NAME)."""

    name = cli.SwitchAttr(["--name"], str, default="graphdriver", help="plugin name dockerd is given")
    socket_path = cli.SwitchAttr(["--socket"], str, default=None,
                                 help="socket path (default /run/docker/plugins/NAME.sock)")
    plugin_root = cli.SwitchAttr(["--root"], str, default=None,
                                 help="state root (default: the Home dockerd gives in Init)")
    plugin_driver = cli.SwitchAttr(["--driver"], str, default=None, help="backend: overlay2, aufs or vfs")
    debug = cli.Flag(["--debug"], help="log request and reply bodies")

    def main(self) -> int:
        from ..serve import docker_plugin as dp
        from ..serve import plugin_config as pc

        setup_logging(self.debug)
        app = top(self)
        options = key_values(app.storage_opts, "--storage-opt")
        config = pc.PluginConfig(root=self.plugin_root, driver=self.plugin_driver or app.driver_name, options=options,
                                 state_file=pc.state_file_for(self.name))
        path = self.socket_path or pc.default_socket(self.name)
        server = dp.PluginServer(path, dp.GraphDriverPlugin(config))
        log = logging.getLogger("graphdriver.serve.docker_plugin")
        drained = dp.serve_until_signal(server, lambda: log.info("serving plugin %s on %s", self.name, path))
        log.info("stopped; socket %s removed", path)
        return 0 if drained else 1
