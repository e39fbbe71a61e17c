"""The ``driver`` fixture: one fresh root per test, parametrized over every backend.

A backend that cannot run here is skipped with its own ``unsupported_reason``.
"""

from __future__ import annotations

import pytest

from graphdriver import PRIORITY, Driver, backends, open_driver

ALL_BACKENDS = sorted(set(PRIORITY) | set(backends()))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest, root: str) -> str:
    """A backend name that can run under ``root`` (others skip with their reason)."""
    name: str = request.param
    cls = backends().get(name)
    if cls is None:
        pytest.skip(f"backend {name} is not registered")
    why = cls.unsupported_reason(root)
    if why is not None:
        pytest.skip(why)
    return name


@pytest.fixture
def driver(backend: str, root: str) -> Driver:
    """A driver of that backend on a fresh root."""
    return open_driver(root, backend)
