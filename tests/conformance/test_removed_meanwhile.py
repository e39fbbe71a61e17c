"""Work that runs without the root lock — an apply's extraction (only publishing takes the lock), a diff
read in place — against a layer another process removes, or removes and makes again, meanwhile: the
error names the layer; the layer there afterwards is never written into, and a stream is never passed
off as the layer's when it is not."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
from archive.tarbuild import file, tar

from graphdriver import Driver, open_driver
from graphdriver.errors import LayerChanged, LayerInUse, LayerNotFound


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


@pytest.mark.parametrize("again", [False, True], ids=["removed", "removed-and-made-again"])
def test_a_layer_removed_while_its_diff_streams_in_is_named_and_not_written(driver: Driver, root: str,
                                                                            again: bool) -> None:
    driver.create("base")
    driver.create("x", "base")
    body = tar(file("a", b"1" * 40000), file("b", b"2"))
    thread, w, result = _started_apply(driver, "x", body[:20000])
    other = open_driver(root, driver.name)  # another process, as far as the layer is concerned
    other.remove("x")
    if again:
        other.create("x", "base")
    os.write(w, body[20000:])
    os.close(w)
    thread.join(60)
    assert not thread.is_alive()
    error = result.get("error")
    assert isinstance(error, LayerNotFound) and "layer x was removed while a diff was being applied" in str(error)
    if again:
        assert os.listdir(driver.diff_path("x")) == []  # the new layer as it was made
    else:
        assert not driver.exists("x")
    assert os.listdir(driver._staging) == []
    driver.create("y")
    assert driver.apply_diff("y", None, io.BytesIO(tar(file("c", b"3")))) == 1  # work goes on


@pytest.mark.parametrize("again", [False, True], ids=["removed", "removed-and-made-again"])
def test_a_diff_read_while_its_layer_is_removed_is_never_passed_off_as_whole(driver: Driver, root: str,
                                                                              again: bool) -> None:
    """A diff read in place (native) does not hold its layer: the stream ends in the error naming it. A
    diff read through mounts holds them, so the remove is refused and the stream is whole."""
    driver.create("base")
    driver.create("x", "base")
    driver.apply_diff("x", None, io.BytesIO(tar(*(file(f"f{i:03d}", bytes([i]) * 65536) for i in range(64)))))
    whole = driver.diff("x", None).read()
    stream = driver.diff("x", None)
    first = stream.read(1 << 20)
    assert first == whole[:len(first)]
    other = open_driver(root, driver.name)
    try:
        other.remove("x")
    except LayerInUse:  # held by the read (its mounts)
        assert stream.read() == whole[len(first):]
        stream.close()
        return
    if again:
        other.create("x", "base")
    expected = (LayerChanged, "layer x changed while it was being read") if again else \
        (LayerNotFound, "layer x was removed while it was being read")
    with pytest.raises(expected[0], match=expected[1]):
        while stream.read(1 << 20):
            pass
    stream.close()
