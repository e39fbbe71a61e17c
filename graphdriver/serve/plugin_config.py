"""The docker plugin's name, socket and configuration: what dockerd looks up (``/run/docker/plugins/<name>.sock``),
how the plugin opens its Driver, and where it records the last ``Init``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import GraphDriverError

PLUGIN_DIR = "/run/docker/plugins"
STATE_DIR = "/run/graphdriver/docker-plugin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class BadPluginName(GraphDriverError):
    """A plugin name dockerd could not look up as a socket file name."""


def check_name(name: str) -> str:
    """``name`` if dockerd can look it up as a socket file name, else BadPluginName."""
    if not _NAME.match(name):
        raise BadPluginName(f"bad plugin name {name!r} (letters, digits, '_', '.', '-'; at most 64)")
    return name


def default_socket(name: str) -> str:
    """Where dockerd looks for plugin ``name``: ``/run/docker/plugins/<name>.sock``."""
    return os.path.join(PLUGIN_DIR, f"{check_name(name)}.sock")


def parse_opts(opts: list[str] | None) -> dict[str, str]:
    """dockerd's ``--storage-opt`` list (``key=value``) as a dict."""
    out: dict[str, str] = {}
    for opt in opts or []:
        key, _, value = str(opt).partition("=")
        out[key.strip()] = value.strip()
    return out


@dataclass
class PluginConfig:
    """How the plugin opens its Driver: ``root`` None means Init's ``Home``; ``driver`` None the best.

    ``state_file`` records the last Init (Home, Opts): dockerd sends Init once, at its own start, so a
    restarted plugin process reopens the Driver from the record instead of failing every request.
    """

    root: str | None = None
    driver: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    state_file: str | None = None


def state_file_for(name: str) -> str:
    """Where plugin ``name`` records its last Init (tmpfs: a reboot makes dockerd Init again anyway)."""
    return os.path.join(STATE_DIR, f"{check_name(name)}.json")
