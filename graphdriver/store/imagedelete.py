"""Removing images as docker's ``rmi`` does: a name is untagged, and the image deleted with its last name;
by id, an image with several names is deleted only when forced; an image a container uses is refused."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from ..errors import ImageInUse
from .files import write_json
from .imageio import hex_of

if TYPE_CHECKING:
    from .images import ImageStore

InUse = Mapping[str, Collection[str]]


def _conflict(image_id: str, forceable: bool, why: str) -> ImageInUse:
    return ImageInUse(f"conflict: unable to delete {hex_of(image_id)[:12]} "
                      f"({'must be forced' if forceable else 'cannot be forced'}) - {why}")


def _in_use(ref: str, users: list[str]) -> ImageInUse:
    many = len(users) > 1
    return ImageInUse(f"image {ref} is in use by container{'s' if many else ''} {', '.join(users)}; "
                      f"remove {'them' if many else 'it'} first")


def remove_image(store: ImageStore, ref: str, in_use: InUse, force: bool = False) -> tuple[list[str], list[str]]:
    """Untag or delete what ``ref`` names; the lines docker prints (``Untagged: x``, ``Deleted: sha256:..``)
    and the chain ids whose layers went. The caller holds the store's lock."""
    image_id = store.resolve(ref)
    repos = store.repos()
    tags = sorted(t for t, i in repos.items() if i == image_id)
    users = sorted(in_use.get(image_id, ()))
    tag = store.tag_named(ref)
    if tag is not None:  # by name: only that name goes, unless it was the last
        if len(tags) == 1 and users:
            raise _in_use(ref, users)
        del repos[tag]
        write_json(store.repos_path(), repos)
        if len(tags) > 1 or store.children(image_id):  # a parent stays, untagged, for its children
            return [f"Untagged: {tag}"], []
        lines, dropped = _delete(store, image_id, in_use)
        return [f"Untagged: {tag}", *lines], dropped
    if store.children(image_id):
        raise _conflict(image_id, False, "image has dependent child images")
    if users:
        raise _in_use(ref, users)
    if len(tags) > 1 and not force:
        raise _conflict(image_id, True, "image is referenced in multiple repositories")
    for t in tags:
        del repos[t]
    write_json(store.repos_path(), repos)
    lines, dropped = _delete(store, image_id, in_use)
    return [*(f"Untagged: {t}" for t in tags), *lines], dropped


def _delete(store: ImageStore, image_id: str, in_use: InUse) -> tuple[list[str], list[str]]:
    """Delete a nameless image's config and the layers no other image holds (a layer held by hand —
    mounted, being read — stays, with what it sits on, for a prune after the hold); then its parent, as
    docker does, when that is left without names, children or containers."""
    chain = store.chain(image_id)
    parent = store.lineage.parent(image_id)
    os.unlink(store.config_path(image_id))
    store.lineage.forget(image_id)
    done = [f"Deleted: {image_id}"]
    still = {c for other in store.ids() for c in store.chain(other)}
    dropped = []
    for c in reversed(chain):
        if c in still or store.driver.children(hex_of(c)) or store.driver.held(hex_of(c)):
            break
        store.drop_layer(hex_of(c))
        done.append(f"Deleted: {c}")
        dropped.append(c)
    if parent in store.ids() and not (store.tags_of(parent) or store.children(parent) or in_use.get(parent)):
        lines, more = _delete(store, parent, in_use)
        done += lines
        dropped += more
    return done, dropped
