"""The quality gate's rule on plain numbers: no MLflow, no registry, no model."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from uig_tasks.mlflow_store import RegistryError
from uig_tasks.quality_gate import ChampionScore, GateDecision, decide

METRIC = "ndcg@10"


def gate(candidate: float, champion: ChampionScore | None, margin: float = 0.01) -> GateDecision:
    return decide(candidate, champion, margin=margin, metric=METRIC, model_name="uig-gcn", version=3, run_id="r3")


def test_better_by_the_margin_is_promoted():
    decision = gate(0.33, ChampionScore(2, 0.30))
    assert decision == GateDecision(3, True, METRIC, 0.33, 2, 0.30, 0.01,
                                    "ndcg@10 0.3300 >= champion version 2 0.3000 + margin 0.01 on the candidate's "
                                    "validation window", "r3")


def test_better_by_less_than_the_margin_is_refused():
    decision = gate(0.305, ChampionScore(2, 0.30))
    assert not decision.promoted
    assert (decision.champion_version, decision.champion_score) == (2, 0.30)
    assert "0.3050 < champion version 2 0.3000 + margin 0.01" in decision.reason


def test_worse_is_refused_even_with_no_margin():
    assert not gate(0.29, ChampionScore(2, 0.30), margin=0.0).promoted


def test_exactly_champion_plus_margin_is_promoted_despite_float_rounding():
    assert 0.2 + 0.1 > 0.3  # 0.30000000000000004
    assert gate(0.3, ChampionScore(2, 0.2), margin=0.1).promoted
    assert gate(0.31, ChampionScore(2, 0.30)).promoted
    assert gate(0.30, ChampionScore(2, 0.30), margin=0.0).promoted  # a tie passes a zero margin
    assert not gate(0.3 - 1e-6, ChampionScore(2, 0.2), margin=0.1).promoted  # not a rounding error: refused


def test_first_version_without_a_champion_is_promoted():
    decision = gate(0.05, None)
    assert decision.promoted and decision.champion_version is None and decision.champion_score is None
    assert decision.reason == "first uig-gcn champion (ndcg@10 0.0500)"


def test_incomparable_champion_is_no_bar():
    champion = ChampionScore(2, None, incomparable="it ranks 40 items, this window's catalog has 41")
    decision = gate(0.01, champion)
    assert decision.promoted and decision.champion_version == 2 and decision.champion_score is None
    assert decision.reason == ("champion version 2 cannot be scored on the candidate's validation window "
                               "(it ranks 40 items, this window's catalog has 41); ndcg@10 0.0100 promoted "
                               "without comparison")


def test_model_name_is_a_parameter():
    decision = decide(1.0, None, margin=0.0, metric="reward", model_name="uig-update-policy", version=1)
    assert decision.reason == "first uig-update-policy champion (reward 1.0000)" and decision.run_id == ""


@pytest.mark.parametrize("candidate", [math.nan, math.inf, -math.inf])
def test_candidate_score_must_be_finite(candidate):
    with pytest.raises(RegistryError, match="candidate ndcg@10 score must be a finite number"):
        gate(candidate, ChampionScore(2, 0.30))


@pytest.mark.parametrize("margin", [-0.001, math.nan, math.inf])
def test_margin_must_be_finite_and_not_negative(margin):
    with pytest.raises(RegistryError, match="gate margin must be a finite number >= 0"):
        gate(0.5, None, margin=margin)


def test_champion_score_must_be_finite_or_incomparable():
    with pytest.raises(ValueError, match="finite"):
        ChampionScore(2, math.nan)
    with pytest.raises(ValueError, match="needs the reason"):
        ChampionScore(2, None)


def test_importing_the_gate_does_not_import_mlflow():
    code = "import sys, uig_tasks.quality_gate; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
