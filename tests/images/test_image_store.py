"""Images and containers end to end on a real driver: load, inspect, share, commit, save, remove."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
from imgkit import busybox_layer, docker_archive, layer_tar, oci_layout

from graphdriver import open_driver
from graphdriver.errors import ImageInUse, InvalidImage
from graphdriver.store.imageio import hex_of
from graphdriver.store.images import ImageStore


def _layers() -> list[bytes]:
    return [layer_tar({"etc": None, "etc/os-release": "NAME=test\n", "bin": None, "data": None}),
            layer_tar({"etc/motd": "hello\n", "data/big.bin": os.urandom(200_000)}),
            layer_tar({"data/third": "3\n"})]


def _sha256sum(path: str) -> str:
    return "sha256:" + subprocess.run(["sha256sum", path], capture_output=True, text=True,
                                      check=True).stdout.split()[0]


def test_load_inspect(tmp_path, store, gd):
    layers = _layers()
    for i, t in enumerate(layers):
        (tmp_path / f"layer{i}.tar").write_bytes(t)
    built = docker_archive(str(tmp_path / "img.tar"), layers, ["test/app:1"])
    p = gd("image", "load", "-i", built.path, check=True)
    assert "Loaded image: test/app:1" in p.stdout
    assert "Loaded layer 3/3" in p.stderr  # plain progress lines when not a terminal
    [doc] = json.loads(gd("image", "inspect", "test/app:1", check=True).stdout)
    want = [_sha256sum(str(tmp_path / f"layer{i}.tar")) for i in range(3)]
    assert doc["RootFS"] == {"Type": "layers", "Layers": want}
    with tarfile.open(built.path) as tf:
        tf.extract(built.image_id.split(":")[1] + ".json", tmp_path, filter="data")
    assert doc["Id"] == _sha256sum(str(tmp_path / (built.image_id.split(":")[1] + ".json")))
    assert doc["ChainIDs"] == built.chain_ids  # computed independently in imgkit
    assert doc["GraphDriver"]["Name"] == store.driver.name
    d = store.driver
    for i, c in enumerate(built.chain_ids):
        assert d.exists(hex_of(c))
        assert d.parent(hex_of(c)) == (hex_of(built.chain_ids[i - 1]) if i else None)
    assert open(os.path.join(d.diff_path(hex_of(built.chain_ids[2])), "data/third")).read() == "3\n"
    assert "test/app:1" in gd("image", "ls", check=True).stdout
    # --quiet prints no progress
    assert gd("image", "load", "-q", "-i", built.path, check=True).stderr == ""


def test_layers_reused_across_images(tmp_path, store):
    layers = _layers()
    a = docker_archive(str(tmp_path / "a.tar"), layers, ["a:1"])
    store.images.load(a.path)
    shared_dir = store.driver.diff_path(hex_of(a.chain_ids[1]))
    ino = os.stat(os.path.join(shared_dir, "data/big.bin")).st_ino
    b = docker_archive(str(tmp_path / "b.tar"), layers[:2] + [layer_tar({"other": "b"})], ["b:1"])
    events = []
    store.images.load(b.path, lambda ev, i, n, c, done, total: events.append((ev, i)))
    assert ("exists", 1) in events and ("exists", 2) in events and ("loaded", 3) in events
    assert len(store.driver.layers()) == 4
    assert os.stat(os.path.join(shared_dir, "data/big.bin")).st_ino == ino


@pytest.mark.parametrize("as_tar,compress", [(False, "gzip"), (True, "zstd")])
def test_load_oci_layout(tmp_path, store, as_tar, compress):
    built = oci_layout(str(tmp_path / ("oci.tar" if as_tar else "oci")), _layers(), "reg.example/x/y:2",
                       as_tar=as_tar, compress=compress)
    [img] = store.images.load(built.path)
    assert img.image_id == built.image_id and img.tags == ["reg.example/x/y:2"]
    assert store.images.inspect("reg.example/x/y:2")["RootFS"]["Layers"] == built.diff_ids


def test_gzip_outer_and_layers(tmp_path, store):
    built = docker_archive(str(tmp_path / "img.tar.gz"), _layers(), ["gz:1"], gzip_outer=True, gzip_layers=True)
    store.images.load(built.path)
    assert store.images.inspect("gz:1")["RootFS"]["Layers"] == built.diff_ids
    assert os.listdir(store.images.tmp) == []


def test_containers_share_image_layers(tmp_path, store):
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["share:1"])
    store.images.load(built.path)
    c1 = store.create("share:1", name="one", hostname="one")
    c2 = store.create("share:1", name="two")
    d = store.driver
    assert d.parent(c1.rw_layer) == c1.init_layer and d.parent(c1.init_layer) == hex_of(built.chain_ids[-1])
    assert d.is_rw(c1.rw_layer) and not d.is_rw(c1.init_layer)
    image_dirs = [d.diff_path(hex_of(c)) for c in built.chain_ids]
    i1 = store.inspect("one")["GraphDriver"]["Data"]
    i2 = store.inspect("two")["GraphDriver"]["Data"]
    if "LowerDir" in i1:  # union backends: both stacks name the very same image diff dirs
        low1 = [os.path.realpath(p) for p in i1["LowerDir"].split(":")]
        low2 = [os.path.realpath(p) for p in i2["LowerDir"].split(":")]
        assert os.path.realpath(d.diff_path(c1.init_layer)) == low1[0]
        assert low1[1:] == low2[1:] == [os.path.realpath(p) for p in reversed(image_dirs)]
    m1, m2 = store.mount("one"), store.mount("two")
    try:
        with open(os.path.join(m1, "written-in-one"), "w") as f:
            f.write("1")
        assert not os.path.exists(os.path.join(m2, "written-in-one"))
        assert open(os.path.join(m1, "etc/hostname")).read() == "one\n"
        assert open(os.path.join(m2, "etc/hostname")).read() == c2.id[:12] + "\n"
        assert os.readlink(os.path.join(m1, "etc/mtab")) == "/proc/mounts"
        for p in (".dockerenv", "dev/console", "dev/pts", "dev/shm", "proc", "sys", "etc/hosts", "etc/resolv.conf"):
            assert os.path.lexists(os.path.join(m1, p)), p
        assert os.path.exists(os.path.join(d.diff_path(c1.rw_layer), "written-in-one"))
    finally:
        store.umount("one")
        store.umount("two")


def test_commit_excludes_init_layer(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["base:1"])
    store.images.load(built.path)
    store.create("base:1", name="c", hostname="commit-host", add_hosts=["db:10.0.0.2"])
    m = store.mount("c")
    with open(os.path.join(m, "x"), "w") as f:
        f.write("made in the container\n")
    with open(os.path.join(m, "etc/motd"), "w") as f:
        f.write("changed\n")
    store.umount("c")
    p = gd("container", "commit", "c", "base:2", "-m", "my change", check=True)
    new_id = p.stdout.strip()
    doc = store.images.inspect("base:2")
    assert doc["Id"] == new_id
    assert doc["RootFS"]["Layers"][:3] == built.diff_ids and len(doc["RootFS"]["Layers"]) == 4
    cfg = store.images.config(new_id)
    assert len(cfg["history"]) == 4 and cfg["history"][-1]["comment"] == "my change"
    top = doc["ChainIDs"][-1]
    content = store.driver.diff_path(hex_of(top))
    assert open(os.path.join(content, "x")).read() == "made in the container\n"
    assert open(os.path.join(content, "etc/motd")).read() == "changed\n"
    for init_file in (".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "dev", "proc"):
        assert not os.path.lexists(os.path.join(content, init_file)), init_file
    # the new layer's diffID is the sha256 of the layer tar saved for it
    assert gd("container", "diff", "c", check=True).stdout.split("\n").count("A /x") == 1
    # a container of the committed image sees the change
    store.create("base:2", name="c2")
    m2 = store.mount("c2")
    assert open(os.path.join(m2, "x")).read() == "made in the container\n"
    store.umount("c2")


def test_save_load_round_trip(tmp_path, store, gd, other_root):
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["rt:1"])
    store.images.load(built.path)
    store.create("rt:1", name="c")
    m = store.mount("c")
    with open(os.path.join(m, "new"), "w") as f:
        f.write("n")
    store.umount("c")
    store.commit("c", "rt:2")
    out = tmp_path / "saved.tar"
    gd("image", "save", "rt:1", "rt:2", "-o", str(out), check=True)
    before = {t: store.images.inspect(t) for t in ("rt:1", "rt:2")}
    images2 = ImageStore(other_root, open_driver(other_root))
    loaded = images2.load(str(out))
    assert sorted(t for i in loaded for t in i.tags) == ["rt:1", "rt:2"]
    for t in ("rt:1", "rt:2"):
        after = images2.inspect(t)
        assert after["RootFS"]["Layers"] == before[t]["RootFS"]["Layers"]
        assert after["Id"] == before[t]["Id"]
    assert open(os.path.join(images2.driver.diff_path(hex_of(after["ChainIDs"][-1])), "new")).read() == "n"


def test_image_rm(tmp_path, store, gd):
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["rm:1"])
    store.images.load(built.path)
    store.images.tag("rm:1", "rm:alias")
    store.create("rm:1", name="user")
    with pytest.raises(ImageInUse):
        store.remove_image(built.image_id)
    p = gd("image", "rm", "rm:alias", check=True)
    assert "Untagged: rm:alias" in p.stdout
    p = gd("image", "rm", "rm:1")
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1
    assert "image rm:1 is in use by container user; remove it first" in p.stderr
    store.create("rm:1", name="other")
    with pytest.raises(ImageInUse, match="in use by containers other, user; remove them first"):
        store.remove_image("rm:1")
    gd("container", "rm", "other", check=True)
    gd("container", "rm", "user", check=True)
    gd("image", "rm", "rm:1", check=True)
    assert store.driver.layers() == [] and store.images.ids() == [] and store.images.repos() == {}


def test_busybox_image_loads(tmp_path, store):
    built = docker_archive(str(tmp_path / "bb.tar"), [busybox_layer()], ["busybox:test"])
    store.images.load(built.path)
    top = store.images.top_layer(built.image_id)
    assert os.access(os.path.join(store.driver.diff_path(top), "bin/busybox"), os.X_OK)


def test_digest_mismatch_leaves_nothing(tmp_path, store):
    layers = _layers()
    built = docker_archive(str(tmp_path / "img.tar"), layers, ["bad:1"])
    data = bytearray(open(built.path, "rb").read())
    i = data.find(b"data/third")  # inside the last layer's tar: change a byte of its payload
    j = data.find(b"3\n", i + 512)
    data[j] = ord("4")
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(InvalidImage, match="diffID mismatch"):
        store.images.load(str(tmp_path / "bad.tar"))
    assert store.driver.layers() == [] and store.images.ids() == []
    assert os.listdir(store.images.layerdb) == []


def test_whole_flow_on_vfs(tmp_path, root, other_root):
    from graphdriver.store.containers import ContainerStore

    store = ContainerStore(ImageStore(root, open_driver(root, "vfs")))
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["v:1"])
    store.images.load(built.path)
    store.create("v:1", name="a")
    store.create("v:1", name="b")
    ma, mb = store.mount("a"), store.mount("b")
    with open(os.path.join(ma, "only-a"), "w") as f:
        f.write("a")
    os.unlink(os.path.join(ma, "etc/motd"))
    assert not os.path.exists(os.path.join(mb, "only-a")) and os.path.exists(os.path.join(mb, "etc/motd"))
    store.umount("a")
    store.umount("b")
    assert dict((p, k) for p, k in store.changes("a")) == {"/only-a": 1, "/etc/motd": 2, "/etc": 0}
    store.commit("a", "v:2")
    out = tmp_path / "v.tar"
    store.images.save(["v:2"], str(out))
    images2 = ImageStore(other_root, open_driver(other_root, "vfs"))
    images2.load(str(out))
    top = images2.top_layer(images2.resolve("v:2"))
    assert os.path.exists(os.path.join(images2.driver.diff_path(top), "only-a"))
    assert not os.path.exists(os.path.join(images2.driver.diff_path(top), "etc/motd"))
    assert images2.inspect("v:2")["RootFS"] == store.images.inspect("v:2")["RootFS"]


def test_save_refuses_a_layer_it_cannot_reproduce(tmp_path, store, gd):
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for data in (b"first", b"second"):  # the same path twice: the first payload is gone after apply
            info = tarfile.TarInfo("same")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    built = docker_archive(str(tmp_path / "dup.tar"), [buf.getvalue()], ["dup:1"])
    store.images.load(built.path)
    p = gd("image", "save", "dup:1", "-o", str(tmp_path / "out.tar"))
    assert p.returncode == 1 and "twice" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out.tar")
    assert [n for n in os.listdir(tmp_path) if n.startswith(".save-")] == []


def test_listings_line_up_with_long_names(tmp_path, store, gd):
    """image ls and container ls: every column starts where its header does, however long a tag or a
    name; the numbers are aligned right under theirs."""
    built = docker_archive(str(tmp_path / "img.tar"), _layers(), ["short:1"])
    store.images.load(built.path)
    long_tag = "registry.example.com:5000/a/rather/long/repository/name:with-a-long-tag-1.2.3"
    gd("image", "tag", "short:1", long_tag, check=True)
    store.create("short:1", name="a-container-name-longer-than-twenty-characters")
    store.create("short:1", name="c")
    for args, cols in ((("image", "ls"), ("IMAGE ID",)), (("container", "ls"), ("IMAGE", "NAME", "MOUNTED"))):
        head, *rows = gd(*args, check=True).stdout.splitlines()
        assert len(rows) == 2
        for col in cols:
            at = head.index(col)
            assert all(row[at - 2:at] == "  " and row[at] != " " for row in rows), (col, head, rows)
    head, *rows = gd("image", "ls", check=True).stdout.splitlines()
    assert {len(row) for row in rows} == {len(head)}  # LAYERS and SIZE end where their headers end
    assert {row.split()[0] for row in rows} == {"short:1", long_tag}
