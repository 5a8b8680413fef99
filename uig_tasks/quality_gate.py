"""The quality gate: a new model version becomes ``@champion`` only if it beats the current one.

The rule is :func:`decide`, a pure function of numbers (the candidate's score, the champion's
score on the candidate's validation window, the margin) that returns a :class:`GateDecision`
with its reason; it needs no MLflow and is unit-tested alone. :func:`gate_version` re-scores the
champion, asks :func:`decide` and applies the answer through the store (``gate.*`` tags on the
version and its run, the alias move); :func:`register_candidate` logs, registers and gates in one
step. Every function takes the registered model's name: any model with a score is gated this way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uig_common import names as C
from uig_common.errors import UigError
from uig_tasks import mlflow_store as store
from uig_tasks import scorer_model
from uig_tasks.config import UigConfig
from uig_tasks.mlflow_store import RegistryError, TrainingRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

#: Re-scores the champion's state on the candidate's validation window.
ScoreChampion = Callable[[dict[str, Any]], float]


class IncomparableChampion(UigError):
    """Raised by a ``score_champion`` callback when the champion cannot be scored on the candidate's
    window at all (e.g. it was trained over another item catalog). The gate then promotes the
    candidate and says why: a model that cannot rank today's catalog is no bar to clear."""


@dataclass(frozen=True)
class ChampionScore:
    """The current champion, re-scored on the candidate's validation window."""

    version: int
    score: float | None  # None: it cannot be scored on that window at all (``incomparable`` says why)
    incomparable: str = ""

    def __post_init__(self) -> None:
        if self.score is None and not self.incomparable:
            raise ValueError("a champion without a score needs the reason it cannot be scored")
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError(f"the champion's score must be a finite number, got {self.score}")


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate for one newly registered version."""

    version: int
    promoted: bool
    metric: str
    candidate_score: float
    champion_version: int | None
    champion_score: float | None
    margin: float
    reason: str
    run_id: str = ""


def _check_inputs(metric: str, candidate_score: float, margin: float) -> None:
    if not math.isfinite(candidate_score):
        raise RegistryError(f"candidate {metric} score must be a finite number, got {candidate_score}")
    if not math.isfinite(margin) or margin < 0:
        raise RegistryError(f"gate margin must be a finite number >= 0, got {margin}")


def decide(
    candidate_score: float,
    champion: ChampionScore | None,
    *,
    margin: float,
    metric: str,
    model_name: str,
    version: int,
    run_id: str = "",
) -> GateDecision:
    """Promote ``version`` iff ``candidate_score >= champion.score + margin``.

    Both scores must come from the *candidate's* validation window: scores measured on different
    data windows are not comparable (users, items and difficulty all move). With no champion yet,
    or one that cannot be scored on that window, the candidate is promoted. The threshold is met
    up to float rounding: 0.3 passes 0.2 + 0.1 although that sum is 0.30000000000000004.
    """
    _check_inputs(metric, candidate_score, margin)
    candidate_score, margin = float(candidate_score), float(margin)
    if champion is None:
        reason = f"first {model_name} champion ({metric} {candidate_score:.4f})"
        return GateDecision(version, True, metric, candidate_score, None, None, margin, reason, run_id)
    if champion.score is None:
        reason = (f"champion version {champion.version} cannot be scored on the candidate's validation "
                  f"window ({champion.incomparable}); {metric} {candidate_score:.4f} promoted without comparison")
        return GateDecision(version, True, metric, candidate_score, champion.version, None, margin, reason, run_id)
    threshold = champion.score + margin
    promoted = candidate_score >= threshold or math.isclose(candidate_score, threshold, rel_tol=1e-9, abs_tol=1e-12)
    relation = ">=" if promoted else "<"
    reason = (f"{metric} {candidate_score:.4f} {relation} champion version {champion.version} "
              f"{champion.score:.4f} + margin {margin:g} on the candidate's validation window")
    return GateDecision(version, promoted, metric, candidate_score, champion.version, champion.score, margin,
                        reason, run_id)


# --------------------------------------------------------------------------------------------
# Applying decisions through the store


def _tag(client: MlflowClient, model_name: str, decision: GateDecision, outcome: str) -> None:
    store.tag_version(client, model_name, decision.version, decision.run_id, {
        store.TAG_DECISION: outcome,
        store.TAG_METRIC: decision.metric,
        store.TAG_CANDIDATE_SCORE: repr(decision.candidate_score),
        store.TAG_CHAMPION_SCORE: "" if decision.champion_score is None else repr(decision.champion_score),
        store.TAG_CHAMPION_VERSION: "" if decision.champion_version is None else str(decision.champion_version),
        store.TAG_MARGIN: repr(decision.margin),
        store.TAG_REASON: decision.reason,
    })


def apply_decision(client: MlflowClient, model_name: str, decision: GateDecision) -> None:
    """Tag ``decision`` on its version and run (``gate.*``) and, if it promotes, move ``@champion``."""
    _tag(client, model_name, decision, "promoted" if decision.promoted else "rejected")
    if decision.promoted:
        store.move_champion(client, model_name, decision.version, decision.reason)
        log.info("%s version %d promoted to @%s: %s", model_name, decision.version, C.CHAMPION_ALIAS,
                 decision.reason)
    else:
        log.info("%s version %d rejected, @%s stays on version %s: %s", model_name, decision.version,
                 C.CHAMPION_ALIAS, decision.champion_version, decision.reason)


def _require_scorer(current: ModelVersion | None, score_champion: ScoreChampion | None, model_name: str) -> None:
    if current is not None and score_champion is None:
        raise RegistryError(
            f"{model_name} version {current.version} is @{C.CHAMPION_ALIAS}: pass score_champion so it "
            "can be re-scored on the candidate's validation window"
        )


def _rescore(model_name: str, current: ModelVersion, score_champion: ScoreChampion) -> ChampionScore:
    state, version = scorer_model.read_state(model_name, current)
    try:
        return ChampionScore(version, float(score_champion(state)))
    except IncomparableChampion as exc:
        return ChampionScore(version, None, incomparable=str(exc))


def _gate(
    client: MlflowClient,
    model_name: str,
    version: int,
    score_champion: ScoreChampion | None,
    *,
    metric: str,
    candidate_score: float,
    margin: float,
) -> GateDecision:
    candidate = store.model_version(client, model_name, int(version))
    version, run_id = int(candidate.version), candidate.run_id or ""
    current = store.champion(client, model_name)
    if current is not None and int(current.version) == version:
        stored = store.gate_tags(candidate.tags)
        log.info("%s version %s already is @%s; nothing to gate", model_name, version, C.CHAMPION_ALIAS)
        return GateDecision(version, True, stored["metric"] or metric,
                            float(candidate_score) if stored["score"] is None else stored["score"],
                            stored["champion_version"], stored["champion_score"], float(margin),
                            stored["reason"] or "already champion", run_id)
    _require_scorer(current, score_champion, model_name)
    champion = None
    if current is not None:
        assert score_champion is not None
        try:
            champion = _rescore(model_name, current, score_champion)
        except Exception as exc:  # noqa: BLE001 - recorded on the version, then raised as RegistryError
            reason = f"could not re-score champion version {current.version}: {exc}"
            _tag(client, model_name, GateDecision(version, False, metric, float(candidate_score), int(current.version),
                                                  None, float(margin), reason, run_id), "error")
            log.error("%s version %d registered but not gated: %s", model_name, version, reason)
            raise RegistryError(
                f"{model_name} version {version} is registered but was not gated: {reason}. Fix the champion "
                f"scoring, or promote by hand with `uig models --promote {version}`"
            ) from exc
    decision = decide(candidate_score, champion, margin=margin, metric=metric, model_name=model_name,
                      version=version, run_id=run_id)
    apply_decision(client, model_name, decision)
    return decision


def gate_version(
    config: UigConfig,
    version: int,
    *,
    metric: str,
    candidate_score: float,
    score_champion: ScoreChampion | None,
    margin: float,
    model_name: str = C.GCN_MODEL,
) -> GateDecision:
    """Promote ``version`` to ``@champion`` iff it beats the current champion by ``margin`` (:func:`decide`).

    The current champion is re-scored on the *candidate's* validation window with
    ``score_champion(champion_state)``; its own stored score is never used. The decision and both
    scores are tagged on the version and its run. If re-scoring the champion fails, the version
    stays registered and tagged ``gate.decision=error`` and :class:`RegistryError` says how to
    promote it by hand. Gating a version that already is the champion (a retried task) changes nothing.
    """
    _check_inputs(metric, candidate_score, margin)  # before the (slow) re-scoring
    with store.connected(config) as client:
        return _gate(client, model_name, version, score_champion, metric=metric,
                     candidate_score=candidate_score, margin=margin)


def register_candidate(
    config: UigConfig,
    record: TrainingRecord,
    *,
    metric: str,
    candidate_score: float,
    score_champion: ScoreChampion | None,
    margin: float,
    experiment: str = "uig",
    run_name: str | None = None,
    model_name: str = C.GCN_MODEL,
) -> GateDecision:
    """:func:`scorer_model.log_candidate` then :func:`gate_version`, for callers that train and gate in one step.

    The score, the margin, the need for ``score_champion`` and the record are checked before
    anything is logged, so a bad one leaves no half-registered version behind.
    """
    _check_inputs(metric, candidate_score, margin)
    with store.connected(config) as client:
        _require_scorer(store.champion(client, model_name), score_champion, model_name)
    _, version = scorer_model.log_candidate(config, record, experiment=experiment, run_name=run_name,
                                            model_name=model_name)
    with store.connected(config) as client:
        return _gate(client, model_name, version, score_champion, metric=metric,
                     candidate_score=candidate_score, margin=margin)
