"""The ``serve`` group: long-running servers that let other runtimes use graphdriver.

``serve docker-plugin`` lives here; ``serve containerd-snapshotter`` in :mod:`.serve_containerd`,
imported when it runs.
"""

from __future__ import annotations

import logging
import sys

from plumbum import cli

from ..checks import option_keys
from ..errors import StorageOptUnsupported
from .app import CommandGroup, key_values, top


class ServeApp(CommandGroup):
    """Serve graphdriver to another runtime (docker-plugin, ...)."""


ServeApp.subcommand("containerd-snapshotter", f"{__package__}.serve_containerd.ContainerdSnapshotterCmd")


def setup_logging(debug: bool) -> None:
    """One line per event on stderr; DEBUG adds request and reply bodies."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def check_plugin_options(options: dict[str, str], driver: str | None) -> None:
    """Refuse at start a driver option that no backend the plugin may open takes (``driver``'s, when
    named; the values are checked at Init, on the root dockerd gives)."""
    from ..registry import backend, backends

    classes = [backend(driver)] if driver else list(backends().values())
    known = {key for cls in classes if cls is not None for key in cls.driver_options}
    for key in options:
        if key not in known:
            raise StorageOptUnsupported(f"unknown driver option {key!r} (the plugin's backends take: "
                                        f"{', '.join(sorted(known)) or 'none'})")


@ServeApp.subcommand("docker-plugin")
class DockerPluginCmd(cli.Application):
    """Serve Docker's graphdriver plugin protocol on a unix socket (dockerd --experimental --storage-driver=NAME)."""

    name = cli.SwitchAttr(["--name"], str, default="graphdriver", help="plugin name dockerd is given")
    socket_path = cli.SwitchAttr(["--socket"], str, default=None,
                                 help="socket path (default /run/docker/plugins/NAME.sock)")
    plugin_root = cli.SwitchAttr(["--root"], str, default=None,
                                 help="state root (default: the global --root when given, else the Home "
                                      "dockerd gives in Init)")
    plugin_driver = cli.SwitchAttr(["--driver"], str, default=None, help="backend: overlay2, aufs or vfs")
    debug = cli.Flag(["--debug"], help="log request and reply bodies")

    def main(self) -> int:
        from ..serve import docker_plugin as dp
        from ..serve import plugin_config as pc

        setup_logging(self.debug)
        app = top(self)
        options = option_keys(key_values(app.storage_opts, "--storage-opt"))
        driver = self.plugin_driver or app.driver_name
        check_plugin_options(options, driver)  # at start, not at dockerd's Init
        config = pc.PluginConfig(root=self.plugin_root or (app.root if app.root_given else None), driver=driver,
                                 options=options, state_file=pc.state_file_for(self.name))
        path = self.socket_path or pc.default_socket(self.name)
        server = dp.PluginServer(path, dp.GraphDriverPlugin(config))
        log = logging.getLogger("graphdriver.serve.docker_plugin")
        drained = dp.serve_until_signal(server, lambda: log.info("serving plugin %s on %s", self.name, path))
        log.info("stopped; socket %s removed", path)
        return 0 if drained else 1
