"""The fixed offline evaluation protocol every UIG model and baseline is measured with.

Protocol (README, "Models, evaluation and the registry"): every interaction is an implicit, binary signal; one *global*
temporal split of all interactions (train = first 80 %, validation = next 10 %, test = last
10 %, by time); full ranking over the whole catalog with each user's earlier interactions
masked; Recall, NDCG, MRR, Hit and Precision at K plus item coverage, averaged over all target
users and over *warm* users (those with at least one training interaction).

Why these choices:

* a global time cut (not a per-user leave-last-out) is the only split where nothing a model
  fits on happened after something it is tested on — the situation the refresh pipeline is in;
* full ranking (no sampled negatives) because sampled metrics do not preserve model order
  (Krichene & Rendle, KDD 2020);
* the leakage guard :func:`check_no_leakage` makes "nothing at or after the window start went
  in" a checked fact rather than a convention.

A model is evaluated through the :class:`Scorer` protocol: it receives user indices *and* their
input history, so a user it never trained on can still be scored from their history (fold-in).

The data side — :class:`Interactions`, :class:`History`, :func:`temporal_split`,
:func:`check_no_leakage` — lives in :mod:`models.interactions` and is re-exported here, so the
protocol is imported from one place.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from uig_common.errors import UigError

from models.interactions import (
    COLUMNS,
    EmptyEvaluationError,
    EncodedSplit,
    EvaluationInputError,
    History,
    Interactions,
    LeakageError,
    Split,
    check_no_leakage,
    temporal_split,
)

__all__ = [
    "ranking_metrics",
    "COLUMNS",
    "EmptyEvaluationError",
    "EvaluationInputError",
    "History",
    "Interactions",
    "LeakageError",
    "METRICS",
    "ScoreError",
    "Scorer",
    "Split",
    "EncodedSplit",
    "ValidationSet",
    "check_no_leakage",
    "metric_names",
    "coverage",
    "evaluate",
    "evaluate_all_and_warm",
    "hit_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "rank_items",
    "recall_at_k",
    "temporal_split",
]

METRICS = ("recall", "ndcg", "mrr", "hit", "precision")



class ScoreError(UigError, ValueError):
    """A scorer returned scores of the wrong shape or with NaN values."""


def _as_history(value: History | Sequence[Collection[int]], n_items: int, what: str) -> History:
    if isinstance(value, History):
        if value.n_items != n_items:
            raise EvaluationInputError(f"{what} is over {value.n_items} items, the evaluation over {n_items}")
        return value
    return History.from_lists(value, n_items)



# --------------------------------------------------------------------------------------------
# Scorers


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores all items for a batch of users.

    ``score(users, history)`` gets global user indices [B] and the *input* history of every user
    (a :class:`History`: interactions strictly before the evaluated window) and returns float
    scores [B, n_items], higher is better. A user's scores may depend only on the model and on
    ``history.items_of(user)`` — so a user the model never trained on is scored from their
    history (fold-in) and results do not depend on batching. Must not modify its arguments;
    masking of history items is done by :func:`evaluate`.
    """

    def score(self, users: Tensor, history: History) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# Metrics


def rank_items(scores: Tensor, k: int) -> Tensor:
    """Top-``k`` item indices per row, best first; ties go to the lower item index.

    A stable descending sort rather than ``torch.topk``, whose order among equal scores is
    unspecified: popularity-like scorers have many ties, and the protocol must be deterministic.
    Entries whose score is ``-inf`` (masked) are returned as ``-1``.
    """
    if scores.dim() != 2:
        raise ScoreError(f"scores must be [n_users, n_items], got shape {tuple(scores.shape)}")
    k = min(k, scores.size(1))
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    ranked = order[:, :k].clone()
    ranked[values[:, :k] == float("-inf")] = -1
    return ranked


def _as_ranking(ranked_or_scores: Tensor, k: int) -> Tensor:
    if ranked_or_scores.is_floating_point():
        return rank_items(ranked_or_scores, k)
    if ranked_or_scores.dim() != 2:
        raise EvaluationInputError(f"ranked lists must be [n_users, K], got shape {tuple(ranked_or_scores.shape)}")
    return ranked_or_scores[:, :k].long()


