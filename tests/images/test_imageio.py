"""Archive reading and writing, digests and chainIDs, without touching a driver."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard
from imgkit import chain_ids as independent_chain_ids
from imgkit import docker_archive, layer_tar, oci_layout, sha256

from graphdriver.errors import InvalidImage
from graphdriver.store import imageio, imagewrite


def _layers() -> list[bytes]:
    return [layer_tar({"etc": None, "etc/os-release": "NAME=test\n", "bin": None}),
            layer_tar({"etc/motd": "hello\n", "big.bin": os.urandom(300_000)}),
            layer_tar({"etc/.wh.motd": b""})]


def test_chain_ids_independent():
    diff_ids = [sha256(t) for t in _layers()]
    assert imageio.chain_ids(diff_ids) == independent_chain_ids(diff_ids)
    assert imageio.chain_ids(diff_ids)[0] == diff_ids[0]
    assert imageio.chain_ids([]) == []
    # chain(1) spelled out by hand
    want = "sha256:" + hashlib.sha256(f"{diff_ids[0]} {diff_ids[1]}".encode()).hexdigest()
    assert imageio.chain_ids(diff_ids)[1] == want


@pytest.mark.parametrize("gzip_outer,gzip_layers", [(False, False), (True, False), (False, True)])
def test_read_docker_archive(tmp_path, gzip_outer, gzip_layers):
    layers = _layers()
    built = docker_archive(str(tmp_path / "img.tar"), layers, ["test/img:1"], gzip_outer=gzip_outer,
                           gzip_layers=gzip_layers)
    src = imageio.open_source(built.path, str(tmp_path))
    try:
        [spec] = imageio.read_images(src)
        assert spec.image_id == built.image_id
        assert spec.diff_ids == built.diff_ids
        assert spec.tags == ["test/img:1"]
        for layer, tar, blob in zip(spec.layers, layers, built.layer_blobs, strict=True):
            raw, size = src.open(layer.path)
            assert size == len(blob)
            stream = imageio.LayerStream(raw)
            assert stream.read() == tar
            assert stream.diff_id == sha256(tar)
            assert stream.blob_digest == sha256(blob)
    finally:
        src.close()
    assert [n for n in os.listdir(tmp_path) if n.startswith("load-")] == []  # temp copy removed


@pytest.mark.parametrize("as_tar,compress", [(False, "gzip"), (True, "zstd")])
def test_read_oci_layout(tmp_path, as_tar, compress):
    layers = _layers()
    built = oci_layout(str(tmp_path / ("oci.tar" if as_tar else "oci")), layers, "example.com/a/b:v2",
                       as_tar=as_tar, compress=compress)
    src = imageio.open_source(built.path, str(tmp_path))
    try:
        [spec] = imageio.read_images(src)
        assert spec.image_id == built.image_id and spec.tags == ["example.com/a/b:v2"]
        assert [x.digest for x in spec.layers] == [sha256(b) for b in built.layer_blobs]
        raw, _ = src.open(spec.layers[1].path)
        stream = imageio.LayerStream(raw)
        stream.read(100)
        stream.drain()
        assert stream.diff_id == built.diff_ids[1]
    finally:
        src.close()


def test_truncated_compressed_layer_is_an_error():
    blob = gzip.compress(layer_tar({"f": os.urandom(50_000)}))
    stream = imageio.LayerStream(io.BytesIO(blob[: len(blob) // 2]))
    with pytest.raises(InvalidImage, match="truncated gzip"):
        stream.read()
    zblob = zstandard.ZstdCompressor().compress(layer_tar({"f": os.urandom(50_000)}))
    with pytest.raises(InvalidImage, match="truncated zstd"):
        imageio.LayerStream(io.BytesIO(zblob[:-10])).read()
    with pytest.raises(InvalidImage, match="corrupt gzip"):
        imageio.LayerStream(io.BytesIO(b"\x1f\x8b" + b"\x00" * 100)).read()


def test_bad_archives(tmp_path):
    layers = _layers()
    built = docker_archive(str(tmp_path / "img.tar"), layers, ["x:1"])
    data = open(built.path, "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage, match="truncated|corrupt"):
        src = imageio.open_source(str(cut), str(tmp_path))
        imageio.read_images(src)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InvalidImage):
        imageio.read_images(imageio.open_source(str(junk), str(tmp_path)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidImage, match="neither"):
        imageio.read_images(imageio.open_source(str(empty), str(tmp_path)))
    with pytest.raises(InvalidImage, match="no such archive"):
        imageio.open_source(str(tmp_path / "nope.tar"), str(tmp_path))


def test_oci_missing_blob_and_bad_digest(tmp_path):
    built = oci_layout(str(tmp_path / "oci"), _layers(), "x:1")
    # a config blob whose bytes no longer match its digest
    cfg = os.path.join(built.path, "blobs/sha256", built.image_id.split(":")[1])
    with open(cfg, "ab") as f:
        f.write(b" ")
    with pytest.raises(InvalidImage, match="digest mismatch|size mismatch"):
        imageio.read_images(imageio.open_source(built.path, str(tmp_path)))
    built = oci_layout(str(tmp_path / "oci2"), _layers(), "x:1")
    os.unlink(os.path.join(built.path, "blobs/sha256", built.image_id.split(":")[1]))
    with pytest.raises(InvalidImage, match="missing blob"):
        imageio.read_images(imageio.open_source(built.path, str(tmp_path)))


def test_manifest_path_escape(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        data = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidImage, match="escapes"):
        imageio.read_images(imageio.open_source(str(path), str(tmp_path)))


def test_written_tar_reads_back_as_docker_and_oci(tmp_path):
    layers = _layers()
    diff_ids = [sha256(t) for t in layers]
    from imgkit import config_for
    cfg = config_for(diff_ids)
    img = imagewrite.SaveImage(cfg, ["a/b:c"], [(sha256(t), len(t), (lambda t=t: [t[:1000], t[1000:]]))
                                              for t in layers])
    out = tmp_path / "saved.tar"
    with open(out, "wb") as f:
        imagewrite.write_image_tar(f, [img])
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
    assert {"manifest.json", "index.json", "oci-layout"} <= names
    assert manifest[0]["RepoTags"] == ["a/b:c"]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/a/b:c"  # as docker 25
    src = imageio.open_source(str(out), str(tmp_path))
    [spec] = imageio.read_images(src)
    assert spec.config == cfg and spec.diff_ids == diff_ids
    src.close()
    # the same tar read as an OCI layout (index.json path)
    os.mkdir(tmp_path / "x")
    with tarfile.open(out) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    os.unlink(tmp_path / "x" / "manifest.json")
    [spec] = imageio.read_images(imageio.DirSource(str(tmp_path / "x")))
    assert spec.diff_ids == diff_ids and spec.tags == ["docker.io/a/b:c"]


def test_written_tar_refuses_changed_layer(tmp_path):
    t = layer_tar({"f": "x"})
    img = imagewrite.SaveImage(b"{}", [], [(sha256(b"other"), len(t), lambda: [t])])
    with pytest.raises(InvalidImage, match="no longer reproduces"):
        imagewrite.write_image_tar(io.BytesIO(), [img])


def test_oci_nested_index_picks_this_platform(tmp_path):
    built = oci_layout(str(tmp_path / "oci"), _layers(), "x:1")
    index = json.load(open(os.path.join(built.path, "index.json")))
    manifest_desc = index["manifests"][0]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    other = {"mediaType": manifest_desc["mediaType"], "digest": "sha256:" + "0" * 64, "size": 10,
             "platform": {"os": "linux", "architecture": "s390x" if arch != "s390x" else "ppc64le"}}
    mine = {**manifest_desc, "platform": {"os": "linux", "architecture": arch}}
    mine.pop("annotations")
    inner = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [other, mine]}).encode()
    with open(os.path.join(built.path, "blobs/sha256", sha256(inner).split(":")[1]), "wb") as f:
        f.write(inner)
    outer = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                                                "digest": sha256(inner), "size": len(inner),
                                                "annotations": {"io.containerd.image.name": "multi/arch:1"}}]}
    with open(os.path.join(built.path, "index.json"), "w") as f:
        json.dump(outer, f)
    [spec] = imageio.read_images(imageio.open_source(built.path, str(tmp_path)))
    assert spec.image_id == built.image_id and spec.tags == ["multi/arch:1"]


@pytest.mark.parametrize("entry", [{"Config": 5, "Layers": []}, {"Config": "c.json", "Layers": "l.tar"},
                                   {"Config": "c.json", "Layers": [7]}, {"Config": "c.json", "Layers": [],
                                                                         "RepoTags": "x:1"}, 1, "entry"])
def test_a_manifest_entry_of_the_wrong_shape_is_refused_by_name(tmp_path, entry):
    import io
    import json
    import tarfile

    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (("manifest.json", json.dumps([entry]).encode()), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidImage, match=r"manifest.json in .*odd.tar: bad entry"):
        imageio.read_images(imageio.open_source(str(path), str(tmp_path)))
