"""What the differential audit against ``docker load`` (test_load_docker_diff.py) found, pinned without a
dockerd: a layer blob of no bytes is an empty tar, and a bad image name is refused before any layer is made."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest
from imgkit import layer_tar
from loadkit import Image, base_layer, save_entries, write_archive

from graphdriver import open_driver
from graphdriver.errors import InvalidImage
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


def test_a_bad_name_is_refused_before_any_layer_is_made(tmp_path, root):
    path = write_archive(str(tmp_path / "up.tar"), save_entries([Image([base_layer()], ["Diff/Up:1"])]))
    p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", "-i", path],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"graphdriver: {path}: invalid reference 'Diff/Up:1': want NAME[:TAG] (lowercase name)\n"
    assert not os.path.exists(os.path.join(root, "images"))  # a failed first load leaves nothing


def test_a_name_is_checked_in_every_image_before_the_first_is_loaded(tmp_path, store):
    good, bad = Image([base_layer()], ["ok:1"]), Image([base_layer(), layer_tar({"x": "x"})], ["x@sha256:" + "a" * 64])
    path = write_archive(str(tmp_path / "two.tar"), save_entries([good, bad]))
    made = []
    with pytest.raises(InvalidImage, match="digest references are not supported"):
        store.images.load(path, progress=lambda *a: made.append(a))
    assert made == [] and store.images.ids() == []


@pytest.mark.parametrize("image_os", ["windows", "plan9", "Linux"])
def test_an_image_of_another_os_is_refused_before_any_layer_is_made(tmp_path, root, image_os):
    img = Image([base_layer()], ["w:1"], {"os": image_os})
    path = write_archive(str(tmp_path / "w.tar"), save_entries([img]))
    p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", "-i", path],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == f"graphdriver: {path}: cannot load {image_os} image on linux (image {img.image_id})\n"
    assert not os.path.exists(os.path.join(root, "images"))


@pytest.mark.parametrize("extra", [{"os": "linux"}, {"os": ""}, {"architecture": "arm64"}])
def test_a_linux_image_or_one_naming_no_os_loads(tmp_path, store, extra):
    img = Image([base_layer()], ["l:1"], extra)
    [loaded] = store.images.load(write_archive(str(tmp_path / "l.tar"), save_entries([img])))
    assert loaded.image_id == img.image_id
