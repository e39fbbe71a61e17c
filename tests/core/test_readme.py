"""README.md shows every command a user can run: each subcommand of the CLI appears in one of its
examples, and each example names a command that exists (with switches the command takes)."""

from __future__ import annotations

import os
import re
import shlex

from plumbum import cli

import graphdriver.cli.commands  # noqa: F401  (attaches every subcommand)
from graphdriver.cli.app import GraphDriverApp

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
#: Global switches that take a value (the rest are flags).
GLOBAL_VALUES = {"--root", "--driver", "--storage-opt"}


def subcommands(app: type[cli.Application]) -> dict[str, type[cli.Application]]:
    """The subcommands attached to ``app`` (plumbum keeps each as ``_subcommand_<name>``), imported."""
    return {name[len("_subcommand_"):]: getattr(app, name).get()
            for name in dir(app) if name.startswith("_subcommand_")}


def command_paths(app: type[cli.Application] = GraphDriverApp, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every runnable command (not a group of them), as the words that name it (``("layer", "create")``)."""
    subs = subcommands(app)
    if not subs:
        return {path}
    return set().union(*(command_paths(sub, (*path, name)) for name, sub in subs.items()))


def switches(app: type[cli.Application]) -> set[str]:
    """The switch names a command takes (``--output``, ``-o``, ...), its own and inherited."""
    names = set()
    for attr in dir(app):
        value = getattr(app, attr, None)
        for name in getattr(getattr(value, "_switch_info", None), "names", ()) or ():
            names.add(("--" if len(name) > 1 else "-") + name)
    return names


def readme_examples() -> list[list[str]]:
    """The ``graphdriver`` command lines in README's code blocks (after a ``#`` prompt), each cut at a
    comment or a shell operator."""
    out, in_code = [], False
    with open(README) as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
                continue
            m = re.match(r"# graphdriver(\s.*)?$", line.rstrip()) if in_code else None
            if m:
                lexer = shlex.shlex(m.group(1) or "", posix=True, punctuation_chars=";|&<>")
                lexer.whitespace_split = True  # a comment (#) ends the line, an operator the command
                words = []
                for word in lexer:
                    if word and set(word) <= set(";|&<>"):
                        break
                    words.append(word)
                out.append(words)
    return out


def command_of(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(the command path, the words after it) of an example, global switches skipped."""
    i = 0
    while i < len(words) and words[i].startswith("-"):
        i += 2 if words[i] in GLOBAL_VALUES else 1
    path: list[str] = []
    app: type[cli.Application] = GraphDriverApp
    while i < len(words) and words[i] in subcommands(app):
        app = subcommands(app)[words[i]]
        path.append(words[i])
        i += 1
    return tuple(path), words[i:]


def test_every_command_has_an_example_in_the_readme() -> None:
    shown = {command_of(words)[0] for words in readme_examples()}
    missing = sorted(" ".join(p) for p in command_paths() if p not in shown)
    assert not missing, f"README has no example of: {missing}"


def test_every_readme_example_names_a_real_command_and_its_switches() -> None:
    examples = readme_examples()
    assert len(examples) > 30
    for words in examples:
        path, rest = command_of(words)
        if not path:
            assert words in ([], ["--help"]), words  # `graphdriver` alone prints its help
            continue
        app = _app(path)
        assert not subcommands(app), f"README names a group, not a command: graphdriver {' '.join(words)}"
        known = switches(app)
        for word in rest[:rest.index("--")] if "--" in rest else rest:  # after --: the container's command
            if word.startswith("-") and word != "-":
                assert word.split("=", 1)[0] in known, f"README: {word} is not a switch of `{' '.join(path)}`"


def _app(path: tuple[str, ...]) -> type[cli.Application]:
    app: type[cli.Application] = GraphDriverApp
    for word in path:
        app = subcommands(app)[word]
    return app
