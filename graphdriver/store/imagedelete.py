"""Removing images as docker's ``rmi`` does: a name is untagged, and the image deleted with its last name;
by id, an image with several names is deleted only when forced; an image a container uses is refused.

A deletion frees before it writes, so it works on a full disk, and a kill at any point leaves the image
listed whole or not at all: its config is renamed aside (``configs/<hex>.removing``: no room needed, and
from then on the image is gone for every reader, its tags and parent link void), the layers only it held
are removed, the set-aside config unlinked, and only then are the tags and links rewritten (with the room
just freed; on a disk that still has none they stay void, skipped by readers, for the next
:meth:`ImageStore.recover`). :func:`finish_removals` completes a deletion a kill cut short."""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from ..errors import ImageInUse
from .files import write_json
from .imageio import chain_ids, hex_of

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
        if len(tags) > 1 or store.children(image_id):  # a parent stays, untagged, for its children
            del repos[tag]
            write_json(store.repos_path(), repos)
            return [f"Untagged: {tag}"], []
        lines, dropped = _delete(store, image_id, in_use)  # its last name goes with it
        return [f"Untagged: {tag}", *lines], dropped
    if store.children(image_id):
        raise _conflict(image_id, False, "image has dependent child images")
    if users:
        raise _in_use(ref, users)
    if len(tags) > 1 and not force:
        raise _conflict(image_id, True, "image is referenced in multiple repositories")
    lines, dropped = _delete(store, image_id, in_use)
    return [*(f"Untagged: {t}" for t in tags), *lines], dropped


def _delete(store: ImageStore, image_id: str, in_use: InUse) -> tuple[list[str], list[str]]:
    """Delete an image (its names go with it) and the layers no other image holds (a layer held by hand —
    mounted, being read — stays, with what it sits on, for a prune after the hold); then its parent, as
    docker does, when that is left without names, children or containers. Frees first, writes last (see
    the module's docstring)."""
    chain = store.chain(image_id)
    parent = store.lineage.parent(image_id)
    os.rename(store.config_path(image_id), store.removing_path(image_id))  # the image is gone from here on
    dropped = _drop_chain(store, chain)
    os.unlink(store.removing_path(image_id))
    store.prune_records(strict=False)  # its names and its parent link, now void
    done = [f"Deleted: {image_id}", *(f"Deleted: {c}" for c in dropped)]
    if parent in store.ids() and not (store.tags_of(parent) or store.children(parent) or in_use.get(parent)):
        lines, more = _delete(store, parent, in_use)
        done += lines
        dropped += more
    return done, dropped


def _drop_chain(store: ImageStore, chain: list[str]) -> list[str]:
    """Remove the layers of ``chain``, top first, up to one another image holds, another layer is built on
    or someone holds by hand; the chain ids removed."""
    still = {c for other in store.ids() for c in store.chain(other)}
    dropped = []
    for c in reversed(chain):
        if c in still or store.driver.children(hex_of(c)) or store.driver.held(hex_of(c)):
            break
        store.drop_layer(hex_of(c))
        dropped.append(c)
    return dropped


def finish_removals(store: ImageStore) -> list[str]:
    """Finish the deletions a kill cut short (their configs set aside): the layers only they held go, then
    the set-aside configs; the image ids. The lock is held."""
    done = []
    for name in sorted(os.listdir(store.configs)):
        if not name.endswith(".removing"):
            continue
        path = os.path.join(store.configs, name)
        try:
            with open(path, "rb") as f:
                chain = chain_ids(json.loads(f.read())["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):  # damaged: its layers are left loose, for image prune
            chain = []
        _drop_chain(store, chain)
        os.unlink(path)
        done.append("sha256:" + name[:-len(".removing")])
    return done
