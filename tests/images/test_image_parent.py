"""Committed images record their parent, as docker's: shown by inspect, protecting the parent, and carried
through save and load."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from imgkit import docker_archive, layer_tar

from graphdriver import open_driver
from graphdriver.errors import InvalidImage
from graphdriver.store.images import ImageStore


def _base_and_child(tmp_path, store) -> tuple[str, str]:
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"a": "1"})], ["base:1"])
    store.images.load(built.path)
    store.create("base:1", "c")
    path = store.mount("c")
    with open(f"{path}/new", "w") as f:
        f.write("x")
    store.umount("c")
    child = store.commit("c", "child:1", "add new")
    store.remove("c")
    return built.image_id, child


def test_commit_records_parent_and_comment(tmp_path, store, gd):
    base, child = _base_and_child(tmp_path, store)
    doc = json.loads(gd("image", "inspect", "child:1", check=True).stdout)[0]
    assert (doc["Parent"], doc["Comment"]) == (base, "add new")
    cfg = json.loads(store.images.config_bytes(child))
    assert cfg["comment"] == "add new" and cfg["history"][-1]["comment"] == "add new"
    assert json.loads(gd("image", "inspect", "base:1", check=True).stdout)[0]["Parent"] == ""


def test_a_parent_is_kept_for_its_child(tmp_path, store, gd):
    base, child = _base_and_child(tmp_path, store)
    short = base.split(":")[1][:12]
    p = gd("image", "rm", "-f", base)
    assert p.returncode == 1
    assert p.stderr == (f"graphdriver: conflict: unable to delete {short} (cannot be forced) - "
                        f"image has dependent child images\n")
    p = gd("image", "rm", "base:1")  # its last name: only untagged, the image stays for its child
    assert (p.returncode, p.stdout) == (0, "Untagged: base:1\n")
    assert store.images.ids() == sorted([base, child]) and store.images.tags_of(base) == []
    assert gd("image", "prune", check=True).stdout == "Total reclaimed space: 0B\n"  # not dangling
    p = gd("image", "rm", "child:1", check=True)  # the child goes, and the parent left without a name
    lines = p.stdout.splitlines()
    assert lines[:2] == ["Untagged: child:1", f"Deleted: {child}"] and f"Deleted: {base}" in lines
    assert store.images.ids() == [] and store.driver.layers() == []


def test_prune_all_takes_a_child_then_its_parent(tmp_path, store, gd):
    base, child = _base_and_child(tmp_path, store)
    p = gd("image", "prune", "-a", check=True)
    assert p.stdout.index(f"deleted: {child}") < p.stdout.index(f"deleted: {base}")
    assert store.images.ids() == [] and store.driver.layers() == []


def _manifest(path: str) -> list[dict]:
    with tarfile.open(path) as tf:
        return json.load(tf.extractfile("manifest.json"))


def test_save_and_load_carry_the_parent_when_both_are_in_the_archive(tmp_path, store, gd, other_root):
    base, child = _base_and_child(tmp_path, store)
    both, alone = str(tmp_path / "both.tar"), str(tmp_path / "alone.tar")
    gd("image", "save", "child:1", "base:1", "-o", both, check=True)
    gd("image", "save", "child:1", "-o", alone, check=True)
    assert [(e["RepoTags"], e.get("Parent")) for e in _manifest(both)] == [(["child:1"], base), (["base:1"], None)]
    assert [e.get("Parent") for e in _manifest(alone)] == [None]  # as docker's: only a parent saved too
    other = ImageStore(other_root, open_driver(other_root))
    other.load(alone)
    assert other.inspect("child:1")["Parent"] == ""
    other.load(both)
    assert other.inspect("child:1")["Parent"] == base and other.inspect("base:1")["Parent"] == ""
    assert other.children(base) == [child]


def test_a_parent_whose_history_does_not_lead_to_the_child_is_refused(tmp_path, store, gd, other_root):
    base, child = _base_and_child(tmp_path, store)
    saved, bad = str(tmp_path / "both.tar"), str(tmp_path / "bad.tar")
    gd("image", "save", "child:1", "base:1", "-o", saved, check=True)
    with tarfile.open(saved) as src, tarfile.open(bad, "w") as dst:
        for m in src:
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "manifest.json":
                entries = json.loads(data)
                entries[0].pop("Parent", None)
                entries[1]["Parent"] = child  # the base made from its own child
                data = json.dumps(entries).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    other = ImageStore(other_root, open_driver(other_root))
    with pytest.raises(InvalidImage, match=f"image {child} is not a valid parent for {base}"):
        other.load(bad)
    assert other.ids() == [] and other.driver.layers() == [] and other.lineage.links() == {}
