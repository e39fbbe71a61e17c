"""Layer id rules and short link ids."""

from __future__ import annotations

import base64
import os
import re

from .errors import InvalidID

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


_VALID: set[str] = set()  # ids that passed (the get/put path checks the same ids over and over)


def check_id(layer_id: object, what: str = "layer id") -> str:
    """Return ``layer_id`` if it is a valid id, else raise :class:`InvalidID` naming it."""
    if type(layer_id) is str and layer_id in _VALID:
        return layer_id
    if not isinstance(layer_id, str) or not _ID_RE.fullmatch(layer_id) or ".." in layer_id:
        raise InvalidID(
            f"invalid {what} {layer_id!r}: must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}} without '..'"
        )
    if len(_VALID) >= 65536:
        _VALID.clear()
    _VALID.add(layer_id)
    return layer_id


def short_link_id() -> str:
    """A random 26-character uppercase base32 id, as Docker's overlay2 ``l/`` links use."""
    return base64.b32encode(os.urandom(16)).decode()[:26]
