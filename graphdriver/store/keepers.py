"""Which store keeps a driver layer: on a root with images and containers, their layers are theirs.

The driver itself knows layers only (as Docker's graphdriver); the ``layer`` commands go through here on
a root that has image and container stores, so that a layer of an image, or a container's read-write or
``-init`` layer, is removed only by ``image rm`` or ``container rm``, and an image's layer never changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LayerInUse

if TYPE_CHECKING:
    from .containers import ContainerStore


def layer_user(store: ContainerStore, layer_id: str) -> tuple[str, str] | None:
    """What keeps driver layer ``layer_id``: ("container", "container c1's read-write layer") — or init
    layer — or ("image", "a layer of image busybox:1") for a layer of an image's chain; None when neither
    does. The caller holds the store's lock to act on the answer."""
    for c in store.all():
        if layer_id in (c.rw_layer, c.init_layer):
            return "container", f"container {c.name}'s {'read-write' if layer_id == c.rw_layer else 'init'} layer"
    for image_id in store.images.ids():
        if f"sha256:{layer_id}" in store.images.chain(image_id):
            tags = store.images.tags_of(image_id)
            return "image", f"a layer of image {tags[0] if tags else image_id.split(':', 1)[1][:12]}"
    return None


def remove_layer(store: ContainerStore, layer_id: str) -> None:
    """``layer rm``: refused (LayerInUse, naming the image or container and the command that removes it)
    while one keeps the layer; checked and removed under the stores' lock, so none takes it up meanwhile."""
    with store.lock.held():
        user = layer_user(store, layer_id)
        if user is not None:
            raise LayerInUse(f"cannot remove layer {layer_id}: it is {user[1]}; remove that with {user[0]} rm")
        store.driver.remove(layer_id)


def check_apply(store: ContainerStore, layer_id: str) -> None:
    """``layer apply``: refused into a layer of an image (its content is what its diffID names). A
    container's layers may take a diff (while not mounted, as any layer). A check alone: the apply
    extracts under its own lease, without the stores' lock."""
    with store.lock.held():
        user = layer_user(store, layer_id)
    if user is not None and user[0] == "image":
        raise LayerInUse(f"cannot apply a diff to layer {layer_id}: it is {user[1]}, and image layers do not "
                         f"change; make a layer on it (layer create --parent)")
