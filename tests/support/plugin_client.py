"""A minimal client for Docker's plugin protocol over a unix socket (what dockerd sends, from Python)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class PluginClient:
    """One keep-alive connection to a plugin socket."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.conn = UnixHTTPConnection(path, timeout)

    def close(self) -> None:
        self.conn.close()

    def raw(self, method: str, body: bytes | Iterable[bytes] | None, headers: dict[str, str] | None = None,
            encode_chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
        """POST ``/<method>``; the status, headers and the whole reply body."""
        self.conn.request("POST", "/" + method, body=body,
                          headers={"Accept": CONTENT_TYPE, **(headers or {})}, encode_chunked=encode_chunked)
        resp = self.conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def call(self, method: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON call as dockerd makes it; the decoded reply (status must be 200)."""
        status, _, data = self.raw(method, json.dumps(args or {}).encode(), {"Content-Type": CONTENT_TYPE})
        reply = json.loads(data)
        assert status == 200, (status, reply)
        return reply

    def apply_diff(self, layer_id: str, parent: str, chunks: Iterable[bytes]) -> dict[str, Any]:
        """``ApplyDiff?id=&parent=`` with a chunked raw tar body, as dockerd sends it."""
        status, _, data = self.raw(f"GraphDriver.ApplyDiff?id={layer_id}&parent={parent}", chunks,
                                   {"Content-Type": "application/x-tar", "Transfer-Encoding": "chunked"},
                                   encode_chunked=True)
        assert status == 200, (status, data)
        return json.loads(data)

    def diff(self, layer_id: str, parent: str = "") -> tuple[int, bytes]:
        """``Diff``: the status and the raw body (a tar on success)."""
        status, _, data = self.raw("GraphDriver.Diff", json.dumps({"ID": layer_id, "Parent": parent}).encode(),
                                   {"Content-Type": CONTENT_TYPE})
        return status, data


def wait_for_socket(proc, path: str, timeout: float = 30) -> None:  # noqa: ANN001  (a subprocess.Popen)
    """Wait until the server process ``proc`` has made its socket at ``path`` (it must not exit first)."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
