"""A ``container create`` or an ``image load`` killed part way: what it made is found and removed (by
the next create or load, ``image prune`` or ``cleanup``), never listed, and never holds other layers."""

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


_LOADER = (
    "import os, sys\n"
    "from graphdriver import open_driver\n"
    "from graphdriver.store.images import ImageStore\n"
    "s = ImageStore(sys.argv[1], open_driver(sys.argv[1]))\n"
    "s.driver.apply_diff = lambda *a: os._exit(9)  # killed with the layer made, its content half there\n"
    "s.load(sys.argv[2])\n"
)


@pytest.mark.parametrize("recovered_by", ["image prune", "cleanup", "the next load"])
def test_a_load_killed_inside_a_layer_leaves_nothing_once_recovered(tmp_path, store, gd, root: str,
                                                                     recovered_by: str) -> None:
    killed = docker_archive(str(tmp_path / "a.tar"), [layer_tar({"a": "a"})], ["a:1"])
    other = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"b": "b"})], ["b:1"])
    assert subprocess.run([sys.executable, "-c", _LOADER, root, killed.path]).returncode == 9
    assert store.images.ids() == [] and len(store.driver.layers()) == 1  # made, in no image, no record
    if recovered_by == "the next load":
        store.images.load(other.path)  # another image: the leftover is not in its way, and still goes
        assert store.driver.layers() == [other.chain_ids[0].split(":")[1]]
    else:
        gd(*recovered_by.split(), check=True)
        assert store.driver.layers() == []
    assert [n for n in os.listdir(store.images.layerdb) if not n.startswith(other.chain_ids[0].split(":")[1])] == []
    store.images.load(killed.path)
    assert store.images.resolve("a:1") == killed.image_id


#: A record's temporary file written whole, the process killed before its rename (files.replacing).
_KILLED_WRITING = (
    "import os, sys\n"
    "from graphdriver import open_driver\n"
    "from graphdriver.store.containers import ContainerStore\n"
    "from graphdriver.store.images import ImageStore\n"
    "s = ContainerStore(ImageStore(sys.argv[1], open_driver(sys.argv[1])))\n"
    "real = os.replace\n"
    "def replace(src, dst):\n"
    "    if os.path.basename(dst) == sys.argv[3]: os._exit(9)\n"
    "    real(src, dst)\n"
    "os.replace = replace\n"
    "s.images.load(sys.argv[2]) if sys.argv[3] != 'record' else None\n"
    "os.replace = lambda src, dst: os._exit(9) if dst.endswith('.json') else real(src, dst)\n"
    "s.create('a:1')\n"
)


@pytest.mark.parametrize("record", ["repositories.json", "config", "layer record", "container record"])
@pytest.mark.parametrize("recovered_by", ["cleanup", "the next load or create"])
def test_a_record_killed_while_written_leaves_no_temporary_file(tmp_path, store, gd, root: str, record: str,
                                                                  recovered_by: str) -> None:
    built = docker_archive(str(tmp_path / "a.tar"), [layer_tar({"a": "a"})], ["a:1"])
    target = {"repositories.json": "repositories.json", "config": built.image_id.split(":")[1] + ".json",
              "layer record": built.chain_ids[0].split(":")[1] + ".json", "container record": "record"}[record]
    if record == "container record":
        store.images.load(built.path)
    r = subprocess.run([sys.executable, "-c", _KILLED_WRITING, root, built.path, target])
    assert r.returncode == 9
    temporaries = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if ".tmp-" in f]
    assert temporaries  # the dead writer's, whole but never renamed into place
    if recovered_by == "cleanup":
        gd("cleanup", check=True)
    elif record == "container record":
        store.remove(store.create("a:1").id)
    else:
        store.images.load(built.path)
    assert [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if ".tmp-" in f] == []
    assert store.all() == []  # the killed create is undone, its layers with it
    gd("image", "rm", "a:1")  # whatever the load got to record
    gd("image", "prune", "-a", check=True)
    assert store.driver.layers() == [] and store.images.ids() == []
