"""The CLI end to end: what it prints, exit codes, and bad input (one clear line, nothing changed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from graphdriver.kernel import mountinfo, probe, syscalls


def gd(root: str, *args: str, user: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "graphdriver", "--root", root, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ok(root: str, *args: str) -> str:
    r = gd(root, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def state(root: str) -> list[tuple[str, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if ".lock" in n:
                continue
            out.append((os.path.relpath(p, root), os.lstat(p).st_mode))
    return sorted(out)


def test_layer_lifecycle(root: str) -> None:
    assert ok(root, "layer", "create", "A") == "A\n"
    ok(root, "layer", "create", "B", "--parent", "A")
    ok(root, "layer", "create", "C", "--parent", "B", "--rw")
    listing = ok(root, "layer", "ls").splitlines()
    assert listing[0].split() == ["ID", "PARENT", "MOUNTS"]
    assert [row.split() for row in listing[1:]] == [["A", "-", "0"], ["B", "A", "0"], ["C", "B", "0"]]
    assert {row.index(" 0") for row in listing[1:]} == {listing[0].index("MOUNTS") - 1}  # columns line up
    path = ok(root, "layer", "mount", "C").strip()
    assert ok(root, "layer", "mount", "C").strip() == path  # a second process shares the mount
    doc = json.loads(ok(root, "layer", "inspect", "C"))
    assert doc["ID"] == "C" and doc["Parent"] == "B" and doc["MountCount"] == 2
    assert doc["GraphDriver"]["Name"] == "overlay2"
    assert doc["GraphDriver"]["Data"]["MergedDir"] == path
    assert ok(root, "verify").startswith("ok:")
    assert ok(root, "layer", "umount", "C").strip() == "C: 1 references left"
    assert mountinfo.mount_at(path) is not None
    assert ok(root, "layer", "umount", "C").strip() == "C: unmounted"
    assert mountinfo.mount_at(path) is None
    assert gd(root, "layer", "exists", "A").returncode == 0
    assert gd(root, "layer", "exists", "nope").returncode == 1
    ok(root, "layer", "rm", "C")
    assert gd(root, "layer", "exists", "C").returncode == 1


def test_info_names_driver_backing_fs_and_kernel(root: str) -> None:
    ok(root, "layer", "create", "A")
    info = json.loads(ok(root, "--json", "info"))
    assert info["Driver"] == "overlay2" and info["Kernel"] == os.uname().release and info["Stored"]
    status = dict(info["Status"])
    assert status["Backing Filesystem"] == "extfs"
    text = ok(root, "info")
    assert "Driver: overlay2" in text and "Mount API:" in text


@pytest.mark.parametrize("bad", ["../x", "a/b", "-x", ".hidden", "a..b", "x" * 129, "a b", "é"])
def test_bad_ids_are_refused_and_change_nothing(root: str, bad: str) -> None:
    ok(root, "layer", "create", "A")
    before = state(root)
    one_line_error(gd(root, "layer", "create", "--", bad), "invalid layer id")
    one_line_error(gd(root, "layer", "create", "X", "--parent", bad), "invalid parent id")
    assert state(root) == before


def test_bad_input_each_one_clear_line(root: str) -> None:
    ok(root, "layer", "create", "A")
    ok(root, "layer", "create", "B", "--parent", "A")
    before = state(root)
    one_line_error(gd(root, "layer", "create", "X", "--parent", "nope"), "parent layer nope not found")
    one_line_error(gd(root, "layer", "create", "A"), "layer A already exists")
    one_line_error(gd(root, "layer", "rm", "A"), "layer A has children: B")
    one_line_error(gd(root, "layer", "umount", "B"), "layer B is not mounted")
    one_line_error(gd(root, "layer", "mount", "ghost"), "layer ghost not found")
    assert state(root) == before
    ok(root, "layer", "mount", "B")
    one_line_error(gd(root, "layer", "rm", "B"), "layer B is mounted")
    one_line_error(gd(root, "--driver", "vfs", "info"), "created with driver overlay2", "vfs")
    ok(root, "layer", "umount", "B")


def test_a_root_that_is_not_a_directory_is_named(tmp_path) -> None:
    """A file given as the root, or below it: one line naming it (not the driver record under it), for
    commands that look and commands that store; the file stays as it was."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args in (("layer", "ls"), ("info",), ("layer", "create", "a"), ("image", "ls")):
        assert one_line_error(gd(str(afile), *args)) == f"graphdriver: root {afile} is not a directory"
        below = afile / "sub" / "root"
        assert one_line_error(gd(str(below), *args)) == (f"graphdriver: root {below} cannot be made: {afile} "
                                                         f"is not a directory")
    assert afile.read_text() == "x" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_not_root_is_refused(root: str) -> None:
    os.chmod(root, 0o755)
    one_line_error(gd(root, "info", user=65534), "must run as root")


