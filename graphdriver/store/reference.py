"""Image names as docker normalizes them: ``library/x``, ``docker.io/library/x`` and
``index.docker.io/library/x`` are ``x``; ``docker.io/u/x`` is ``u/x``; a missing tag is ``latest``."""

from __future__ import annotations

import re

from ..errors import GraphDriverError

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
DEFAULT_DOMAIN = "docker.io"
_LEGACY_DOMAIN = "index.docker.io"
_OFFICIAL = "library/"


def _split_domain(name: str) -> tuple[str, str]:
    """(registry, path): the first component is a registry when it has a dot or a port, or is localhost."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return (DEFAULT_DOMAIN if first == _LEGACY_DOMAIN else first), rest
    return DEFAULT_DOMAIN, name


def normalize_ref(ref: str) -> str:
    """The short familiar ``NAME:TAG`` docker shows for ``ref``; a bad reference raises."""
    if "@" in ref:
        raise GraphDriverError(f"invalid reference {ref!r}: digest references are not supported")
    slash, colon = ref.rfind("/"), ref.rfind(":")
    name, tag = (ref[:colon], ref[colon + 1:]) if colon > slash else (ref, "latest")
    domain, path = _split_domain(name)
    if domain == DEFAULT_DOMAIN:
        if path.startswith(_OFFICIAL) and path.count("/") == 1:
            path = path[len(_OFFICIAL):]
        name = path
    else:
        name = f"{domain}/{path}"
    if not _NAME_RE.fullmatch(name) or not _TAG_RE.fullmatch(tag):
        raise GraphDriverError(f"invalid reference {ref!r}: want NAME[:TAG] (lowercase name)")
    return f"{name}:{tag}"


def qualified_ref(tag: str) -> str:
    """The full name of a normalized ``NAME:TAG`` (``x:1`` -> ``docker.io/library/x:1``), as containerd
    and docker's ``io.containerd.image.name`` annotation spell it."""
    domain, path = _split_domain(tag)
    if domain != DEFAULT_DOMAIN or tag.startswith(DEFAULT_DOMAIN + "/"):
        return tag
    return f"{DEFAULT_DOMAIN}/{path if '/' in path.split(':', 1)[0] else _OFFICIAL + path}"
