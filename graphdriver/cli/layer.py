"""``graphdriver info|verify|cleanup`` and the ``layer`` group: create, rm, ls, exists, mount, umount, inspect."""

from __future__ import annotations

import os

from plumbum import cli

from ..errors import LayerNotFound
from ..kernel import probe
from ..registry import chosen_driver, unmake_store
from ..store.files import nearest_dir
from .app import CommandGroup, GraphDriverApp, emit, key_values, table, top
from .image import container_store, stores_if_any


def layer_inspect(driver, layer_id: str) -> dict:
    """The ``layer inspect`` document of one layer."""
    return {"ID": layer_id, "Parent": driver.parent(layer_id) or "",
            "ReadWrite": driver.is_rw(layer_id),
            "GraphDriver": {"Name": driver.name, "Data": driver.metadata(layer_id)},
            "MountCount": driver.mount_count(layer_id)}


@GraphDriverApp.subcommand("info")
class InfoCmd(cli.Application):
    """Driver, root, backing filesystem, kernel, probed features and counts."""

    def main(self) -> int:
        app = top(self)
        d = app.stored_driver()
        if d is None:  # what would be used; nothing made
            name, root = chosen_driver(app.root, app.driver_name), os.path.realpath(app.root)
            info = {"Driver": name, "Root": root, "Kernel": probe.kernel_release(), "Stored": False,
                    "Status": [], "Layers": 0, "Mounted": 0}
            emit(self, info, f"Driver: {name} (recorded when something is first stored)\n"
                             f"Root: {root} (nothing stored yet)\nKernel: {info['Kernel']}")
            return 0
        status = d.status()
        info = {"Driver": d.name, "Root": d.root, "Kernel": probe.kernel_release(), "Stored": True,
                "Status": [list(p) for p in status],
                "Layers": len(d.layers()), "Mounted": len(d.refs.all())}
        lines = [f"Driver: {d.name}", f"Root: {d.root}", f"Kernel: {info['Kernel']}"]
        lines += [f"{k}: {v}" for k, v in status]
        lines.append(f"Mounted: {info['Mounted']}")
        emit(self, info, "\n".join(lines))
        return 0


@GraphDriverApp.subcommand("verify")
class VerifyCmd(cli.Application):
    """Check every mount this root holds against the kernel's view; exit 1 on drift."""

    def main(self) -> int:
        d = top(self).stored_driver()
        if d is None:
            emit(self, {"Drift": [], "Referenced": 0}, f"ok: nothing stored at {os.path.abspath(top(self).root)}")
            return 0
        drift = d.verify()
        held = d.refs.all()
        text = "\n".join(f"DRIFT {x}" for x in drift) if drift else f"ok: {len(held)} layers referenced, no drift"
        emit(self, {"Drift": [{"Layer": x.layer, "Problem": x.problem} for x in drift],
                    "Referenced": len(held)}, text)
        return 1 if drift else 0


@GraphDriverApp.subcommand("cleanup")
class CleanupCmd(cli.Application):
    """Unmount every mount under this root and remove half-made layers (and containers)."""

    def main(self) -> int:
        d = top(self).stored_driver()
        if d is None:
            root = os.path.abspath(top(self).root)
            emit(self, {"Cleaned": root}, f"nothing stored at {root}: nothing to clean")
            return 0
        if os.path.isdir(os.path.join(d.root, "containers")):  # containers a kill cut short: their layers go
            container_store(self).recover()
        elif os.path.isdir(os.path.join(d.root, "images")):  # image work a kill cut short (no containers yet)
            from ..store.images import ImageStore

            ImageStore(d.root, d).recover()
        left = d.cleanup()
        emit(self, {"Cleaned": d.root, "LeftInUse": left},
             "\n".join([f"cleaned {d.root}", *(f"left alone: {x}" for x in left)]))
        return 0


@GraphDriverApp.subcommand("layer")
class LayerApp(CommandGroup):
    """Create, list, mount and remove layers."""


