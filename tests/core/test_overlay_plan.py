"""The pure overlay planner and checker: page limits, the 500-layer limit, what drift looks like."""

from __future__ import annotations

import pytest

from graphdriver.errors import MountFailed, TooManyLayers
from graphdriver.kernel.mountinfo import MountEntry, parse_mountinfo_line
from graphdriver.plan.overlay import OVL_MAX_STACK, OverlayPlan, check_overlay, index_links, plan_overlay


def lowers(n: int, base: str = "/var/lib/graphdriver/overlay2") -> list[str]:
    return [f"{base}/{i:064x}/diff" for i in range(n)]


def test_fsconfig_plan_keeps_every_lower_in_order() -> None:
    plan = plan_overlay("/m", lowers(500), "/u", "/w", api="fsconfig")
    assert plan.lowers == tuple(lowers(500))
    assert plan.api == "fsconfig"


def test_more_than_500_lowers_is_refused_before_mounting() -> None:
    with pytest.raises(TooManyLayers, match="at most 500"):
        plan_overlay("/m", lowers(OVL_MAX_STACK + 1), "/u", "/w", api="fsconfig")


def test_legacy_plan_uses_absolute_paths_when_they_fit() -> None:
    plan = plan_overlay("/m", lowers(3), "/u", "/w", api="mount", short_lowers=["l/A", "l/B", "l/C"], cwd="/h")
    assert plan.cwd is None
    assert plan.mount_data().startswith("lowerdir=/var/lib/graphdriver/overlay2/")


def test_legacy_plan_falls_back_to_short_relative_links() -> None:
    short = [f"l/{i:026d}" for i in range(100)]
    plan = plan_overlay("/h/x/merged", lowers(100), "/h/x/diff", "/h/x/work", api="mount",
                        short_lowers=short, cwd="/h")
    assert plan.cwd == "/h"
    assert plan.lowers == tuple(short)
    assert "upperdir=x/diff" in plan.mount_data()
    assert len(plan.mount_data()) <= 4095


def test_legacy_plan_past_one_page_is_refused_with_the_sizes() -> None:
    short = [f"l/{i:026d}" for i in range(200)]
    with pytest.raises(TooManyLayers, match=r"need \d+ bytes of mount data; mount\(2\) takes 4095"):
        plan_overlay("/h/x/merged", lowers(200), "/h/x/diff", "/h/x/work", api="mount",
                     short_lowers=short, cwd="/h")


@pytest.mark.parametrize("bad", ["/a,b", "/a:b", "/a\\b"])
def test_paths_the_option_syntax_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(MountFailed, match="cannot carry"):
        plan_overlay("/m", [bad], "/u", "/w", api="fsconfig")


def entry(opts: str, ro: bool = False, fstype: str = "overlay") -> MountEntry:
    line = f"45 27 0:39 / /m {'ro' if ro else 'rw'},relatime - {fstype} overlay {'ro' if ro else 'rw'},{opts}"
    return parse_mountinfo_line(line)


def test_check_accepts_the_kernel_view_of_the_plan() -> None:
    plan = OverlayPlan("/m", ("/l1", "/l2"), "/u", "/w", "fsconfig")
    assert check_overlay(plan, entry("lowerdir+=/l1,lowerdir+=/l2,upperdir=/u,workdir=/w,uuid=on")) == []
    legacy = OverlayPlan("/m", ("/l1", "/l2"), "/u", "/w", "mount")
    assert check_overlay(legacy, entry("lowerdir=/l1:/l2,upperdir=/u,workdir=/w")) == []


def test_check_reports_a_lost_upper_dir_and_read_only() -> None:
    plan = OverlayPlan("/m", ("/l1", "/l2"), "/u", "/w", "mount")
    problems = check_overlay(plan, entry("lowerdir=/l1:/l2", ro=True))
    assert any("upperdir is missing" in p for p in problems)
    assert any("read-only" in p for p in problems)


def test_check_reports_wrong_lowers_type_and_absence() -> None:
    plan = OverlayPlan("/m", ("/l1", "/l2"), "/u", "/w", "fsconfig")
    assert any("lower layers differ" in p
               for p in check_overlay(plan, entry("lowerdir+=/l2,lowerdir+=/l1,upperdir=/u,workdir=/w")))
    assert check_overlay(plan, entry("size=10", fstype="tmpfs")) == ["/m is a tmpfs mount, not overlay"]
    assert check_overlay(plan, None) == ["no mount at /m"]


