"""Images and containers on a disk that fills up: every failure says what ran out, and leaves the stores
as they were (no half-made container, layer, record or temporary file)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest
from imgkit import docker_archive, layer_tar
from support.fulldisk import fill, small_tmpfs

from graphdriver import open_driver
from graphdriver.errors import GraphDriverError
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore


@pytest.fixture
def disk(root: str) -> Iterator[str]:
    """A 4 MiB tmpfs under ``root``: the filesystem the tests fill."""
    with small_tmpfs(os.path.join(root, "disk")) as mnt:
        yield mnt


def temporaries(top: str) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(top) for n in dirs + files if ".tmp-" in n]


def test_a_container_made_on_a_filling_disk_is_made_whole_or_not_at_all(root: str, disk: str) -> None:
    store_root = os.path.join(disk, "store")
    cs = ContainerStore(ImageStore(store_root, open_driver(store_root)))
    built = docker_archive(os.path.join(root, "img.tar"), [layer_tar({"etc/motd": "hi\n", "bin/x": "x" * 9000})],
                           ["app:1"])
    cs.images.load(built.path)
    layers = cs.driver.layers()
    failed = 0
    for leave in range(0, 48 << 10, 4096):  # each step fails at another point of the create, or not at all
        filler = fill(disk, leave)
        try:
            c = cs.create("app:1", name="web")
        except (OSError, GraphDriverError) as e:
            failed += 1
            assert "No space left on device" in str(e) and store_root in str(e), str(e)
            assert cs.all() == [] and cs.driver.layers() == layers, leave
            assert os.listdir(cs.driver._staging) == [] and temporaries(store_root) == [], leave
        else:
            cs.remove(c.id)
        finally:
            os.unlink(filler)
    assert failed >= 3  # the sweep really ran out of room at several steps
    c = cs.create("app:1", name="web")  # and with room again, nothing stands in the way
    with open(os.path.join(cs.driver.get(c.rw_layer), "etc", "motd")) as f:
        assert f.read() == "hi\n"
    cs.driver.put(c.rw_layer)
    cs.remove(c.id)


def test_an_image_loaded_on_a_filling_disk_is_loaded_whole_or_not_at_all(root: str, disk: str) -> None:
    store_root = os.path.join(disk, "store")
    images = ImageStore(store_root, open_driver(store_root))
    layers = [layer_tar({"a": "a" * 30000}), layer_tar({"b": "b" * 30000})]
    built = docker_archive(os.path.join(root, "img.tar"), layers, ["app:1"])
    failed = 0
    for leave in range(0, 160 << 10, 8192):
        filler = fill(disk, leave)
        try:
            images.load(built.path)
        except (OSError, GraphDriverError) as e:
            failed += 1
            assert "No space left on device" in str(e) or f"no space left on {disk} (tmpfs)" in str(e), str(e)
            assert images.ids() == [] and images.driver.layers() == [], leave  # the load undone, layers too
            assert os.listdir(os.path.join(store_root, "images", "configs")) == [], leave
            assert os.listdir(images.driver._staging) == [] and temporaries(store_root) == [], leave
        else:
            images.remove("app:1")
            for layer in reversed(images.driver.layers()):
                images.driver.remove(layer)
        finally:
            os.unlink(filler)
    assert failed >= 3
    [loaded] = images.load(built.path)
    assert images.ids() == [loaded.image_id] and len(images.driver.layers()) == 2


def test_a_commit_on_a_filling_disk_makes_its_image_whole_or_not_at_all(root: str, disk: str) -> None:
    store_root = os.path.join(disk, "store")
    cs = ContainerStore(ImageStore(store_root, open_driver(store_root)))
    built = docker_archive(os.path.join(root, "img.tar"), [layer_tar({"etc/motd": "hi\n"})], ["app:1"])
    cs.images.load(built.path)
    c = cs.create("app:1", name="web")
    with open(os.path.join(cs.driver.get(c.rw_layer), "data"), "w") as f:
        f.write("d" * 40000)
    cs.driver.put(c.rw_layer)
    images, layers = cs.images.ids(), cs.driver.layers()
    failed = 0
    for leave in range(0, 160 << 10, 8192):
        filler = fill(disk, leave)
        try:
            cs.commit("web", "app:2")
        except (OSError, GraphDriverError) as e:
            failed += 1
            assert "No space left on device" in str(e) or f"no space left on {disk} (tmpfs)" in str(e), str(e)
            assert cs.images.ids() == images and cs.driver.layers() == layers, leave
            assert os.listdir(cs.driver._staging) == [] and temporaries(store_root) == [], leave
        else:
            cs.images.remove("app:2")
        finally:
            os.unlink(filler)
    assert failed >= 3
    new = cs.commit("web", "app:2")
    assert cs.images.resolve("app:2") == new and len(cs.images.chain(new)) == 2


def test_save_to_a_full_disk_and_a_compressed_load_on_one_say_where_and_leave_nothing(root: str, disk: str,
                                                                                       gd) -> None:
    built = docker_archive(os.path.join(root, "img.tar"), [layer_tar({"a": "a" * 30000})], ["app:1"],
                           gzip_outer=True)
    gd("image", "load", "-i", built.path, check=True)
    out = os.path.join(disk, "app.tar")
    fill(disk)
    r = gd("image", "save", "app:1", "-o", out)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [f"graphdriver: No space left on device ({out})"]
    assert os.listdir(disk) == ["filler"]
    store_root = os.path.join(disk, "store")  # a store on the full disk: the archive is decompressed there first
    os.unlink(os.path.join(disk, "filler"))
    images = ImageStore(store_root, open_driver(store_root))
    fill(disk)
    with pytest.raises(OSError) as err:
        images.load(built.path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == images.tmp
    assert os.listdir(images.tmp) == [] and images.ids() == [] and images.driver.layers() == []