def test_busy_mount_names_the_holder_and_stays_mounted(root: str) -> None:
    ok(root, "layer", "create", "A")
    ok(root, "layer", "create", "B", "--parent", "A")
    path = ok(root, "layer", "mount", "B").strip()
    holder = subprocess.Popen(["sleep", "60"], cwd=path)
    try:
        line = one_line_error(gd(root, "layer", "umount", "B"), "is busy", f"sleep[{holder.pid}]")
        assert path in line
        assert mountinfo.mount_at(path) is not None
        assert json.loads(ok(root, "layer", "inspect", "B"))["MountCount"] == 1
    finally:
        holder.kill()
        holder.wait()
    assert ok(root, "layer", "umount", "B").strip() == "B: unmounted"


def test_overlay_on_overlay_is_refused_with_a_vfs_hint(root: str) -> None:
    for sub in ("lo", "up", "wk", "mnt"):
        os.mkdir(os.path.join(root, sub))
    syscalls.mount("overlay", f"{root}/mnt", "overlay", 0,
                   f"lowerdir={root}/lo,upperdir={root}/up,workdir={root}/wk")
    inner = os.path.join(root, "mnt", "state")
    line = one_line_error(gd(inner, "--driver", "overlay2", "info"), "overlayfs", "vfs")
    assert "overlay" in line
    assert "Driver: vfs" in ok(inner, "--driver", "vfs", "info")


