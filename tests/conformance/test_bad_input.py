"""Bad input: a typed error with one clear line, and nothing changed on disk or in the mount table."""

from __future__ import annotations

import os

import pytest

from graphdriver import Driver
from graphdriver.errors import CorruptRecord, InvalidID, LayerExists, LayerNotFound

from .util import race, root_state

BAD_IDS = [
    "",                      # empty
    "-leading-dash",         # first char must be alphanumeric
    ".hidden",
    "_under",
    "a/b",                   # path separators
    "/abs",
    "../escape",
    "a..b",                  # '..' anywhere
    "x..",
    ".",
    "..",
    "has space",
    "colon:id",              # would break overlay/aufs option strings
    "comma,id",
    "eq=id",
    "new\nline",
    "tab\tid",
    "nul\0id",
    "ünïcode",
    "a" * 129,               # longer than 128
    "star*",
]


def _valid_edge_ids() -> list[str]:
    return ["a", "Z9", "a" * 128, "0.1_2-3", "f" * 64]


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b)[:20] for b in BAD_IDS])
def test_bad_ids_raise_invalid_id_and_change_nothing(driver: Driver, bad: str) -> None:
    driver.create("good")
    driver.create("good-child", "good")
    driver.get("good-child")
    before = root_state(driver.root)
    calls = [
        lambda: driver.create(bad),
        lambda: driver.create(bad, "good"),
        *([lambda: driver.create("fresh", bad)] if bad else []),  # "" as a parent means "no parent"
        lambda: driver.remove(bad),
        lambda: driver.get(bad),
        lambda: driver.put(bad),
        lambda: driver.metadata(bad),
        lambda: driver.parent(bad),
        lambda: driver.ancestors(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidID) as info:
            call()
        assert "\n" not in str(info.value).replace("\\n", "") and "invalid" in str(info.value)
    assert not driver.exists(bad)
    assert root_state(driver.root) == before
    assert driver.layers() == ["good", "good-child"] and driver.mount_count("good-child") == 1
    driver.put("good-child")


def test_valid_edge_ids_work(driver: Driver) -> None:
    parent = None
    for lid in _valid_edge_ids():
        driver.create(lid, parent)
        assert driver.exists(lid)
        parent = lid
    assert driver.ancestors("f" * 64) == list(reversed(_valid_edge_ids()[:-1]))


def test_unknown_parent(driver: Driver) -> None:
    driver.create("base")
    before = root_state(driver.root)
    with pytest.raises(LayerNotFound, match="parent layer nope not found"):
        driver.create("child", "nope")
    assert root_state(driver.root) == before and not driver.exists("child")


def test_existing_id(driver: Driver) -> None:
    driver.create("base")
    path = driver.get("base")
    with open(os.path.join(path, "f"), "w") as f:
        f.write("kept")
    driver.put("base")
    driver.create("other")
    before = root_state(driver.root)
    with pytest.raises(LayerExists, match="layer base already exists"):
        driver.create("base")
    with pytest.raises(LayerExists):
        driver.create("base", "other")
    assert root_state(driver.root) == before
    with open(os.path.join(driver.get("base"), "f")) as f:
        assert f.read() == "kept"
    driver.put("base")


def test_unknown_layer_operations(driver: Driver) -> None:
    before = root_state(driver.root)
    for call in (lambda: driver.get("ghost"), lambda: driver.put("ghost"), lambda: driver.remove("ghost"),
                 lambda: driver.metadata("ghost")):
        with pytest.raises(LayerNotFound, match="ghost"):
            call()
    assert root_state(driver.root) == before


def test_concurrent_processes_keep_the_store_whole(driver: Driver) -> None:
    driver.create("base")
    tags = ["p0", "p1", "p2"]
    answers = race(driver.root, driver.name, tags, 15)
    assert sorted(answers) == ["lost", "lost", "won"]
    want = sorted(["base", "contested"] + [f"{t}-{i}" for t in tags for i in range(15)])
    assert driver.layers() == want
    assert os.listdir(driver._staging) == []
    for t in tags:
        assert driver.ancestors(f"{t}-14") == [f"{t}-{i}" for i in range(13, -1, -1)] + ["base"]
    path = driver.get("p1-14")
    assert os.path.isdir(path)
    driver.put("p1-14")


@pytest.mark.parametrize("damage", [b"garbage{", b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_record_is_one_clear_line_naming_it(driver: Driver, damage: bytes) -> None:
    import subprocess
    import sys

    driver.create("a")
    driver.create("b", "a")
    record = driver._meta_path("b")
    with open(record, "wb") as f:
        f.write(damage)
    with pytest.raises(CorruptRecord, match=f"record {record} cannot be read"):
        driver.parent("b")
    r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", driver.root, "layer", "ls"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith(f"graphdriver: record {record} cannot be read: ")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_parents_edited_into_a_loop_are_named_not_followed_forever(driver: Driver) -> None:
    import json

    driver.create("a")
    driver.create("b", "a")
    with open(driver._meta_path("a"), "w") as f:  # by hand: a's parent is now its own child
        json.dump({"parent": "b", "rw": False, "created": 0}, f)
    with pytest.raises(CorruptRecord, match="layer b: its parents loop back to b"):
        driver.ancestors("b")


def test_applying_into_a_layer_others_are_built_on_is_refused_and_changes_nothing(driver: Driver) -> None:
    import io

    from archive.tarbuild import file, tar

    from graphdriver.errors import LayerInUse

    driver.create("base")
    driver.create("child", "base")
    before = root_state(driver.root)
    with pytest.raises(LayerInUse, match=r"layer base has children \(child\)"):
        driver.apply_diff("base", None, io.BytesIO(tar(file("late", b"late"))))
    assert root_state(driver.root) == before


def test_applying_into_a_layer_in_use_is_refused_and_changes_nothing(driver: Driver) -> None:
    """Mounted (overlay2, aufs) or, on vfs, got and not yet put: a container may be using its files."""
    import io

    from archive.tarbuild import file, tar

    from graphdriver.errors import LayerInUse

    driver.create("base")
    driver.create("rw", "base", rw=True)
    path = driver.get("rw")
    try:
        before = root_state(driver.root)
        with pytest.raises(LayerInUse, match=r"layer rw is (mounted|in use \(got and not yet put\)); apply into it "
                                             r"once it is released"):
            driver.apply_diff("rw", None, io.BytesIO(tar(file("x", b"1"))))
        assert root_state(driver.root) == before and not os.path.exists(os.path.join(path, "x"))
    finally:
        driver.put("rw")
    assert driver.apply_diff("rw", None, io.BytesIO(tar(file("x", b"1")))) == 1
