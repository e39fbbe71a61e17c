"""Container names as docker's: ``--name /web`` is ``web``; a container's errors name the container."""

from __future__ import annotations

import json

from imgkit import docker_archive, layer_tar


def _load(tmp_path, gd) -> None:
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"a": "1"})], ["base:1"])
    gd("image", "load", "-q", "-i", built.path, check=True)


def test_a_leading_slash_of_a_name_is_stripped_as_docker_does(tmp_path, gd):
    _load(tmp_path, gd)
    cid = gd("container", "create", "base:1", "--name", "/web", check=True).stdout.strip()
    doc = json.loads(gd("container", "inspect", "web", check=True).stdout)[0]
    assert (doc["Id"], doc["Name"]) == (cid, "/web")
    assert json.loads(gd("container", "inspect", "/web", check=True).stdout)[0]["Id"] == cid  # as docker's
    p = gd("container", "create", "base:1", "--name", "web")
    assert (p.returncode, p.stderr) == (1, "graphdriver: container name web is already in use\n")
    for bad in ("/", "//web", "/-web"):
        p = gd("container", "create", "base:1", "--name", bad)
        assert p.returncode == 1 and p.stderr.startswith(f"graphdriver: invalid container name {bad!r}"), bad
    assert [c["Name"] for c in json.loads(gd("--json", "container", "ls", check=True).stdout)] == ["web"]


def test_umount_of_a_container_not_mounted_names_the_container(tmp_path, gd):
    _load(tmp_path, gd)
    gd("container", "create", "base:1", "--name", "web", check=True)
    p = gd("container", "umount", "web")
    assert (p.returncode, p.stderr) == (1, "graphdriver: container web is not mounted\n")
    gd("container", "mount", "web", check=True)
    gd("container", "umount", "web", check=True)
    p = gd("container", "umount", "web")  # the last reference went: not mounted again
    assert (p.returncode, p.stderr) == (1, "graphdriver: container web is not mounted\n")
