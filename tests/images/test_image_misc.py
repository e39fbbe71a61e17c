"""Cross-process locking, save to stdout, terminal progress, and the demo's image story."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from imgkit import docker_archive, layer_tar

from graphdriver import open_driver
from graphdriver.cli.demo_images import image_story


def test_concurrent_loads_apply_each_layer_once(tmp_path, store, root):
    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"f": os.urandom(2_000_000)}),
                                                       layer_tar({"g": os.urandom(2_000_000)})], ["conc:1"])
    procs = [subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", "-i",
                               built.path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    loaded = sum(err.count("Loaded layer") for _, err in outs)
    exists = sum(err.count("already exists") for _, err in outs)
    assert (loaded, exists) == (2, 4)
    assert len(store.driver.layers()) == 2


def test_save_to_stdout(tmp_path, store, gd, root):
    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": "1"})], ["out:1"])
    store.images.load(built.path)
    p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "save", "out:1"],
                       capture_output=True, check=True)
    (tmp_path / "stdout.tar").write_bytes(p.stdout)
    from graphdriver.store import imageio
    src = imageio.open_source(str(tmp_path / "stdout.tar"), str(tmp_path))
    [spec] = imageio.read_images(src)
    src.close()
    assert spec.diff_ids == built.diff_ids and spec.tags == ["out:1"]
    with open("/dev/full", "wb") as full:  # stdout on a full disk: one line naming it
        p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "save", "out:1"],
                           stdout=full, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 1 and p.stderr == "graphdriver: No space left on device (standard output)\n"
    missing = str(tmp_path / "no" / "out.tar")
    p = gd("image", "save", "out:1", "-o", missing)
    assert p.returncode == 1 and p.stderr == f"graphdriver: No such file or directory ({missing})\n"


def test_progress_on_a_terminal(tmp_path, root):
    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": os.urandom(3_000_000)})], ["tty:1"])
    cmd = f"{sys.executable} -m graphdriver --root {root} image load -i {built.path}"
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert "\rLoading layer 1/1" in out and "100%" in out and "Loaded image: tty:1" in out


def test_demo_image_story(root):
    lines: list[str] = []
    image_story(None, say=lines.append)
    text = "\n".join(lines)
    assert "b sees it False" in text and "a sees it True" in text
    assert "grew from 2 to 3" in text and "'app/note.txt'" in text and "hostname" not in text.split("commit a")[1]
    assert "layers left 0, mounts left 0" in text and text.endswith("cleaned up")


def test_load_from_stdin(tmp_path, store, root):
    import gzip

    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": "1"})], ["stdin:1"])
    for data in (open(built.path, "rb").read(), gzip.compress(open(built.path, "rb").read())):
        p = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", "-q"],
                           input=data, capture_output=True)
        assert p.returncode == 0, p.stderr
        assert b"Loaded image: stdin:1" in p.stdout
    assert store.images.inspect("stdin:1")["RootFS"]["Layers"] == built.diff_ids
    assert os.listdir(store.images.tmp) == []


def test_damaged_image_and_container_records_are_one_clear_line_naming_them(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "app.tar"), [layer_tar({"a": "a"})], ["app:1"])
    store.images.load(built.path)
    c = store.create("app:1", name="web")
    records = [
        (os.path.join(store.images.dir, "repositories.json"), ("image", "ls"), b'{"app:1": '),
        (store._path(c.id), ("container", "ls"), b'{"id": "x", "surprise": 1}'),
        (store.images.config_path(built.image_id), ("image", "inspect", "app:1"), b"\x00\x01"),
    ]
    for path, command, damage in records:
        with open(path, "rb") as f:
            kept = f.read()
        with open(path, "wb") as f:
            f.write(damage)
        r = gd(*command)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert path in r.stderr and "cannot be read" in r.stderr, r.stderr
        with open(path, "wb") as f:
            f.write(kept)
        gd(*command, check=True)


@pytest.mark.parametrize("call", ["mount", "inspect"])
def test_a_mount_or_inspect_waits_for_a_remove_under_way_and_finds_the_container_gone(tmp_path, store, root, call):
    """A container's mount (or inspect) and a remove of it do not interleave: the remove looks at the
    mounts and removes the layers under the store's lock, and these take it too (before, a mount made
    between the two left the remove failing on its rw layer, and an inspect read a layer half removed,
    both named by a layer id)."""
    import threading

    from graphdriver import open_driver
    from graphdriver.errors import ContainerNotFound
    from graphdriver.store.containers import ContainerStore
    from graphdriver.store.images import ImageStore

    store.images.load(docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": b"1"})], ["x:1"]).path)
    store.create("x:1", name="c")
    other = ContainerStore(ImageStore(root, open_driver(root)))
    result: dict = {}

    def run() -> None:
        try:
            result["done"] = getattr(other, call)("c")
        except ContainerNotFound as e:
            result["error"] = e

    with store.lock.held():  # a remove that has looked at the mounts and is about to remove the layers
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and not result  # the mount waits
        store.remove("c")
    thread.join(30)
    assert isinstance(result.get("error"), ContainerNotFound) and "no such container: c" in str(result["error"])
    assert store.driver.layers() == [c.split(":", 1)[1] for c in store.images.chain(store.images.resolve("x:1"))]


def test_changes_of_a_container_removed_while_they_are_read_name_the_container(tmp_path, store, root):
    from graphdriver import open_driver
    from graphdriver.errors import ContainerNotFound
    from graphdriver.store.containers import ContainerStore
    from graphdriver.store.images import ImageStore

    store.images.load(docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": b"1"})], ["x:1"]).path)
    store.create("x:1", name="c")
    other = ContainerStore(ImageStore(root, open_driver(root)))
    read = other.driver.changes

    def removed_first(*args):  # another process removes the container as the read begins
        store.remove("c")
        return read(*args)

    other.driver.changes = removed_first
    with pytest.raises(ContainerNotFound, match="container c was removed while it was being read"):
        other.changes("c")


@pytest.mark.parametrize("kind", ["read-write", "init"])
def test_a_container_being_read_is_not_removed(tmp_path, store, root, kind):
    """A diff of one of the container's layers under way elsewhere: ``container rm`` is refused naming
    the container and who reads it, and removes nothing (neither layer, nor the record); once the read
    is done it goes through."""
    from graphdriver import open_driver
    from graphdriver.errors import ContainerNotFound, LayerInUse

    store.images.load(docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": b"1"})], ["x:1"]).path)
    c = store.create("x:1", name="c")
    before = store.driver.layers()
    read = c.rw_layer if kind == "read-write" else c.init_layer
    stream = open_driver(root).diff(read, None)  # another process's read, as far as leases go
    stream.read(1)
    with pytest.raises(LayerInUse, match=rf"container c is being read \(a diff or changes of its {kind} "
                                         rf"layer under way in [^ ]+\[{os.getpid()}\]\)"):
        store.remove("c")
    assert store.get("c").id == c.id and store.driver.layers() == before
    stream.close()
    store.remove("c")
    with pytest.raises(ContainerNotFound):
        store.get("c")


def test_a_failed_first_load_leaves_the_root_as_it_found_it(tmp_path):
    """``image load`` of a damaged archive as the first thing done at a root: one line, exit 1, and the
    store it made is unmade (a new root is gone, an empty directory stays empty, no driver is recorded:
    another ``--driver`` can still be chosen). On a root where something is stored, that stays.
    A damaged second layer after a good first one: the same."""
    import shutil
    import subprocess
    import sys

    def gd(where: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "graphdriver", "--root", where, *args], capture_output=True,
                              text=True, timeout=120)

    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage")
    half = docker_archive(str(tmp_path / "half.tar"), [layer_tar({"a": b"1"}), layer_tar({"b": b"2"})], ["h:1"])
    _damage_last_layer(half.path)
    new = str(tmp_path / "new")
    for archive in (str(bad), half.path):
        r = gd(new, "image", "load", "-q", "-i", archive)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert not os.path.exists(new)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gd(str(empty), "image", "load", "-q", "-i", str(bad)).returncode == 1
    assert os.listdir(empty) == []
    assert gd(str(empty), "--driver", "vfs", "layer", "create", "a").returncode == 0  # still free to choose
    before = sorted(os.listdir(empty))
    assert gd(str(empty), "image", "load", "-q", "-i", str(bad)).returncode == 1
    assert set(before) <= set(os.listdir(empty))
    assert gd(str(empty), "layer", "ls").stdout.split()[-3:] == ["a", "-", "0"]
    shutil.rmtree(empty)


def _damage_last_layer(path: str) -> None:
    """Flip bytes inside the archive's last layer blob (its digest no longer matches)."""
    import tarfile

    with tarfile.open(path) as tf:
        last = [m for m in tf.getmembers() if m.isfile() and not m.name.endswith(".json")][-1]
        offset = last.offset_data
    with open(path, "r+b") as f:
        f.seek(offset + 600)
        f.write(b"\xff" * 16)


