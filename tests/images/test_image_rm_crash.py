"""An ``image rm`` or ``image prune -a`` killed part way (SIGKILL-like ``os._exit`` at each step of a
deletion): after ``cleanup`` the image is there whole or gone whole — no tag or parent link naming an image
that is gone, no config set aside, no layer only it held — and loading it again shows no parent that no
longer exists. A kill between the config's removal and the rewrite of ``parents.json`` left the link; a
later load of the same image showed the deleted parent as its ``Parent``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from imgkit import docker_archive, layer_tar

from graphdriver import open_driver
from graphdriver.kernel import mountinfo
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore

#: Where the child dies: as the child image's config leaves ``configs/``, right after the first layer a
#: deletion removes, and just before the tags or parent links are rewritten.
KILL_POINTS = {
    "as the config goes": "real_rename, real_unlink = os.rename, os.unlink\n"
                          "def gone(real):\n"
                          "    def call(src, *a, **k):\n"
                          "        real(src, *a, **k)\n"
                          "        if str(src).endswith(CHILD + '.json'): os._exit(9)\n"
                          "    return call\n"
                          "os.rename, os.unlink = gone(real_rename), gone(real_unlink)\n",
    "after a layer is removed": "real_drop = ImageStore.drop_layer\n"
                                "def drop(self, layer_id):\n"
                                "    real_drop(self, layer_id)\n"
                                "    os._exit(9)\n"
                                "ImageStore.drop_layer = drop\n",
    "before the records are rewritten": "import graphdriver.store.files as files\n"
                                        "real_write = files.write_atomic\n"
                                        "def write(path, *a, **k):\n"
                                        "    if path.endswith(('repositories.json', 'parents.json')): os._exit(9)\n"
                                        "    real_write(path, *a, **k)\n"
                                        "files.write_atomic = write\n",
}

COMMANDS = {"image rm": "s.remove_image('child:1')", "image prune -a": "s.prune_images(all_unused=True)"}

_CHILD = (
    "import os, sys\n"
    "from graphdriver import open_driver\n"
    "from graphdriver.store.containers import ContainerStore\n"
    "from graphdriver.store.images import ImageStore\n"
    "CHILD = sys.argv[2]\n"
    "s = ContainerStore(ImageStore(sys.argv[1], open_driver(sys.argv[1])))\n"
    "{hook}"
    "{command}\n"
)


def _base_and_child(tmp_path, store: ContainerStore) -> tuple[str, str]:
    """base:1 and child:1, committed from it with a layer of its own."""
    built = docker_archive(str(tmp_path / "b.tar"), [layer_tar({"a": "1"})], ["base:1"])
    store.images.load(built.path)
    store.create("base:1", "c")
    with open(os.path.join(store.mount("c"), "new"), "w") as f:
        f.write("x")
    store.umount("c")
    child = store.commit("c", "child:1")
    store.remove("c")
    return built.image_id, child


def _record(path: str) -> dict[str, str]:
    """A JSON record as stored ({} when absent)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _consistent(store: ContainerStore) -> None:
    """Every tag and parent link names an image there, nothing is set aside, and every image layer is
    one a present image holds."""
    images = store.images
    ids = set(images.ids())
    assert set(_record(images.repos_path()).values()) <= ids
    links = _record(os.path.join(images.dir, "parents.json"))
    assert set(links) <= ids and set(links.values()) <= ids, links
    assert [n for n in os.listdir(images.configs) if not n.endswith(".json")] == []
    held = {c.split(":")[1] for i in ids for c in images.chain(i)}
    assert set(store.driver.layers()) == held
    for i in ids:
        assert images.inspect(i)["Parent"] in ids | {""}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_deletion_killed_part_way_leaves_the_image_whole_or_gone(tmp_path, store, gd, root: str, point: str,
                                                                   command: str) -> None:
    base, child = _base_and_child(tmp_path, store)
    alone = str(tmp_path / "alone.tar")
    gd("image", "save", "child:1", "-o", alone, check=True)  # no parent in it: loaded, it has none
    script = _CHILD.format(hook=KILL_POINTS[point], command=COMMANDS[command])
    r = subprocess.run([sys.executable, "-c", script, root, child.split(":")[1]], capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    gd("cleanup", check=True)
    _consistent(store)
    if child in store.images.ids():  # killed before it was gone: still whole
        assert store.images.inspect("child:1")["Parent"] == base
        gd("image", "rm", "child:1", check=True)
    assert child not in store.images.ids()
    gd("image", "rm", "base:1", check=True)
    assert store.images.ids() == [] and store.driver.layers() == []
    gd("image", "load", "-i", alone, check=True)  # the same image again: no parent that is gone
    doc = json.loads(gd("image", "inspect", "child:1", check=True).stdout)[0]
    assert (doc["Id"], doc["Parent"]) == (child, "")
    _consistent(store)
    gd("image", "prune", "-a", check=True)
    assert store.images.ids() == [] and store.driver.layers() == []
    assert mountinfo.mounts_under(root) == []


def test_a_void_tag_or_link_is_never_shown_nor_revived(tmp_path, store, gd) -> None:
    """Records left naming a deleted image (as by a kill, or a disk with no room for the rewrite) are
    skipped by every reader and do not come back when the image is loaded again."""
    base, child = _base_and_child(tmp_path, store)
    alone = str(tmp_path / "alone.tar")
    gd("image", "save", "child:1", "-o", alone, check=True)
    untagged = str(tmp_path / "untagged.tar")
    gd("image", "save", child, "-o", untagged, check=True)
    repos = store.images.repos_path()
    with open(repos) as f:
        before = f.read()
    gd("image", "rm", "child:1", check=True)
    gd("image", "rm", "base:1", check=True)
    with open(repos, "w") as f:  # what a kill before the rewrite leaves
        f.write(before)
    with open(os.path.join(store.images.dir, "parents.json"), "w") as f:
        json.dump({child: base}, f)
    p = gd("image", "inspect", "child:1")
    assert (p.returncode, p.stderr) == (1, "graphdriver: no such image: child:1\n")
    assert gd("--json", "image", "ls", check=True).stdout.strip() == "[]"
    gd("image", "load", "-i", untagged, check=True)  # by id: neither its old names nor its old parent
    doc = json.loads(gd("image", "inspect", child, check=True).stdout)[0]
    assert (doc["RepoTags"], doc["Parent"]) == ([], "")
    _consistent(store)


def test_cleanup_finishes_a_deletion_on_a_root_with_images_only(tmp_path, gd, root: str) -> None:
    """A root whose images were handled through the library alone has no containers directory: cleanup
    still finishes a deletion a kill cut short there."""
    images = ImageStore(root, open_driver(root))
    built = docker_archive(str(tmp_path / "a.tar"), [layer_tar({"a": "1"})], ["a:1"])
    images.load(built.path)
    script = _CHILD.replace("ContainerStore(ImageStore(sys.argv[1], open_driver(sys.argv[1])))",
                            "ImageStore(sys.argv[1], open_driver(sys.argv[1]))")
    script = script.format(hook=KILL_POINTS["as the config goes"], command="s.remove('a:1')")
    r = subprocess.run([sys.executable, "-c", script, root, built.image_id.split(":")[1]], capture_output=True,
                       text=True)
    assert r.returncode == 9, r.stderr
    assert not os.path.exists(os.path.join(root, "containers"))
    assert images.ids() == [] and os.listdir(images.configs) != []  # gone, its config set aside
    gd("cleanup", check=True)
    assert os.listdir(images.configs) == [] and images.driver.layers() == [] and _record(images.repos_path()) == {}
