"""The baselines of the rolling protocol (:mod:`models.rolling`), each a ``RollingScorer``.

Every model reads the user's history *with its times* at each step, so each can follow the
user as far as its design allows; what each one refreshes:

* :class:`DecayedPopularity` — time-decayed item counts of all events before the step (the
  same for every user); fresh = recomputed every step.
* :class:`RecentItemKNN` — item-based kNN (cosine on the train window's user–item matrix,
  Deshpande & Karypis 2004) summed over the user's history items, each weighted by recency.
* :class:`FoldInRecommender` — BPR-MF or LightGCN trained on the train window; the user
  vector is the recency-weighted mean of the item vectors of the user's history (``fold_in =
  "all"``), or the trained vector for users seen in training and the fold-in for the others
  (``"unseen"``).
* SASRec (:mod:`models.sequential`) and the UIG GCN
  (:meth:`models.scoring.UigGCNScorer.score_at`) implement ``score_at`` themselves.

:class:`AtFixedInputs` turns any of them back into a static :class:`~models.evaluation.Scorer`
with fixed inputs, for the one-cut protocol of :mod:`models.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.baselines import BPRMF, BaselineInputError, ItemKNN, LightGCNBaseline
from models.interactions import EncodedSplit, History, Interactions
from models.propagation import fold_in, recency_weights
from models.scoring import decayed_popularity
from uig_common.names import ROLLING_BASELINES

__all__ = ["ROLLING_BASELINES", "AtFixedInputs", "DecayedPopularity", "FoldInRecommender", "RecentItemKNN",
           "fit_rolling_baseline"]


def _check_items(inputs: Interactions, n_items: int, what: str) -> None:
    if inputs.n_items != n_items:
        raise BaselineInputError(f"{what} was fitted over {n_items} items but the inputs are over {inputs.n_items}")


def _recent_pairs(users: np.ndarray, inputs: Interactions, as_of: float, half_life_days: float
                  ) -> tuple[Tensor, Tensor]:
    """``([2, pairs] (row, item), recency weights)`` of the users' histories at ``as_of``."""
    rows, items, last_ts = inputs.last_events(users)
    pairs = torch.stack([torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(items.astype(np.int64))])
    return pairs, recency_weights(rows, as_of - last_ts, half_life_days)


@dataclass(frozen=True)
class DecayedPopularity:
    """Each item's events before ``as_of``, each weighing ``decay_factor(age, half_life_days)``."""

    half_life_days: float = 14.0

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor:
        pop = decayed_popularity(inputs.item_ids, inputs.ts, inputs.n_items, as_of, self.half_life_days)
        return torch.from_numpy(pop.astype(np.float32)).unsqueeze(0).repeat(len(users), 1)


class RecentItemKNN:
    """Item-kNN over the user's history, item ``i`` weighing ``decay_factor(age of i, half-life)``.

    The similarity (``k`` neighbours per item) is fitted once on the train window; a user without
    history gets the decayed popularity at ``as_of``.
    """

    def __init__(self, k: int = 100, half_life_days: float = 1.0, popularity_half_life_days: float = 14.0) -> None:
        self.knn = ItemKNN(k)
        self.half_life_days = half_life_days
        self.popularity = DecayedPopularity(popularity_half_life_days)

    def fit(self, train: Interactions) -> RecentItemKNN:
        self.knn.fit(train)
        return self

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor:
        similarity = self.knn.similarity
        if similarity is None:
            raise BaselineInputError("RecentItemKNN.score_at called before fit")
        _check_items(inputs, similarity.size(0), "RecentItemKNN")
        pairs, weights = _recent_pairs(users, inputs, as_of, self.half_life_days)
        profile = torch.zeros(len(users), inputs.n_items)
        profile[pairs[0], pairs[1]] = weights
        scores = profile @ similarity
        empty = torch.bincount(pairs[0], minlength=len(users)) == 0
        if empty.any():
            scores[empty] = self.popularity.score_at(users[empty.numpy()], inputs, as_of)
        return scores


