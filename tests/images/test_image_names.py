"""Image names normalized as docker's: every way in (load, tag, look-ups) and the short form shown."""

from __future__ import annotations

import json
import tarfile

from imgkit import docker_archive, layer_tar

from graphdriver.store.reference import normalize_ref, qualified_ref


def test_docker_forms_of_one_name_are_one_name():
    for ref in ("n", "n:latest", "library/n", "docker.io/n", "docker.io/library/n:latest",
                "index.docker.io/library/n"):
        assert normalize_ref(ref) == "n:latest", ref
    for ref in ("u/x:1", "docker.io/u/x:1", "index.docker.io/u/x:1"):
        assert normalize_ref(ref) == "u/x:1", ref
    assert normalize_ref("library/a/b") == "library/a/b:latest"  # not an official image's name
    assert normalize_ref("localhost:5000/library/n") == "localhost:5000/library/n:latest"
    assert normalize_ref("quay.io/n:2") == "quay.io/n:2"
    assert [qualified_ref(t) for t in ("n:1", "u/x:1", "quay.io/n:2")] == \
        ["docker.io/library/n:1", "docker.io/u/x:1", "quay.io/n:2"]


def test_names_are_normalized_on_load_tag_and_look_up(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "n.tar"), [layer_tar({"a": "1"})],
                           ["n:1", "index.docker.io/library/n:2", "docker.io/u/x"])
    p = gd("image", "load", "-i", built.path, check=True)
    assert p.stdout == "Loaded image: n:1\nLoaded image: n:2\nLoaded image: u/x:latest\n"
    assert store.images.tags_of(built.image_id) == ["n:1", "n:2", "u/x:latest"]
    doc = json.loads(gd("image", "inspect", "library/n:1", check=True).stdout)
    assert doc[0]["Id"] == built.image_id
    assert gd("image", "inspect", "index.docker.io/u/x:latest", check=True).returncode == 0
    gd("image", "tag", "n:1", "library/lib:1", check=True)
    gd("image", "tag", "docker.io/library/n:1", "docker.io/library/lib", check=True)
    assert store.images.tags_of(built.image_id) == ["lib:1", "lib:latest", "n:1", "n:2", "u/x:latest"]
    p = gd("image", "rm", "docker.io/library/lib:1", "library/lib")
    assert p.stdout == "Untagged: lib:1\nUntagged: lib:latest\n"
    gd("image", "save", "library/n:1", "-o", str(tmp_path / "out.tar"), check=True)
    with tarfile.open(tmp_path / "out.tar") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
    assert manifest[0]["RepoTags"] == ["n:1"]
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": "docker.io/library/n:1",
                                                    "org.opencontainers.image.ref.name": "1"}


def test_a_tag_stored_before_names_were_normalized_reads_short(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "n.tar"), [layer_tar({"a": "1"})], ["n:1"])
    store.images.load(built.path)
    with open(store.images.repos_path(), "w") as f:
        json.dump({"index.docker.io/library/n:2": built.image_id}, f)
    assert store.images.tags_of(built.image_id) == ["n:2"]
    assert json.loads(gd("image", "inspect", "n:2", check=True).stdout)[0]["RepoTags"] == ["n:2"]
