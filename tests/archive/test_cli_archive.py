"""``layer apply|diff|changes|diff-size`` through the real command line (subprocess)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time

import zstandard

from graphdriver import open_driver

from .tarbuild import directory, file, tar


def gd(root: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphdriver", "--root", root, *args], input=stdin,
                          capture_output=True, check=False)


def test_apply_changes_diff_size_and_diff(root, tmp_path):
    base = tar(directory("etc"), file("etc/passwd", b"root"), file("etc/group", b"grp"))
    child = tar(file("etc/.wh.group"), file("etc/passwd", b"root+1"), file("bin-new", b"12345"))
    (tmp_path / "base.tar.gz").write_bytes(gzip.compress(base))
    assert gd(root, "layer", "create", "base").returncode == 0
    r = gd(root, "layer", "apply", "base", "-i", str(tmp_path / "base.tar.gz"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "7"
    assert gd(root, "layer", "create", "child", "--parent", "base").returncode == 0
    r = gd(root, "layer", "apply", "child", "--parent", "base",
           stdin=zstandard.ZstdCompressor().compress(child))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "11"
    r = gd(root, "layer", "changes", "child")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\n")[:4] == ["A /bin-new", "C /etc", "D /etc/group", "C /etc/passwd"]
    r = gd(root, "--json", "layer", "changes", "child")
    assert json.loads(r.stdout) == [{"Path": "/bin-new", "Kind": 1}, {"Path": "/etc", "Kind": 0},
                                    {"Path": "/etc/group", "Kind": 2}, {"Path": "/etc/passwd", "Kind": 0}]
    r = gd(root, "layer", "diff-size", "child")
    assert r.stdout.decode().strip() == "11"
    out = tmp_path / "child.tar"
    r = gd(root, "layer", "diff", "child", "-o", str(out))
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as t:
        names = sorted(m.name for m in t)
    assert names == ["bin-new", "etc", "etc/.wh.group", "etc/passwd"]
    r = gd(root, "layer", "diff", "child")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        assert sorted(m.name for m in t) == names


def test_hostile_input_is_one_line_and_exit_1(root):
    assert gd(root, "layer", "create", "x").returncode == 0
    r = gd(root, "layer", "apply", "x", stdin=tar(file("../../escape", b"boom")))
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "../../escape" in lines[0], lines
    assert os.listdir(os.path.join(root, "overlay2", "x", "diff")) == []


def test_wrong_parent_and_missing_layer(root):
    assert gd(root, "layer", "create", "a").returncode == 0
    assert gd(root, "layer", "create", "b", "--parent", "a").returncode == 0
    r = gd(root, "layer", "apply", "b", "--parent", "zzz", stdin=tar(file("f")))
    assert r.returncode == 1 and b"parent" in r.stderr
    r = gd(root, "layer", "diff-size", "nope")
    assert r.returncode == 1 and b"nope" in r.stderr


def test_rm_while_a_diff_runs_names_it_and_goes_through_once_it_is_killed(root, tmp_path):
    """README's example: ``layer rm`` while another process's ``layer diff`` of that layer is under way
    is refused naming it (its name and pid); killed, the diff's lease goes with it."""
    body = tar(*(file(f"f{i:02d}", os.urandom(1 << 20)) for i in range(16)))  # more than a pipe holds
    assert gd(root, "layer", "create", "app").returncode == 0
    assert gd(root, "layer", "apply", "app", stdin=body).returncode == 0
    reader = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "layer", "diff", "app"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert len(reader.stdout.read(1 << 16)) == 1 << 16  # the diff is under way, blocked on the pipe
        r = gd(root, "layer", "rm", "app")
        assert r.returncode == 1 and r.stderr.decode().splitlines() == [
            f"graphdriver: cannot remove layer app: it is being read or applied into (a diff, changes, size or "
            f"apply under way in {_name(reader.pid)}[{reader.pid}]); try again when it is done"]
        assert gd(root, "layer", "exists", "app").returncode == 0
    finally:
        reader.kill()
        reader.wait()
        reader.stdout.close()
    r = gd(root, "layer", "rm", "app")
    assert r.returncode == 0, r.stderr
    assert gd(root, "layer", "exists", "app").returncode == 1