def test_mountinfo_unescapes_paths() -> None:
    e = parse_mountinfo_line(r"45 27 0:39 / /tmp/a\040b rw - overlay overlay rw,upperdir=/x\054y")
    assert e.mount_point == "/tmp/a b"
    assert e.option_values("upperdir") == ["/x,y"]


def test_auto_plan_uses_mount_while_the_data_fits_a_page_then_short_links_then_fsconfig() -> None:
    short = [f"l/{i:026d}" for i in range(500)]

    def auto(n: int) -> OverlayPlan:
        return plan_overlay("/h/x/merged", lowers(n), "/h/x/diff", "/h/x/work", api="auto",
                            short_lowers=short[:n], cwd="/h")

    few, many, most = auto(10), auto(128), auto(500)
    assert (few.api, few.cwd, few.lowers) == ("mount", None, tuple(lowers(10)))
    assert (many.api, many.cwd, many.lowers) == ("mount", "/h", tuple(short[:128]))
    assert (most.api, most.cwd, most.lowers) == ("fsconfig", "/h", tuple(short))
    assert most.upper == "/h/x/diff"  # only the lowers go short with fsconfig
    assert len(many.mount_data()) <= 4095


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("api", ["auto", "mount"])
def test_past_a_page_of_short_links_mount_takes_the_lower_index(api: str, relative: bool) -> None:
    short = [f"l/{i:026d}" for i in range(500)]

    def plan(n: int) -> OverlayPlan:
        return plan_overlay("/h/x/merged", lowers(n), "/h/x/diff", "/h/x/work", api=api, short_lowers=short[:n],
                            cwd="/h", index="x/lowers", relative=relative)

    assert plan(128).subdir is None and plan(128).lowers == tuple(short[:128])  # the l/ links still fit
    deep = plan(500)
    assert (deep.api, deep.cwd, deep.subdir, deep.start) == ("mount", "/h", "x/lowers", "/h/x/lowers")
    assert deep.lowers == tuple(f"{i:x}" for i in range(500)) and deep.lowers[-1] == "1f3"
    assert (deep.upper, deep.work) == ("../diff", "../work")
    assert len(deep.mount_data()) < 2200  # 500 lowers in half a page
    assert deep.resolve("1f3") == "/h/x/lowers/1f3" and deep.resolve(deep.upper) == "/h/x/lowers/../diff"
    assert deep.same_lowers == tuple(lowers(500))
    links = index_links(short, "x/lowers")
    assert list(links) == list(deep.lowers) and links["0"] == f"../../{short[0]}"
    # fsconfig asked for: the l/ links one by one, as before (no index)
    fs = plan_overlay("/m", lowers(500), "/u", "/w", api="fsconfig", short_lowers=short, cwd="/h", index="x/lowers")
    assert fs.subdir is None and fs.lowers == tuple(short)


def test_fsconfig_plan_goes_short_only_past_a_page() -> None:
    short = [f"l/{i:026d}" for i in range(500)]
    assert plan_overlay("/m", lowers(10), "/u", "/w", api="fsconfig", short_lowers=short[:10], cwd="/h").cwd is None
    plan = plan_overlay("/m", lowers(500), "/u", "/w", api="fsconfig", short_lowers=short, cwd="/h")
    assert plan.cwd == "/h" and plan.lowers == tuple(short)


def test_relative_plan_is_short_at_every_size_with_upper_and_work_relative_too() -> None:
    short = [f"l/{i:026d}" for i in range(500)]

    def rel(n: int, api: str = "auto") -> OverlayPlan:
        return plan_overlay("/h/x/merged", lowers(n), "/h/x/diff", "/h/x/work", api=api,
                            short_lowers=short[:n], cwd="/h", relative=True)

    for plan, api in ((rel(1), "mount"), (rel(128), "mount"), (rel(500), "fsconfig"), (rel(3, "fsconfig"), "fsconfig")):
        assert (plan.api, plan.cwd, plan.upper, plan.work) == (api, "/h", "x/diff", "x/work")
        assert plan.lowers == tuple(short[:len(plan.lowers)])
        assert plan.same_lowers == tuple(lowers(len(plan.lowers)))  # the other spelling, for checks
    assert rel(1).mount_data() == f"lowerdir={short[0]},upperdir=x/diff,workdir=x/work"
    # Without short links to offer, relative has nothing to work with: absolute, as before.
    assert plan_overlay("/m", lowers(3), "/u", "/w", api="auto", relative=True).cwd is None


