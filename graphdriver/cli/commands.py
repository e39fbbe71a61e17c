"""Imports every command module so each attaches its subcommands to the app."""

from . import layer  # noqa: F401

for _optional in ("archive_cmds", "image", "container", "serve", "serve_containerd", "demo"):
    try:
        __import__(f"{__package__}.{_optional}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__package__}.{_optional}":
            raise
