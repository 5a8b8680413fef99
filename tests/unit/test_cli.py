"""Every command answers --help; bad input gives a clear message and a non-zero exit."""

from __future__ import annotations

import pytest

from uig_tasks.cli import build_parser, main

COMMANDS = [[], ["data"], ["data", "prepare"], ["data", "synth"], ["ingest"], ["aggregate"], ["encode"], ["train"], ["train-policy"], ["evaluate"], ["models"], ["refresh"], ["user"], ["recommend"], ["tables"], ["quarantine"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "uig")
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: uig" in capsys.readouterr().out


def test_bad_date_is_a_clear_error(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path), "data", "prepare", "--until", "soon"]) == 2
    assert "not an ISO-8601 date" in capsys.readouterr().err


def test_synth_drift_lands_synthetic_events_and_a_ground_truth_beside_landing(tmp_path, capsys):
    import json

    assert main(["--data-root", str(tmp_path), "--json", "data", "synth", "--drift", "--users", "40", "--days", "10",
                 "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["synthetic"] is True and result["users"] == 40 and result["shifted_users"] > 0
    truth = json.loads(open(result["ground_truth"]).read())
    assert truth["synthetic"] is True and "landing" not in result["ground_truth"].split("/")[-3:-1]
    lines = [json.loads(line) for path in (tmp_path / "landing" / "events").rglob("*.jsonl") for line in open(path)]
    assert len(lines) == result["events"] and all(e["source"] == "synthetic" for e in lines)
