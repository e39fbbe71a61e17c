"""Differential: the same archives through a real dockerd 20.10's ``docker load`` (overlay2 and vfs, private
paths) and through ``image load`` (overlay2 and vfs). Where both accept, image ids, RootFS.Layers, tags and
every file of every layer agree (overlay2's per-layer diff directories; vfs's whole rootfs); where both
refuse, graphdriver says so in one line and leaves the root as it was. The places where they differ on
purpose are pinned too, each with the reason (see README, "Differences from docker load")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import loadkit as lk
import pytest
from imgkit import busybox_layer, chain_ids, layer_tar, oci_layout, sha256, tree_state
from loadkit import Image, files, save_entries, tar_of, write_archive

from graphdriver import open_driver
from graphdriver.store.images import ImageStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = lk.base_layer()
A = Image([BASE, lk.whiteout_layer()], ["diff/a:1", "diff/a:2"])


@pytest.fixture(scope="module")
def daemons():
    """Two private dockerds, overlay2 and vfs, started once for the module."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from support.dockerd import Dockerd, ensure_docker_packages

    ensure_docker_packages()
    with Dockerd("overlay2") as o, Dockerd("vfs") as v:
        yield {"overlay2": o, "vfs": v}


@pytest.fixture
def docker(daemons):
    """The daemons, emptied of images after each test."""
    yield daemons
    for d in daemons.values():
        d.docker("image", "prune", "-af")  # parents and children alike (a v1 load makes both)


def _edit(entries: dict, **manifest: object) -> dict:
    m = json.loads(entries["manifest.json"])
    m[0].update(manifest)
    entries["manifest.json"] = json.dumps(m).encode()
    return entries


def _config_swapped(raw: bytes) -> dict:
    """A's archive whose config is ``raw``, named by its digest."""
    e = save_entries([A])
    del e[A.image_id[7:] + ".json"]
    e[sha256(raw)[7:] + ".json"] = raw
    return _edit(e, Config=sha256(raw)[7:] + ".json")


def _layer_variant(name: str, layer: bytes, below: bytes = BASE) -> Image:
    return Image([below, layer], [f"diff/{name}:1"])


# name -> (entries of the archive, the images in it). Both loads accept these and must agree.
AGREE = {
    "shared layers, several tags, an image without": lambda: (
        save_entries([A, (B := Image([BASE, layer_tar({"b-only": "b\n"})]))]), [A, B]),
    "gzip layers": lambda: (save_entries([A], "gzip"), [A]),
    "xz archive": lambda: (save_entries([A]), [A], "xz"),
    "bzip2 archive": lambda: (save_entries([A]), [A], "bzip2"),
    "manifest.json only (no repositories, no v1 json/VERSION)": lambda: (
        save_entries([A], legacy=False, repositories=False), [A]),
    "one layer twice in an image": lambda: (save_entries([(i := Image([BASE, BASE], ["diff/t:1"]))]), [i]),
    "an empty layer (end blocks only)": lambda: (save_entries([(i := _layer_variant("e", b"\0" * 1024))]), [i]),
    "an empty layer (no bytes at all)": lambda: (save_entries([(i := _layer_variant("e0", b""))]), [i]),
    "trailing garbage after the end blocks": lambda: (
        save_entries([(i := _layer_variant("g", layer_tar({"g": "g\n"}) + b"garbage" * 30))]), [i]),
    "a symlinked manifest.json and layer": lambda: _symlinked(),
    "odd entries": lambda: (save_entries([(i := Image([busybox_layer(), lk.odd_layer()], ["diff/odd:1"]))]), [i]),
    "PAX sparse file": lambda: (save_entries([(i := Image([lk.sparse_layer("pax")], ["diff/sparse:1"]))]), [i]),
    "GNU long names, base-256 ids": lambda: (save_entries([(i := _layer_variant("gnu", _gnu_long()))]), [i]),
    "whiteout of a directory, opaque new dir": lambda: (save_entries([(i := _layer_variant("wh", tar_of(files(
        {".wh.d": b"", "n": None, "n/.wh..wh..opq": b"", "n/f": "f\n", "./dot": "d\n", "/abs": "a\n"}))))]), [i]),
    "a file through a symlink of the layer below": lambda: (save_entries([(i := _layer_variant(
        "sym", tar_of(files({"lnk/x": "x\n"})), tar_of(files({"etc": None, "lnk": "->/etc"}))))]), [i]),
    "whiteout then the same directory again": lambda: (save_entries([(i := _layer_variant(
        "readd", tar_of(files({".wh.a": b"", "a": None, "a/g": "g\n"}))))]), [i]),
    "whiteouts of nothing, a hard link to a symlink, modes 0 and 0555": lambda: (
        save_entries([(i := _layer_variant("misc", _misc_layer()))]), [i]),
    "an aufs pseudo-link": lambda: (save_entries([(i := _layer_variant("plnk", tar_of(files(
        {".wh..wh.plnk": None, ".wh..wh.plnk/1.2": "p\n", "usesp": "=>.wh..wh.plnk/1.2"}))))]), [i]),
}

