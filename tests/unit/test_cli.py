"""Every command answers --help; bad input gives a clear message and a non-zero exit."""

from __future__ import annotations

import pytest

from uig_tasks.cli import build_parser, main

COMMANDS = [[], ["data"], ["data", "prepare"], ["data", "synth"], ["ingest"], ["aggregate"], ["encode"], ["train"], ["evaluate"], ["models"], ["refresh"], ["user"], ["recommend"], ["tables"], ["quarantine"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "uig")
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: uig" in capsys.readouterr().out


def test_bad_date_is_a_clear_error(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path), "data", "prepare", "--until", "soon"]) == 2
    assert "not an ISO-8601 date" in capsys.readouterr().err
