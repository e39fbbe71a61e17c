"""container commit of a container with no changes: no empty layer, as docker's NewChildImage."""

from __future__ import annotations

import json
import os

from imgkit import docker_archive, layer_tar, sha256

from graphdriver import open_driver
from graphdriver.store.images import ImageStore

EMPTY_TAR = sha256(b"\0" * 1024)


def test_committing_an_unchanged_container_adds_no_layer(tmp_path, store, gd, other_root):
    assert EMPTY_TAR == "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"etc/motd": "hi\n"})], ["base:1"])
    store.images.load(built.path)
    store.create("base:1", "c")
    layers_before = sorted(store.driver.layers())
    new = gd("container", "commit", "c", "same:1", check=True).stdout.strip()
    cfg = json.loads(store.images.config_bytes(new))
    assert new != built.image_id and cfg["rootfs"]["diff_ids"] == built.diff_ids
    assert cfg["history"][-1]["empty_layer"] is True and len(cfg["history"]) == 2
    assert "empty_layer" not in cfg["history"][0]
    assert sorted(store.driver.layers()) == layers_before  # no layer made, none left behind
    doc = json.loads(gd("image", "inspect", "same:1", check=True).stdout)[0]
    assert doc["Parent"] == built.image_id and doc["RootFS"]["Layers"] == built.diff_ids
    assert sorted(line.split() for line in gd("image", "ls", check=True).stdout.splitlines()[1:]) == [
        ["base:1", built.image_id[7:19], "1", "3B"], ["same:1", new[7:19], "1", "3B"]]
    # a container of it sees its parent's files
    gd("container", "create", "same:1", "--name", "c2", check=True)
    path = gd("container", "mount", "c2", check=True).stdout.strip()
    assert open(os.path.join(path, "etc/motd")).read() == "hi\n"
    gd("container", "umount", "c2", check=True)
    # save and load round trip: the same image, its parent link too
    out = str(tmp_path / "s.tar")
    gd("image", "save", "base:1", "same:1", "-o", out, check=True)
    other = ImageStore(other_root, open_driver(other_root))
    assert sorted(i.image_id for i in other.load(out)) == sorted([built.image_id, new])
    assert other.inspect("same:1")["RootFS"]["Layers"] == built.diff_ids
    # removal: the child takes no layer (its parent holds them), the parent then takes them
    gd("container", "rm", "c", "c2", check=True)
    assert gd("image", "rm", "same:1", check=True).stdout == f"Untagged: same:1\nDeleted: {new}\n"
    assert gd("image", "rm", "base:1", check=True).stdout == (
        f"Untagged: base:1\nDeleted: {built.image_id}\nDeleted: {built.chain_ids[0]}\n")
    assert store.images.ids() == [] and store.driver.layers() == []


def test_an_unchanged_commit_keeps_its_parent_and_frees_only_its_layers(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"a": "1"})], ["base:1"])
    store.images.load(built.path)
    store.create("base:1", "c")
    new = store.commit("c", "same:1")
    store.remove("c")
    p = gd("image", "rm", "base:1", check=True)  # kept, nameless, for its child
    assert p.stdout == "Untagged: base:1\n"
    p = gd("image", "rm", "same:1", check=True)  # the child, then its parent with the layer
    assert p.stdout == (f"Untagged: same:1\nDeleted: {new}\nDeleted: {built.image_id}\n"
                        f"Deleted: {built.chain_ids[0]}\n")
    assert store.driver.layers() == []