OPAQUE = (("trusted.overlay.opaque", b"y"),)


def _known(variant: str, driver: str, mine: dict, theirs: dict) -> None:
    """Where docker 20.10 is wrong, check it is so, and make its files what they should have been.

    A whiteout then the same directory in one layer: its overlay2 makes a plain directory, so the lower
    one's files show through (its vfs has them gone); ours is opaque. An aufs pseudo-link (a hard link to
    ``.wh..wh.plnk/x``): its overlay2 keeps the aufs metadata as files (and whites out ``.wh.plnk``), its vfs
    leaves an empty ``.wh..wh.plnk``; ours is the linked file alone, as docker's own unpacking means it.
    (A file through a symlink of the layer below lands in a new directory on overlay2, through the symlink
    on vfs: in both dockers too.)"""
    if variant == "whiteout then the same directory again" and driver == "overlay2" and "a/g" in mine:
        assert mine["a"][-1] == OPAQUE and theirs["a"][-1] == ()
        theirs["a"] = mine["a"]
    if variant == "an aufs pseudo-link" and "usesp" in mine:
        plnk = {".wh..wh.plnk", ".wh..wh.plnk/1.2", ".wh.plnk"} if driver == "overlay2" else {".wh..wh.plnk"}
        assert plnk <= set(theirs) and not plnk & set(mine)
        for k in plnk:
            del theirs[k]
        theirs["<hardlinks>"] = ()


def _misc_layer() -> bytes:
    return tar_of(files({".wh.nothing": b"", "z": None, "z/.wh.none": b"", "s": "->/nowhere", "hs": "=>s"}) +
                  [(lk.entry("ro", tarfile.DIRTYPE, 0o555), b""), (lk.entry("ro/f", mode=0), b"f\n"),
                   (lk.entry("ro/sub", tarfile.DIRTYPE, 0), b""), (lk.entry("ro/sub/g", mode=0o400), b"g\n")])


def _gnu_long() -> bytes:
    return tar_of([(lk.entry("L" * 150), b"long\n"), (lk.entry("s", tarfile.SYMTYPE, linkname="T" * 150), b""),
                   (lk.entry("big", uid=3_000_000, gid=5_000_000), b"b\n")], tarfile.GNU_FORMAT)


def _symlinked() -> tuple[dict, list[Image]]:
    e = save_entries([A])
    e["real-manifest"] = e.pop("manifest.json")
    m = json.loads(e["real-manifest"])
    e["base.tar"], m[0]["Layers"][0] = "->" + m[0]["Layers"][0], "base.tar"
    e["real-manifest"] = json.dumps(m).encode()
    e["manifest.json"] = "->real-manifest"
    return e, [A]


def _load_both(tmp_path, entries: dict, outer: str, root: str, other_root: str) -> tuple[str, dict]:
    path = write_archive(str(tmp_path / "in.tar"), entries, outer)
    stores = {"overlay2": ImageStore(root, open_driver(root, "overlay2")),
              "vfs": ImageStore(other_root, open_driver(other_root, "vfs"))}
    for s in stores.values():
        s.load(path)
    return path, stores


