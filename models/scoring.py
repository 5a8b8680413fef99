"""The fitted UIG GCN as a scorer: its settings, the popularity prior, fold-in scoring, its state.

The score of item ``i`` for user ``u`` is

    s(u, i) = α · ⟨ē_u, f_i⟩ + b_i + λ · log(1 + pop_i(as_of)) + γ · Σ_j w̃_uj · c(j, i)

* ``f`` are the final item embeddings of :class:`~models.gcn.InterestGCN` (LightGCN propagation
  over users, items, genres and KG entities of the stored interest graph,
  :mod:`models.graph`; items start from their text embedding, so an item nobody has touched
  still has one);
* ``ē_u`` is the recency-weighted mean of ``f`` over the user's input history
  (:func:`models.propagation.fold_in`): an item last touched ``age`` ago weighs
  ``decay_factor(age, fold_in_half_life_days)``, so recent behaviour counts more and the user's
  representation moves when the user does (``inf`` = the plain mean). No user parameters, so a
  user the model never saw is scored from their history and one without any history by the item
  terms alone;
* ``b`` is a learned item bias;
* ``c(j, i)`` is the cosine of items ``j`` and ``i`` over the interest graph's user–item edges
  (the two-hop paths item → user → item, each item keeping its ``cooccurrence_neighbours``
  nearest), summed over the user's history items ``j`` with the same recency weights ``w̃``
  normalised to sum to 1 — the short-term part of the user: what goes with what they did last;
* ``pop(as_of)`` is the time-decayed popularity of the input events before ``as_of`` (each
  event weighs ``decay_factor(age, half-life)``) — a non-learned input that
  :meth:`UigGCNScorer.with_inputs` recomputes at every window start, without retraining.

Why the prior: under a global temporal split most test users joined after the cut and have no
input at all, so a non-personalised ranking is all anyone can give them, and what is popular
*now* predicts better than what was popular over the whole past.

A registered model is loaded with this module alone (:meth:`UigGCNScorer.from_state`); its
training is :mod:`models.training`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from uig_common.errors import InputError
from uig_common.timeutil import decay_factor

from models.bpr import check_training_args
from models.evaluation import History, Interactions, check_no_leakage, rank_items
from models.gcn import EDGE_WEIGHTS, InterestGCN, PropagationGraph, score
from models.graph import ITEM_ENTITY, ITEM_GENRE, USER_ITEM
from models.propagation import cosine_neighbours, fold_in, recency_weights

__all__ = ["GCNTrainConfig", "GCNTrainError", "UigGCNScorer", "decayed_popularity"]

STATE_FORMAT = 2
#: ``module:callable`` that rebuilds a scorer from :meth:`UigGCNScorer.to_state` (the registry reads it).
STATE_LOADER = "models.scoring:UigGCNScorer.from_state"


class GCNTrainError(InputError):
    """The UIG GCN was given unusable data, settings or a state it cannot load."""


@dataclass(frozen=True)
class GCNTrainConfig:
    """Hyperparameters of :func:`models.training.fit_uig_gcn`; the defaults were chosen on the
    MovieLens-100k validation window (train → validation, never the test window;
    ``bench/quality.py --select`` shows the numbers)."""

    dim: int = 64
    num_layers: int = 2
    epochs: int = 30
    batch_size: int = 2048
    lr: float = 5e-3
    reg: float = 1e-4
    patience: int = 3
    metric: str = "ndcg@10"
    seed: int = 0
    prior_half_life_days: float = 14.0  # half-life of the popularity prior; inf = plain counts
    prior_weight: float = 1.0  # λ; 0 switches the prior off
    topic_weight: float = 1.0  # weight of an item–topic edge relative to a user–item edge; 0 = no topics
    personal_weight: float = 0.05  # α: weight of the personal term ⟨ē_u, f_i⟩ at scoring time
    fold_in_half_life_days: float = 1.0  # recency of ē_u: half-life of a history item's weight
    cooccurrence_weight: float = 1.0  # γ: weight of the recency-weighted two-hop item–item term
    cooccurrence_neighbours: int = 50  # neighbours each item keeps in that term
    edge_weights: str = "unit"  # user–item edges in propagation: the graph's "affinity" weights or "unit"

    def to_params(self) -> dict[str, object]:
        """Flat name → value, for MLflow ``log_params``."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        check_training_args(self.epochs, self.batch_size, self.patience, self.dim, self.metric, GCNTrainError)
        if self.num_layers < 0:
            raise GCNTrainError(f"num_layers must be >= 0, got {self.num_layers}")
        if self.cooccurrence_neighbours < 1:
            raise GCNTrainError(f"cooccurrence_neighbours must be >= 1, got {self.cooccurrence_neighbours}")
        for name in ("lr", "reg", "prior_weight", "topic_weight", "personal_weight", "cooccurrence_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise GCNTrainError(f"{name} must be a finite number >= 0 (lr > 0), got {value}")
        if not self.fold_in_half_life_days > 0:
            raise GCNTrainError(f"fold_in_half_life_days must be > 0 (inf for the plain mean), got {self.fold_in_half_life_days}")
        if not self.prior_half_life_days > 0:
            raise GCNTrainError(f"prior_half_life_days must be > 0 (inf for plain counts), got {self.prior_half_life_days}")
        if self.edge_weights not in EDGE_WEIGHTS:
            raise GCNTrainError(f"edge_weights must be one of {EDGE_WEIGHTS}, got {self.edge_weights!r}")


# --------------------------------------------------------------------------------------------
# The non-learned prior


def decayed_popularity(
    item_ids: np.ndarray, ts: np.ndarray, n_items: int, as_of: float, half_life_days: float
) -> np.ndarray:
    """Σ over events strictly before ``as_of`` of ``decay_factor(as_of - ts, half-life)``, per item (float64).

    ``half_life_days = inf`` gives plain counts. Events at or after ``as_of`` are ignored.
    """
    item_ids, ts = np.asarray(item_ids, dtype=np.int64), np.asarray(ts, dtype=np.float64)
    before = ts < as_of
    weights = decay_factor(as_of - ts[before], half_life_days)
    return np.bincount(item_ids[before], weights=weights, minlength=n_items).astype(np.float64)


def popularity_prior(inputs: Interactions, as_of: float, half_life_days: float) -> Tensor:
    """``log(1 + decayed popularity)`` of the inputs at ``as_of``, float32 [n_items]."""
    pop = decayed_popularity(inputs.item_ids, inputs.ts, inputs.n_items, as_of, half_life_days)
    return torch.from_numpy(np.log1p(pop).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Scorer


class UigGCNScorer:
    """A fitted UIG GCN as a :class:`~models.evaluation.Scorer` (formula in the module docstring).

    ``graph`` is the interest graph it was trained on (item text on its item nodes); the model
    propagates over it as ``config.edge_weights`` says. A fresh scorer from
    :func:`~models.training.fit_uig_gcn` carries the prior of the train window at the graph's
    cut (the validation start); call :meth:`with_inputs` with everything before a window to
    score it.
    """

    def __init__(
        self,
        config: GCNTrainConfig,
        item_ids: tuple[Hashable, ...],
        model: InterestGCN,
        graph: HeteroData,
        topic_ids: tuple[str, ...],
        prior: Tensor,
        as_of: float,
    ) -> None:
        self.config = config
        self.item_ids = tuple(item_ids)
        self.model = model
        self.graph = graph
        self.topic_ids = topic_ids
        self.prior = prior
        self.as_of = float(as_of)
        self._propagation: PropagationGraph | None = None
        self._items: Tensor | None = None
        self._neighbours: tuple[int, Tensor] | None = None
        #: Interest communities of the training window (models.communities.Community.to_dict rows).
        self.communities: list[dict[str, Any]] = []

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def item_text(self) -> Tensor:
        """Layer-0 text vectors [n_items, d] (the item features of the graph)."""
        return self.graph["item"].x

    def propagation(self) -> PropagationGraph:
        """The sparse operators of the training graph, built once."""
        if self._propagation is None:
            self._propagation = PropagationGraph.from_graph(self.graph, self.config.topic_weight, self.config.edge_weights)
        return self._propagation

    def forget_embeddings(self) -> None:
        """Drop the cached item embeddings (after the parameters changed)."""
        self._items = None

    def item_embeddings(self) -> Tensor:
        """Final item embeddings [n_items, dim] (cached; items without interactions from text and topics)."""
        if self._items is None:
            with torch.no_grad():
                self._items = self.model(self.item_text, self.propagation())
        return self._items

    def item_neighbours(self) -> Tensor:
        """``c`` [n_items, n_items]: each item's nearest items over the graph's user–item edges (cached)."""
        k = self.config.cooccurrence_neighbours
        if self._neighbours is None or self._neighbours[0] != k:
            rows, items = self.graph[USER_ITEM].edge_index
            self._neighbours = (k, cosine_neighbours(rows, items, int(self.graph["user"].num_nodes), self.n_items, k))
        return self._neighbours[1]

    def item_scores(self) -> Tensor:
        """The user-independent part of the score: bias + λ · prior, [n_items]."""
        return self.model.item_bias.detach() + self.config.prior_weight * self.prior

    def recency_of(self, ages_seconds: Sequence[float]) -> list[float]:
        """One user's recency weights of history items of these ages (newest = 1), as the fold-in weighs them."""
        ages = np.asarray(ages_seconds, dtype=np.float64)
        return recency_weights(np.zeros(ages.size, dtype=np.int64), ages, self.config.fold_in_half_life_days).tolist()

    def _score(self, rows: np.ndarray, items: np.ndarray, ages: np.ndarray, n_users: int, prior: Tensor) -> Tensor:
        weights = recency_weights(rows, ages, self.config.fold_in_half_life_days)
        return self.score_profiles(rows, items, weights, n_users, prior)

    def score_profiles(self, rows: np.ndarray, items: np.ndarray, weights: Tensor, n_users: int, prior: Tensor) -> Tensor:
        """Scores [n_users, n_items] of users given as weighted item profiles — ``(rows, items,
        weights)``: row ``r`` holds item ``items[k]`` with weight ``weights[k] > 0`` — and a prior.
        What every other scoring method reduces to, and what an update policy that edits a user's
        profile (decay, add, prune) scores with."""
        pairs = torch.stack([torch.from_numpy(np.asarray(rows, dtype=np.int64)),
                             torch.from_numpy(np.asarray(items, dtype=np.int64))])
        weights = torch.as_tensor(weights, dtype=torch.float32)
        with torch.no_grad():
            users_v = self.config.personal_weight * fold_in(pairs, weights, self.item_embeddings(), n_users)
            bias = self.model.item_bias.detach() + self.config.prior_weight * prior
            scores = score(users_v, self.item_embeddings(), bias)
            if self.config.cooccurrence_weight > 0 and pairs.size(1):
                totals = torch.zeros(n_users).index_add_(0, pairs[0], weights)
                profile = torch.zeros(n_users, self.n_items)
                profile.index_put_((pairs[0], pairs[1]), weights / totals[pairs[0]].clamp_min(1e-12), accumulate=True)
                scores = scores + self.config.cooccurrence_weight * (profile @ self.item_neighbours())
            return scores

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor:
        """Scores of ``users`` from ``inputs`` (every event before ``as_of``): recency-weighted
        fold-in and the popularity prior both taken at ``as_of`` — a :class:`models.rolling.RollingScorer`."""
        if tuple(inputs.items) != self.item_ids:
            raise GCNTrainError("inputs are over a different item index than the model; use the split it was fitted on")
        check_no_leakage(inputs, as_of, "scorer input")
        rows, items, last_ts = inputs.last_events(users)
        prior = popularity_prior(inputs, float(as_of), self.config.prior_half_life_days)
        return self._score(rows, items, float(as_of) - last_ts, len(users), prior)

    def score(self, users: Tensor, history: History) -> Tensor:
        if history.n_items != self.n_items:
            raise GCNTrainError(
                f"the model ranks {self.n_items} items but the history is over {history.n_items}; "
                "score with the item index it was fitted on"
            )
        rows, items = history.pairs(users)
        return self._score(rows.numpy(), items.numpy(), np.zeros(rows.numel()), len(users), self.prior)

    def with_inputs(self, inputs: Interactions, as_of_seconds: float) -> UigGCNScorer:
        """This model with the prior recomputed from ``inputs`` (all strictly before ``as_of_seconds``).

        No retraining: only the non-learned popularity prior changes. Raises
        :class:`~models.evaluation.LeakageError` if an input is at or after ``as_of_seconds``.
        """
        if tuple(inputs.items) != self.item_ids:
            raise GCNTrainError("inputs are over a different item index than the model; use the split it was fitted on")
        check_no_leakage(inputs, as_of_seconds, "scorer input")
        prior = popularity_prior(inputs, float(as_of_seconds), self.config.prior_half_life_days)
        return self._sharing_model(self.config, prior, as_of_seconds)

    def _sharing_model(self, config: GCNTrainConfig, prior: Tensor, as_of: float) -> UigGCNScorer:
        """A scorer with other scoring inputs over the same parameters and cached embeddings."""
        other = UigGCNScorer(config, self.item_ids, self.model, self.graph, self.topic_ids, prior, as_of)
        other._propagation, other._items = self._propagation, self._items
        other._neighbours = self._neighbours
        other.communities = self.communities
        return other

    def with_prior_weight(self, prior_weight: float) -> UigGCNScorer:
        """This model scoring with another weight λ of the popularity prior (no retraining): what an
        environment that judges profiles uses when, at the trained λ, the prior ranks nearly alone."""
        if not prior_weight >= 0:
            raise GCNTrainError(f"prior_weight must be >= 0, got {prior_weight}")
        return self._sharing_model(dataclasses.replace(self.config, prior_weight=float(prior_weight)), self.prior,
                                   self.as_of)

    def recommend(
        self, histories: Sequence[Sequence[Hashable]], k: int = 10, ages_seconds: Sequence[Sequence[float]] | None = None,
        weights: Sequence[Sequence[float]] | None = None,
    ) -> list[list[tuple[Hashable, float]]]:
        """Top-``k`` ``(item_id, score)`` per user, best first, from item-id histories (fold-in).

        ``ages_seconds`` (parallel to ``histories``: how long ago each item was last touched)
        weighs the fold-in by recency as :meth:`score_at` does; without it every item weighs the
        same. ``weights`` (parallel too) gives the fold-in weights directly — an update policy's
        profile; an item of weight 0 is not folded in but still never recommended. A history's own items are never recommended; ids outside the model's item index are
        ignored (an item the model never saw cannot be folded in). An empty history gets the
        non-personalised ranking (bias + prior).
        """
        if k < 1:
            raise GCNTrainError(f"k must be >= 1, got {k}")
        if not histories:
            return []
        for given, what in ((ages_seconds, "ages_seconds"), (weights, "weights")):
            if given is not None and [len(a) for a in given] != [len(h) for h in histories]:
                raise GCNTrainError(f"{what} must give one value per history item")
        index = {item: i for i, item in enumerate(self.item_ids)}
        newest: dict[tuple[int, int], float] = {}
        for row, history in enumerate(histories):
            ages = ages_seconds[row] if ages_seconds is not None else [0.0] * len(history)
            for item, age in zip(history, ages):
                if item in index:
                    key = (row, index[item])
                    newest[key] = min(newest.get(key, math.inf), float(age))
        keys = sorted(newest)
        rows = np.array([r for r, _ in keys], dtype=np.int64)
        items = np.array([i for _, i in keys], dtype=np.int64)
        if weights is not None:
            given = {(row, index[item]): float(w) for row, history in enumerate(histories)
                     for item, w in zip(history, weights[row]) if item in index}
            profile = torch.tensor([given[key] for key in keys], dtype=torch.float32)
            folded = profile > 0
            scores = self.score_profiles(rows[folded.numpy()], items[folded.numpy()], profile[folded],
                                         len(histories), self.prior).clone()
        else:
            ages_arr = np.array([newest[key] for key in keys], dtype=np.float64)
            scores = self._score(rows, items, ages_arr, len(histories), self.prior).clone()
        history = History.from_pairs(rows, items, len(histories), self.n_items)
        rows, items = history.pairs()
        scores[rows, items] = float("-inf")
        ranked = rank_items(scores, k)
        top_scores = scores.gather(1, ranked.clamp_min(0)).tolist()  # one gather, not an element at a time
        return [[(self.item_ids[i], s) for i, s in zip(top, row_scores) if i >= 0]
                for top, row_scores in zip(ranked.tolist(), top_scores)]

    # ---- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything scoring needs, as plain values and tensors (``torch.save``-able, weights_only).

        The training graph travels as ``HeteroData.to_dict()`` (node counts, edges with their
        affinity weights, item text) — user indices only, never user keys.
        """
        return {
            "format": STATE_FORMAT,
            "loader": STATE_LOADER,
            "config": self.config.to_params(),
            "item_ids": list(self.item_ids),
            "topic_ids": list(self.topic_ids),
            "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "graph": self.graph.clone().to_dict(),
            "prior": self.prior.clone(),
            "as_of": self.as_of,
            "communities": [dict(c) for c in self.communities],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UigGCNScorer:
        """Rebuild a scorer saved by :meth:`to_state`; it scores bit-identically on the same machine.

        States of format 1 (before the graph travelled in the state; unit edge weights) load too.
        """
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        if found not in (1, STATE_FORMAT):
            raise GCNTrainError(f"not a UIG GCN state of format {STATE_FORMAT} (found {found!r}); save it with to_state")
        graph = _graph_of_format_1(state) if found == 1 else HeteroData.from_dict(state["graph"])
        config = GCNTrainConfig(**{**state["config"], **({"edge_weights": "unit"} if found == 1 else {})})
        text = graph["item"].x
        model = InterestGCN(len(state["item_ids"]), graph["genre"].num_nodes, graph["entity"].num_nodes, text.size(1),
                            config.dim, config.num_layers)
        model.load_state_dict(state["state_dict"])
        model.eval()
        scorer = cls(config, tuple(state["item_ids"]), model, graph, tuple(state["topic_ids"]), state["prior"],
                     float(state["as_of"]))
        scorer.communities = [dict(c) for c in state.get("communities", [])]
        return scorer


def _graph_of_format_1(state: dict[str, Any]) -> HeteroData:
    """The graph a format-1 state scored with: its user–item pairs (weight 1) and item–topic pairs."""
    n_genres, item_topic = int(state["n_genres"]), state["item_topic"]
    genre = item_topic[1] < n_genres
    data = HeteroData()
    data["user"].num_nodes = int(state["n_users"])
    data["item"].num_nodes = len(state["item_ids"])
    data["item"].x = state["item_text"]
    data["genre"].num_nodes = n_genres
    data["entity"].num_nodes = int(state["n_entities"])
    data[USER_ITEM].edge_index = state["user_item"]
    data[USER_ITEM].edge_weight = torch.ones(state["user_item"].size(1))
    data[ITEM_GENRE].edge_index = item_topic[:, genre]
    data[ITEM_ENTITY].edge_index = torch.stack([item_topic[0, ~genre], item_topic[1, ~genre] - n_genres])
    return data
