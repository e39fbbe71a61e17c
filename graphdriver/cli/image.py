"""The ``image`` group: load, ls, inspect, rm, prune, save, tag. Commands only: the storage logic is in store/."""

from __future__ import annotations

import os
import sys

from plumbum import cli

from ..registry import unmake_store
from .app import CommandGroup, each, emit, say, table, top


def container_store(app: cli.Application, *, create: bool = False):  # noqa: ANN201  (a ContainerStore; imported on use: fast start-up)
    """The image and container stores of the app's root and driver (see ``GraphDriverApp.driver`` for
    ``create``)."""
    from ..store.containers import ContainerStore
    from ..store.images import ImageStore

    t = top(app)
    return ContainerStore(ImageStore(t.root, t.driver(create=create)))


def stores_if_any(app: cli.Application):  # noqa: ANN201  (a ContainerStore or None)
    """The root's image and container stores when an image command has made them, else None (nothing
    made)."""
    from ..store.images import images_dir

    return container_store(app) if os.path.isdir(images_dir(top(app).root)) else None


def stored_container_store(app: cli.Application):  # noqa: ANN201
    """:func:`container_store`, or None while no image has been stored at the root (nothing made: a full
    or read-only root still lists, inspects and removes)."""
    return stores_if_any(app) if top(app).stored_driver() is not None else None


