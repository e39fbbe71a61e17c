"""What the differential audit against ``docker load`` (test_load_docker_diff.py) found, pinned without a
dockerd: a layer blob of no bytes is an empty tar."""

from __future__ import annotations

import tarfile

from loadkit import Image, base_layer, save_entries, write_archive

from graphdriver import open_driver
from graphdriver.store.images import ImageStore

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of no bytes


def test_a_layer_blob_of_no_bytes_loads_as_an_empty_tar_and_saves_back(tmp_path, store, gd, other_root):
    img = Image([base_layer(), b""], ["e0:1"])
    assert img.diff_ids[1] == EMPTY
    [loaded] = store.images.load(write_archive(str(tmp_path / "e0.tar"), save_entries([img])))
    assert loaded.image_id == img.image_id
    assert store.images.inspect("e0:1")["RootFS"]["Layers"] == img.diff_ids
    out = str(tmp_path / "out.tar")
    gd("image", "save", "e0:1", "-o", out, check=True)
    with tarfile.open(out) as tf:
        assert tf.getmember("blobs/sha256/" + EMPTY[7:]).size == 0
    [back] = ImageStore(other_root, open_driver(other_root)).load(out)
    assert back.image_id == img.image_id
