"""``image rm`` and ``container rm`` as docker's: every argument handled, conflicts, force, --json."""

from __future__ import annotations

import json

from imgkit import docker_archive, layer_tar


def _load(tmp_path, store, name: str, tags: list[str], files: dict | None = None) -> str:
    built = docker_archive(str(tmp_path / f"{name}.tar"), [layer_tar(files or {name: name})], tags)
    store.images.load(built.path)
    return built.image_id


def test_image_rm_of_several_goes_on_past_a_failure(tmp_path, store, gd):
    image_id = _load(tmp_path, store, "a", ["t:1", "t:2", "t:3"])
    p = gd("image", "rm", "t:1", "nosuch", "t:2")
    assert p.returncode == 1
    assert p.stdout == "Untagged: t:1\nUntagged: t:2\n"
    assert p.stderr == "graphdriver: no such image: nosuch\n"
    assert store.images.tags_of(image_id) == ["t:3"]


def test_container_rm_of_several_goes_on_past_a_failure(tmp_path, store, gd):
    _load(tmp_path, store, "a", ["t:1"])
    for name in ("q1", "q3"):
        store.create("t:1", name)
    p = gd("container", "rm", "q1", "nosuch", "q3")
    assert (p.returncode, p.stdout, p.stderr) == (1, "q1\nq3\n", "graphdriver: no such container: nosuch\n")
    assert store.all() == []
    assert json.loads(gd("--json", "container", "ls", check=True).stdout) == []


def test_rm_by_id_of_an_image_with_several_names_must_be_forced(tmp_path, store, gd):
    image_id = _load(tmp_path, store, "a", ["app:1", "bb:1"])
    short = image_id.split(":")[1][:12]
    p = gd("image", "rm", short)
    assert p.returncode == 1
    assert p.stderr == (f"graphdriver: conflict: unable to delete {short} (must be forced) - "
                        f"image is referenced in multiple repositories\n")
    assert store.images.tags_of(image_id) == ["app:1", "bb:1"]
    store.create("app:1", "user")
    p = gd("image", "rm", "-f", short)  # forced, but a container uses it: refused, naming it
    assert (p.returncode, p.stderr) == (1, f"graphdriver: image {short} is in use by container user; remove it first\n")
    store.remove("user")
    p = gd("image", "rm", "--force", short)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[:3] == ["Untagged: app:1", "Untagged: bb:1", f"Deleted: {image_id}"]
    assert store.images.ids() == [] and store.driver.layers() == []


def test_rm_by_id_of_an_image_with_one_name_untags_and_deletes(tmp_path, store, gd):
    image_id = _load(tmp_path, store, "a", ["app:1", "app:2"])
    p = gd("image", "rm", image_id)  # docker 20.10 too: two tags of one repository are two references
    assert p.returncode == 1 and "(must be forced) - image is referenced in multiple repositories" in p.stderr
    gd("image", "rm", "app:2", check=True)
    p = gd("image", "rm", image_id)
    assert p.returncode == 0 and p.stdout.splitlines()[:2] == ["Untagged: app:1", f"Deleted: {image_id}"]
    assert store.images.ids() == []


def test_diff_of_an_unchanged_container_prints_nothing(tmp_path, store, gd):
    _load(tmp_path, store, "a", ["t:1"])
    store.create("t:1", "c")
    assert gd("container", "diff", "c", check=True).stdout == ""
    assert json.loads(gd("--json", "container", "diff", "c", check=True).stdout) == []


def test_json_of_rm_mount_and_save(tmp_path, store, gd):
    image_id = _load(tmp_path, store, "a", ["t:1", "t:2"])
    c = store.create("t:1", "c1")
    p = gd("--json", "container", "mount", "c1", check=True)
    assert json.loads(p.stdout) == {"Path": store.driver.metadata(c.rw_layer)["MergedDir"]}
    gd("container", "umount", "c1", check=True)
    p = gd("--json", "container", "rm", "c1", "nosuch")
    assert p.returncode == 1 and json.loads(p.stdout) == [{"Id": c.id, "Name": "c1"}]
    out = tmp_path / "out.tar"
    p = gd("--json", "image", "save", "t:1", "-o", str(out), check=True)
    assert json.loads(p.stdout) == {"Output": str(out), "Images": [{"Id": image_id, "RepoTags": ["t:1"]}]}
    p = gd("--json", "image", "save", "t:1")
    assert p.returncode == 2 and "--json needs -o FILE" in p.stderr
    p = gd("--json", "image", "rm", "t:1", "nosuch", "t:2")
    assert p.returncode == 1
    assert json.loads(p.stdout)[:3] == [{"Untagged": "t:1"}, {"Untagged": "t:2"}, {"Deleted": image_id}]
