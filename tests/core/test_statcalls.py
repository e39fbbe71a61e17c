"""statmount(2) read for real: a first buffer too small for the mount is grown until the kernel's whole
answer fits, and the answer is the one /proc/self/mountinfo gives."""

from __future__ import annotations

import os

import pytest

from graphdriver.kernel import mountinfo, statcalls, syscalls


@pytest.fixture
def long_overlay(root: str) -> tuple[str, list[str]]:
    """An overlay of 24 lowers named by long absolute paths: ~3 KB of options (one mount(2) page)."""
    if not statcalls.statmount_supported():
        pytest.skip("the kernel has no statmount(2) (6.8+)")
    lowers = []
    for i in range(24):
        d = os.path.join(root, f"lower-{i:02d}-" + "x" * 100)
        os.mkdir(d)
        lowers.append(d)
    for name in ("upper", "work", "merged"):
        os.mkdir(os.path.join(root, name))
    target = os.path.join(root, "merged")
    data = f"lowerdir={':'.join(lowers)},upperdir={root}/upper,workdir={root}/work"
    assert 3000 < len(data) < 4000
    syscalls.mount("overlay", target, "overlay", 0, data)
    return target, lowers


def test_statmount_grows_a_small_buffer_until_every_option_fits(long_overlay: tuple[str, list[str]]) -> None:
    target, lowers = long_overlay
    mid = statcalls.mount_id(target).mnt_id
    small = statcalls.statmount(mid, 64)  # far too small for ~3 KB of options: EOVERFLOW, grown, again
    assert small.fs_type == "overlay" and small.mount_point == target and not small.read_only
    shown = [e for e in mountinfo.read_mountinfo() if e.mount_point == target][-1]
    assert small.options == shown.options  # what the kernel renders in mountinfo, in its order
    assert [o for o in small.options if o.startswith("lowerdir")] == [f"lowerdir={':'.join(lowers)}"]
    assert statcalls.statmount(mid, 1 << 16) == small  # a buffer big enough at once says the same


def test_the_check_after_a_mount_reads_the_whole_option_array_from_a_small_first_buffer(
        long_overlay: tuple[str, list[str]], root: str) -> None:
    target, lowers = long_overlay
    listed = [e for e in mountinfo.read_mountinfo() if e.mount_point == target][-1].options
    assert listed[0] == f"lowerdir={':'.join(lowers)}"
    prefix = b"".join(o.encode() + b"\0" for o in listed[:3])  # lowers, upper and work dir: ~3 KB
    got = statcalls.shown(target.encode(), statcalls.OVERLAY_MAGIC, prefix, b"\0lowerdir=", 64)
    assert got is not None  # the first 64 bytes could not hold it: grown until the whole array came
    upper = statcalls.mount_id(os.path.join(root, "upper"))
    assert got == (statcalls.mount_id(target).mnt_id, statcalls.mount_id(root).mnt_id, upper.ino, upper.born)
    wrong = prefix[:-2] + b"X\0"  # the last byte of the work dir's path, ~3 KB in
    assert statcalls.shown(target.encode(), statcalls.OVERLAY_MAGIC, wrong, b"\0lowerdir=", 64) is None
    entry = mountinfo.mount_at(target)  # mount_at's first guess (no size hint) is too small as well
    assert entry is not None and list(entry.options) == list(listed)