class FoldInRecommender:
    """A trained BPR-MF or LightGCN scored by recency-weighted fold-in (module docstring)."""

    def __init__(self, model: BPRMF | LightGCNBaseline, half_life_days: float = float("inf"),
                 fold_in: str = "all") -> None:
        if fold_in not in ("all", "unseen"):
            raise BaselineInputError(f"fold_in must be 'all' or 'unseen', got {fold_in!r}")
        self.model, self.half_life_days, self.fold_in = model, half_life_days, fold_in

    def _vectors(self) -> tuple[Tensor, Tensor, Tensor]:
        if isinstance(self.model, LightGCNBaseline):
            users, items = self.model.final_embeddings()
        elif self.model.model is not None:
            users, items = self.model.model.user.weight.detach(), self.model.model.item.weight.detach()
        else:
            raise BaselineInputError("FoldInRecommender needs a fitted model")
        assert self.model.known is not None
        return users, items, self.model.known

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor:
        user_vectors, item_vectors, known = self._vectors()
        _check_items(inputs, item_vectors.size(0), "FoldInRecommender")
        pairs, weights = _recent_pairs(users, inputs, as_of, self.half_life_days)
        with torch.no_grad():
            vectors = fold_in(pairs, weights, item_vectors, len(users))
            index = torch.from_numpy(np.asarray(users, dtype=np.int64))
            has_history = torch.bincount(pairs[0], minlength=len(users)) > 0
            use_trained = known[index] & (~has_history | (self.fold_in == "unseen"))
            vectors[use_trained] = user_vectors[index[use_trained]]
            average = ~has_history & ~known[index]
            if average.any():  # no history and never trained: the average training user
                vectors[average] = user_vectors[known].mean(0)
            return vectors @ item_vectors.T


@dataclass(frozen=True)
class AtFixedInputs:
    """A ``RollingScorer`` with its inputs fixed, as a static ``Scorer`` (``score(users, history)``)."""

    model: object
    inputs: Interactions
    as_of: float

    def score(self, users: Tensor, history: History) -> Tensor:
        return self.model.score_at(np.asarray(users.cpu(), dtype=np.int64), self.inputs, self.as_of)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# The baselines as `uig evaluate --rolling` fits them: settings chosen on the rolling validation
# protocol (daily step, fresh NDCG@10) by bench/freshness.py — see its section of bench/RESULTS.md.

POPULARITY_HALF_LIFE_DAYS = 7.0
KNN_NEIGHBOURS, KNN_HALF_LIFE_DAYS = 200, 1.0
BPR_FOLD_IN, BPR_HALF_LIFE_DAYS = "unseen", float("inf")
LIGHTGCN_FOLD_IN, LIGHTGCN_HALF_LIFE_DAYS = "unseen", float("inf")


def fit_rolling_baseline(name: str, data: EncodedSplit, seed: int = 0, sasrec_epochs: int = 40) -> object:
    """One baseline of :data:`ROLLING_BASELINES`, fitted on ``data``'s train window (early stopping
    on its validation window: the static metric for BPR-MF and LightGCN, the rolling one for SASRec)."""
    from models.evaluation import ValidationSet
    from models.rolling import FRESH, rolling_protocol
    from models.sequential import SASRec, SASRecConfig

    if name == "decayed-popularity":
        return DecayedPopularity(POPULARITY_HALF_LIFE_DAYS)
    if name == "recency-item-knn":
        return RecentItemKNN(KNN_NEIGHBOURS, KNN_HALF_LIFE_DAYS).fit(data.train)
    if name == "bpr-mf":
        return FoldInRecommender(BPRMF(seed=seed).fit(data.train, ValidationSet.from_split(data)),
                                 BPR_HALF_LIFE_DAYS, BPR_FOLD_IN)
    if name == "lightgcn":
        return FoldInRecommender(LightGCNBaseline(seed=seed).fit(data.train, ValidationSet.from_split(data)),
                                 LIGHTGCN_HALF_LIFE_DAYS, LIGHTGCN_FOLD_IN)
    if name == "sasrec":
        everything = data.before_test
        def on_epoch(model: SASRec) -> float:
            result = rolling_protocol(everything, data.valid_start, data.test_start, "1d", {"m": model},
                                      {"fresh": FRESH})
            return result.summary()["m"]["fresh"]["ndcg@10"]
        return SASRec(SASRecConfig(epochs=sasrec_epochs, seed=seed), device="cpu").fit(data.train, on_epoch)
    raise BaselineInputError(f"unknown rolling baseline {name!r}; choose from {', '.join(ROLLING_BASELINES)}")
