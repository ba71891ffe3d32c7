"""One CLI: the same flag spelling and meaning in every command, help that renders, auto progress."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from flagembed.cli import app

runner = CliRunner()


def _commands():
    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*prefix, name])
        else:
            yield prefix, cmd

    return list(walk(typer.main.get_command(app), []))


COMMANDS = _commands()
IDS = [" ".join(p) for p, _ in COMMANDS]


def _options(cmd):
    return [p for p in cmd.params if type(p).__name__.endswith("Option")]


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_output_options_accept_both_spellings(path, cmd):
    for opt in _options(cmd):
        names = set(opt.opts)
        if names & {"--out", "--output"}:
            assert {"--out", "--output", "-o"} <= names, f"{' '.join(path)}: {sorted(names)}"


def test_each_short_flag_has_one_meaning():
    meaning: dict[str, set[str]] = {}
    for _path, cmd in COMMANDS:
        for opt in _options(cmd):
            shorts = [o for o in opt.opts if re.fullmatch(r"-[A-Za-z]", o)]
            longs = sorted(o for o in opt.opts if o.startswith("--"))
            for s in shorts:
                meaning.setdefault(s, set()).add(longs[0] if s != "-m" else "--model")
    clashes = {s: m for s, m in meaning.items() if len(m) > 1}
    assert not clashes, clashes


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_help_renders_without_rst(path, cmd):
    res = runner.invoke(app, [*path, "--help"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert "``" not in res.output and ":class:" not in res.output and ":func:" not in res.output


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_progress_defaults_to_auto(path, cmd):
    for opt in _options(cmd):
        if "--progress" in opt.opts:
            assert opt.default is None, f"{' '.join(path)}: --progress defaults to {opt.default!r}, not auto"