def test_a_failed_first_load_leaves_a_store_another_process_has_open(tmp_path):
    """The store a failed first load made is left, whole, while another process has it open (opened
    between the load's start and its failure): that process then stores in it as usual."""
    import time

    new = str(tmp_path / "new")
    load = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", new, "image", "load", "-q"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    other = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(new, "driver")):  # the load has made the store, and reads
            assert time.monotonic() < deadline and load.poll() is None
            time.sleep(0.01)
        other = subprocess.Popen([sys.executable, "-c", "import sys, graphdriver\n"
                                  "d = graphdriver.open_driver(sys.argv[1])\n"
                                  "print('open', flush=True)\n"
                                  "sys.stdin.readline()\n"
                                  "d.create('mine')\n"
                                  "print(d.exists('mine'), flush=True)\n", new],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline() == "open\n"
        load.stdin.write("garbage")
        load.stdin.close()
        assert load.wait(timeout=60) == 1
        assert len(load.stderr.read().splitlines()) == 1
        assert os.path.isdir(os.path.join(new, "overlay2")) and open(os.path.join(new, "driver")).read() == "overlay2\n"
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline() == "True\n"
    finally:
        load.kill()
        load.wait()
        if other is not None:
            other.stdin.close()
            assert other.wait(timeout=60) == 0
    assert open_driver(new).layers() == ["mine"]
    open_driver(new).remove("mine")


def test_an_open_waiting_while_a_store_is_unmade_makes_it_again(tmp_path):
    """An open that comes while a failed first load unmakes the store waits for the unmaking, then finds
    the store gone and makes it afresh (driver recorded, layers stored) — not a missing-directory error."""
    import threading

    from graphdriver.registry import unmake_store

    new = str(tmp_path / "new")
    first = open_driver(new)
    assert first.store_lease is not None and first.store_lease.convert(shared=False)  # an unmaking under way
    opened = []
    waiter = threading.Thread(target=lambda: opened.append(open_driver(new)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # held up by the unmaking
    assert unmake_store(first, (), root_made=True)
    waiter.join(30)
    assert not waiter.is_alive() and len(opened) == 1
    second = opened[0]
    assert open(os.path.join(new, "driver")).read() == "overlay2\n"
    second.create("after")
    assert open_driver(new).layers() == ["after"]
    second.remove("after")


def test_failed_first_loads_racing_layer_creates_on_a_new_root(tmp_path):
    """Failed first loads (each unmaking the store it made, when nobody else has it open) racing layer
    creates on a new root, ten times: every create succeeds and its layer is there; every load fails
    with its one line."""
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    for trial in range(10):
        root = str(tmp_path / f"r{trial}")
        procs = []
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "image", "load", "-q",
                                           "-i", str(bad)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            procs.append(subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "layer", "create",
                                           f"x{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outcomes = [(p.args[5], p.wait(timeout=120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        for kind, rc, err in outcomes:
            if kind == "layer":
                assert rc == 0, err
            else:
                assert rc == 1 and "corrupt or truncated archive" in err and len(err.splitlines()) == 1, err
        driver = open_driver(root)
        assert driver.layers() == ["x0", "x1"]
        driver.remove_all(["x0", "x1"])


def test_layer_commands_leave_the_layers_of_images_and_containers_alone(tmp_path, store, gd):
    """``layer rm`` of an image's layer or a container's layer is refused naming the image or container
    and the command that removes it (the image stayed listed with its layer gone: a later create or
    save failed); ``layer apply`` into an image's layer is refused (its content is what its diffID
    names), into a container's read-write layer it works (as writes through a mount do)."""
    import io
    import tarfile

    from imgkit import chain_ids

    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"a": b"1"}), layer_tar({"b": b"2"})], ["keep:1"])
    store.images.load(built.path)
    layers = [chain.split(":", 1)[1] for chain in chain_ids(built.diff_ids)]
    r = gd("layer", "rm", layers[-1])  # the image's top layer, nothing built on it
    assert r.returncode == 1 and r.stderr == (f"graphdriver: cannot remove layer {layers[-1]}: it is a layer of "
                                              f"image keep:1; remove that with image rm\n")
    c = store.create("keep:1", name="kept")
    before = sorted(store.driver.layers())
    for layer, said in ((layers[-1], "a layer of image keep:1; remove that with image rm"),
                        (c.rw_layer, "container kept's read-write layer; remove that with container rm"),
                        (c.init_layer, "container kept's init layer; remove that with container rm")):
        r = gd("layer", "rm", layer)
        assert r.returncode == 1 and r.stderr == f"graphdriver: cannot remove layer {layer}: it is {said}\n"
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("x")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    r = gd("layer", "apply", layers[-1], "-i", str(tar))
    assert r.returncode == 1 and "it is a layer of image keep:1, and image layers do not change" in r.stderr
    assert not os.path.exists(os.path.join(store.driver.diff_path(layers[-1]), "x"))
    assert sorted(store.driver.layers()) == before
    gd("layer", "apply", c.rw_layer, "-i", str(tar), check=True)  # a container's layer takes a diff
    assert store.changes("kept") == [("/x", 1)]
    gd("container", "rm", "kept", check=True)
    gd("image", "rm", "keep:1", check=True)
    gd("layer", "create", "mine", check=True)
    gd("layer", "rm", "mine", check=True)  # a layer no image or container keeps
    assert store.driver.layers() == []
