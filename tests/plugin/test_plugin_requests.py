"""Requests dockerd would never send, sent to the real plugin server: broken framing, bodies too large,
fields of the wrong type, bursts of connections, ids that would forge log lines; and option keys in
dockerd's case-insensitive spelling."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from support.plugin_client import PluginClient, wait_for_socket

from graphdriver.serve.plugin_config import state_file_for


def exchange(path: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes on a new connection; the reply's status, JSON body and whatever follows it (the
    connection read to its end: b"" when the server closed it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    status = int(head.split()[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return status, json.loads(rest[:length]), rest[length:]


def post(method: str, headers: str, body: bytes) -> bytes:
    return (f"POST /{method} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").encode() + body


@pytest.mark.parametrize("length", ["-5", "abc", "5x", "+11", " "])
def test_a_bad_content_length_is_a_400_and_the_connection_closes(plugin, length: str) -> None:
    path, _, _ = plugin
    body = b'{"ID":"L1"}'
    # the body after the headers would be read as the next request if the header were taken as 0
    status, reply, after = exchange(path, post("GraphDriver.Exists", f"Content-Length: {length}\r\n", body))
    assert status == 400 and "Content-Length" in reply["Err"]
    assert after == b""  # nothing more was answered on that connection


@pytest.mark.parametrize("size", [b"-5", b"0x5", b"+5", b" "])
def test_a_bad_chunk_size_is_a_400(plugin, size: bytes) -> None:
    path, _, _ = plugin
    request = post("GraphDriver.Exists", "Transfer-Encoding: chunked\r\n", size + b'\r\n{"ID":"L1"}\r\n0\r\n\r\n')
    status, reply, after = exchange(path, request)
    assert status == 400 and "chunk size" in reply["Err"] and after == b""


def test_a_json_body_over_a_mebibyte_is_refused_with_413(plugin) -> None:
    path, home, _ = plugin
    c = PluginClient(path)
    big = json.dumps({"ID": "x", "Pad": "p" * (1 << 20)}).encode()
    status, _, data = c.raw("GraphDriver.Exists", big)
    assert status == 413 and "over 1048576 bytes" in json.loads(data)["Err"]
    fine = PluginClient(path)  # the server is still there
    assert fine.call("GraphDriver.Init", {"Home": home})["Err"] == ""


@pytest.mark.parametrize(("method", "args", "message"), [
    ("GraphDriver.Init", {"Home": "relative/home"}, "Home must be an absolute path, not 'relative/home'"),
    ("GraphDriver.Init", {"Home": "/x", "Opts": "abc"}, "field Opts must be a list of strings, not a string"),
    ("GraphDriver.Init", {"Home": "/x", "Opts": [1]}, "field Opts must be a list of strings; it holds a number"),
    ("GraphDriver.CreateReadWrite", {"ID": "c", "StorageOpt": "size=1G"},
     "field StorageOpt must be an object of strings, not a string"),
    ("GraphDriver.CreateReadWrite", {"ID": "c", "StorageOpt": {"size": 1}},
     "field StorageOpt must be an object of strings; 'size' is a number"),
    ("GraphDriver.Create", {"ID": ["a"]}, "field ID must be a string, not a list"),
    ("GraphDriver.Get", {"ID": "a", "MountLabel": {}}, "field MountLabel must be a string, not an object"),
    ("GraphDriver.Diff", {"ID": 7}, "field ID must be a string, not a number"),
])
def test_fields_of_the_wrong_type_are_named(plugin, method: str, args: dict, message: str) -> None:
    path, _, _ = plugin
    status, _, data = PluginClient(path).raw(method, json.dumps(args).encode())
    assert status == 400
    assert json.loads(data)["Err"] == f"graphdriver: {method}: {message}"


def test_a_burst_of_connections_is_queued_not_refused(plugin) -> None:
    """Go dials unix sockets non-blocking: a full backlog is EAGAIN at once for dockerd."""
    path, _, _ = plugin
    socks, refused = [], 0
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            err = s.connect_ex(path)
            refused += err == errno.EAGAIN
            assert err in (0, errno.EAGAIN), errno.errorcode.get(err, err)
    finally:
        for s in socks:
            s.close()
    assert refused == 0


def test_an_id_cannot_forge_log_lines(plugin, caplog: pytest.LogCaptureFixture) -> None:
    path, home, _ = plugin
    c = PluginClient(path)
    assert c.call("GraphDriver.Init", {"Home": home})["Err"] == ""
    with caplog.at_level(logging.INFO, logger="graphdriver.serve.docker_plugin"):
        c.call("GraphDriver.Exists", {"ID": "a\nGraphDriver.Remove id=base 0.1ms ok"})
        deadline = time.monotonic() + 5  # the server logs a call once its reply is out
        while not any("Exists" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GraphDriver.")]
    assert lines and all("\n" not in line for line in lines)
    assert any("id='a\\nGraphDriver.Remove" in line for line in lines)


def test_option_keys_in_any_case_as_dockerd_takes_them(plugin) -> None:
    """dockerd lowercases driver and storage option keys (``Overlay2.Size``, ``Size``)."""
    path, home, backend = plugin
    c = PluginClient(path)
    if backend == "overlay2":
        opts = ["Overlay2.MountOpt=redirect_dir=on", "OVERLAY2.OVERRIDE_KERNEL_CHECK=true"]
        assert c.call("GraphDriver.Init", {"Home": home, "Opts": opts})["Err"] == ""
        assert c.call("GraphDriver.Create", {"ID": "base"})["Err"] == ""
        assert c.call("GraphDriver.CreateReadWrite", {"ID": "rw", "Parent": "base"})["Err"] == ""
        mounted = c.call("GraphDriver.Get", {"ID": "rw"})["Dir"]
        options = next(line.split()[-1] for line in open("/proc/self/mountinfo") if line.split()[4] == mounted)
        assert "redirect_dir=on" in options.split(",")
        assert c.call("GraphDriver.Put", {"ID": "rw"})["Err"] == ""
    else:
        assert c.call("GraphDriver.Init", {"Home": home})["Err"] == ""
        assert c.call("GraphDriver.Create", {"ID": "base"})["Err"] == ""
    # 'Size' is 'size': refused for what it needs (project quota), not as an unknown option
    err = c.call("GraphDriver.CreateReadWrite", {"ID": "sized", "Parent": "base", "StorageOpt": {"Size": "1G"}})["Err"]
    assert "storage option 'size' needs project quota" in err
    err = c.call("GraphDriver.CreateReadWrite", {"ID": "odd", "Parent": "base", "StorageOpt": {"Sise": "1G"}})["Err"]
    assert "unknown storage option 'Sise'" in err


def test_the_servers_take_the_global_root_and_refuse_options_they_would_ignore(tmp_path) -> None:
    """``graphdriver --root R serve ...`` served elsewhere (the global root was ignored); an unknown
    driver option was only refused at dockerd's Init; the snapshotter ignored --storage-opt."""
    gd = [sys.executable, "-m", "graphdriver"]
    r = subprocess.run([*gd, "--storage-opt", "foo=bar", "serve", "docker-plugin", "--name", "gdtest-bad",
                        "--socket", str(tmp_path / "p.sock")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("graphdriver: unknown driver option 'foo'")
    assert not (tmp_path / "p.sock").exists()
    r = subprocess.run([*gd, "--storage-opt", "overlay2.size=1G", "serve", "containerd-snapshotter", "--socket",
                        str(tmp_path / "s.sock"), "--root", str(tmp_path / "snap")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "serve containerd-snapshotter takes no --storage-opt" in r.stderr
    root, sock, name = str(tmp_path / "global"), str(tmp_path / "g.sock"), f"gdtest-root-{os.getpid()}"
    proc = subprocess.Popen([*gd, "--root", root, "serve", "docker-plugin", "--name", name, "--socket", sock,
                             "--driver", "vfs"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_socket(proc, sock, 30)
        c = PluginClient(sock)
        assert c.call("GraphDriver.Init", {"Home": str(tmp_path / "dockerd-home")})["Err"] == ""
        assert c.call("GraphDriver.Create", {"ID": "base"})["Err"] == ""
        assert os.path.isdir(os.path.join(root, "vfs", "dir", "base"))
        assert not os.path.exists(tmp_path / "dockerd-home")
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
        if os.path.exists(state_file_for(name)):
            os.unlink(state_file_for(name))
