"""The /sys/fs/aufs reader and the plan-versus-kernel check, on fixture trees shaped like the module's."""

from __future__ import annotations

import os

from graphdriver.kernel.aufs_sysfs import AufsSysfs, br_option, si_of, split_br
from graphdriver.kernel.mountinfo import MountEntry, parse_mountinfo_line
from graphdriver.plan.aufs import AufsOptions, check_aufs, layer_branches, plan_aufs

XINO = "/dev/shm/aufs.xino"
OPTS = AufsOptions(dio=True, dirperm1=True, xino=XINO)


def entry(options: tuple[str, ...], *, read_only: bool = False, fs_type: str = "aufs",
          target: str = "/r/aufs/mnt/c") -> MountEntry:
    return MountEntry(101, target, fs_type, "none", read_only, options)


def plan_c(read_only: bool = False):
    br = layer_branches("/r/aufs/diff/c", ["/r/aufs/diff/b", "/r/aufs/diff/a"], read_only=read_only)
    return plan_aufs("/r/aufs/mnt/c", br, OPTS, read_only=read_only)


GOOD = ["/r/aufs/diff/c=rw", "/r/aufs/diff/b=ro+wh", "/r/aufs/diff/a=ro+wh"]
SHOWN = ("si=1f2e3d4c5b6a7980", "dio", "dirperm1")


def test_reader_lists_mounts_and_reads_branches_in_index_order(sysfs_tree):
    branches = [f"/r/aufs/diff/{i}=ro+wh" for i in range(12)]
    fs = sysfs_tree("abc123", branches, xi_path=XINO)
    sysfs_tree("def456", ["/x=rw"])
    assert fs.si_ids() == ["abc123", "def456"]
    info = fs.read("abc123")
    # br10 and br11 sort after br9 numerically, not as strings
    assert [b.path for b in info.branches] == [f"/r/aufs/diff/{i}" for i in range(12)]
    assert [b.index for b in info.branches] == list(range(12))
    assert [b.brid for b in info.branches] == list(range(100, 112))
    assert {b.perm for b in info.branches} == {"ro+wh"}
    assert info.xi_path == XINO
    assert info.gaps() == []


def test_reader_absent_mount_and_noxino(sysfs_tree):
    fs = sysfs_tree("aa", ["/x=rw"], xi_path="")
    assert fs.read("bb") is None
    assert fs.read("aa").xi_path is None
    assert AufsSysfs("/nonexistent/sys/fs/aufs").si_ids() == []
    assert not AufsSysfs("/nonexistent/sys/fs/aufs").present()


def test_reader_unescapes_paths_and_keeps_the_last_equals_as_perm(sysfs_tree):
    fs = sysfs_tree("aa", [r"/r/with\040space/diff/c=rw"])
    assert fs.read("aa").branches[0].path == "/r/with space/diff/c"
    assert split_br("/a/b=ro+wh\n") == ("/a/b", "ro+wh")


def test_reader_reports_gaps(sysfs_tree, tmp_path):
    fs = sysfs_tree("aa", ["/a=rw", "/b=ro+wh", "/c=ro+wh"])
    os.unlink(tmp_path / "sysfs" / "si_aa" / "br1")
    assert fs.read("aa").gaps() == [1]


def test_branch_limit_from_module_config(sysfs_tree):
    fs = sysfs_tree("aa", ["/a=rw"], config="CONFIG_AUFS_FS=m\nCONFIG_AUFS_BRANCH_MAX_511=y\nCONFIG_AUFS_SBILIST=y\n")
    assert fs.branch_max() == 511
    assert fs.config()["CONFIG_AUFS_FS"] == "m"
    assert sysfs_tree("bb", ["/a=rw"], config="CONFIG_AUFS_FS=m\n").branch_max() is None


def test_si_and_br_from_mount_options():
    line = ("812 30 0:77 / /r/aufs/mnt/c rw,relatime - aufs none "
            "rw,si=1f2e3d4c5b6a7980,dio,dirperm1\n")
    e = parse_mountinfo_line(line)
    assert si_of(e.options) == "1f2e3d4c5b6a7980"
    assert br_option(e.options) is None
    assert br_option(("si=1", "br:/a=rw:/b=ro+wh")) == "/a=rw:/b=ro+wh"


def test_check_agrees_with_a_matching_kernel_view(sysfs_tree):
    fs = sysfs_tree("1f2e3d4c5b6a7980", GOOD, xi_path=XINO)
    assert check_aufs(plan_c(), entry(SHOWN), fs.read("1f2e3d4c5b6a7980")) == []


