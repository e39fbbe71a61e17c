"""Work on a layer's files without the root lock — an apply's extraction (only publishing takes the
lock), a diff read in place — against a remove, another apply or a cleanup elsewhere: each is refused
while the work runs (a lease on the layer, on the apply's staging), naming the process at work; the
layer, the stream and the apply come out whole. A layer pulled away by hand, which no lease stops, is
named, never written into, and never passed off as whole."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid

import pytest
from archive.tarbuild import file, tar

from graphdriver import Driver, open_driver
from graphdriver.errors import LayerBusy, LayerInUse, LayerNotFound


def _started_apply(driver: Driver, layer_id: str, first: bytes) -> tuple[threading.Thread, int, dict]:
    """``apply_diff`` of a pipe in a thread, ``first`` written; returns once its extraction has begun."""
    r, w = os.pipe()
    result: dict = {}

    def run() -> None:
        try:
            with os.fdopen(r, "rb") as stream:
                result["size"] = driver.apply_diff(layer_id, None, stream)
        except BaseException as e:  # noqa: BLE001  (handed to the test)
            result["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    os.write(w, first)  # less than a pipe holds: never blocks
    deadline = time.monotonic() + 30
    while not [n for n in os.listdir(driver._staging) if n.startswith(f"{layer_id}.apply-")]:
        assert time.monotonic() < deadline and thread.is_alive(), result
        time.sleep(0.01)
    return thread, w, result


def _finish(thread: threading.Thread, w: int, rest: bytes) -> None:
    os.write(w, rest)
    os.close(w)
    thread.join(60)
    assert not thread.is_alive()


BODY = tar(file("a", b"1" * 40000), file("b", b"2"))
BUSY = (r"it is being read or applied into \(a diff, changes, size or apply under way in [^ ]+"
        rf"\[{os.getpid()}\]\)")


def test_a_layer_being_applied_into_is_not_removed_and_the_apply_completes(driver: Driver, root: str) -> None:
    driver.create("base")
    driver.create("x", "base")
    thread, w, result = _started_apply(driver, "x", BODY[:20000])
    other = open_driver(root, driver.name)  # another process, as far as the layer is concerned
    try:
        with pytest.raises(LayerInUse, match=f"cannot remove layer x: {BUSY}"):
            other.remove("x")
    finally:
        _finish(thread, w, BODY[20000:])
    assert result == {"size": 40001}
    assert sorted(os.listdir(driver.diff_path("x"))) == ["a", "b"]
    other.remove("x")  # the apply is done: nothing holds it
    assert not driver.exists("x") and os.listdir(driver._staging) == []


def test_a_child_of_a_layer_being_applied_into_is_refused_at_once(driver: Driver, root: str) -> None:
    """A create on a layer that a diff is being applied into went through (vfs copied the layer as it was
    before the apply); the apply then ran to its end and failed there ("has children"). Now the create is
    refused at once, naming both layers and who applies, and the apply completes; the child can be made
    afterwards, on the applied content."""
    driver.create("base")
    driver.create("x", "base")
    thread, w, result = _started_apply(driver, "x", BODY[:20000])
    other = open_driver(root, driver.name)
    try:
        with pytest.raises(LayerBusy, match=rf"cannot create layer kid on x: a diff is being applied into x "
                                            rf"\(in [^ ]+\[{os.getpid()}\]\); create it once the apply is done"):
            other.create("kid", "x")
        assert not other.exists("kid") and other.children("x") == []
    finally:
        _finish(thread, w, BODY[20000:])
    assert "error" not in result, result
    driver.create("kid", "x")
    path = driver.get("kid")
    try:
        with open(os.path.join(path, "b"), "rb") as f:
            assert f.read() == b"2"
    finally:
        driver.put("kid")


def test_a_layer_being_applied_into_is_not_mounted_meanwhile(driver: Driver, root: str) -> None:
    """A get (layer mount) of a layer a diff is being applied into went through — on overlay2 by the
    quick path too, repeating a mount made before the apply began — and the apply was refused at its end
    ("is mounted"), its work lost. Now the get is refused at once, naming the layer and who applies, in
    this process and another; the apply completes and the layer mounts afterwards, quick path and all."""
    import subprocess
    import sys

    driver.create("base")
    driver.create("x", "base")
    other = open_driver(root, driver.name)
    other.get("x")  # mounted once and put: overlay2 keeps a quick mount of it
    other.put("x")
    quick = "x" in other._quick
    assert quick == (driver.name == "overlay2")
    thread, w, result = _started_apply(driver, "x", BODY[:20000])
    busy = (rf"cannot mount layer x: a diff is being applied into it \(in [^ ]+\[{os.getpid()}\]\); "
            rf"mount it once the apply is done")
    try:
        for d in (other, driver):
            with pytest.raises(LayerBusy, match=busy) as refused:
                d.get("x")
            assert refused.value.layer_id == "x"
            assert d.mount_count("x") == 0
        r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, "--driver", driver.name,
                            "layer", "mount", "x"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "graphdriver: cannot mount layer x: a diff is being applied into it (in " in r.stderr
        assert other.verify() == []
    finally:
        _finish(thread, w, BODY[20000:])
    assert result == {"size": 40001}
    for _ in range(2):  # the general path once (the apply restamped it), then quick again
        with open(os.path.join(other.get("x"), "b"), "rb") as f:
            assert f.read() == b"2"
        other.put("x")
    assert ("x" in other._quick) == quick and other.mount_count("x") == 0


def test_a_layer_removed_by_hand_while_its_diff_streams_in_is_named_and_not_written(driver: Driver) -> None:
    """What a lease cannot stop: the layer's directories and record taken away behind the library."""
    driver.create("base")
    driver.create("x", "base")
    thread, w, result = _started_apply(driver, "x", BODY[:20000])
    trash = os.path.join(driver._staging, f"x.{uuid.uuid4().hex[:8]}.remove")
    driver.unpublish_layer("x", trash)  # the remove's own steps, without its checks
    os.unlink(driver._meta_path("x"))
    _finish(thread, w, BODY[20000:])
    error = result.get("error")
    assert isinstance(error, LayerNotFound) and "layer x was removed while a diff was being applied" in str(error)
    assert not driver.exists("x")
    assert sorted(os.listdir(driver._staging)) == [os.path.basename(trash)]  # the apply's own staging went
    driver.create("y")
    assert driver.apply_diff("y", None, io.BytesIO(tar(file("c", b"3")))) == 1  # work goes on


