"""The arguments of the Driver API checked before the store is touched: driver and storage options, the
parent argument of the diff calls. A wrong type is refused with one line naming the argument
(:class:`~graphdriver.errors.InvalidArgument`), never a TypeError from deep inside."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InvalidArgument, StorageOptUnsupported
from .ids import check_id


def option_keys(options: object, what: str = "options") -> dict[str, str]:
    """Driver or storage options with their keys as the backends know them: dockerd takes
    ``Overlay2.Size`` and ``SIZE`` as ``overlay2.size`` and ``size`` (keys are case-insensitive).
    ``options`` must be None or a dict of str to str."""
    return {key.strip().lower(): value for key, value in string_map(options, what).items()}


def string_map(options: object, what: str = "options") -> dict[str, str]:
    """``options`` as given (keys as the caller spelled them, for its messages), when it is None or a dict
    of str to str."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in options.items()):
        raise InvalidArgument(f"{what} must be a dict of str to str (or None), not {_short(options)}")
    return options


def check_driver_options(name: str, known: dict[str, tuple[str, ...] | None], options: dict[str, str]) -> None:
    """Refuse a driver option backend ``name`` does not take (``known``: key -> allowed values, or None for
    a value the backend checks itself), or a value it does not allow."""
    for key, value in options.items():
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise StorageOptUnsupported(f"{name}: unknown driver option {key!r} (it takes: {listed})")
        allowed = known[key]
        if allowed is not None and value not in allowed:
            raise StorageOptUnsupported(f"{name}: driver option {key} must be one of "
                                        f"{', '.join(allowed)}, not {value!r}")


def check_parent(parent: object) -> str | None:
    """The ``parent`` argument of a create or a diff call: None or "" (none), else a valid id."""
    if parent is None or parent == "":
        return None
    return check_id(parent, "parent id")


def check_stream(stream: object) -> None:
    """``apply_diff``'s stream: a binary file object (something with ``read``)."""
    if not callable(getattr(stream, "read", None)):
        raise InvalidArgument(f"stream must be a binary file object, not {_short(stream)}")


def id_list(layer_ids: object) -> list[str]:
    """``remove_all``'s argument as a list of checked ids, each once: a string is one id."""
    if isinstance(layer_ids, str):
        layer_ids = [layer_ids]
    elif not isinstance(layer_ids, Iterable) or isinstance(layer_ids, bytes | dict):
        raise InvalidArgument(f"layer_ids must be an id or an iterable of ids, not {_short(layer_ids)}")
    out = list(dict.fromkeys(check_id(i) for i in layer_ids))
    return out


def _short(value: object) -> str:
    """``value`` for a message: its repr, cut, and its type."""
    text = repr(value)
    return f"{text[:60] + '...' if len(text) > 60 else text} ({type(value).__name__})"
