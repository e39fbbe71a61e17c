"""The image/container half of ``graphdriver demo``: load, two containers sharing an image, commit."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

from ..kernel import mountinfo, syscalls
from ..registry import open_driver
from ..store.containers import ContainerStore
from ..store.images import ImageStore
from ..store.runtime import prune_runtime


def discard_root(root: str) -> None:
    """Remove a demo's temporary root: what is still mounted there (only after a failure part-way),
    the directory, and its reference records on the tmpfs."""
    for entry in reversed(mountinfo.mounts_under(root)):
        syscalls.umount2(entry.mount_point, syscalls.MNT_DETACH)
    shutil.rmtree(root, ignore_errors=True)
    prune_runtime()

def _layer(files: dict[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_demo_image(path: str) -> str:
    """Write a two-layer docker-save tarball (made here, in Python); returns its tag."""
    layers = [_layer({"etc": None, "etc/os-release": b"NAME=demo\n", "app": None}),
              _layer({"app/hello.txt": b"hello from the image\n"})]
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids},
                      "history": [{"created_by": "base"}, {"created_by": "app"}]}).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    with tarfile.open(path, "w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for i, t in enumerate(layers):
            add(f"layer{i}/layer.tar", t)
        add(cfg_name, cfg)
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": ["demo/app:1"],
                                          "Layers": ["layer0/layer.tar", "layer1/layer.tar"]}]).encode())
    return "demo/app:1"


def _short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def image_story(driver_name: str | None, say=print) -> None:
    """Load a small image, run two containers on it, write in one, commit it; clean up after."""
    root = tempfile.mkdtemp(prefix="graphdriver-demo-images-")
    try:
        store = ContainerStore(ImageStore(root, open_driver(root, driver_name)))
        d = store.driver
        tag = build_demo_image(os.path.join(root, "demo.tar"))
        say(f"\nimages and containers: driver {d.name}, temporary root {root}")

        def progress(event: str, i: int, n: int, chain: str, done: int, total: int) -> None:
            if event != "progress":
                say(f"  layer {i}/{n} chainID {_short(chain)}: {event}")
        [img] = store.images.load(os.path.join(root, "demo.tar"), progress)
        doc = store.images.inspect(tag)
        say(f"image load: {tag} = {_short(img.image_id)}, RootFS.Layers (diffIDs) "
            f"{[_short(x) for x in doc['RootFS']['Layers']]}")
        say(f"  the driver keys image layers by chainID: {[_short(x) for x in doc['ChainIDs']]}")
        a = store.create(tag, name="a", hostname="alpha")
        b = store.create(tag, name="b", hostname="beta")
        say(f"container a = {a.id[:12]}: layers {a.id[:12]}…-init (hostname, hosts, resolv.conf, mount points) "
            f"and {a.id[:12]}… (read-write); container b = {b.id[:12]} likewise")
        la, lb = (store.inspect(x)["GraphDriver"]["Data"].get("LowerDir", "") for x in ("a", "b"))
        if la:
            shared = [p for p in la.split(":") if p in lb.split(":")]
            say(f"  a and b share {len(shared)} image layer dirs in LowerDir: "
                + ", ".join(os.path.basename(os.path.dirname(p))[:12] for p in shared))
        ma, mb = store.mount("a"), store.mount("b")
        try:
            with open(os.path.join(ma, "app/note.txt"), "w") as f:
                f.write("written in a\n")
            say(f"write /app/note.txt in a: a sees it {os.path.exists(os.path.join(ma, 'app/note.txt'))}, "
                f"b sees it {os.path.exists(os.path.join(mb, 'app/note.txt'))}; "
                f"/etc/hostname: a {open(os.path.join(ma, 'etc/hostname')).read().strip()!r}, "
                f"b {open(os.path.join(mb, 'etc/hostname')).read().strip()!r}")
            say("  docker diff a: " + ", ".join(f"{'CAD'[k]} {p}" for p, k in store.changes("a")))
        finally:
            store.umount("a")
            store.umount("b")
        new_id = store.commit("a", "demo/app:2", "add a note")
        new = store.images.inspect("demo/app:2")
        top = d.diff_path(new["ChainIDs"][-1].split(":", 1)[1])
        files = sorted(os.path.relpath(os.path.join(dp, n), top) for dp, dn, fn in os.walk(top) for n in dn + fn)
        say(f"commit a -> demo/app:2 = {_short(new_id)}: RootFS.Layers grew from {len(doc['RootFS']['Layers'])} "
            f"to {len(new['RootFS']['Layers'])}; the new layer holds {files} (no init-layer files)")
        for c in ("a", "b"):
            store.remove(c)
        for t in ("demo/app:2", tag):
            store.remove_image(t)
        say(f"removed containers and images: layers left {len(d.layers())}, "
            f"mounts left {len(mountinfo.mounts_under(root))}")
    finally:
        discard_root(root)
    say("cleaned up")
