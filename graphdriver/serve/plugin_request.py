"""The fields of Docker's graphdriver plugin requests, checked: each field's JSON type as the protocol
has it (a wrong one is a bad request, named), and ids made safe for a log line. No I/O here."""

from __future__ import annotations

from typing import Any

from .unix_http import BadRequest

#: The largest JSON request body taken: dockerd's are well under a kilobyte.
MAX_JSON_BODY = 1 << 20


def field(req: dict[str, Any], name: str) -> str:
    """A string field of a request ("" when absent or null); another type is a bad request."""
    value = req.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"field {name} must be a string, not {_json_type(value)}")
    return value


def string_map(req: dict[str, Any], name: str) -> dict[str, str]:
    """A field holding an object of strings (``StorageOpt``); {} when absent or null."""
    value = req.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"field {name} must be an object of strings, not {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadRequest(f"field {name} must be an object of strings; {key!r} is {_json_type(item)}")
    return value


def string_list(req: dict[str, Any], name: str) -> list[str]:
    """A field holding a list of strings (``Opts``); [] when absent or null."""
    value = req.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"field {name} must be a list of strings, not {_json_type(value)}")
    for item in value:
        if not isinstance(item, str):
            raise BadRequest(f"field {name} must be a list of strings; it holds {_json_type(item)}")
    return value


#: The protocol's request fields by kind, checked before any method runs (a wrong type is a bad
#: request, whether or not the plugin was initialised).
_STRING_FIELDS = ("ID", "Parent", "MountLabel", "Home")


def check_fields(req: dict[str, Any]) -> None:
    """BadRequest naming the first protocol field of ``req`` whose JSON type is wrong."""
    for name in _STRING_FIELDS:
        field(req, name)
    string_map(req, "StorageOpt")
    string_list(req, "Opts")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), type(value).__name__)


def printable(text: str) -> str:
    """``text`` as a log line may carry it: quoted and escaped when it holds control characters."""
    return text if text.isprintable() else repr(text)