@LayerApp.subcommand("create")
class LayerCreate(cli.Application):
    """Create layer ID (on --parent P; --rw for a container's read-write layer)."""

    parent_id = cli.SwitchAttr(["--parent"], str, default=None, help="parent layer id")
    rw = cli.Flag(["--rw"], help="a read-write (container) layer")
    opts = cli.SwitchAttr(["--opt"], str, list=True, help="storage option KEY=VALUE (e.g. size=10G)")

    def main(self, layer_id: str) -> int:
        app = top(self)
        storage_opt = key_values(self.opts, "--opt")
        if app.stored_driver() is None:  # a bad call on a new root is refused before the store is made
            if app.new_store_backend().check_create(layer_id, self.parent_id, storage_opt, nearest_dir(app.root))[0]:
                raise LayerNotFound(f"parent layer {self.parent_id} not found (nothing is stored at "
                                    f"{os.path.realpath(app.root)} yet)")
        first = app.stored_driver() is None  # this create makes the store: a failure unmakes it
        root_made = not os.path.isdir(app.root)
        d = app.driver(create=True)
        try:
            d.create(layer_id, self.parent_id, rw=self.rw, storage_opt=storage_opt)
        except BaseException:
            if first:  # (a root too deep for the layer's own paths, say): no driver recorded, nothing left
                unmake_store(d, (), root_made)
            raise
        emit(self, layer_inspect(d, layer_id), layer_id)
        return 0


@LayerApp.subcommand("rm")
class LayerRm(cli.Application):
    """Remove layer ID (refused while mounted or while it has children)."""

    def main(self, layer_id: str) -> int:
        driver = top(self).driver()
        stores = stores_if_any(self)
        if stores is None:  # layers only at this root
            driver.remove(layer_id)
        else:
            from ..store.keepers import remove_layer

            remove_layer(stores, layer_id)
        emit(self, {"Removed": layer_id}, layer_id)
        return 0


@LayerApp.subcommand("ls")
class LayerLs(cli.Application):
    """List layers with their parent and mount count."""

    def main(self) -> int:
        d = top(self).stored_driver()
        rows = [{"ID": lid, "Parent": d.parent(lid) or "", "MountCount": d.mount_count(lid)}
                for lid in (d.layers() if d is not None else [])]
        cells = ((r["ID"], r["Parent"] or "-", r["MountCount"]) for r in rows)
        emit(self, rows, table(("ID", "PARENT", "MOUNTS"), cells))
        return 0


@LayerApp.subcommand("exists")
class LayerExistsCmd(cli.Application):
    """Exit 0 when layer ID exists, 1 when not."""

    def main(self, layer_id: str) -> int:
        d = top(self).stored_driver()
        found = d is not None and d.exists(layer_id)
        emit(self, {"ID": layer_id, "Exists": found}, "true" if found else "false")
        return 0 if found else 1


@LayerApp.subcommand("mount")
class LayerMount(cli.Application):
    """Mount layer ID (one more reference) and print the path of its root filesystem."""

    def main(self, layer_id: str) -> int:
        path = top(self).driver().get(layer_id)
        emit(self, {"ID": layer_id, "Path": path}, path)
        return 0


@LayerApp.subcommand("umount")
class LayerUmount(cli.Application):
    """Drop one reference to layer ID's mount; the last one unmounts."""

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        d.put(layer_id)
        left = d.mount_count(layer_id)
        emit(self, {"ID": layer_id, "MountCount": left},
             f"{layer_id}: {left} references left" if left else f"{layer_id}: unmounted")
        return 0


@LayerApp.subcommand("inspect")
class LayerInspect(cli.Application):
    """Print layer ID as JSON: ID, Parent, GraphDriver {Name, Data}, MountCount."""

    def main(self, layer_id: str) -> int:
        d = top(self).driver()
        if not d.exists(layer_id):
            d.parent(layer_id)  # raises LayerNotFound (or InvalidID) with one clear line
        top(self).as_json = True
        emit(self, layer_inspect(d, layer_id))
        return 0
