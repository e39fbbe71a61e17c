"""A ``container create`` killed part way: its layers are found and removed (by the next create,
``image prune`` or ``cleanup``), never listed as a container, and the image can go with its layers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from imgkit import docker_archive, layer_tar

from graphdriver.kernel import mountinfo

#: Where the child dies: right after the init layer is made, while it is mounted for its files, and
#: with both layers made but no record yet.
KILL_POINTS = {
    "after the init layer": "d = s.driver; orig = d.create\n"
                            "def create(*a, **k):\n"
                            "    if a[0] == a[0].split('-')[0]: os._exit(9)  # the rw layer's turn\n"
                            "    orig(*a, **k)\n"
                            "d.create = create\n",
    "while the init layer is mounted": "from graphdriver.store import initlayer\n"
                                       "initlayer.write = lambda *a: os._exit(9)\n",
    "before the record": "import graphdriver.store.containers as m\n"
                         "m.write_json = lambda *a, **k: os._exit(9)\n",
}

_CHILD = (
    "import os, sys\n"
    "from graphdriver import open_driver\n"
    "from graphdriver.store.containers import ContainerStore\n"
    "from graphdriver.store.images import ImageStore\n"
    "s = ContainerStore(ImageStore(sys.argv[1], open_driver(sys.argv[1])))\n"
    "{hook}"
    "s.create('app:1', name='web')\n"
)


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
@pytest.mark.parametrize("recovered_by", ["image prune -a", "cleanup", "the next create"])
def test_a_create_killed_part_way_is_undone(tmp_path, store, gd, root: str, point: str, recovered_by: str) -> None:
    built = docker_archive(str(tmp_path / "app.tar"), [layer_tar({"etc/motd": "hi\n"})], ["app:1"])
    store.images.load(built.path)
    image_layers = store.driver.layers()
    r = subprocess.run([sys.executable, "-c", _CHILD.format(hook=KILL_POINTS[point]), root])
    assert r.returncode == 9
    assert store.all() == [] and len(store.driver.layers()) > len(image_layers)  # layers, no container
    if recovered_by == "the next create":
        c = store.create("app:1", name="web")  # the name is free: the dead create never had it
        assert [x.id for x in store.all()] == [c.id]
        assert sorted(store.driver.layers()) == sorted([*image_layers, c.init_layer, c.rw_layer])
        store.remove(c.id)
    else:
        gd(*recovered_by.split(), check=True)
    if recovered_by != "image prune -a":
        assert store.driver.layers() == image_layers
        gd("image", "rm", "app:1", check=True)  # no leftover child keeps the image's layers
    assert store.driver.layers() == [] and store.all() == []
    assert not [e for e in mountinfo.mounts_under(root)]
    assert [n for n in os.listdir(store.dir) if n.endswith(".creating")] == []
