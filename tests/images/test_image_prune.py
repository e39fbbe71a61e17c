"""``image prune``: unnamed images no container uses go, with the layers only they held; -a takes named ones too."""

from __future__ import annotations

import json
import os

from imgkit import docker_archive, layer_tar

from graphdriver.store.imageio import hex_of


def _layer(name: str, size: int = 1000) -> bytes:
    return layer_tar({name: os.urandom(size)})


def _setup(tmp_path, store):
    """p:1 loaded twice (the first image loses its name), keep:1, and u:1 used by a container and renamed."""
    shared, only_old = _layer("shared"), _layer("old", 50_000)
    old = docker_archive(str(tmp_path / "old.tar"), [shared, only_old], ["p:1"])
    new = docker_archive(str(tmp_path / "new.tar"), [shared, _layer("new")], ["p:1"])
    keep = docker_archive(str(tmp_path / "keep.tar"), [_layer("keep")], ["keep:1"])
    used = docker_archive(str(tmp_path / "used.tar"), [_layer("used")], ["u:1"])
    for built in (old, new, keep, used):
        store.images.load(built.path)
    store.create("u:1", name="user")
    store.images.tag("keep:1", "u:1")  # the container's image has no name left, and is still in use
    return old, new, keep, used


def test_prune_removes_unnamed_unused_images_and_only_their_layers(tmp_path, store):
    old, new, keep, used = _setup(tmp_path, store)
    assert store.images.tags_of(old.image_id) == [] and store.images.tags_of(used.image_id) == []
    old_chain = store.images.chain(old.image_id)
    size_only_old = int(store.images.layer_info(old_chain[1])["size"])
    done, freed = store.prune_images()
    assert done == [f"Deleted: {old.image_id}", f"Deleted: {old_chain[1]}"]  # the shared base stays
    assert freed == size_only_old
    assert sorted(store.images.ids()) == sorted([new.image_id, keep.image_id, used.image_id])
    assert not store.driver.exists(hex_of(old_chain[1])) and store.driver.exists(hex_of(old_chain[0]))
    assert store.prune_images() == ([], 0)  # nothing left to prune


def test_prune_all_keeps_only_what_containers_use(tmp_path, store, gd):
    old, new, keep, used = _setup(tmp_path, store)
    p = gd("image", "prune", "-a", check=True)
    assert p.stdout.startswith("Deleted Images:\n") and "untagged: keep:1" in p.stdout
    assert f"deleted: {new.image_id}" in p.stdout and p.stdout.rstrip().splitlines()[-1].startswith(
        "Total reclaimed space: ")
    assert store.images.ids() == [used.image_id]  # in use by "user", though it has no name
    kept = {hex_of(c) for c in store.images.chain(used.image_id)}
    container_layers = {layer for layer in store.driver.layers() if layer not in kept}
    assert container_layers and all(layer.startswith(tuple(c.id for c in store.all())) for layer in container_layers)
    empty = json.loads(gd("--json", "image", "prune", "-a", check=True).stdout)
    assert empty == {"ImagesDeleted": [], "SpaceReclaimed": 0}
    gd("container", "rm", "user", check=True)
    assert gd("image", "prune", check=True).stdout.startswith("Deleted Images:\n")  # now unused, and unnamed
    assert store.images.ids() == [] and store.driver.layers() == []


def test_prune_takes_the_layers_a_killed_load_left_and_a_new_load_is_whole(tmp_path, store, root):
    import subprocess
    import sys

    built = docker_archive(str(tmp_path / "two.tar"), [_layer("first", 40_000), _layer("second")], ["two:1"])
    kill_at_second_layer = (
        "import os, sys; from graphdriver import open_driver; from graphdriver.store.images import ImageStore\n"
        "s = ImageStore(sys.argv[1], open_driver(sys.argv[1]))\n"
        "apply, calls = s._apply, []\n"
        "def dies_at_the_second(*a):\n"
        "    calls.append(a)\n"
        "    if len(calls) == 2:\n"
        "        os._exit(9)\n"
        "    apply(*a)\n"
        "s._apply = dies_at_the_second\n"
        "s.load(sys.argv[2])\n"
    )
    assert subprocess.run([sys.executable, "-c", kill_at_second_layer, root, built.path]).returncode == 9
    first = built.chain_ids[0]
    assert store.images.ids() == [] and store.driver.layers() == [hex_of(first)]  # complete, held by no image
    done, freed = store.prune_images()
    assert done == [f"Deleted: {first}"] and freed == 40_000
    assert store.driver.layers() == [] and os.listdir(store.images.layerdb) == []
    [loaded] = store.images.load(built.path)
    assert store.images.chain(loaded.image_id) == built.chain_ids and store.prune_images() == ([], 0)


def test_an_image_whose_layers_are_held_by_hand_is_removed_and_its_layers_wait(tmp_path, store, root):
    """One image's top layer mounted (``layer mount``), another's being read (``layer diff``): ``image rm``
    removes each image and leaves the held layer, with what it sits on, for the prune after the hold."""
    from graphdriver import open_driver

    mounted = docker_archive(str(tmp_path / "m.tar"), [_layer("m0"), _layer("m1")], ["m:1"])
    read = docker_archive(str(tmp_path / "r.tar"), [_layer("r0")], ["r:1"])
    for built in (mounted, read):
        store.images.load(built.path)
    m_chain, r_chain = store.images.chain(mounted.image_id), store.images.chain(read.image_id)
    other = open_driver(root)  # another process, as far as counts and leases go
    other.get(hex_of(m_chain[1]))
    stream = other.diff(hex_of(r_chain[0]), None)
    stream.read(1)
    assert store.remove_image("m:1") == ["Untagged: m:1", f"Deleted: {mounted.image_id}"]
    assert store.remove_image("r:1") == ["Untagged: r:1", f"Deleted: {read.image_id}"]
    assert store.images.ids() == []
    assert store.prune_images() == ([], 0)  # still held: nothing taken from under them
    assert sorted(store.driver.layers()) == sorted(hex_of(c) for c in m_chain + r_chain)
    other.put(hex_of(m_chain[1]))
    stream.close()
    done, _ = store.prune_images()
    assert sorted(done) == sorted(f"Deleted: {c}" for c in m_chain + r_chain)
    assert store.driver.layers() == []
