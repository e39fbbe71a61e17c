"""The ``container`` group: create, ls, inspect, mount, umount, diff, commit, rm, run."""

from __future__ import annotations

import sys

from plumbum import cli

from .app import CommandGroup, each, emit, say, table, top
from .archive_cmds import json_text
from .image import container_store, stored_container_store

_KINDS = {0: "C", 1: "A", 2: "D"}


class ContainerApp(CommandGroup):
    """Containers: an -init layer and a read-write layer on an image, as dockerd makes them."""


@ContainerApp.subcommand("create")
class ContainerCreate(cli.Application):
    """Create a container on IMAGE; prints its id."""

    name = cli.SwitchAttr(["--name"], str, default="", help="container name")
    hostname = cli.SwitchAttr(["--hostname", "-h"], str, default="", help="hostname (default: short id)")
    add_host = cli.SwitchAttr(["--add-host"], str, list=True, help="extra /etc/hosts line NAME:IP")
    dns = cli.SwitchAttr(["--dns"], str, list=True, help="DNS server (default: the host's)")
    netns = cli.SwitchAttr(["--netns"], str, default="", help="network namespace (name or path) for addresses")

    def main(self, image: str) -> int:
        c = container_store(self).create(image, self.name, self.hostname, self.add_host, self.dns, self.netns)
        emit(self, {"Id": c.id, "Name": c.name}, c.id)
        return 0


@ContainerApp.subcommand("ls")
class ContainerLs(cli.Application):
    """List containers."""

    def main(self) -> int:
        store = stored_container_store(self)
        rows, cells = [], []
        for c in store.all() if store is not None else []:
            tags = store.images.tags_of(c.image)
            image = tags[0] if tags else c.image.split(":", 1)[1][:12]
            mounted = store.driver.mount_count(c.rw_layer) if store.driver.exists(c.rw_layer) else 0
            running = store.running_pid(c) is not None
            rows.append({"Id": c.id, "Name": c.name, "Image": c.image, "Mounted": mounted, "Running": running})
            cells.append((c.id[:12], image, c.name, mounted, "yes" if running else "no"))
        emit(self, rows, table(("CONTAINER ID", "IMAGE", "NAME", "MOUNTED", "RUNNING"), cells))
        return 0


@ContainerApp.subcommand("inspect")
class ContainerInspect(cli.Application):
    """Show containers as JSON (GraphDriver.Data's LowerDir includes the init layer)."""

    def main(self, *names: str) -> int:
        if not names:
            print("graphdriver container inspect: name a container", file=sys.stderr)
            return 2
        store = container_store(self)
        emit(self, [store.inspect(n) for n in names])
        return 0


@ContainerApp.subcommand("mount")
class ContainerMount(cli.Application):
    """Mount the container's rootfs (reference counted); prints the path."""

    def main(self, name: str) -> int:
        path = container_store(self).mount(name)
        emit(self, {"Path": path}, path)
        return 0


@ContainerApp.subcommand("umount")
class ContainerUmount(cli.Application):
    """Drop one mount reference (the last one unmounts)."""

    def main(self, name: str) -> int:
        container_store(self).umount(name)
        return 0


@ContainerApp.subcommand("diff")
class ContainerDiff(cli.Application):
    """What changed in the container (docker diff's A/C/D lines)."""

    def main(self, name: str) -> int:
        changes = container_store(self).changes(name)
        emit(self, [{"Path": json_text(p), "Kind": k} for p, k in changes],
             "\n".join(f"{_KINDS.get(k, '?')} {p}" for p, k in changes))
        return 0


@ContainerApp.subcommand("commit")
class ContainerCommit(cli.Application):
    """Make a new image from the container's changes (never the init layer's files); prints its id."""

    message = cli.SwitchAttr(["-m", "--message"], str, default="", help="commit message")
    author = cli.SwitchAttr(["-a", "--author"], str, default="", help="author")
    pause = cli.Flag(["-p", "--pause"], help="stop a running `container run` while its layer is read (else refused)")

    def main(self, name: str, image: str = "") -> int:
        image_id = container_store(self).commit(name, image, self.message, self.author, self.pause)
        emit(self, {"Id": image_id}, image_id)
        return 0


@ContainerApp.subcommand("rm")
class ContainerRm(cli.Application):
    """Remove containers (mounted or running ones only with --force); a failure does not stop the rest."""

    force = cli.Flag(["-f", "--force"], help="unmount, and stop a running `container run`, first")

    def main(self, *names: str) -> int:
        if not names:
            print("graphdriver container rm: name a container", file=sys.stderr)
            return 2
        store = container_store(self)
        removed: list[dict] = []

        def rm(name: str) -> None:
            c = store.remove(name, self.force)
            removed.append({"Id": c.id, "Name": c.name})
            if not top(self).as_json:
                say(c.name)
        status = each(names, rm)
        if top(self).as_json:
            emit(self, removed)
        return status


@ContainerApp.subcommand("run")
class ContainerRun(cli.Application):
    """Run a command chrooted into the container's rootfs, to check it (NOT a container runtime).

    New mount, UTS, PID and network namespaces (lo only), the container's hostname, /proc and a tmpfs
    /dev; no cgroups, no capability or seccomp limits. Writes land in the rw layer. Put the command after
    `--`: graphdriver container run NAME -- sh -c 'echo hi > /x'
    """

    def main(self, name: str, *command: str) -> int:
        from ..runner import run

        return run(container_store(self), name, list(command))
