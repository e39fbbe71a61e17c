"""Reference counts: the kernel's mount table and the boot id are the truth, not the count table."""

from __future__ import annotations

import os
import shutil

import pytest

from graphdriver import open_driver
from graphdriver.errors import LayerNotMounted
from graphdriver.kernel import mountinfo, syscalls
from graphdriver.store.refs import Ref


def test_a_count_from_an_earlier_boot_reads_as_zero(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("base")
    assert d.get("base") == d.diff_path("base")  # a base layer needs no mount
    assert d.mount_count("base") == 1
    with open(d.refs.table, "r+b") as f:  # the table as an earlier boot left it
        f.seek(8)
        f.write(b"00000000-0000-0000-0000-000000000000")
    after = open_driver(root, "overlay2")  # a process of this boot (the one that counted is gone)
    assert after.mount_count("base") == 0
    with pytest.raises(LayerNotMounted):
        after.put("base")
    assert after.get("base") == after.diff_path("base")  # a fresh table, counting from one
    assert after.mount_count("base") == 1


def test_a_count_whose_mount_is_gone_reads_as_zero_and_remount_works(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")
    d.get("b")
    syscalls.umount2(path)  # as after a reboot or a manual umount
    assert d.mount_count("b") == 0
    with pytest.raises(LayerNotMounted, match="layer b is not mounted"):
        d.put("b")
    assert d.get("b") == path
    assert d.mount_count("b") == 1
    d.put("b")
    assert mountinfo.mount_at(path) is None


def test_a_matching_mount_made_elsewhere_is_adopted(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")
    d.refs.drop("b")  # the count is lost, the mount is not
    assert d.get("b") == path
    assert d.mount_count("b") == 2
    d.put("b")
    d.put("b")
    assert mountinfo.mount_at(path) is None


def test_a_foreign_mount_at_the_mount_point_is_refused(root: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    target = d.mount_point("b")
    syscalls.mount("tmpfs", target, "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(Exception, match="foreign mount"):
            d.get("b")
        assert [str(x) for x in d.verify()] == [f"-: unexpected tmpfs mount at {target}"]
    finally:
        syscalls.umount2(target)


@pytest.mark.parametrize("how", ["cleanup", "by hand"])
def test_a_table_removed_by_another_process_is_followed(root: str, how: str) -> None:
    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")  # the store now has the table mapped
    other = open_driver(root, "overlay2")
    if how == "cleanup":
        other.refs.remove()  # as another process's cleanup does: retired in place, then removed
    else:
        shutil.rmtree(other.refs.dir)  # not retired: noticed by its file having no name left
    assert not os.path.exists(other.refs.table)
    other.refs.write("b", Ref(1, mountinfo.current_mount_id(path)))  # a new table, with a record in it
    assert d.mount_count("b") == 1  # read through the new table, not the removed one
    d.get("b")
    assert other.mount_count("b") == 2  # counted where the other process counts too
    d.put("b")
    d.put("b")
    assert mountinfo.mount_at(path) is None and other.mount_count("b") == 0


def test_a_forked_child_takes_the_lock_on_its_own_descriptor(root: str) -> None:
    import time

    d = open_driver(root, "overlay2")
    marker = os.path.join(root, "child-ran")
    with d.lock.held():  # the parent holds it; the child inherits the open descriptor
        pid = os.fork()
        if pid == 0:
            try:
                with d.lock.held():
                    open(marker, "w").close()
            finally:
                os._exit(0)
        time.sleep(0.3)
        assert not os.path.exists(marker)  # the child waits: it does not share the parent's lock
    os.waitpid(pid, 0)
    assert os.path.exists(marker)


def test_put_of_a_recorded_mount_whose_layer_vanished_says_not_mounted(root: str) -> None:
    import shutil

    d = open_driver(root, "overlay2")
    d.create("a")
    d.create("b", "a")
    path = d.get("b")  # the record now names a mount
    syscalls.umount2(path)
    shutil.rmtree(d.layer_path("b"))  # behind the driver's back: no mount point left to unmount
    with pytest.raises(LayerNotMounted, match="layer b is not mounted"):
        d.put("b")
    assert d.refs.read("b").count == 0


def test_the_table_is_shared_by_processes_and_grows_under_their_mappings(tmp_path) -> None:
    import subprocess
    import sys

    from graphdriver.store.refs import FIRST_CAPACITY, RefStore

    mine = RefStore(str(tmp_path / "run"), str(tmp_path))
    mine.write("first", Ref(2, 7))
    assert mine.read("first") == Ref(2, 7)  # mapped here now
    count = FIRST_CAPACITY * 3  # two growths, made by another process
    code = ("import sys; from graphdriver.store.refs import Ref, RefStore\n"
            "s = RefStore(sys.argv[1], sys.argv[2])\n"
            "assert s.read('first') == Ref(2, 7)\n"
            f"for i in range({count}): s.write(f'layer-{{i}}', Ref(i + 1, 1000 + i))\n"
            "s.write('first', Ref(3, 7))\n")
    subprocess.run([sys.executable, "-c", code, mine.dir, mine.home], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert mine.read("first") == Ref(3, 7)  # the same table: no reopening needed to see it
    assert mine.read(f"layer-{count - 1}") == Ref(count, 1000 + count - 1)  # past this process's mapping
    assert len(mine.all()) == count + 1


def test_a_table_cut_short_by_hand_is_started_afresh_not_read_past_its_end(root: str) -> None:
    import subprocess
    import sys

    # In a child: reading a mapping past the end of its file kills the process with SIGBUS.
    code = ("import os, sys\n"
            "from graphdriver import open_driver\n"
            "from graphdriver.kernel import mountinfo\n"
            "d = open_driver(sys.argv[1], 'overlay2')\n"
            "d.create('a'); d.create('b', 'a')\n"
            "path = d.get('b')\n"
            "os.truncate(d.refs.table, 0)\n"
            "assert d.mount_count('b') == 0  # the count went with the table\n"
            "assert d.get('b') == path and d.mount_count('b') == 2  # the mount adopted, plus this get\n"
            "d.put('b'); d.put('b')\n"
            "assert mountinfo.mount_at(path) is None\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code, root], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_slots_of_zero_counts_are_reused_before_the_table_grows(tmp_path) -> None:
    from graphdriver.store.refs import FIRST_CAPACITY, RefStore

    s = RefStore(str(tmp_path / "run"), str(tmp_path))
    for i in range(FIRST_CAPACITY):
        s.write(f"a{i}", Ref(1, i + 1))
    size = os.path.getsize(s.table)
    s.write("a3", Ref())  # a count back to zero: its slot may go to another layer
    s.drop("a4")
    s.write("b", Ref(1, 99))
    s.write("c", Ref(1, 98))
    assert os.path.getsize(s.table) == size
    assert (s.read("b"), s.read("c"), s.read("a3"), s.read("a4")) == (Ref(1, 99), Ref(1, 98), Ref(), Ref())
    s.write("d", Ref(1, 97))  # no zero count left: the table doubles
    assert os.path.getsize(s.table) > size and s.read("d") == Ref(1, 97) and s.read("a63") == Ref(1, 64)


def test_a_full_runtime_filesystem_fails_the_write_with_enospc_and_keeps_the_counts(tmp_path) -> None:
    import errno

    from graphdriver.store.refs import FIRST_CAPACITY, RefStore

    run = tmp_path / "run"
    run.mkdir()
    syscalls.mount("tmpfs", str(run), "tmpfs", 0, "size=20k")  # .home, .mntns, the table
    try:
        s = RefStore(str(run / "root"), str(tmp_path))
        for i in range(FIRST_CAPACITY):
            s.write(f"a{i}", Ref(1, i + 1))
        with open(run / "filler", "wb") as f:  # the rest of the tmpfs
            try:
                f.write(b"x" * 20480)
            except OSError:
                pass
        with pytest.raises(OSError) as err:
            s.write("one-more", Ref(1, 1))  # needs a bigger table: refused up front, not a SIGBUS later
        assert err.value.errno == errno.ENOSPC
        assert s.read("a63") == Ref(1, 64) and s.read("one-more") == Ref()
    finally:
        syscalls.umount2(str(run), syscalls.MNT_DETACH)


def test_readers_in_other_threads_follow_growth_and_removal_without_errors(tmp_path) -> None:
    import threading
    import time

    from graphdriver.store.refs import FIRST_CAPACITY, RefStore

    s = RefStore(str(tmp_path / "run"), str(tmp_path))
    s.write("kept", Ref(1, 5))
    errors: list[BaseException] = []
    done = threading.Event()
    reads = [0] * 4

    def read(n: int) -> None:
        try:
            while not done.is_set():
                assert s.read("kept") in (Ref(1, 5), Ref())  # Ref(): between a removal and the next write
                s.all()
                reads[n] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    readers = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for t in readers:
        t.start()
    rounds, stop = 0, time.monotonic() + 1.0
    while rounds < 3 or time.monotonic() < stop:  # the writer (the root lock's holder): grow twice, remove
        for i in range(FIRST_CAPACITY * 3):
            s.write(f"l{i}", Ref(1, i + 1))
        s.remove()
        s.write("kept", Ref(1, 5))
        rounds += 1
    done.set()
    for t in readers:
        t.join()
    assert errors == [] and all(reads), reads
    assert s.read("kept") == Ref(1, 5)


# -- runtime directories of other roots: another root's cleanup prunes them while they are in use ----------

def _paused_child(cmd: list[str], ready: str, meanwhile) -> tuple[int, str]:
    """Run ``cmd`` until it prints ``ready``, call ``meanwhile()``, let it go on (a line on its stdin); its
    exit status and the rest of its output."""
    import subprocess

    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == ready
        meanwhile()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, out


_FIRST_GET = """
import os, sys
real = os.makedirs
paused = []
def makedirs(path, *a, **k):  # the runtime directory made, nothing in it yet: wait for the parent
    real(path, *a, **k)
    if path == os.environ["GRAPHDRIVER_RUNTIME"] + "/" + sys.argv[2] and not paused:
        paused.append(1)
        print("made", flush=True)
        sys.stdin.readline()
os.makedirs = makedirs
from graphdriver import open_driver
d = open_driver(sys.argv[1], "vfs")
d.get("a")
print(d.refs.read("a").count, os.path.exists(d.refs.table), flush=True)
"""


def test_a_runtime_directory_being_made_survives_another_roots_cleanup(root: str, tmp_path, monkeypatch) -> None:
    import sys

    from graphdriver.store.runtime import prune_runtime, runtime_dir

    monkeypatch.setenv("GRAPHDRIVER_RUNTIME", str(tmp_path / "run"))
    open_driver(root, "vfs").create("a")  # no table yet: the first get makes it
    name = os.path.basename(runtime_dir.__wrapped__(os.path.join(root, "vfs")))
    # meanwhile, another root's cleanup: an empty directory naming no root looks left over
    code, out = _paused_child([sys.executable, "-c", _FIRST_GET, root, name], "made", prune_runtime)
    assert code == 0 and out.split() == ["1", "True"]  # made again: the get went through
    assert prune_runtime() == []  # it names its root now
    shutil.rmtree(tmp_path / "run")


def test_cleanups_of_two_roots_pruning_at_once_do_not_trip_over_each_other(tmp_path, monkeypatch) -> None:
    from graphdriver.store import runtime as refs

    base = tmp_path / "run"
    monkeypatch.setenv("GRAPHDRIVER_RUNTIME", str(base))
    stale = base / "gone-0123456789abcdef"  # a directory naming no root, nothing in it: left over
    stale.mkdir(parents=True)
    real = os.listdir
    other: list[list[str]] = []

    def listdir(path: str = ".") -> list[str]:  # the other root's cleanup prunes between two looks
        if os.fspath(path) == str(stale) and not other:
            other.append(refs.prune_runtime())
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    removed = refs.prune_runtime()
    monkeypatch.setattr(os, "listdir", real)
    assert not stale.exists()
    assert sorted([*removed, *other[0]]).count(str(stale)) == 1  # one of them removed it, neither failed


_HELD_IN_ITS_OWN_NAMESPACE = """
import sys
from graphdriver import open_driver
from graphdriver.kernel import syscalls
syscalls.mount("tmpfs", sys.argv[1], "tmpfs")  # the root's filesystem: mounted in this namespace only
d = open_driver(sys.argv[1], "vfs")
d.create("a")
d.get("a")
print("held", flush=True)
sys.stdin.readline()
d.put("a")  # LayerNotMounted if the count went meanwhile
print(d.refs.read("a").count, flush=True)
"""


def test_a_root_seen_from_another_mount_namespace_keeps_its_counts_through_a_cleanup_here(root: str, tmp_path,
                                                                                         monkeypatch) -> None:
    """A root on a filesystem mounted in a private namespace (a runtime's, ``unshare -m``) is no directory
    from this one: another root's cleanup here must not take its runtime directory for a leftover while
    that namespace lives, and prunes it once no process is left in it."""
    import sys

    from graphdriver.store.runtime import prune_runtime, runtime_dir

    monkeypatch.setenv("GRAPHDRIVER_RUNTIME", str(tmp_path / "run"))
    made = runtime_dir.__wrapped__(os.path.join(root, "vfs"))
    def cleanup_here() -> None:
        assert not os.path.isdir(os.path.join(root, "vfs")) and os.path.isdir(made)  # its root: not here
        assert made not in prune_runtime()

    code, out = _paused_child(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                               _HELD_IN_ITS_OWN_NAMESPACE, root], "held", cleanup_here)
    assert code == 0 and out.strip() == "0"
    assert prune_runtime() == [made]  # its namespace is gone with its process: judged from here now
