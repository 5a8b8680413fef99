"""Rolling evaluation of the refresh loop: is refreshing the interest graph every day worth it?

Over the test window of the project's protocol, day by day: everything before the day is input,
the day's interactions are the targets of every user who has an earlier event. Full ranking
over the catalog with each user's earlier items masked — the same mask for every model — and
NDCG@10 / Recall@20 pooled over all (user, day) pairs. Compared in the same run:

* ``most-popular (daily)`` — counts of everything before the day;
* ``gcn, no refresh`` — the trained model with each user's history frozen at the test start
  (what serving would show if the graph were never refreshed);
* ``gcn, refreshed daily`` — the same model folding in each user's history up to the day (what
  ``uig refresh`` materialises; the model's popularity prior stays as trained);
* ``gcn, refreshed daily + prior`` — also recomputing the popularity prior each day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from models.baselines import MostPopular
from models.evaluation import EmptyEvaluationError, EncodedSplit, History, Interactions, evaluate
from uig_common.timeutil import SECONDS_PER_DAY

__all__ = ["ROLLING_MODELS", "rolling_evaluation"]

ROLLING_MODELS = ("most-popular (daily)", "gcn, no refresh", "gcn, refreshed daily", "gcn, refreshed daily + prior")


@dataclass(frozen=True)
class _FrozenHistory:
    """A scorer that folds in a fixed history, whatever history the evaluation masks with."""

    scorer: object
    history: History

    def score(self, users: Tensor, history: History) -> Tensor:
        return self.scorer.score(users, self.history)  # type: ignore[attr-defined]


def _before(inputs: Interactions, cut: float) -> Interactions:
    keep = inputs.ts < cut
    return Interactions(inputs.user_ids[keep], inputs.item_ids[keep], inputs.ts[keep], inputs.users, inputs.items)


def rolling_evaluation(
    data: EncodedSplit,
    scorer,  # models.training.UigGCNScorer
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, dict[str, float]]:
    """``{model: {"ndcg@10", "recall@20", "user_days", "days"}}`` over the test window, day by day."""
    everything = data.before_test.concat(data.test)
    frozen = scorer.with_inputs(data.before_test, data.test_start)
    frozen_history = data.before_test.history()
    first_day = np.floor(data.test_start / SECONDS_PER_DAY) * SECONDS_PER_DAY
    last = float(data.test.ts.max())
    totals = {m: {"ndcg@10": 0.0, "recall@20": 0.0, "user_days": 0.0, "days": 0.0} for m in ROLLING_MODELS}
    day = first_day
    while day <= last:
        start, end = max(day, float(data.test_start)), day + SECONDS_PER_DAY
        inputs = _before(everything, start)
        mask = data.test.ts >= start
        mask &= data.test.ts < end
        history = inputs.history()
        has_past = np.zeros(history.n_users, dtype=bool)
        has_past[history.users_with_items()] = True
        targets = History.from_pairs(data.test.user_ids[mask], data.test.item_ids[mask], data.n_users, data.n_items)
        users = np.intersect1d(targets.users_with_items(), np.flatnonzero(has_past))
        day += SECONDS_PER_DAY
        if users.size == 0:
            continue
        models = {
            "most-popular (daily)": MostPopular().fit(inputs),
            "gcn, no refresh": _FrozenHistory(frozen, frozen_history),
            "gcn, refreshed daily": frozen,
            "gcn, refreshed daily + prior": scorer.with_inputs(inputs, start),
        }
        for name, model in models.items():
            try:
                result = evaluate(model, history, targets, data.n_items, ks=(10, 20), users=users)
            except EmptyEvaluationError:
                break  # every target already in the history: nothing to score that day
            n = result["n_users"]
            totals[name]["ndcg@10"] += result["ndcg@10"] * n
            totals[name]["recall@20"] += result["recall@20"] * n
            totals[name]["user_days"] += n
            totals[name]["days"] += 1
        progress(f"day {int((start - first_day) // SECONDS_PER_DAY) + 1}: {users.size} users")
    out = {}
    for name, t in totals.items():
        n = t["user_days"] or 1.0
        out[name] = {"ndcg@10": t["ndcg@10"] / n, "recall@20": t["recall@20"] / n,
                     "user_days": t["user_days"], "days": t["days"]}
    return out

