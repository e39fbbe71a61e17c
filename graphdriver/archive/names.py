"""Member names: cleaned as Docker cleans them, and quoted for messages."""

from __future__ import annotations

import os


def has_dotdot(raw: bytes) -> bool:
    """True when ``raw`` has a ``..`` component (GNU tar refuses such a name: it must be cleaned first)."""
    return b".." in raw.split(b"/")


def clean_name(raw: bytes) -> tuple[bytes, ...]:
    """The components of a member name, cleaned as Go's ``filepath.Clean`` (which Docker applies to every
    name and hard-link target) after any leading ``/``: ``./x/./y/../z`` is ``x/z``; the root is ``()``.
    Raises ValueError with the reason for an empty name, a NUL, or a ``..`` that climbs above the root
    (``../x``, ``x/../../y``, ``/../x``: Docker keeps that last one inside, clamped; refused here)."""
    if not raw:
        raise ValueError("empty name")
    if b"\0" in raw:
        raise ValueError("NUL in name")
    parts: list[bytes] = []
    for p in raw.split(b"/"):
        if p == b"..":
            if not parts:
                raise ValueError("'..' climbs out of the layer")
            parts.pop()
        elif p and p != b".":
            parts.append(p)
    return tuple(parts)


NAME_SHOWN = 100  # characters of a name a message quotes


def shown(raw: bytes) -> str:
    """A name for a message: quoted, escapes whole; past about 100 characters its middle is cut to '…'
    (the start and the end of a name say most)."""
    text = os.fsdecode(raw)
    if len(repr(text)) <= NAME_SHOWN + 2:
        return repr(text)
    esc = [repr(c)[1:-1] for c in text]
    i = used = 0
    while used + len(esc[i]) <= NAME_SHOWN * 3 // 5:
        used += len(esc[i])
        i += 1
    j = len(esc)
    while j - 1 > i and used + len(esc[j - 1]) <= NAME_SHOWN:
        used += len(esc[j - 1])
        j -= 1
    return "'" + "".join(esc[:i]) + "\u2026" + "".join(esc[j:]) + "'"
