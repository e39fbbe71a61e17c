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