def _hits(ranked: Tensor, relevant: Tensor | Sequence[Collection[int]]) -> tuple[Tensor, Tensor]:
    """hits [B, K] (float64, 1 where the ranked item is relevant) and |relevant| [B] (float64)."""
    valid = ranked >= 0
    if isinstance(relevant, Tensor):
        if relevant.dim() != 2 or relevant.size(0) != ranked.size(0):
            raise EvaluationInputError("relevant must be a [n_users, n_items] boolean matrix matching the ranking")
        rel = relevant.bool()
        hits = rel.gather(1, ranked.clamp_min(0)) & valid
        return hits.double(), rel.sum(1).double()
    if len(relevant) != ranked.size(0):
        raise EvaluationInputError(f"{len(relevant)} relevant sets for {ranked.size(0)} ranked lists")
    sets = [set(int(i) for i in r) for r in relevant]
    hits = torch.tensor([[int(i) in s for i in row] for row, s in zip(ranked.tolist(), sets)], dtype=torch.bool)
    hits = hits.reshape(ranked.shape) & valid
    return hits.double(), torch.tensor([len(s) for s in sets], dtype=torch.float64)


def _discounts(k: int) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))


def _metrics_from_hits(hits: Tensor, n_rel: Tensor, k: int) -> dict[str, Tensor]:
    """Per-user binary-relevance metrics at ``k`` from the first ``k`` columns of ``hits``; 0 where n_rel = 0."""
    h = hits[:, :k]
    found = h.sum(1)
    safe = n_rel.clamp_min(1)
    disc = _discounts(k)
    dcg = (h * disc[: h.size(1)]).sum(1)
    ideal_cum = torch.cat([torch.zeros(1, dtype=torch.float64), disc.cumsum(0)])
    idcg = ideal_cum[n_rel.clamp(max=k).long()]
    first = torch.where(h.any(1), h.argmax(1).double() + 1, torch.full_like(found, math.inf))
    has_rel = n_rel > 0
    zero = torch.zeros_like(found)
    return {
        "recall": torch.where(has_rel, found / safe, zero),
        "ndcg": torch.where(has_rel, dcg / idcg.clamp_min(1e-12), zero),
        "mrr": torch.where(has_rel, 1.0 / first, zero),
        "hit": (found > 0).double(),
        "precision": found / k,
    }


def ranking_metrics(ranked: Tensor, relevant: Tensor, k: int) -> dict[str, Tensor]:
    """Every per-user metric of :data:`METRICS` at ``k`` for ranked lists [B, ≥k] (-1 = no item)
    against a bool [B, n_items] relevance matrix — the one definition every protocol uses."""
    hits, n_rel = _hits(ranked, relevant)
    return _metrics_from_hits(hits, n_rel, k)


def recall_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user |top-k ∩ relevant| / |relevant| (0 for a user without relevant items).

    ``ranked_or_scores``: either ranked item indices [B, ≥k] (int; -1 = no item) or scores
    [B, n_items] (float; ranked with :func:`rank_items`). ``relevant``: bool [B, n_items] or one
    collection of item indices per user.
    """
    return _metric("recall", ranked_or_scores, relevant, k)


def precision_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user |top-k ∩ relevant| / k (same inputs as :func:`recall_at_k`)."""
    return _metric("precision", ranked_or_scores, relevant, k)


def hit_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user 1 if any relevant item is in the top k, else 0."""
    return _metric("hit", ranked_or_scores, relevant, k)


def mrr_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user 1 / rank of the first relevant item within the top k, 0 if there is none."""
    return _metric("mrr", ranked_or_scores, relevant, k)