@pytest.mark.parametrize("variant", list(AGREE))
def test_both_accept_and_agree(tmp_path, docker, root, other_root, variant):
    entries, images, *outer = AGREE[variant]()
    path, stores = _load_both(tmp_path, entries, (outer or ["plain"])[0], root, other_root)
    for driver, d in docker.items():
        d.docker("load", "-i", path)
        for img in images:
            [doc] = json.loads(d.docker("image", "inspect", img.image_id).stdout)
            ours = stores[driver].inspect(img.image_id)
            assert (ours["Id"], ours["RootFS"]["Layers"], sorted(ours["RepoTags"])) == \
                (doc["Id"], doc["RootFS"]["Layers"], sorted(doc["RepoTags"])) == \
                (img.image_id, img.diff_ids, sorted(img.tags or []))
            chains = chain_ids(img.diff_ids)
            for i, chain in enumerate(chains if driver == "overlay2" else chains[-1:]):
                theirs = lk.fingerprint(lk.docker_layer_dir(d.data_root, driver, chain))
                mine = lk.fingerprint(stores[driver].driver.diff_path(chain.split(":")[1]))
                _known(variant, driver, mine, theirs)
                assert mine == theirs, f"{driver} layer {i}"


def _gd(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args], capture_output=True,
                          text=True, timeout=120)


# name -> (entries, what graphdriver's one line says). Both refuse these.
BOTH_REFUSE = {
    "config diff_ids not the layers'": lambda: (_config_swapped(
        A.config.replace(A.diff_ids[1].encode(), sha256(b"other").encode())), "diffID mismatch for layer"),
    "manifest names a missing file": lambda: (_edit(save_entries([A]), Layers=[_layers(A)[0], "no/layer.tar"]),
                                             "missing blob no/layer.tar in"),
    "config not JSON": lambda: (_config_swapped(b"not json"), "is invalid: Expecting value"),
    "config path with ../": lambda: (_edit(save_entries([A]), Config="../" + A.image_id[7:] + ".json"),
                                    "escapes the archive"),
    "layer symlinked out of the archive": lambda: (_edit({**save_entries([A]), "l.tar": "->../../etc/passwd"},
                                                         Layers=["l.tar", "l.tar"]), "escapes the archive"),
    "hard link to a lower layer's file": lambda: (save_entries([_layer_variant("hl", tar_of(files(
        {"hx": "=>etc/motd"})))]), "which is not an earlier entry of this archive"),
    "config and manifest.json disagree on the layer count": lambda: (
        _edit(save_entries([A]), Layers=_layers(A)[:1]), "config lists 2 layers, manifest.json 1"),
    "hard link to a directory": lambda: (
        save_entries([_layer_variant("hd", tar_of(files({"dd": None, "hd": "=>dd"})))]), "hard link to directory 'dd'"),
    "a Windows image": lambda: (save_entries([Image([BASE], ["diff/w:1"], {"os": "windows"})]),
                                "cannot load windows image on linux"),  # (any other OS kills dockerd 20.10)
    "a name that is not lowercase": lambda: (save_entries([Image([BASE], ["Diff/Up:1"])]), "invalid reference"),
    "a digest as a tag": lambda: (save_entries([Image([BASE], ["diff/x@sha256:" + "a" * 64])]),
                                  "digest references are not supported"),
}

# Docker accepts these hostile or mislabelled archives, and the pre-1.10 format; graphdriver refuses them.
GD_REFUSES = {
    "no manifest.json, only repositories and v1 json": lambda: (
        {k: v for k, v in save_entries([A]).items() if k != "manifest.json"}, "(no manifest.json)"),
    "absolute layer path": lambda: (_edit(save_entries([A]), Layers=["/" + p for p in _layers(A)]),
                                    "escapes the archive"),
    "layer path with x/../": lambda: (_edit(save_entries([A]), Layers=["x/../" + p for p in _layers(A)]),
                                      "escapes the archive"),
    "config named by a digest it does not have": lambda: (_misnamed(), "digest mismatch for config"),
    "a global PAX header that would change the entries after it": lambda: (save_entries([_layer_variant(
        "g", _global_pax())]), "global PAX header sets 'mtime'"),
    "a layer entry climbing out with ..": lambda: (save_entries([_layer_variant("up", tar_of(files(
        {"../escape": "x\n"})))]), "'..' climbs out of the layer"),
}


