"""``image save`` as docker's: RepoTags only from the names given, one entry per image, ``repositories``."""

from __future__ import annotations

import json
import tarfile

from imgkit import docker_archive, layer_tar


def _read(path) -> tuple[list, dict, dict | None]:
    with tarfile.open(path) as tf:
        names = tf.getnames()
        repositories = json.load(tf.extractfile("repositories")) if "repositories" in names else None
        return json.load(tf.extractfile("manifest.json")), json.load(tf.extractfile("index.json")), repositories


def test_save_by_id_writes_no_tags(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "n.tar"), [layer_tar({"a": "1"})], ["n:1", "n:2"])
    store.images.load(built.path)
    gd("image", "save", built.image_id.split(":")[1][:12], "-o", str(tmp_path / "id.tar"), check=True)
    manifest, index, repositories = _read(tmp_path / "id.tar")
    assert [m["RepoTags"] for m in manifest] == [None]
    assert ["annotations" in d for d in index["manifests"]] == [False]
    assert repositories is None


def test_save_of_two_tags_of_one_image_is_one_entry_with_both(tmp_path, store, gd, other_root):
    built = docker_archive(str(tmp_path / "n.tar"), [layer_tar({"a": "1"}), layer_tar({"b": "2"})],
                           ["n:1", "n:2", "m:1"])
    store.images.load(built.path)
    out = str(tmp_path / "two.tar")
    gd("image", "save", "n:1", "n:2", built.image_id, "n:1", "-o", out, check=True)
    manifest, index, repositories = _read(out)
    assert [m["RepoTags"] for m in manifest] == [["n:1", "n:2"]]
    assert [d["annotations"]["io.containerd.image.name"] for d in index["manifests"]] == \
        ["docker.io/library/n:1", "docker.io/library/n:2"]
    top = built.diff_ids[-1].split(":")[1]
    assert repositories == {"n": {"1": top, "2": top}}
    with tarfile.open(out) as tf:
        assert f"blobs/sha256/{top}" in tf.getnames()  # what repositories points at
    from graphdriver import open_driver
    from graphdriver.store.images import ImageStore

    loaded = ImageStore(other_root, open_driver(other_root)).load(out)
    assert [(i.image_id, i.tags) for i in loaded] == [(built.image_id, ["n:1", "n:2"])]