def test_a_layer_being_read_is_not_removed_and_the_stream_is_whole(driver: Driver, root: str) -> None:
    """In place (native) the read holds a lease on the layer, through mounts its mounts: either way the
    remove is refused and the stream comes out whole; once it is closed the remove goes through."""
    driver.create("base")
    driver.create("x", "base")
    driver.apply_diff("x", None, io.BytesIO(tar(*(file(f"f{i:03d}", bytes([i]) * 65536) for i in range(64)))))
    whole = driver.diff("x", None).read()
    stream = driver.diff("x", None)
    first = stream.read(1 << 20)
    assert first == whole[:len(first)]
    other = open_driver(root, driver.name)
    with pytest.raises(LayerInUse, match="layer x"):
        other.remove("x")
    assert stream.read() == whole[len(first):]
    stream.close()
    other.remove("x")
    assert not driver.exists("x")


def test_an_apply_into_a_layer_being_read_is_refused_and_the_read_is_whole(driver: Driver, root: str) -> None:
    driver.create("x")
    driver.apply_diff("x", None, io.BytesIO(tar(*(file(f"f{i:03d}", bytes([i]) * 65536) for i in range(64)))))
    whole = driver.diff("x", None).read()
    stream = driver.diff("x", None)
    first = stream.read(1 << 20)
    other = open_driver(root, driver.name)
    with pytest.raises(LayerInUse, match=f"cannot apply a diff to layer x: {BUSY}|layer x is in use \\(got"):
        other.apply_diff("x", None, io.BytesIO(tar(file("f000", b"new"))))
    assert first + stream.read() == whole
    stream.close()
    assert os.listdir(driver._staging) == []
    assert other.apply_diff("x", None, io.BytesIO(tar(file("f000", b"new")))) == 3  # nothing holds it now
    with open(os.path.join(driver.diff_path("x"), "f000"), "rb") as f:
        assert f.read() == b"new"


def test_cleanup_leaves_an_apply_under_way_and_removes_what_a_crash_left(driver: Driver, root: str) -> None:
    driver.create("x")
    crashed = os.path.join(driver._staging, "y.apply-dead")  # what an apply killed mid-way leaves
    os.makedirs(os.path.join(crashed, "root", "etc"))
    thread, w, result = _started_apply(driver, "x", BODY[:20000])
    left = open_driver(root, driver.name).cleanup()
    live = [n for n in os.listdir(driver._staging) if n.startswith("x.apply-")]
    _finish(thread, w, BODY[20000:])
    assert len(live) == 1 and not os.path.exists(crashed)
    assert len(left) == 1 and left[0].startswith(os.path.join(driver._staging, live[0]) + " (in use by ")
    assert left[0].endswith(f"[{os.getpid()}])")
    assert result == {"size": 40001}
    assert sorted(os.listdir(driver.diff_path("x"))) == ["a", "b"]
    assert os.listdir(driver._staging) == []


def test_reads_of_one_layer_run_side_by_side(driver: Driver, root: str) -> None:
    """Leases of readers are shared: a second diff and a size of the layer while a first diff is open."""
    driver.create("x")
    driver.apply_diff("x", None, io.BytesIO(tar(*(file(f"f{i:03d}", bytes([i]) * 65536) for i in range(32)))))
    first = driver.diff("x", None)
    head = first.read(1 << 16)
    other = open_driver(root, driver.name)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(tar=other.diff("x", None).read(),
                                                         size=other.diff_size("x", None)))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()  # not waiting for the first read to end
    assert head + first.read() == done["tar"] and done["size"] == 32 * 65536
    first.close()


def test_remove_all_removes_a_chain_or_nothing(driver: Driver, root: str) -> None:
    """A layer and its child go together (a container's layer and its -init layer); one of them being read
    elsewhere, or a child that stays, and nothing goes."""
    driver.create("base")
    driver.create("init", "base")
    driver.create("rw", "init", rw=True)
    driver.create("other", "base")
    stream = open_driver(root, driver.name).diff("init", None)
    stream.read(1)
    with pytest.raises(LayerInUse, match="cannot remove layer init: it is being read|layer init is mounted"):
        driver.remove_all(["rw", "init"])
    stream.close()
    with pytest.raises(LayerInUse, match="layer base has children: other"):
        driver.remove_all(["rw", "init", "base"])
    assert driver.layers() == ["base", "init", "other", "rw"]
    driver.remove_all(["rw", "init"])
    assert driver.layers() == ["base", "other"] and os.listdir(driver._staging) == []
    assert driver.children("base") == ["other"]
