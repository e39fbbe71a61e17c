"""The aufs option-string builder: branch strings, options, page-size splitting, refusals. Pure: no aufs needed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdriver.errors import BadBranchPath, MountFailed, TooManyLayers
from graphdriver.plan.aufs import (
    DEFAULT_BRANCH_MAX,
    AufsOptions,
    Branch,
    layer_branches,
    parse_branch,
    parse_branch_list,
    plan_aufs,
    planned_branches,
)

OPTS = AufsOptions(dio=True, dirperm1=True, xino="/dev/shm/aufs.xino")


def diff(i: int, width: int = 64) -> str:
    return f"/var/lib/graphdriver/aufs/diff/{i:0{width}d}"


def test_container_layer_is_rw_over_ro_wh_parents():
    br = layer_branches("/d/c", ["/d/p1", "/d/p0"], read_only=False)
    plan = plan_aufs("/m/c", br, OPTS, read_only=False)
    assert plan.data == "dio,xino=/dev/shm/aufs.xino,dirperm1,br:/d/c=rw:/d/p1=ro+wh:/d/p0=ro+wh"
    assert plan.appends == ()
    assert plan.calls() == [(False, plan.data)]


def test_read_only_layer_has_every_branch_ro_wh():
    br = layer_branches("/d/img", ["/d/base"], read_only=True)
    assert [b.perm for b in br] == ["ro+wh", "ro+wh"]
    plan = plan_aufs("/m/img", br, AufsOptions(), read_only=True)
    assert plan.data == "br:/d/img=ro+wh:/d/base=ro+wh"
    assert plan.read_only


def test_options_render_only_what_was_chosen():
    assert AufsOptions().render() == []
    assert AufsOptions(udba="none").render() == ["udba=none"]
    assert AufsOptions(udba="reval").render() == []  # the module's default is not passed nor shown
    # with sysfs on, aufs lists dio/dirperm1/udba in /proc/mounts but not xino
    assert OPTS.shown() == ["dio", "dirperm1"]


def test_long_chain_splits_into_one_mount_and_append_remounts():
    lowers = [diff(i) for i in range(1, 120)]
    br = layer_branches(diff(0), lowers, read_only=False)
    plan = plan_aufs("/m/x", br, OPTS, read_only=False, page_size=4096)
    assert plan.appends, "120 branches of ~100 bytes cannot fit one page"
    for _remount, data in plan.calls():
        assert len(data.encode()) <= 4095
    assert plan.data.startswith("dio,xino=/dev/shm/aufs.xino,dirperm1,br:" + diff(0) + "=rw:")
    assert all(item.startswith("append:") and item.endswith("=ro+wh")
               for a in plan.appends for item in a.split(","))
    assert planned_branches([d for _, d in plan.calls()]) == br


def test_the_first_mount_is_filled_before_any_append():
    br = layer_branches(diff(0), [diff(i) for i in range(1, 60)], read_only=False)
    plan = plan_aufs("/m/x", br, OPTS, read_only=False, page_size=4096)
    first = planned_branches([plan.data])
    assert first == br[:len(first)]
    nxt = planned_branches([plan.appends[0]])[0]
    assert len((plan.data + ":" + str(nxt)).encode()) > 4095  # the next branch really did not fit


def test_smaller_pages_split_more():
    br = layer_branches(diff(0), [diff(i) for i in range(1, 40)], read_only=False)
    big = plan_aufs("/m/x", br, OPTS, read_only=False, page_size=16384)
    small = plan_aufs("/m/x", br, OPTS, read_only=False, page_size=1024)
    assert big.appends == ()
    assert len(small.appends) >= 3
    assert planned_branches([d for _, d in small.calls()]) == br


@pytest.mark.parametrize("bad", ["/var/lib/a:b/diff/x", "/var/lib/a=b/diff/x", "/var/lib/a,b/diff/x", "relative/x"])
def test_paths_aufs_cannot_carry_are_refused_before_mounting(bad):
    with pytest.raises(BadBranchPath) as e:
        plan_aufs("/m/x", layer_branches("/d/ok", [bad], read_only=False), AufsOptions(), read_only=False)
    assert bad in str(e.value)
    with pytest.raises(BadBranchPath):
        plan_aufs("/m/x", layer_branches(bad, [], read_only=False), AufsOptions(), read_only=False)


def test_bad_xino_path_is_refused():
    with pytest.raises(BadBranchPath):
        plan_aufs("/m/x", [Branch("/d/a", "rw")], AufsOptions(xino="/dev/shm/a:b"), read_only=False)


def test_branch_limit():
    br = layer_branches("/d/top", [f"/d/{i}" for i in range(DEFAULT_BRANCH_MAX - 1)], read_only=False)
    assert len(plan_aufs("/m", br, OPTS, read_only=False).branches) == DEFAULT_BRANCH_MAX
    with pytest.raises(TooManyLayers) as e:
        plan_aufs("/m", [*br, Branch("/d/one-more", "ro+wh")], OPTS, read_only=False)
    assert "128 branches exceed the aufs branch limit of 127" in str(e.value)
    with pytest.raises(TooManyLayers):
        plan_aufs("/m", br[:10], OPTS, read_only=False, branch_max=9)
    assert len(plan_aufs("/m", [*br, Branch("/d/x", "ro+wh")], OPTS, read_only=False, branch_max=511).branches) == 128


def test_unknown_udba_and_empty_branch_list_are_refused():
    with pytest.raises(MountFailed):
        plan_aufs("/m", [Branch("/d/a", "rw")], AufsOptions(udba="sometimes"), read_only=False)
    with pytest.raises(MountFailed):
        plan_aufs("/m", [], AufsOptions(), read_only=False)


def test_a_path_longer_than_a_page_is_refused():
    with pytest.raises(MountFailed, match="too long"):
        plan_aufs("/m", [Branch("/" + "a" * 5000, "rw")], AufsOptions(), read_only=False)


def test_parse_branch():
    assert parse_branch("/a/b=ro+wh") == Branch("/a/b", "ro+wh")
    assert parse_branch("/a/b=rw") == Branch("/a/b", "rw")
    # a bare branch: aufs makes the first one rw and every other ro (aufs(5), Branch Syntax)
    assert parse_branch("/a/b") == Branch("/a/b", "ro")
    assert parse_branch("/a/b", first=True) == Branch("/a/b", "rw")
    assert planned_branches(["br:/a:/b", "append:/c"]) == [Branch("/a", "rw"), Branch("/b", "ro"),
                                                           Branch("/c", "ro")]


def test_planned_branches_reads_both_separators_and_stops_at_an_empty_item():
    # the module takes br:/br= and append:/append=; its br parser stops at the first empty item
    assert planned_branches(["dio,br=/a=rw:/b=ro+wh:", "append=/c=ro+wh,append:/d=ro+wh"]) == [
        Branch("/a", "rw"), Branch("/b", "ro+wh"), Branch("/c", "ro+wh"), Branch("/d", "ro+wh")]
    assert parse_branch_list("/a=rw::/b=ro+wh") == [Branch("/a", "rw")]
    assert planned_branches(["brx:/a=rw", "xino=/dev/shm/x"]) == []


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=127),
       page=st.sampled_from([1024, 4096, 16384, 65536]),
       read_only=st.booleans())
def test_split_keeps_every_branch_in_order_within_a_page(lengths, page, read_only):
    paths = [f"/{i}/" + "x" * n for i, n in enumerate(lengths)]
    br = layer_branches(paths[0], paths[1:], read_only=read_only)
    plan = plan_aufs("/m", br, OPTS, read_only=read_only, page_size=page)
    datas = [d for _, d in plan.calls()]
    assert all(len(d.encode()) <= page - 1 for d in datas)
    assert planned_branches(datas) == br
    assert [remount for remount, _ in plan.calls()] == [False] + [True] * len(plan.appends)
