"""Every hostile tar of the corpus is refused with one line naming the entry, and nothing changes: not the
target layer, not the other layers, not the sentinel directory outside the root, and no staging is left."""

from __future__ import annotations

import io
import os

import pytest

from graphdriver import open_driver
from graphdriver.errors import ApplyFailed, UnsafeArchive

from .hostile import corpus, lower_layer
from .tarbuild import snapshot

BACKENDS = ["overlay2", "vfs"]


def cases(sentinel: str, backend: str) -> list[tuple[str, bytes, str | None]]:
    """The corpus for ``backend`` (writes through the lower layer's symlinks: test_lower_symlinks.py)."""
    return corpus(sentinel)


def _state(driver, sentinel: str) -> tuple:
    layers = {lid: snapshot(driver.diff_path(lid)) for lid in driver.layers()}
    return layers, snapshot(os.path.dirname(sentinel))


def test_corpus_is_big_enough(sentinel):
    assert len(corpus(sentinel)) >= 40


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_corpus(root, sentinel, backend):
    d = open_driver(root, backend)
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(lower_layer(sentinel)))
    d.create("other")
    d.apply_diff("other", None, io.BytesIO(lower_layer(sentinel)))
    d.create("target", "lower")
    before = _state(d, sentinel)
    failures = []
    for case_id, blob, must_name in cases(sentinel, backend):
        try:
            d.apply_diff("target", None, io.BytesIO(blob))
        except (UnsafeArchive, ApplyFailed) as e:
            msg = str(e)
            if "\n" in msg or not msg:
                failures.append(f"{case_id}: message is not one line: {msg!r}")
            if must_name is not None and must_name not in msg:
                failures.append(f"{case_id}: message does not name {must_name!r}: {msg}")
        else:
            failures.append(f"{case_id}: accepted")
        after = _state(d, sentinel)
        if after != before:
            changed = [k for k in after[0] if after[0][k] != before[0].get(k)]
            failures.append(f"{case_id}: state changed (layers {changed}, sentinel {after[1] != before[1]})")
            before = after
        left = os.listdir(os.path.join(d.home, ".staging"))
        if left:
            failures.append(f"{case_id}: staging left behind: {left}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_errors_are_unsafe_archive(root, sentinel, backend):
    """The validator itself catches the corpus (no case relies on tar failing afterwards)."""
    d = open_driver(root, backend)
    d.create("lower")
    d.apply_diff("lower", None, io.BytesIO(lower_layer(sentinel)))
    d.create("target", "lower")
    late = []
    for case_id, blob, _ in cases(sentinel, backend):
        try:
            d.apply_diff("target", None, io.BytesIO(blob))
        except UnsafeArchive:
            continue
        except ApplyFailed as e:
            late.append(f"{case_id}: {e}")
    assert not late, "\n".join(late)