def ndcg_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user binary NDCG: Σ_{rank r ≤ k, relevant} 1/log2(r+1) over the ideal DCG of min(|relevant|, k) hits."""
    return _metric("ndcg", ranked_or_scores, relevant, k)


def _metric(name: str, ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    if k < 1:
        raise EvaluationInputError(f"k must be at least 1, got {k}")
    hits, n_rel = _hits(_as_ranking(ranked_or_scores, k), relevant)
    return _metrics_from_hits(hits, n_rel, k)[name]


def coverage(ranked_or_scores: Tensor, n_items: int, k: int) -> float:
    """Fraction of the ``n_items`` catalog that appears in at least one user's top k."""
    ranked = _as_ranking(ranked_or_scores, k)
    shown = ranked[ranked >= 0].unique()
    return float(shown.numel()) / n_items


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    scorer: Scorer,
    history: History | Sequence[Collection[int]],
    targets: History | Sequence[Collection[int]],
    n_items: int,
    ks: Sequence[int] = (10, 20),
    users: Sequence[int] | np.ndarray | Tensor | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Full-ranking metrics of ``scorer`` on ``targets``, averaged over users.

    For each evaluated user all ``n_items`` items are scored, the user's ``history`` items are
    masked with ``-inf`` and the top ``max(ks)`` are ranked (:func:`rank_items`). A target item
    that is also in the history cannot be recommended and is dropped; users are evaluated if
    they have at least one remaining target (``users`` restricts them further). Returns
    ``"{metric}@{k}"`` means for every metric in :data:`METRICS`, ``"coverage@{k}"`` over the
    evaluated users' lists, and ``"n_users"``.
    """
    hist = _as_history(history, n_items, "history")
    tgt = _as_history(targets, n_items, "targets")
    if hist.n_users != tgt.n_users:
        raise EvaluationInputError(f"history has {hist.n_users} users, targets {tgt.n_users}; use one user index")
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise EvaluationInputError(f"ks must be positive integers, got {ks}")
    candidates = tgt.users_with_items()
    if users is not None:
        wanted = np.asarray(users.cpu() if isinstance(users, Tensor) else users, dtype=np.int64)
        candidates = np.intersect1d(candidates, wanted)
    if candidates.size == 0:
        raise EmptyEvaluationError("no user to evaluate: none of the requested users has a target item")
    k_max = max(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in METRICS}
    shown = {k: torch.zeros(n_items, dtype=torch.bool) for k in ks}
    n_eval = 0
    with torch.no_grad():
        for start in range(0, candidates.size, batch_size):
            batch = torch.from_numpy(candidates[start : start + batch_size])
            scores = _checked_scores(scorer.score(batch, hist), len(batch), n_items)
            rows, items = hist.pairs(batch)
            scores[rows, items] = float("-inf")
            relevant = tgt.dense(batch, dtype=torch.bool)
            relevant[rows, items] = False  # a target already in the history cannot be recommended
            n_rel = relevant.sum(1)
            keep = n_rel > 0
            if not keep.any():
                continue
            ranked = rank_items(scores[keep], k_max)
            hits, n_rel_k = _hits(ranked, relevant[keep])
            n_eval += int(keep.sum())
            for k in ks:
                for m, values in _metrics_from_hits(hits, n_rel_k, k).items():
                    sums[f"{m}@{k}"] += float(values.sum())
                top = ranked[:, :k]
                shown[k][top[top >= 0]] = True
    if n_eval == 0:
        raise EmptyEvaluationError("every target of the requested users is already in their history")
    out = {name: total / n_eval for name, total in sums.items()}
    for k in ks:
        out[f"coverage@{k}"] = float(shown[k].sum()) / n_items
    out["n_users"] = float(n_eval)
    return out


def _checked_scores(scores: Tensor, n_users: int, n_items: int) -> Tensor:
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (n_users, n_items):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ScoreError(f"scorer returned {shape}, expected a [{n_users}, {n_items}] tensor")
    out = scores.detach().to(device="cpu", dtype=torch.float32).clone()  # never mask the scorer's own tensor
    if torch.isnan(out).any():
        raise ScoreError("scorer returned NaN scores; check the model for divergence or empty-history users")
    return out


def evaluate_all_and_warm(
    scorer: Scorer,
    history: History | Sequence[Collection[int]],
    targets: History | Sequence[Collection[int]],
    n_items: int,
    warm_users: Sequence[int] | np.ndarray | Tensor,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 512,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` over all target users and over the warm ones (``warm_users``: those with a training interaction)."""
    return {
        "all": evaluate(scorer, history, targets, n_items, ks, None, batch_size),
        "warm": evaluate(scorer, history, targets, n_items, ks, warm_users, batch_size),
    }


@dataclass(frozen=True)
class ValidationSet:
    """What early stopping evaluates on: input history (train), targets (validation) and users."""

    history: History
    targets: History
    users: np.ndarray | None = None

    @classmethod
    def from_split(cls, split: EncodedSplit) -> ValidationSet:
        """Train as input, the validation window as targets; checks the train side of the leakage guard."""
        check_no_leakage(split.train, split.valid_start, "train")
        return cls(split.train.history(), split.valid.history())

    def evaluate(self, scorer: Scorer, ks: Sequence[int] = (10,)) -> dict[str, float]:
        return evaluate(scorer, self.history, self.targets, self.history.n_items, ks, self.users)


def metric_names(ks: Sequence[int] = (10, 20)) -> list[str]:
    """The keys :func:`evaluate` returns, in a stable order."""
    return [f"{m}@{k}" for k in ks for m in METRICS] + [f"coverage@{k}" for k in ks]