def _name(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_cleanup_during_an_apply_leaves_it_and_says_so(root, tmp_path):
    """``cleanup`` while another process's ``layer apply`` extracts: its staging is left (and named, with
    the process), the apply then completes."""
    body = tar(file("a", os.urandom(200_000)), file("b", b"2"))
    assert gd(root, "layer", "create", "app").returncode == 0
    applier = subprocess.Popen([sys.executable, "-m", "graphdriver", "--root", root, "layer", "apply", "app"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        applier.stdin.write(body[:100_000])
        applier.stdin.flush()
        staging = os.path.join(root, "overlay2", ".staging")
        deadline = time.monotonic() + 30
        while not [n for n in os.listdir(staging) if n.startswith("app.apply-")]:
            assert time.monotonic() < deadline and applier.poll() is None
            time.sleep(0.02)
        r = gd(root, "cleanup")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        assert lines[0] == f"cleaned {root}" and len(lines) == 2
        assert lines[1].startswith(f"left alone: {staging}/app.apply-")
        assert lines[1].endswith(f" (in use by {_name(applier.pid)}[{applier.pid}])")
        applier.stdin.write(body[100_000:])
        applier.stdin.close()
        assert applier.wait(60) == 0, applier.stderr.read()
    finally:
        if applier.poll() is None:
            applier.kill()
            applier.wait()
    assert applier.stdout.read().decode().strip() == "200001"
    assert sorted(os.listdir(os.path.join(root, "overlay2", "app", "diff"))) == ["a", "b"]
    assert os.listdir(staging) == []


def test_changes_of_an_unchanged_layer_print_nothing(root):
    assert gd(root, "layer", "create", "base").returncode == 0
    assert gd(root, "layer", "apply", "base", stdin=tar(file("a", b"a"))).returncode == 0
    assert gd(root, "layer", "create", "top", "--parent", "base").returncode == 0
    r = gd(root, "layer", "changes", "top")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    r = gd(root, "--json", "layer", "changes", "top")
    assert json.loads(r.stdout) == []


def test_diff_into_a_directory_is_refused_naming_it(root, tmp_path):
    assert gd(root, "layer", "create", "base").returncode == 0
    assert gd(root, "layer", "apply", "base", stdin=tar(file("a", b"a"))).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    r = gd(root, "layer", "diff", "base", "-o", str(out))
    assert r.returncode == 1
    assert r.stderr.decode() == f"graphdriver: Is a directory ({out})\n"
    assert os.listdir(out) == [] and os.listdir(tmp_path) == ["out"]


def test_replacing_names_the_path_when_the_rename_fails(tmp_path):
    from graphdriver.store.files import replacing

    target = tmp_path / "d"
    (target / "sub").mkdir(parents=True)
    try:
        with replacing(str(target)) as f:
            f.write(b"x")
    except OSError as e:
        assert e.filename == str(target)
    else:
        raise AssertionError("replaced a directory")
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_json_changes_replace_bytes_that_are_not_utf8(root):
    assert gd(root, "layer", "create", "base").returncode == 0
    assert gd(root, "layer", "apply", "base", stdin=tar(file(b"caf\xe9", b"x"))).returncode == 0
    r = gd(root, "--json", "layer", "changes", "base")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode("ascii")
    assert "\\udc" not in text
    assert json.loads(text) == [{"Path": "/caf\ufffd", "Kind": 1}]


def _deep_tree(top: str, levels: int = 25) -> None:
    """Directories nested past PATH_MAX under ``top`` (made through directory descriptors), a file at the end."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d" * 200, dir_fd=fd)
            sub = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_a_path_past_path_max_fails_in_one_readable_line(root):
    assert gd(root, "layer", "create", "base").returncode == 0
    assert gd(root, "layer", "create", "ctr", "--parent", "base", "--rw").returncode == 0
    _deep_tree(open_driver(root).diff_path("ctr"))
    for args in (["--json", "layer", "changes", "ctr"], ["layer", "changes", "ctr"], ["layer", "diff", "ctr"]):
        r = gd(root, *args)
        err = r.stderr.decode()
        assert r.returncode == 1, (args, err)
        assert err.count("\n") == 1 and len(err) < 400, (args, err)
        assert err.startswith("graphdriver: reading layer ctr failed: File name too long at '"), (args, err)
        assert f"{root}/" in err and "/dddd" in err and "\u2026" in err and "b'" not in err, (args, err)
        assert "bytes: the system takes 4095 at most)" in err, (args, err)
