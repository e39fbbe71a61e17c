"""Fixtures of the plugin tests: a temporary socket directory and a plugin server running in-process."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest

from graphdriver.serve.docker_plugin import GraphDriverPlugin, PluginServer
from graphdriver.serve.plugin_config import PluginConfig

BACKENDS = ["overlay2", "vfs"]


@pytest.fixture
def sockdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="gdp-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def plugin(request, root: str, sockdir: str) -> Iterator[tuple[str, str, str]]:
    """A running plugin server: (socket path, Init Home, backend)."""
    backend = request.param
    path = os.path.join(sockdir, "p.sock")
    server = PluginServer(path, GraphDriverPlugin(PluginConfig(driver=backend)))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield path, os.path.join(root, "home"), backend
    finally:
        server.stop(timeout=30)
        t.join(10)