def human(n: float) -> str:
    """Bytes as Docker prints them (kB, MB, GB; powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


class _Progress:
    """Per-layer progress: one updating line on a terminal, plain lines otherwise."""

    def __init__(self, stream=sys.stderr) -> None:
        self.out = stream
        self.tty = stream.isatty()

    def __call__(self, event: str, i: int, n: int, chain: str, done: int, total: int) -> None:
        short = chain.split(":", 1)[1][:12]
        if event == "exists":
            print(f"Layer {i}/{n} {short}: already exists", file=self.out)
        elif event == "loaded":
            end = "\r\x1b[K" if self.tty else ""
            print(f"{end}Loaded layer {i}/{n} {short} ({human(total)})", file=self.out)
        elif self.tty:
            pct = 100 * done // total if total else 100
            print(f"\rLoading layer {i}/{n} {short} {human(done)}/{human(total)} {pct}%", end="",
                  file=self.out, flush=True)


class ImageApp(CommandGroup):
    """Images: load docker-save archives and OCI layouts, inspect, tag, save, remove."""


@ImageApp.subcommand("load")
class ImageLoad(cli.Application):
    """Load a docker-save tarball or an OCI image layout (directory or tar; plain or compressed)."""

    input = cli.SwitchAttr(["-i", "--input"], str, default="-",
                           help="archive file or OCI layout directory (default: standard input)")
    quiet = cli.Flag(["-q", "--quiet"], help="no progress output")

    def main(self) -> int:
        if self.input == "-" and sys.stdin.isatty():
            print("graphdriver image load: no input: use -i FILE or pipe an archive in", file=sys.stderr)
            return 2
        app = top(self)
        first = app.stored_driver() is None  # this load makes the store: a failure unmakes it
        root_made = not os.path.isdir(app.root)
        store = container_store(self, create=True)
        try:
            loaded = store.images.load(self.input, None if self.quiet else _Progress(), sys.stdin.buffer)
        except BaseException:
            if first:
                with store.lock.held():
                    unmake_store(store.driver, (store.images.dir, store.dir), root_made)
            raise
        lines = []
        for img in loaded:
            for t in img.tags:  # docker load's lines, on stdout too
                if t in img.replaced:
                    lines.append(f"The image {t} already exists, renaming the old one with ID {img.replaced[t]} "
                                 f"to empty string")
                lines.append(f"Loaded image: {t}")
            if not img.tags:
                lines.append(f"Loaded image ID: {img.image_id}")
        emit(self, [{"Id": i.image_id, "RepoTags": i.tags, "Replaced": i.replaced} for i in loaded],
             "\n".join(lines))
        return 0


@ImageApp.subcommand("ls")
class ImageLs(cli.Application):
    """List images."""

    def main(self) -> int:
        store = stored_container_store(self)
        rows = store.images.list() if store is not None else []
        cells = [(tag, r["Id"].split(":", 1)[1][:12], r["Layers"], human(r["Size"]))
                 for r in rows for tag in r["RepoTags"] or ["<none>:<none>"]]
        emit(self, rows, table(("REPOSITORY:TAG", "IMAGE ID", "LAYERS", "SIZE"), cells, right=(2, 3)))
        return 0


@ImageApp.subcommand("inspect")
class ImageInspect(cli.Application):
    """Show images as JSON (Id, RepoTags, RootFS, GraphDriver, ...)."""

    def main(self, *names: str) -> int:
        if not names:
            print("graphdriver image inspect: name an image", file=sys.stderr)
            return 2
        store = container_store(self)
        emit(self, [store.images.inspect(n) for n in names])
        return 0


@ImageApp.subcommand("rm")
class ImageRm(cli.Application):
    """Untag or remove images (refused while a container uses one); a failure does not stop the rest."""

    force = cli.Flag(["-f", "--force"], help="by id, also an image with several names (untags them all)")

    def main(self, *names: str) -> int:
        if not names:
            print("graphdriver image rm: name an image", file=sys.stderr)
            return 2
        store = container_store(self)
        if not top(self).as_json:
            return each(names, lambda n: say("\n".join(store.remove_image(n, self.force))))
        done: list[str] = []  # docker's API shape: [{"Untagged": ...}, {"Deleted": ...}], of every name
        status = each(names, lambda n: done.extend(store.remove_image(n, self.force)))
        emit(self, [dict([line.split(": ", 1)]) for line in done])
        return status


@ImageApp.subcommand("prune")
class ImagePrune(cli.Application):
    """Remove images no container uses that have no name (-a: every image no container uses)."""

    all_unused = cli.Flag(["-a", "--all"], help="also named images no container uses")

    def main(self) -> int:
        store = stored_container_store(self)
        done, freed = store.prune_images(self.all_unused) if store is not None else ([], 0)
        items = [{line.split(": ", 1)[0]: line.split(": ", 1)[1]} for line in done]
        lines = ["Deleted Images:", *(line[0].lower() + line[1:] for line in done), ""] if done else []
        text = "\n".join([*lines, f"Total reclaimed space: {human(freed)}"])  # as docker image prune prints
        emit(self, {"ImagesDeleted": items, "SpaceReclaimed": freed}, text)
        return 0


@ImageApp.subcommand("save")
class ImageSave(cli.Application):
    """Write images as a tarball that `docker load` accepts (also an OCI image layout)."""

    output = cli.SwitchAttr(["-o", "--output"], str, default="-", help="file to write (default: stdout)")

    def main(self, *names: str) -> int:
        if not names:
            print("graphdriver image save: name an image", file=sys.stderr)
            return 2
        if self.output == "-" and sys.stdout.isatty():
            print("graphdriver image save: refusing to write a tarball to a terminal; use -o FILE", file=sys.stderr)
            return 2
        if self.output == "-" and top(self).as_json:
            print("graphdriver image save: --json needs -o FILE (the tarball goes to standard output)",
                  file=sys.stderr)
            return 2
        written = container_store(self).images.save(list(names), self.output)
        if top(self).as_json:
            emit(self, {"Output": os.path.abspath(self.output), "Images": written})
        return 0


@ImageApp.subcommand("tag")
class ImageTag(cli.Application):
    """Give the image SOURCE another name TARGET[:TAG]."""

    def main(self, source: str, target: str) -> int:
        image_id = container_store(self).images.tag(source, target)
        emit(self, {"Id": image_id, "Tag": target}, image_id)
        return 0
