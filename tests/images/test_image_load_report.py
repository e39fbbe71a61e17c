"""What image load reports: a tag taken from another image (docker's "renaming the old one" line), and a
descriptor whose size is wrong."""

from __future__ import annotations

import json
import os

from imgkit import docker_archive, layer_tar, oci_layout, sha256


def test_load_of_a_tag_naming_another_image_says_the_old_one_loses_it(tmp_path, gd):
    old = docker_archive(str(tmp_path / "old.tar"), [layer_tar({"a": "old"})], ["n:1", "n:2"])
    new = docker_archive(str(tmp_path / "new.tar"), [layer_tar({"a": "new"})], ["n:1", "other:1"])
    gd("image", "load", "-q", "-i", old.path, check=True)
    p = gd("image", "load", "-q", "-i", new.path, check=True)
    assert p.stdout == (f"The image n:1 already exists, renaming the old one with ID {old.image_id} to empty "
                        f"string\nLoaded image: n:1\nLoaded image: other:1\n")
    assert p.stderr == ""
    p = gd("image", "load", "-q", "-i", new.path, check=True)  # the same image again: nothing renamed
    assert p.stdout == "Loaded image: n:1\nLoaded image: other:1\n"
    p = gd("--json", "image", "load", "-q", "-i", old.path, check=True)
    assert json.loads(p.stdout) == [{"Id": old.image_id, "RepoTags": ["n:1", "n:2"],
                                     "Replaced": {"n:1": new.image_id}}]
    doc = json.loads(gd("image", "inspect", new.image_id, check=True).stdout)[0]
    assert doc["RepoTags"] == ["other:1"]


def test_a_descriptor_with_a_wrong_size_is_named_a_size_mismatch(tmp_path, gd):
    built = oci_layout(str(tmp_path / "oci"), [layer_tar({"a": "1"})], "n:1")
    index_path = os.path.join(built.path, "index.json")
    with open(index_path) as f:
        index = json.load(f)
    desc = index["manifests"][0]
    real = desc["size"]
    desc["size"] = real + 5
    with open(index_path, "w") as f:
        json.dump(index, f)
    p = gd("image", "load", "-q", "-i", built.path)
    assert p.returncode == 1
    assert p.stderr == (f"graphdriver: size mismatch for blob {desc['digest']} in {built.path}: "
                        f"expected {real + 5}, got {real}\n")
    desc["size"] = real  # the right size, other bytes: a digest mismatch
    with open(index_path, "w") as f:
        json.dump(index, f)
    blob = os.path.join(built.path, "blobs/sha256", desc["digest"].split(":")[1])
    with open(blob, "rb") as f:
        data = f.read()
    with open(blob, "wb") as f:
        f.write(b" " + data[1:])
    p = gd("image", "load", "-q", "-i", built.path)
    assert p.returncode == 1
    assert p.stderr == (f"graphdriver: digest mismatch for blob {desc['digest']} in {built.path}: "
                        f"got {sha256(b' ' + data[1:])}\n")
    assert gd("image", "ls", check=True).stdout.splitlines()[1:] == []
