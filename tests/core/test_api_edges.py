"""The Python API where an embedding program is likely to trip: remove_all given a string, a generator or
an id twice; cleanup with one mount held busy; an empty root."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from graphdriver import open_driver
from graphdriver.errors import BadRoot, MountBusy
from graphdriver.kernel import mountinfo


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_remove_all_takes_a_string_a_generator_and_an_id_twice(root: str, backend: str) -> None:
    """A string was iterated letter by letter (remove_all("ci") removed layers c and i, kept ci); a
    generator was used up by the checks, so nothing was removed and nothing said; an id twice was
    refused as being read by this very process."""
    d = open_driver(root, backend)
    for lid in ("c", "i", "ci", "a", "b", "x"):
        d.create(lid)
    d.remove_all("ci")
    assert d.layers() == ["a", "b", "c", "i", "x"]
    d.remove_all(lid for lid in ("a", "b"))
    assert d.layers() == ["c", "i", "x"]
    d.remove_all(["x", "x"])
    assert d.layers() == ["c", "i"]


def test_cleanup_unmounts_what_it_can_past_a_busy_mount(root: str) -> None:
    """cleanup stopped at the first busy mount: the others stayed mounted and nothing else was tidied."""
    d = open_driver(root, "overlay2")
    d.create("base")
    paths = {}
    for name in ("c1", "c2", "c3"):
        d.create(name, "base", rw=True)
        paths[name] = d.get(name)
    os.makedirs(os.path.join(d.home, ".staging", "left.1234.create"))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=paths["c2"])
    try:
        time.sleep(0.2)
        with pytest.raises(MountBusy, match=rf"{paths['c2']} is busy: held by python\S*\[{holder.pid}\]"):
            d.cleanup()
        assert mountinfo.mount_at(paths["c1"]) is None and mountinfo.mount_at(paths["c3"]) is None
        assert mountinfo.mount_at(paths["c2"]) is not None and d.mount_count("c2") == 1  # its count kept
        assert os.listdir(os.path.join(d.home, ".staging")) == []
    finally:
        holder.kill()
        holder.wait()
    assert d.cleanup() == [] and mountinfo.mounts_under(root) == []


def test_an_empty_root_is_refused_not_taken_as_the_current_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadRoot, match="the root is empty"):
        open_driver("")
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", "", "layer", "create", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "graphdriver: the root is empty: give a directory (--root, " \
                                             "GRAPHDRIVER_ROOT)\n"
    assert os.listdir(tmp_path) == []
