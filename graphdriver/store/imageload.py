"""``image load``: the images of a docker-save archive or OCI layout into an :class:`ImageStore`, whole or
not at all (every layer and config it made is removed when any step fails)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, BinaryIO

from ..errors import GraphDriverError, InvalidImage
from .files import write_atomic, write_json
from .imageio import ImageSpec, Source, chain_ids, hex_of, open_source, read_images
from .lineage import archive_parents
from .reference import normalize_ref

if TYPE_CHECKING:
    from .images import ImageStore, LoadedImage, Progress


def load_images(store: ImageStore, path: str, progress: Progress | None = None,
                stdin: BinaryIO | None = None) -> list[LoadedImage]:
    """Load every image of ``path`` (file, compressed file, directory, or ``-``: ``stdin``): layers,
    configs, tags, and the parent links of a docker-save manifest (images whose parent is in the archive
    too, as docker's)."""
    from .images import LoadedImage

    with store.lock.held():
        store.recover()  # a crashed load's decompressed copy and half-applied layer, a killed image rm's leftovers
        store.prune_records()  # surely: an image deleted and loaded again gets none of its old names or parent
        src = open_source(path, store.tmp, stdin)
        created: list[str] = []  # the layers and the configs this load makes: undone if it fails
        configs: list[str] = []
        parents_before = None
        try:
            specs = read_images(src)
            parents = archive_parents(specs)  # checked before anything is made
            for spec in specs:
                _check_os(src, spec)  # so is each image's OS
            names = [_names(src, spec) for spec in specs]  # and every name
            for spec in specs:
                _apply_layers(store, src, spec, progress, created)
            out = []
            repos = store.repos()
            for spec, tags in zip(specs, names, strict=True):
                if not os.path.exists(store.config_path(spec.image_id)):
                    write_atomic(store.config_path(spec.image_id), spec.config)
                    configs.append(store.config_path(spec.image_id))
                replaced = {t: repos[t] for t in tags if repos.get(t, spec.image_id) != spec.image_id}
                repos.update({t: spec.image_id for t in tags})
                out.append(LoadedImage(spec.image_id, tags, replaced))
            if parents:
                parents_before = store.lineage.links()
                store.lineage.update(parents)
            write_json(store.repos_path(), repos)
            return out
        except BaseException:
            if parents_before is not None:
                store.lineage.replace(parents_before)
            for config in configs:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(config)
            for layer_id in reversed(created):
                try:
                    store.drop_layer(layer_id)
                except GraphDriverError:
                    pass
            raise
        finally:
            src.close()


def _names(src: Source, spec: ImageSpec) -> list[str]:
    """The normalized names of ``spec``; a bad one is refused naming the archive, before any layer is
    applied (docker's load refuses it too, but only once the image is made)."""
    try:
        return [normalize_ref(t) for t in spec.tags]
    except GraphDriverError as e:
        raise InvalidImage(f"{src.label}: {e}") from None


def _check_os(src: Source, spec: ImageSpec) -> None:
    """Refuse ``spec`` unless its config names no OS or Linux, as docker's load does (``cannot load windows
    image on linux``; docker 20.10's daemon dies on any other OS instead)."""
    image_os = json.loads(spec.config).get("os") or ""
    if image_os not in ("", "linux"):
        raise InvalidImage(f"{src.label}: cannot load {image_os} image on linux (image {spec.image_id})")


def _apply_layers(store: ImageStore, src: Source, spec: ImageSpec, progress: Progress | None,
                  created: list[str]) -> None:
    """Apply the layers of ``spec`` not yet present, in order; each made is added to ``created``."""
    chains = chain_ids(spec.diff_ids)
    for i, layer in enumerate(spec.layers):
        layer_id = hex_of(chains[i])
        parent = hex_of(chains[i - 1]) if i else None
        if store._layer_present(layer_id):
            if progress:
                progress("exists", i + 1, len(spec.layers), chains[i], 0, 0)
            continue
        raw, size = src.open(layer.path)
        if layer.size is not None and size != layer.size:
            raise InvalidImage(f"size mismatch for layer blob {layer.digest}: expected {layer.size}, got {size}")
        report = None
        if progress:
            def report(done: int, i: int = i, c: str = chains[i], n: int = len(spec.layers),
                       total: int = size) -> None:
                progress("progress", i + 1, n, c, done, total)
        try:
            store._apply(layer_id, parent, raw, spec.diff_ids[i], layer.digest, report)
        except GraphDriverError as e:
            raise type(e)(f"{src.label}: layer {i + 1}/{len(spec.layers)} ({layer.path}): {e}") from None
        created.append(layer_id)
        if progress:
            progress("loaded", i + 1, len(spec.layers), chains[i], size, size)