def test_check_reports_order_perm_count_and_xino_drift(sysfs_tree):
    si = "1f2e3d4c5b6a7980"
    swapped = sysfs_tree(si, [GOOD[0], GOOD[2], GOOD[1]], xi_path=XINO).read(si)
    problems = check_aufs(plan_c(), entry(SHOWN), swapped)
    assert problems == ["branch 1 is /r/aufs/diff/a (planned /r/aufs/diff/b)"]

    perm = sysfs_tree(si, [GOOD[0], "/r/aufs/diff/b=rw", GOOD[2]], xi_path=XINO).read(si)
    assert check_aufs(plan_c(), entry(SHOWN), perm) == ["branch 1 (/r/aufs/diff/b) is rw (planned ro+wh)"]

    short = sysfs_tree(si, GOOD[:2], xi_path=XINO).read(si)
    assert check_aufs(plan_c(), entry(SHOWN), short) == ["the kernel shows 2 branches; the plan has 3"]

    xino = sysfs_tree(si, GOOD, xi_path="/tmp/.aufs.xino").read(si)
    assert check_aufs(plan_c(), entry(SHOWN), xino) == [f"xino is /tmp/.aufs.xino (planned {XINO})"]

    dup = sysfs_tree(si, GOOD, brids=[7, 7, 8], xi_path=XINO).read(si)
    assert check_aufs(plan_c(), entry(SHOWN), dup) == ["sysfs shows duplicate branch ids [7, 7, 8]"]


def test_check_reports_mount_level_drift(sysfs_tree):
    si = "1f2e3d4c5b6a7980"
    info = sysfs_tree(si, GOOD, xi_path=XINO).read(si)
    assert check_aufs(plan_c(), None, info) == ["no mount at /r/aufs/mnt/c"]
    overlay = entry(SHOWN, fs_type="overlay")
    assert check_aufs(plan_c(), overlay, info) == ["/r/aufs/mnt/c is an overlay mount, not aufs"]
    assert check_aufs(plan_c(), entry((f"si={si}", "dio")), info) == ["option dirperm1 is missing from the mount"]
    assert check_aufs(plan_c(), entry(SHOWN, read_only=True), info) == ["mounted read-only (planned read-write)"]
    other = sysfs_tree("3c0ffee1d", GOOD, xi_path=XINO).read("3c0ffee1d")  # si ids are %lx, never padded
    assert check_aufs(plan_c(), entry(SHOWN), other) == [f"sysfs record si_3c0ffee1d is not the mount's si={si}"]


def test_check_without_sysfs_uses_the_br_option_or_says_it_cannot_check():
    ro = plan_c(read_only=True)
    shown = (*SHOWN, "br:" + ":".join(g.split("=")[0] + "=ro+wh" for g in GOOD))
    assert check_aufs(ro, entry(shown, read_only=True), None) == []
    assert check_aufs(plan_c(), entry(shown), None) == ["branch 0 (/r/aufs/diff/c) is ro+wh (planned rw)"]
    problems = check_aufs(plan_c(), entry(SHOWN), None)
    assert problems == ["sysfs has no record of si_1f2e3d4c5b6a7980; the branch list cannot be checked"]


def test_module_with_brs_0_lists_the_branches_in_the_br_option(sysfs_tree):
    # aufs loaded with brs=0: si_<id>/ holds xi_path only, and /proc/mounts ends with br:<dir>=<perm>:...
    si = "1f2e3d4c5b6a7980"
    info = sysfs_tree(si, [], xi_path=XINO).read(si)
    assert info.branches == () and info.xi_path == XINO
    assert check_aufs(plan_c(), entry((*SHOWN, "br:" + ":".join(GOOD))), info) == []
    swapped = "br:" + ":".join([GOOD[0], GOOD[2], GOOD[1]])
    assert check_aufs(plan_c(), entry((*SHOWN, swapped)), info) == [
        "branch 1 is /r/aufs/diff/a (planned /r/aufs/diff/b)"]
    assert check_aufs(plan_c(), entry(SHOWN), info) == [
        f"sysfs lists no br<N> under si_{si} (module parameter brs=0?) and the mount shows no br:; "
        "the branch list cannot be checked"]
    # xi_path is there whatever brs is, and still checked
    other = sysfs_tree(si, [], xi_path="/tmp/.aufs.xino").read(si)
    assert check_aufs(plan_c(), entry((*SHOWN, "br:" + ":".join(GOOD))), other) == [
        f"xino is /tmp/.aufs.xino (planned {XINO})"]


def test_br_option_paths_are_unescaped_like_the_module_escapes_them():
    # aufs prints branch paths with seq_path escapes (\040 for a space) in sysfs and in /proc/mounts
    line = ("812 30 0:77 / /r/mnt/c rw,relatime - aufs none "
            r"rw,si=1f2e,br:/r/with\040space/c=rw:/r/b=ro+wh" "\n")
    e = parse_mountinfo_line(line)
    plan = plan_aufs("/r/mnt/c", layer_branches("/r/with space/c", ["/r/b"], read_only=False), AufsOptions(),
                     read_only=False)
    assert check_aufs(plan, e, None) == []
