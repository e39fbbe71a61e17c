"""Images and containers on a disk that fills up: every failure says what ran out, and leaves the stores
as they were (no half-made container, layer, record or temporary file)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conformance.util import root_state
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


def _cli(store_root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", store_root, *args], capture_output=True,
                          text=True, timeout=120)


def _stored_tags(images: ImageStore) -> dict[str, str]:
    with open(images.repos_path()) as f:
        return json.load(f)


def test_image_rm_and_prune_all_free_a_full_disk(root: str, disk: str) -> None:
    """Removing images frees before it writes: on a disk with no room at all, ``image rm`` of an image's
    last name and ``image prune -a`` succeed (they needed room for a new repositories.json first)."""
    store_root = os.path.join(disk, "store")
    images = ImageStore(store_root, open_driver(store_root))
    built = {n: docker_archive(os.path.join(root, f"{n}.tar"), [layer_tar({n: n * 300_000})], [f"{n}:1"])
             for n in ("a", "b")}
    for b in built.values():
        images.load(b.path)
    fill(disk)
    free = os.statvfs(disk).f_bfree
    r = _cli(store_root, "image", "rm", "a:1")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines() == ["Untagged: a:1", f"Deleted: {built['a'].image_id}",
                                     f"Deleted: {built['a'].chain_ids[0]}"]
    assert os.statvfs(disk).f_bfree > free and images.ids() == [built["b"].image_id]
    assert _stored_tags(images) == {"b:1": built["b"].image_id}  # rewritten in the room just freed
    fill(disk)
    r = _cli(store_root, "image", "prune", "-a")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.splitlines()[:3] == ["Deleted Images:", "untagged: b:1", f"deleted: {built['b'].image_id}"]
    assert images.ids() == [] and images.driver.layers() == [] and _stored_tags(images) == {}
    assert os.listdir(images.configs) == [] and temporaries(store_root) == []
    for leave in range(0, 48 << 10, 4096):  # however little room there is, the last name's rm succeeds
        os.unlink(os.path.join(disk, "filler"))
        images.load(built["a"].path)
        fill(disk, leave)
        assert images.remove("a:1")[:2] == ["Untagged: a:1", f"Deleted: {built['a'].image_id}"], leave
        assert images.ids() == [] and images.driver.layers() == [] and images.repos() == {}, leave
        assert os.listdir(images.configs) == [] and temporaries(store_root) == [], leave


def test_on_a_full_disk_an_untag_says_so_and_a_delete_freeing_too_little_still_deletes(root: str, disk: str) -> None:
    """An untag frees nothing: on a full disk it fails in one line naming repositories.json, changing
    nothing. A deletion that frees too little for the new repositories.json (an image sharing every layer)
    still deletes: its tags and parent link stay in the files, void (no reader shows them), until a
    ``cleanup`` with room drops them."""
    store_root = os.path.join(disk, "store")
    cs = ContainerStore(ImageStore(store_root, open_driver(store_root)))
    built = docker_archive(os.path.join(root, "x.tar"), [layer_tar({"x": "x"})], ["x:1"])
    cs.images.load(built.path)
    for i in range(100):  # a repositories.json of several pages
        cs.images.tag("x:1", f"registry.example:5000/some/long/repository/name-{i:03}:tag-{i:03}")
    cs.create("x:1", name="c")
    y = cs.commit("c", "y:1")  # no changes: x's layers, a config of its own, x as its parent
    cs.remove("c")
    fill(disk)
    with open(cs.images.repos_path(), "rb") as f:
        before = f.read()
    r = _cli(store_root, "image", "rm", "x:1")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"graphdriver: No space left on device ({cs.images.repos_path()})"]
    with open(cs.images.repos_path(), "rb") as f:
        assert f.read() == before
    r = _cli(store_root, "image", "rm", "y:1")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Untagged: y:1\nDeleted: {y}\n", "")
    assert _stored_tags(cs.images)["y:1"] == y  # no room to rewrite it: void
    r = _cli(store_root, "image", "inspect", "y:1")
    assert (r.returncode, r.stderr) == (1, "graphdriver: no such image: y:1\n")
    assert cs.images.ids() == [built.image_id] and cs.images.children(built.image_id) == []
    assert len(cs.images.tags_of(built.image_id)) == 101 and temporaries(store_root) == []
    os.unlink(os.path.join(disk, "filler"))
    assert _cli(store_root, "cleanup").returncode == 0
    assert y not in _stored_tags(cs.images).values() and len(_stored_tags(cs.images)) == 101
    with open(os.path.join(cs.images.dir, "parents.json")) as f:
        assert json.load(f) == {}


def use_inodes(disk: str, leave: int) -> list[str]:
    """Empty files on ``disk`` until ``leave`` inodes or fewer are free; their paths, to remove."""
    made: list[str] = []
    while os.statvfs(disk).f_ffree > leave:
        made.append(os.path.join(disk, f"inode-{len(made)}"))
        open(made[-1], "w").close()
    return made


@pytest.mark.parametrize("short_of", ["blocks", "inodes"])
def test_a_commit_that_runs_out_of_room_says_what_and_where_in_one_line_and_changes_nothing(root: str,
                                                                                           short_of: str) -> None:
    """It said only "No space left on device" (the layer's spool has no name), or the extraction's words
    naming a chain id: not which commit failed, nor what could not be written where. And a create that
    failed past its ``l/`` link left the link dangling."""
    with small_tmpfs(os.path.join(root, "disk"), size=8 << 20, inodes=400) as disk:
        store_root = os.path.join(disk, "store")
        built = docker_archive(os.path.join(root, "img.tar"), [layer_tar({"etc/motd": "hi\n"})], ["app:1"])

        def gd(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "graphdriver", "--root", store_root, *args],
                                  capture_output=True, text=True, timeout=120)

        assert gd("image", "load", "-i", built.path).returncode == 0
        assert gd("container", "create", "app:1", "--name", "web").returncode == 0
        top = gd("container", "mount", "web").stdout.strip()
        assert top.startswith(store_root)
        with open(os.path.join(top, "data"), "w") as f:
            f.write("d" * 40000)
        assert gd("container", "umount", "web").returncode == 0
        assert gd("container", "diff", "web").stdout.split() == ["A", "/data"]  # (the diff way's verdict kept)

        def sweep(ref: str, steps: range) -> set[str]:
            """Commit web as ``ref`` with ``steps`` blocks or inodes left: what could not be written."""
            before = root_state(store_root)
            line = re.compile(rf"graphdriver: container web: commit to {ref} failed: no (space|inodes) left on "
                              rf"{re.escape(disk)} \(tmpfs\): could not write the new image's (layer|record) "
                              rf"\({re.escape(store_root)}/[^)]*\)")
            seen: set[str] = set()
            for leave in steps:
                made = [fill(disk, leave)] if short_of == "blocks" else use_inodes(disk, leave)
                try:
                    r = gd("container", "commit", "web", ref)
                finally:
                    for path in made:
                        os.unlink(path)
                if r.returncode == 0:
                    assert gd("image", "rm", ref).returncode == 0
                    continue
                lines = r.stderr.strip().splitlines()
                assert r.returncode == 1 and len(lines) == 1, r.stderr
                found = line.fullmatch(lines[0])
                assert found, lines[0]
                seen.add(found[2])
                now = root_state(store_root)
                changed = {p for p in now[0].keys() | before[0].keys() if now[0].get(p) != before[0].get(p)}
                assert now == before, (leave, sorted(changed))  # no layer, record, link or temporary left
            return seen

        # each step of making the layer: its spool, its layer's directories, link, records, extraction
        assert sweep("app:2", range(0, 120 << 10, 4096) if short_of == "blocks" else range(0, 24)) == {"layer"}
        assert gd("container", "commit", "web", "app:2").returncode == 0  # and with room again it is made
        if short_of == "inodes":  # the layer there now (and the blocks freed as it went): then the records
            assert sweep("app:3", range(0, 6)) == {"layer", "record"}


def test_a_commit_on_a_read_only_root_says_so_in_one_line_and_changes_nothing(root: str) -> None:
    """It said ``Read-only file system (<store>/images/.tmp/tmpXXXXXXXX)``: not which commit failed, and
    naming a temporary file that never was. Now one line in the out-of-room commit's style: the commit,
    the read-only filesystem, what could not be written where. Its diff (no verdict kept: the naive way)
    reads there, and a layer spool out of inodes names the spool's directory too."""
    from graphdriver.kernel import syscalls

    with small_tmpfs(os.path.join(root, "disk"), size=8 << 20, inodes=400) as disk:
        store_root = os.path.join(disk, "store")
        built = docker_archive(os.path.join(root, "img.tar"), [layer_tar({"etc/motd": "hi\n"})], ["app:1"])
        assert _cli(store_root, "image", "load", "-i", built.path).returncode == 0
        assert _cli(store_root, "container", "create", "app:1", "--name", "web").returncode == 0
        top = _cli(store_root, "container", "mount", "web").stdout.strip()
        with open(os.path.join(top, "data"), "w") as f:
            f.write("data")
        assert _cli(store_root, "container", "umount", "web").returncode == 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(store_root, "overlay2", ".native-diff-probe"))
        before = root_state(store_root)
        syscalls.mount("none", disk, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        try:
            assert _cli(store_root, "container", "diff", "web").stdout.split() == ["A", "/data"]
            for ref, named in (("app:2", "container web: commit to app:2 failed"),
                               ("", "container web: commit failed")):
                r = _cli(store_root, "container", "commit", "web", *([ref] if ref else []))
                assert (r.returncode, r.stdout) == (1, ""), r.stderr
                assert r.stderr.splitlines() == [
                    f"graphdriver: {named}: {disk} (tmpfs) is a read-only file system: could not write the new "
                    f"image's layer ({store_root}/images/.tmp)"]
            assert root_state(store_root) == before
        finally:
            syscalls.mount("none", disk, None, syscalls.MS_REMOUNT)
        made = use_inodes(disk, 0)
        try:
            r = _cli(store_root, "container", "commit", "web", "app:2")
        finally:
            for path in made:
                os.unlink(path)
        assert r.stderr.splitlines() == [
            f"graphdriver: container web: commit to app:2 failed: no inodes left on {disk} (tmpfs): could not "
            f"write the new image's layer ({store_root}/images/.tmp)"]
        assert root_state(store_root) == before
        assert _cli(store_root, "container", "commit", "web", "app:2").returncode == 0
        _cli(store_root, "cleanup")