def _global_pax() -> bytes:
    """A layer with a PAX global header: Go's reader (docker's) ignores it; GNU tar, which extracts here,
    would apply it to every entry after it, so graphdriver refuses it (bar comment and charset)."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"mtime": "123"}) as tf:
        info, data = lk.entry("g"), b"g\n"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layers(img: Image) -> list[str]:
    return json.loads(save_entries([img])["manifest.json"])[0]["Layers"]


def _misnamed() -> dict:
    e = save_entries([A])
    e["0" * 64 + ".json"] = e.pop(A.image_id[7:] + ".json")
    return _edit(e, Config="0" * 64 + ".json")


@pytest.mark.parametrize(("variant", "docker_too"), [(v, True) for v in BOTH_REFUSE] +
                         [(v, False) for v in GD_REFUSES])
def test_refusals_are_one_line_and_change_nothing(tmp_path, docker, root, variant, docker_too):
    entries, says = (BOTH_REFUSE if docker_too else GD_REFUSES)[variant]()
    path = write_archive(str(tmp_path / "bad.tar"), entries)
    p = docker["overlay2"].docker("load", "-i", path, check=False)
    assert (p.returncode != 0) == docker_too, p.stdout + p.stderr
    ok = write_archive(str(tmp_path / "ok.tar"), save_entries([Image([BASE], ["diff/present:1"])]))
    assert _gd(root, "image", "load", "-q", "-i", ok).returncode == 0
    before = _state(root)
    p = _gd(root, "image", "load", "-q", "-i", path)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("graphdriver: ") and says in p.stderr, p.stderr
    assert _state(root) == before


def _state(root: str) -> list[tuple[str, int, int]]:
    """The root's files, less overlay2's ``committed`` marks: a layer that once had a child (one a refused
    load applied, then removed) keeps being mounted read-only, which an image layer is anyway."""
    return [e for e in tree_state(root) if not e[0].endswith("/committed")]


# Docker 20.10 refuses these; graphdriver reads them (newer dockers and containerd do too).
GD_LENIENT = {
    "zstd layers": lambda: save_entries([A], "zstd"),
    "old GNU sparse file (type S)": lambda: save_entries([Image([lk.sparse_layer("gnu")], ["diff/s:1"])]),
    "a path twice in one layer": lambda: save_entries([_layer_variant("dup", tar_of(files({"c": "1\n"}) +
                                                                                     files({"c": "2\n"})))]),
    "a contiguous file (type 7, a regular file to POSIX)": lambda: save_entries([_layer_variant(
        "contig", tar_of([(lk.entry("cont", b"7"), b"contiguous\n")]))]),
    "a RepoTag without a tag": lambda: save_entries([Image([BASE], ["diff/notag"])]),
    "an OCI layout": None,
}


@pytest.mark.parametrize("variant", list(GD_LENIENT))
def test_what_docker_20_10_refuses_and_graphdriver_reads(tmp_path, docker, root, variant):
    if GD_LENIENT[variant] is None:
        path = oci_layout(str(tmp_path / "oci.tar"), [BASE], "diff/oci:1", as_tar=True).path
    else:
        path = write_archive(str(tmp_path / "in.tar"), GD_LENIENT[variant]())
    assert docker["overlay2"].docker("load", "-i", path, check=False).returncode != 0
    p = _gd(root, "image", "load", "-q", "-i", path)
    assert p.returncode == 0 and p.stdout.startswith("Loaded image"), p.stderr


def test_reload_and_a_moved_tag_as_docker(tmp_path, docker, root):
    first = write_archive(str(tmp_path / "a.tar"), save_entries([A]))
    n = Image([BASE, layer_tar({"new": "n\n"})], ["diff/a:1", "diff/new:1"])
    second = write_archive(str(tmp_path / "n.tar"), save_entries([n]))
    d = docker["overlay2"]
    for path in (first, first, second):
        theirs, ours = d.docker("load", "-i", path), _gd(root, "image", "load", "-q", "-i", path)
        assert ours.returncode == 0 and ours.stdout == theirs.stdout
    assert "renaming the old one with ID " + A.image_id in ours.stdout
    for ref, want in (("diff/a:1", n.image_id), ("diff/a:2", A.image_id), ("diff/new:1", n.image_id)):
        [doc] = json.loads(d.docker("image", "inspect", ref).stdout)
        [mine] = json.loads(_gd(root, "image", "inspect", ref).stdout)
        assert doc["Id"] == mine["Id"] == want


def test_save_round_trips_through_docker(tmp_path, docker, root, other_root):
    """image save -> docker load -> docker save -> image load: ids, diffIDs and names survive (an image
    saved by id comes back nameless)."""
    odd = Image([busybox_layer(), lk.odd_layer()], ["diff/odd:1"])
    nameless = Image([BASE, layer_tar({"n": "n\n"})])
    images = [A, odd, _layer_variant("e0", b""), _layer_variant("g", layer_tar({"g": "g\n"}) + b"\0" * 4096),
              nameless]
    refs = [t for i in images for t in i.tags or [i.image_id]]
    assert _gd(root, "image", "load", "-q", "-i",
               write_archive(str(tmp_path / "in.tar"), save_entries(images))).returncode == 0
    assert _gd(root, "image", "save", *refs, "-o", str(tmp_path / "ours.tar")).returncode == 0
    d = docker["overlay2"]
    d.docker("load", "-i", str(tmp_path / "ours.tar"))
    (tmp_path / "theirs.tar").write_bytes(d.docker_bytes("save", *refs))
    assert _gd(other_root, "image", "load", "-q", "-i", str(tmp_path / "theirs.tar")).returncode == 0
    for img in images:
        [doc] = json.loads(d.docker("image", "inspect", img.image_id).stdout)
        [back] = json.loads(_gd(other_root, "image", "inspect", img.image_id).stdout)
        assert (doc["Id"], doc["RootFS"]["Layers"], doc["RepoTags"]) == \
            (back["Id"], back["RootFS"]["Layers"], back["RepoTags"]) == (img.image_id, img.diff_ids, img.tags or [])


def test_the_lines_for_an_archive_ending_with_an_unnamed_image(tmp_path, docker, root):
    """Ours: a ``Loaded image ID:`` line for each image loaded without a name. Docker 20.10's: one for every
    image of the archive, named or not, printed only when the last image has no name."""
    b = Image([BASE, layer_tar({"b-only": "b\n"})])
    path = write_archive(str(tmp_path / "ab.tar"), save_entries([A, b]))
    tagged = "Loaded image: diff/a:1\nLoaded image: diff/a:2\n"
    assert docker["overlay2"].docker("load", "-i", path).stdout == \
        f"{tagged}Loaded image ID: {A.image_id}\nLoaded image ID: {b.image_id}\n"
    assert _gd(root, "image", "load", "-q", "-i", path).stdout == f"{tagged}Loaded image ID: {b.image_id}\n"


def test_one_tag_on_two_images_of_an_archive_and_a_tag_given_thrice(tmp_path, docker, root):
    """The later image takes the tag (said as docker says it); a tag repeated, spelled out or not, is one."""
    x, y = Image([BASE], ["diff/same:1", "diff/x:1"]), Image([BASE, layer_tar({"y": "y"})], ["diff/same:1"])
    for n, images in enumerate(([x, y], [Image([BASE], ["diff/d:1", "diff/d:1", "docker.io/diff/d:1"])])):
        path = write_archive(str(tmp_path / f"{n}.tar"), save_entries(images))
        theirs, ours = docker["overlay2"].docker("load", "-i", path), _gd(root, "image", "load", "-q", "-i", path)
        assert ours.returncode == 0 and ours.stdout == theirs.stdout
    for ref, want in (("diff/same:1", y.image_id), ("diff/x:1", x.image_id), ("diff/d:1", x.image_id)):
        [mine] = json.loads(_gd(root, "image", "inspect", ref).stdout)
        assert mine["Id"] == want
