"""Container names as docker's: a container's errors name the container."""

from __future__ import annotations

from imgkit import docker_archive, layer_tar


def _load(tmp_path, gd) -> None:
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"a": "1"})], ["base:1"])
    gd("image", "load", "-q", "-i", built.path, check=True)


def test_umount_of_a_container_not_mounted_names_the_container(tmp_path, gd):
    _load(tmp_path, gd)
    gd("container", "create", "base:1", "--name", "web", check=True)
    p = gd("container", "umount", "web")
    assert (p.returncode, p.stderr) == (1, "graphdriver: container web is not mounted\n")
    gd("container", "mount", "web", check=True)
    gd("container", "umount", "web", check=True)
    p = gd("container", "umount", "web")  # the last reference went: not mounted again
    assert (p.returncode, p.stderr) == (1, "graphdriver: container web is not mounted\n")
