"""Containers made, written and removed by a process killed (SIGKILL) at random moments: afterwards every
container listed is whole (both its layers there, mountable), and ``cleanup`` leaves no layer that is
neither an image's nor a container's. A kill during ``container rm`` left the container listed with its
layers gone (inspect, mount and commit failed; the image could not be removed) and cleanup kept it so."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from imgkit import docker_archive, layer_tar

from graphdriver import open_driver
from graphdriver.kernel import mountinfo
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore

_WORKER = """
import os, sys
from graphdriver import open_driver
from graphdriver.store.containers import ContainerStore
from graphdriver.store.images import ImageStore
root, start = sys.argv[1], int(sys.argv[2])
cs = ContainerStore(ImageStore(root, open_driver(root)))
blob = os.urandom(1 << 20)
for i in range(start, start + 1000):
    c = cs.create("app:1", name=f"c{i}")
    path = cs.mount(c.id)
    for j in range(24):  # 24 MiB in the rw layer: removing it takes long enough for kills to land
        with open(os.path.join(path, f"f{j}"), "wb") as f:
            f.write(blob)
    cs.umount(c.id)
    cs.remove(c.id)
    print(i, flush=True)
"""


def test_containers_stay_whole_when_their_process_is_killed_at_random(root: str, tmp_path) -> None:
    built = docker_archive(str(tmp_path / "img.tar"), [layer_tar({"etc/motd": "hi\n"})], ["app:1"])
    cs = ContainerStore(ImageStore(root, open_driver(root)))
    cs.images.load(built.path)
    image_layers = set(cs.driver.layers())
    rng = random.Random(1234)
    start = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, root, str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.4, 1.6))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        start += 1000
        subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "cleanup"], check=True,
                       capture_output=True, timeout=120)
        cs = ContainerStore(ImageStore(root, open_driver(root)))
        listed = cs.all()
        for c in listed:  # whole: both layers there, and it mounts
            assert cs.driver.exists(c.rw_layer) and cs.driver.exists(c.init_layer), c.name
            path = cs.mount(c.id)
            assert open(os.path.join(path, "etc", "motd")).read() == "hi\n"
            cs.umount(c.id)
        expected = image_layers | {layer for c in listed for layer in (c.rw_layer, c.init_layer)}
        assert set(cs.driver.layers()) == expected
        assert mountinfo.mounts_under(root) == []
        for c in listed:
            cs.remove(c.id)
    cs.images.remove("app:1")
    assert cs.driver.layers() == []
