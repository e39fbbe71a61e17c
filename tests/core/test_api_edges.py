"""The Python API where an embedding program is likely to trip: remove_all given a string, a generator or
an id twice; arguments of the wrong type; cleanup with one mount held busy; an empty root."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from graphdriver import open_driver
from graphdriver.errors import BadRoot, InvalidArgument, InvalidID, MountBusy
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


WRONG_TYPES = [
    ("get", lambda d: d.get(["a"]), "layer id ['a']"),
    ("get", lambda d: d.get({"a": 1}), "layer id {'a': 1}"),
    ("put", lambda d: d.put(["a"]), "layer id ['a']"),
    ("create", lambda d: d.create(5), "layer id 5"),
    ("create", lambda d: d.create("x", parent=3), "parent id 3"),
    ("create", lambda d: d.create("x", parent=["a"]), "parent id ['a']"),
    ("create", lambda d: d.create("x", storage_opt="x"), "storage_opt must be a dict"),
    ("create", lambda d: d.create("x", storage_opt={"size": 5}), "storage_opt must be a dict"),
    ("create", lambda d: d.create("x", storage_opt={1: "2"}), "storage_opt must be a dict"),
    ("remove", lambda d: d.remove(["a"]), "layer id ['a']"),
    ("remove_all", lambda d: d.remove_all(5), "layer_ids must be an id or an iterable"),
    ("remove_all", lambda d: d.remove_all([["a"]]), "layer id ['a']"),
    ("metadata", lambda d: d.metadata(5), "layer id 5"),
    ("parent", lambda d: d.parent(["a"]), "layer id ['a']"),
    ("is_rw", lambda d: d.is_rw(5), "layer id 5"),
    ("ancestors", lambda d: d.ancestors(5), "layer id 5"),
    ("children", lambda d: d.children(5), "layer id 5"),
    ("mount_count", lambda d: d.mount_count(["a"]), "layer id ['a']"),
    ("apply_diff", lambda d: d.apply_diff("a", 5, io.BytesIO(b"")), "parent id 5"),
    ("apply_diff", lambda d: d.apply_diff("a", None, "a.tar"), "stream must be a binary file object"),
    ("diff", lambda d: d.diff(["a"], None), "layer id ['a']"),
    ("diff", lambda d: d.diff("a", 5), "parent id 5"),
    ("changes", lambda d: d.changes("a", ["b"]), "parent id ['b']"),
    ("diff_size", lambda d: d.diff_size(5), "layer id 5"),
]


@pytest.mark.parametrize("backend", ["overlay2", "vfs"])
def test_arguments_of_the_wrong_type_are_refused_in_one_line(root: str, backend: str) -> None:
    """A list, a number or a str where the API wants an id, a dict or a stream raised a raw TypeError or
    AttributeError from deep inside (``unhashable type: 'list'``); now graphdriver's InvalidArgument (an id:
    InvalidID) naming the argument, and nothing changes."""
    d = open_driver(root, backend)
    d.create("a")
    problems = []
    for method, call, words in WRONG_TYPES:
        try:
            call(d)
        except InvalidArgument as e:
            if words not in str(e) or "\n" in str(e):
                problems.append(f"{method}: {e}")
            if words.startswith(("layer id", "parent id")) and not isinstance(e, InvalidID):
                problems.append(f"{method}: {type(e).__name__}, not InvalidID")
        except Exception as e:  # noqa: BLE001 - the point: anything else is the bug
            problems.append(f"{method}: {type(e).__name__}: {e}")
        else:
            problems.append(f"{method}: accepted")
    assert not problems, "\n".join(problems)
    assert d.layers() == ["a"] and d.mount_count("a") == 0
    assert d.exists(["a"]) is False and d.held(5) is False  # a bad id is simply absent
    d.get("a")
    d.put("a")


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