def test_check_accepts_the_same_layers_spelled_the_other_way() -> None:
    # A mount made by a process with the other setting (view on: l/ links; off: absolute dirs).
    short = ["l/A", "l/B"]
    absolute = plan_overlay("/h/x/merged", ["/h/a/diff", "/h/b/diff"], "/h/x/diff", "/h/x/work", api="mount",
                            short_lowers=short, cwd="/h")
    relative = plan_overlay("/h/x/merged", ["/h/a/diff", "/h/b/diff"], "/h/x/diff", "/h/x/work", api="mount",
                            short_lowers=short, cwd="/h", relative=True)
    shown_short = blob_entry(["lowerdir=l/A:l/B", "upperdir=x/diff", "workdir=x/work"])
    shown_abs = blob_entry(["lowerdir=/h/a/diff:/h/b/diff", "upperdir=/h/x/diff", "workdir=/h/x/work"])
    for plan in (absolute, relative):
        assert check_overlay(plan, shown_short) == [] and check_overlay(plan, shown_abs) == []
    wrong = blob_entry(["lowerdir=l/B:l/A", "upperdir=x/diff", "workdir=x/work"])
    assert any("lower layers differ" in p for p in check_overlay(absolute, wrong))
    assert any("lower layers differ" in p for p in check_overlay(relative, wrong))


def blob_entry(options: list[str], ro: bool = False) -> MountEntry:
    """A MountEntry as statmount's option array gives it (NUL-terminated strings, decoded lazily)."""
    return MountEntry(9, "", "overlay", "", ro, option_blob=b"".join(o.encode() + b"\0" for o in options))


def test_option_array_matching_the_plan_byte_for_byte_passes() -> None:
    plan = OverlayPlan("/m", ("l/A", "l/B"), "/u", "/w", "fsconfig", "/h")
    e = blob_entry(["lowerdir+=l/A", "lowerdir+=l/B", "upperdir=/u", "workdir=/w", "redirect_dir=nofollow"])
    assert check_overlay(plan, e) == []
    assert "options" not in e.__dict__  # decided by byte search: the 500-lower blob was never decoded


@pytest.mark.parametrize("options, problem", [
    (["lowerdir+=l/A", "lowerdir+=l/B", "lowerdir+=l/C", "upperdir=/u", "workdir=/w"], "lower layers differ"),
    (["lowerdir+=l/B", "lowerdir+=l/A", "upperdir=/u", "workdir=/w"], "lower layers differ"),
    (["lowerdir+=l/Z", "lowerdir+=l/A", "lowerdir+=l/B", "upperdir=/u", "workdir=/w"], "lower layers differ"),
    (["lowerdir+=l/A", "lowerdir+=l/B", "upperdir=/u", "workdir=/w", "lowerdir+=l/C"], "lower layers differ"),
    (["lowerdir+=l/A", "lowerdir+=l/B", "workdir=/w"], "upperdir is missing"),
    (["lowerdir+=l/A", "lowerdir+=l/B", "upperdir=/elsewhere", "workdir=/w"], "upperdir is /elsewhere"),
])
def test_option_array_differing_from_the_plan_is_reported(options: list[str], problem: str) -> None:
    plan = OverlayPlan("/m", ("l/A", "l/B"), "/u", "/w", "fsconfig", "/h")
    assert any(problem in p for p in check_overlay(plan, blob_entry(options)))


def test_option_array_with_the_same_lowers_written_otherwise_still_matches() -> None:
    # The kernel showing the absolute form of a planned relative lower is the same layer.
    plan = OverlayPlan("/m", ("l/A",), "/u", "/w", "fsconfig", "/h")
    assert check_overlay(plan, blob_entry(["lowerdir+=/h/l/A", "upperdir=/u", "workdir=/w"])) == []
    assert check_overlay(plan, blob_entry(["lowerdir+=l/A", "upperdir=/u", "workdir=/w"], ro=True)) \
        == ["mounted read-only although an upper dir was planned (the kernel dropped it)"]


def test_a_plan_without_upper_is_not_matched_by_a_mount_with_one() -> None:
    plan = OverlayPlan("/m", ("l/A", "l/B"), None, None, "mount", "/h")
    assert check_overlay(plan, blob_entry(["lowerdir=l/A:l/B"])) == []
    assert check_overlay(plan, blob_entry(["lowerdir=l/A:l/B", "upperdir=/u", "workdir=/w"])) \
        == ["unexpected upperdir=/u", "unexpected workdir=/w"]
