"""Interop with a real dockerd 20.10 (Debian's docker.io, overlay2, private paths): our `image save` goes
into `docker load`, and `docker save` comes back through our `image load`, with identical RootFS.Layers."""

from __future__ import annotations

import json
import os

import pytest
from imgkit import busybox_layer, docker_archive, layer_tar

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def dockerd():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from support.dockerd import Dockerd, ensure_docker_packages

    ensure_docker_packages()
    with Dockerd("overlay2") as d:
        yield d


def test_saved_image_loads_in_docker(tmp_path, store, gd, dockerd):
    built = docker_archive(str(tmp_path / "bb.tar"), [busybox_layer(), layer_tar({"etc/motd": "hi\n"})],
                           ["gdinterop/bb:1"])
    store.images.load(built.path)
    store.create("gdinterop/bb:1", name="c")
    m = store.mount("c")
    with open(os.path.join(m, "x"), "w") as f:
        f.write("from graphdriver\n")
    store.umount("c")
    store.commit("c", "gdinterop/bb:2")
    out = tmp_path / "saved.tar"
    gd("image", "save", "gdinterop/bb:2", "-o", str(out), check=True)
    p = dockerd.docker("load", "-i", str(out))
    assert "gdinterop/bb:2" in p.stdout
    [doc] = json.loads(dockerd.docker("image", "inspect", "gdinterop/bb:2").stdout)
    ours = store.images.inspect("gdinterop/bb:2")
    assert doc["RootFS"]["Layers"] == ours["RootFS"]["Layers"]
    assert doc["Id"] == ours["Id"]
    # docker reads the committed layer's file back out
    cid = dockerd.docker("create", "gdinterop/bb:2", "true").stdout.strip()
    try:
        data = dockerd.docker_bytes("cp", f"{cid}:/x", "-")
        assert b"from graphdriver" in data
    finally:
        dockerd.docker("rm", cid)


def test_docker_save_loads_here(tmp_path, store, dockerd):
    built = docker_archive(str(tmp_path / "src.tar"), [busybox_layer(), layer_tar({"y": "why\n"})],
                           ["gdinterop/src:1"])
    dockerd.docker("load", "-i", built.path)
    (tmp_path / "from-docker.tar").write_bytes(dockerd.docker_bytes("save", "gdinterop/src:1"))
    [img] = store.images.load(str(tmp_path / "from-docker.tar"))
    [doc] = json.loads(dockerd.docker("image", "inspect", "gdinterop/src:1").stdout)
    assert img.image_id == doc["Id"] and img.tags == ["gdinterop/src:1"]
    assert store.images.inspect("gdinterop/src:1")["RootFS"]["Layers"] == doc["RootFS"]["Layers"]
