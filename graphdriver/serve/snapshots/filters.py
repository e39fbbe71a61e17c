"""containerd's filter syntax, the subset its snapshot Walk uses (pure: parse and match, no I/O).

Grammar (one filter string)::

    selectors := selector ("," selector)*          -- all must match
    selector  := fieldpath [operator value]        -- no operator: the field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z_][A-Za-z0-9_]*
    operator  := "==" | "!=" | "~="
    value     := quoted | [^\\s,]+                   -- after "~=" also /regex/ or |regex|

Several filter strings match when any of them matches; none (or an empty string) matches everything.
Snapshot fields: ``kind`` (view/active/committed), ``name``, ``parent`` and ``labels.<key>``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...errors import InvalidSnapshotRequest

#: Looks up a field path; returns (value, present).
Adaptor = Callable[[tuple[str, ...]], tuple[str, bool]]

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_OPERATORS = ("==", "!=", "~=")


@dataclass(frozen=True)
class Selector:
    """One ``fieldpath[op value]`` test."""

    fieldpath: tuple[str, ...]
    operator: str  # "?" (present), "==", "!=", "~="
    value: str = ""
    regex: re.Pattern[str] | None = None

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.operator == "?":
            return present
        if self.operator == "==":
            return present and value == self.value
        if self.operator == "!=":
            return value != self.value
        assert self.regex is not None
        return self.regex.search(value) is not None


@dataclass(frozen=True)
class Filter:
    """Any of several selector lists (each an AND); no lists at all matches everything."""

    alternatives: tuple[tuple[Selector, ...], ...]

    def match(self, adaptor: Adaptor) -> bool:
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in sels) for sels in self.alternatives)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> InvalidSnapshotRequest:
        return InvalidSnapshotRequest(f"invalid filter {self.text!r} at position {self.pos}: {why}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def selectors(self) -> tuple[Selector, ...]:
        out = [self.selector()]
        while self.peek() == ",":
            self.pos += 1
            out.append(self.selector())
        if self.peek():
            raise self.fail(f"unexpected {self.peek()!r}")
        return tuple(out)

    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        c = self.peek()
        if c in ("", ","):
            return Selector(tuple(path), "?")
        op = self.text[self.pos:self.pos + 2]
        if op not in _OPERATORS:
            raise self.fail(f"expected an operator (==, != or ~=), got {self.text[self.pos:self.pos + 2]!r}")
        self.pos += 2
        value = self.value(alt_quotes=op == "~=")
        if op == "~=":
            try:
                return Selector(tuple(path), op, value, re.compile(value))
            except re.error as e:
                raise self.fail(f"bad regular expression {value!r}: {e}") from None
        return Selector(tuple(path), op, value)

    def field(self) -> str:
        c = self.peek()
        if c == '"':
            return self.quoted('"')
        m = _FIELD.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a field name")
        self.pos = m.end()
        return m.group(0)

    def value(self, alt_quotes: bool) -> str:
        c = self.peek()
        if c == '"' or (alt_quotes and c in "/|"):
            return self.quoted(c)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] != "," and not self.text[self.pos].isspace():
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected a value")
        return self.text[start:self.pos]

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                self.pos += 2
                continue
            if c == "\n":
                break
            if c == quote:
                self.pos += 1
                body = self.text[start + 1:self.pos - 1]
                if quote != '"':  # /re/ and |re|: only the quote itself is escaped
                    return body.replace("\\" + quote, quote)
                try:
                    return ast.literal_eval('"' + body + '"')
                except (SyntaxError, ValueError):
                    raise self.fail(f"bad escape in {self.text[start:self.pos]}") from None
            self.pos += 1
        self.pos = start
        raise self.fail("unterminated quoted string")


def parse(filters: Iterable[str]) -> Filter:
    """Parse filter strings (ORed). Raises InvalidSnapshotRequest naming the filter and position."""
    alternatives = []
    for text in filters:
        if not text.strip():
            return Filter(())  # an empty filter matches everything, so the OR does too
        alternatives.append(_Parser(text).selectors())
    return Filter(tuple(alternatives))


def snapshot_adaptor(kind: str, name: str, parent: str, labels: dict[str, str]) -> Adaptor:
    """The fields containerd exposes for a snapshot (``kind`` is view, active or committed)."""

    def field(path: tuple[str, ...]) -> tuple[str, bool]:
        head = path[0] if path else ""
        if head == "kind":
            return kind, True
        if head == "name":
            return name, True
        if head == "parent":
            return parent, True
        if head == "labels" and labels:
            key = ".".join(path[1:])
            return (labels[key], True) if key in labels else ("", False)
        return "", False

    return field