def test_concurrent_processes_do_not_corrupt_the_root(root: str) -> None:
    ok(root, "layer", "create", "base")
    script = (
        "import sys; from graphdriver import open_driver\n"
        "d = open_driver(sys.argv[1]); tag = sys.argv[2]\n"
        "for i in range(25):\n"
        "    d.create(f'{tag}{i}', 'base')\n"
        "    p = d.get('base' if i % 2 else f'{tag}{i}'); d.put('base' if i % 2 else f'{tag}{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, root, tag]) for tag in ("p", "q", "r")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    listing = ok(root, "layer", "ls").splitlines()[1:]
    assert len(listing) == 76
    assert ok(root, "verify").startswith("ok:")
    assert not os.listdir(os.path.join(root, "overlay2", ".staging"))


def test_cleanup_after_a_crash_mid_create(root: str) -> None:
    ok(root, "layer", "create", "A")
    script = (
        "import os, sys; from graphdriver import open_driver\n"
        "d = open_driver(sys.argv[1])\n"
        "orig = d.publish_layer\n"
        "def crash(*a):\n"
        "    os._exit(9)\n"
        "d.publish_layer = crash\n"
        "d.create('B', 'A')\n"
    )
    r = subprocess.run([sys.executable, "-c", script, root])
    assert r.returncode == 9
    home = os.path.join(root, "overlay2")
    assert os.listdir(os.path.join(home, ".staging"))  # the half-made layer is there ...
    assert gd(root, "layer", "exists", "B").returncode == 1  # ... but invisible
    ok(root, "cleanup")
    assert not os.listdir(os.path.join(home, ".staging"))
    links = os.listdir(os.path.join(home, "l"))
    assert len(links) == 1 and os.path.exists(os.path.join(home, "l", links[0]))
    ok(root, "layer", "create", "B", "--parent", "A")


def test_demo_runs_and_cleans_up() -> None:
    r = subprocess.run([sys.executable, "-m", "graphdriver", "demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "merged view: a b x; x reads 'x from B'" in out
    assert "character device 0:0" in out
    assert "layer A still holds a: True" in out
    assert '"LowerDir"' in out and " overlay rw," in out
    # The kernel's line names the layers relative to the overlay2 directory; the demo says which is which.
    assert re.search(r"relative to \S+/overlay2: l/[A-Z2-7]{26} = B/diff, l/[A-Z2-7]{26} = A/diff\n", out)
    assert "cleaned up" in out
    assert not [e for e in mountinfo.read_mountinfo() if "graphdriver-demo-" in e.mount_point]
    assert not [d for d in os.listdir(tempfile.gettempdir()) if d.startswith("graphdriver-demo-")]
    # Nor reference records on the tmpfs for the roots it made (each directory names its root).
    from graphdriver.store.runtime import runtime_dir

    base = os.path.dirname(runtime_dir("/nonexistent/graphdriver-demo-x"))
    homes = []
    for name in os.listdir(base) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, name, ".home")) as f:
                homes.append(f.read())
        except OSError:  # another test's directory, going or not yet named
            pass
    assert not [h for h in homes if "/graphdriver-demo-" in h]


def test_a_refused_open_leaves_no_root_behind() -> None:
    where = os.path.join(tempfile.mkdtemp(prefix="gd-test-"), "new-root")
    try:
        one_line_error(gd(where, "--driver", "nosuch", "info"), "unknown driver 'nosuch'")
        assert not os.path.exists(where)
    finally:
        os.rmdir(os.path.dirname(where))


def test_new_roots_opened_at_once_with_two_drivers_get_one_and_leave_no_temporary(root: str) -> None:
    roots = [os.path.join(root, f"r{i}") for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", r, "--driver", d, "layer", "create", "a"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in roots for d in ("overlay2", "vfs")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for i, r in enumerate(roots):
        (rc1, err1), (rc2, err2) = results[2 * i:2 * i + 2]
        with open(os.path.join(r, "driver")) as f:
            recorded = f.read().strip()
        assert recorded in ("overlay2", "vfs") and sorted([rc1, rc2]) == [0, 1], (err1, err2)
        assert f"created with driver {recorded}" in (err1 + err2)  # the loser is told who won
        assert [n for n in os.listdir(r) if ".tmp-" in n] == []


@pytest.mark.parametrize("made", [False, True], ids=["no-directory", "empty-directory"])
def test_commands_that_only_look_leave_a_new_root_as_it_was(root: str, made: bool) -> None:
    """Nothing stored yet: listing and checking commands answer (empty, ``false``, no drift) and any
    other command is refused by name; neither makes the root or records a driver, so the first
    command that stores something may still choose the driver."""
    where = os.path.join(root, "new-root")
    if made:
        os.mkdir(where)
    info = json.loads(ok(where, "--json", "info"))
    assert info["Driver"] == "overlay2" and not info["Stored"] and info["Layers"] == 0
    assert "nothing stored yet" in ok(where, "info")
    assert "Driver: vfs" in ok(where, "--driver", "vfs", "info")
    assert ok(where, "layer", "ls").split() == ["ID", "PARENT", "MOUNTS"]
    assert json.loads(ok(where, "--json", "layer", "ls")) == []
    r = gd(where, "layer", "exists", "a")
    assert r.returncode == 1 and r.stdout.strip() == "false"
    assert ok(where, "verify").startswith("ok: nothing stored at")
    assert "nothing to clean" in ok(where, "cleanup")
    assert json.loads(ok(where, "--json", "image", "ls")) == []
    assert json.loads(ok(where, "--json", "container", "ls")) == []
    assert "Total reclaimed space: 0B" in ok(where, "image", "prune")
    for args in (("layer", "mount", "a"), ("layer", "umount", "a"), ("layer", "rm", "a"),
                 ("layer", "inspect", "a"), ("layer", "diff", "a"), ("image", "inspect", "x"),
                 ("image", "rm", "x"), ("container", "create", "x"), ("container", "rm", "x")):
        one_line_error(gd(where, *args), "nothing is stored at", where)
    one_line_error(gd(where, "layer", "create", "b", "--parent", "a"), "parent layer a not found", where)
    one_line_error(gd(where, "layer", "create", "../b"), "invalid layer id")
    one_line_error(gd(where, "layer", "create", "b", "--parent", "a/.."), "invalid parent id")
    one_line_error(gd(where, "layer", "create", "b", "--opt", "color=blue"), "unknown storage option 'color'")
    one_line_error(gd(where, "layer", "create", "b", "--opt", "size=10G"), "needs project quota")  # none here
    one_line_error(gd(where, "layer", "create", "l"), "reserved by the overlay2 layout")
    assert (os.listdir(where) == []) if made else not os.path.exists(where)
    ok(where, "--driver", "vfs", "layer", "create", "b")  # the first store chooses
    assert "Driver: vfs" in ok(where, "info")
    one_line_error(gd(where, "--driver", "overlay2", "layer", "ls"), "created with driver vfs", "overlay2")


def test_a_record_cut_short_is_claimed_again(root: str) -> None:
    open(os.path.join(root, "driver"), "w").close()  # a kill between making the record and writing it
    ok(root, "--driver", "vfs", "layer", "create", "a")
    with open(os.path.join(root, "driver")) as f:
        assert f.read() == "vfs\n"


def test_one_shot_calls_load_only_what_they_run(root: str) -> None:
    """``layer`` commands import neither psutil, the archive code, the stores, the servers (lazy
    subcommands) nor a backend they do not open; the top-level help still lists every group."""
    probe = ("import sys, runpy\n"
             "sys.argv = ['graphdriver', '--root', sys.argv[1], 'layer', 'ls']\n"
             "try:\n    runpy.run_module('graphdriver', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "lazy = ('psutil', 'graphdriver.archive.apply', 'graphdriver.archive.diff', "
             "'graphdriver.store.images', 'graphdriver.cli.demo', 'graphdriver.cli.serve', "
             "'graphdriver.drivers.aufs', 'graphdriver.drivers.vfs')\n"
             "print(' '.join(m for m in lazy if m in sys.modules) or 'none', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, root], capture_output=True, text=True, timeout=120)
    assert r.stdout.split()[:3] == ["ID", "PARENT", "MOUNTS"], r.stdout + r.stderr  # it ran, and listed
    assert r.stderr.strip().splitlines()[-1] == "none", r.stderr
    helptext = ok(root, "--help")
    for group in ("layer", "image", "container", "serve", "demo", "info", "verify", "cleanup"):
        assert re.search(rf"^\s+{group}\s", helptext, re.M), (group, helptext)
    assert "for more info" not in helptext  # each subcommand's line is its description alone
    assert "containerd-snapshotter" in ok(root, "serve", "--help")
    assert "diff-size" in ok(root, "layer", "--help")


# Why overlay refuses 'nodev': 6.5+ parses fsconfig parameters and says so; before, the legacy context takes
# anything and the superblock refuses it with EINVAL, its reason only in the kernel log.
NODEV_REFUSED = "Unknown parameter 'nodev'"
NODEV_REFUSED_LEGACY = "Invalid argument when a superblock is made with it; this kernel's overlay logs why only to " \
                       "the kernel log"


@pytest.mark.parametrize(("opt", "driver", "said"), [
    ("overlay2.bogus=1", "overlay2", "overlay2: unknown driver option 'overlay2.bogus' (it takes: overlay2.layer_view, "
                                     "overlay2.mount_api, overlay2.mountopt, overlay2.override_kernel_check, "
                                     "overlay2.size)"),
    ("Overlay2.Mount_API=fsconfg", "overlay2", "overlay2: driver option overlay2.mount_api must be one of auto, "
                                               "fsconfig, mount, not 'fsconfg'"),  # keys in any case, as dockerd
    ("overlay2.mount_api=fsconfg", "overlay2", "overlay2: driver option overlay2.mount_api must be one of auto, "
                                               "fsconfig, mount, not 'fsconfg'"),
    ("overlay2.mountopt=xino=off,upperdir=/etc", "overlay2", "overlay2.mountopt cannot set upperdir: the driver "
                                                             "names each mount's layers itself"),
    # asked of the kernel's overlay up front (it was EINVAL at the first mount); {why}: the kernel's answer
    ("overlay2.mountopt=xino=off,nodev", "overlay2", "overlay2.mountopt: the kernel's overlay does not take 'nodev' "
                                                     "({why}); it takes overlay's own options, not mount flags"),
    ("overlay2.mountopt=ro", "overlay2", "overlay2.mountopt cannot set ro: a container's layer is written to"),
    ("overlay2.size=10G", "overlay2", "overlay2: driver option overlay2.size needs project quota: "),
    ("overlay2.size=ten", "overlay2", "invalid size 'ten'"),
    ("overlay2.size=1G", "vfs", "vfs: unknown driver option 'overlay2.size' (it takes: none)"),
    ("noequals", "overlay2", "--storage-opt takes KEY=VALUE, not 'noequals'"),
])
def test_a_driver_option_it_does_not_take_is_refused_and_nothing_is_made(tmp_path, opt: str, driver: str,
                                                                        said: str) -> None:
    """dockerd's ``overlay2: unknown option``: a misspelled driver option, or a value the backend cannot
    use, is one line and exit 1 — never silently ignored — on a new root and on a store."""
    said = said.replace("{why}", NODEV_REFUSED if probe.overlay_parses_fsconfig() else NODEV_REFUSED_LEGACY)
    where = str(tmp_path / "new")
    r = gd(where, "--driver", driver, "--storage-opt", opt, "layer", "create", "a")
    assert r.returncode == 1 and r.stderr.splitlines()[0].startswith(f"graphdriver: {said}")
    assert len(r.stderr.splitlines()) == 1 and not os.path.exists(where)
    r = gd(where, "--driver", driver, "--storage-opt", opt, "layer", "ls")  # nothing stored: still checked
    assert r.returncode == 1 and r.stderr.startswith(f"graphdriver: {said}") and not os.path.exists(where)
    stored = str(tmp_path / "stored")
    assert gd(stored, "--driver", driver, "layer", "create", "a").returncode == 0
    r = gd(stored, "--storage-opt", opt, "layer", "ls")
    assert r.returncode == 1 and r.stderr.startswith(f"graphdriver: {said}")
    assert gd(stored, "layer", "ls").stdout.split()[-3:] == ["a", "-", "0"]


@pytest.mark.parametrize("args", [
    ("layer", "create", "b", "--opt", "size"),
    ("--storage-opt", "overlay2.mountopt", "serve", "docker-plugin", "--name", "gd-bad-opt",
     "--socket", "{tmp}/gd-bad-opt.sock"),
])
def test_a_key_value_switch_without_a_value_is_refused_not_dropped(tmp_path, args) -> None:
    """``--opt size`` or a bare ``--storage-opt`` was silently dropped (a layer made without its limit,
    a server started without its option): one line, exit 1, nothing made."""
    where = str(tmp_path / "root")
    args = tuple(a.format(tmp=tmp_path) for a in args)
    switch = "--opt" if "--opt" in args else "--storage-opt"
    r = gd(where, *args, timeout=30)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"graphdriver: {switch} takes KEY=VALUE, not '{args[args.index(switch) + 1]}'"]
    assert not os.path.exists(where) and not os.path.exists(tmp_path / "gd-bad-opt.sock")


def test_output_that_cannot_be_written_is_one_line_naming_standard_output(root: str) -> None:
    """A full disk under stdout (``/dev/full``), for a listing and for a tar stream: one line naming
    standard output, exit 1; a file that cannot be made is named as given, not by its temporary."""
    ok(root, "layer", "create", "base")
    for args in (("layer", "ls"), ("--json", "info"), ("layer", "diff", "base")):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args], stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=120)
        assert r.returncode == 1, (args, r.stderr)
        assert one_line_error(r) == "graphdriver: No space left on device (standard output)", args
    missing = os.path.join(root, "no", "such", "dir", "base.tar")
    r = gd(root, "layer", "diff", "base", "-o", missing)
    assert one_line_error(r) == f"graphdriver: No such file or directory ({missing})"
    assert not os.path.exists(os.path.dirname(missing))


def test_a_first_layer_create_that_fails_leaves_the_root_as_it_was(tmp_path) -> None:
    """A root so deep the layer's own paths pass PATH_MAX: the create fails in one readable line (the
    path's middle cut; it was 4 KB) and leaves no driver record or store behind (image load already
    unmade what it had made; layer create left both)."""
    deep = str(tmp_path)
    while len(deep) < 4000:
        deep = os.path.join(deep, "d" * 50)
    os.makedirs(deep)
    r = gd(os.path.join(deep, "gd"), "layer", "create", "base")
    assert r.returncode == 1 and r.stderr.startswith("graphdriver: File name too long (")
    assert len(r.stderr.splitlines()) == 1 and len(r.stderr) < 400 and "\u2026" in r.stderr
    assert os.listdir(deep) == []
