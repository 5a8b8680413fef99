"""Training and scoring of the UIG GCN (:class:`models.gcn.InterestGCN`) under the offline protocol.

The score of item ``i`` for user ``u`` is

    s(u, i) = α · ⟨ē_u, f_i⟩ + b_i + λ · log(1 + pop_i(as_of))

* ``f`` are the final item embeddings of :class:`~models.gcn.InterestGCN` (LightGCN propagation
  over users, items, genres and KG entities; items start from their text embedding, so an item
  nobody has touched still has one);
* ``ē_u`` is the mean of ``f`` over the user's input history — no user parameters, so a user
  the model never saw is scored from their history (fold-in) and one without any history by the
  item terms alone;
* ``b`` is a learned item bias;
* ``pop(as_of)`` is the time-decayed popularity of the input events before ``as_of`` (each
  event weighs ``2^(-age / half-life)``) — a non-learned input that
  :meth:`UigGCNScorer.with_inputs` recomputes at every window start, without retraining.

Why the prior: under a global temporal split most test users joined after the cut and have no
input at all, so a non-personalised ranking is all anyone can give them, and what is popular
*now* predicts better than what was popular over the whole past.

Training: BPR (Rendle et al., UAI 2009) on the train window with uniform negatives
(:class:`models.baselines._BPRSampler`), all terms at full weight (α = 1). The user vector of a
training pair ``(u, i)`` is the mean over the user's items *strictly earlier* than ``i`` — the
situation of fold-in at test time, where only the past is known (FISM, Kabbur et al., KDD 2013,
leaves the target out; here the future is left out too). A user's first pair therefore trains
the non-personalised part (bias over prior), as a user without history is scored. The prior of
a training pair is the one of its own day (events before that day's start), so the bias learns
what the contemporaneous popularity does not explain. Early stopping
(:func:`models.baselines._train`) evaluates on the validation window with train as input and
the prior at the validation start, i.e. the way the test window is scored.

``α`` shrinks the personal term at scoring time. On MovieLens-100k the taste learned inside the
train window transfers poorly to the next window (returning users mostly rate what is new), so
the validation window chose a small ``α``; ``λ``, the half-life and every other default were
chosen there too (``bench/quality.py --select``), never on the test window.

Design alternatives tried once on the validation window and dropped (no script re-runs them;
seed 0, NDCG@10 all / warm): leave-one-out user context instead of strictly-earlier items
(0.3586 / 0.1782 vs 0.3694 / 0.1971); negatives half drawn by decayed popularity (0.3542 / 0.1683);
context only from items 1–7 days older (0.3250 / 0.1449); fold-in from the last 5 or 20 items
(0.3667 / 0.1908, 0.3678 / 0.1933); item-KNN scores added to the prior (every weight lowered it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from models.baselines import FitReport, _BPRSampler, _check_training_args, _metric_k, _train
from models.evaluation import History, Interactions, LeakageError, ValidationSet, check_no_leakage, rank_items
from models.gcn import InterestGCN, PropagationGraph, fold_in_users, score
from uig_common.errors import InputError

__all__ = [
    "GCNTrainConfig",
    "GCNTrainError",
    "UigGCNScorer",
    "decayed_popularity",
    "fit_uig_gcn",
    "item_topic_edges",
]

STATE_FORMAT = 1
#: ``module:callable`` that rebuilds a scorer from :meth:`UigGCNScorer.to_state` (the registry reads it).
STATE_LOADER = "models.training:UigGCNScorer.from_state"
_DAY = 86_400.0


class GCNTrainError(InputError):
    """The UIG GCN was given unusable data, settings or a state it cannot load."""


@dataclass(frozen=True)
class GCNTrainConfig:
    """Hyperparameters of :func:`fit_uig_gcn`; the defaults were chosen on the MovieLens-100k
    validation window (train → validation, never the test window; ``bench/quality.py`` shows the
    numbers)."""

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

    def to_params(self) -> dict[str, object]:
        """Flat name → value, for MLflow ``log_params``."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        _check_training_args(self.epochs, self.batch_size, self.patience, self.dim, self.metric)
        if self.num_layers < 0:
            raise GCNTrainError(f"num_layers must be >= 0, got {self.num_layers}")
        for name in ("lr", "reg", "prior_weight", "topic_weight", "personal_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise GCNTrainError(f"{name} must be a finite number >= 0 (lr > 0), got {value}")
        if not self.prior_half_life_days > 0:
            raise GCNTrainError(f"prior_half_life_days must be > 0 (inf for plain counts), got {self.prior_half_life_days}")


# --------------------------------------------------------------------------------------------
# Non-learned inputs


def decayed_popularity(
    item_ids: np.ndarray, ts: np.ndarray, n_items: int, as_of: float, half_life_days: float
) -> np.ndarray:
    """Σ over events strictly before ``as_of`` of ``2^(-(as_of - ts) / half-life)``, per item (float64).

    ``half_life_days = inf`` gives plain counts. Events at or after ``as_of`` are ignored.
    """
    item_ids, ts = np.asarray(item_ids, dtype=np.int64), np.asarray(ts, dtype=np.float64)
    before = ts < as_of
    if math.isinf(half_life_days):
        weights = np.ones(int(before.sum()))
    else:
        weights = np.exp2(-(as_of - ts[before]) / (half_life_days * _DAY))
    return np.bincount(item_ids[before], weights=weights, minlength=n_items).astype(np.float64)


def _prior(inputs: Interactions, as_of: float, half_life_days: float) -> Tensor:
    """``log(1 + decayed popularity)`` of the inputs at ``as_of``, float32 [n_items]."""
    pop = decayed_popularity(inputs.item_ids, inputs.ts, inputs.n_items, as_of, half_life_days)
    return torch.from_numpy(np.log1p(pop).astype(np.float32))


def item_topic_edges(
    item_topics: pd.DataFrame, items: tuple[Hashable, ...]
) -> tuple[Tensor, int, int, tuple[str, ...]]:
    """(item, topic) index pairs [2, F], #genres, #entities and the topic ids (genres first).

    ``item_topics`` has columns item_id, topic_id, topic_type ("genre" or "kg:<relation>"); an
    entity reached through two relations is one node (as in :func:`models.graph.build_graph`).
    Rows of items outside ``items`` (a catalog larger than the index) are ignored; ids are
    matched as strings.
    """
    missing = [c for c in ("item_id", "topic_id", "topic_type") if c not in item_topics.columns]
    if missing:
        raise GCNTrainError(f"item_topics lacks columns {missing}; expected item_id, topic_id, topic_type")
    index = {str(item): k for k, item in enumerate(items)}
    frame = item_topics.assign(
        item=item_topics["item_id"].astype(str).map(index), topic=item_topics["topic_id"].astype(str)
    ).dropna(subset=["item"])
    is_genre = frame["topic_type"].astype(str) == "genre"
    genres = sorted(frame.loc[is_genre, "topic"].unique().tolist())
    entities = sorted(set(frame.loc[~is_genre, "topic"].unique().tolist()) - set(genres))
    topic_index = {t: k for k, t in enumerate(genres + entities)}
    pairs = frame[["item", "topic"]].drop_duplicates()
    edges = torch.tensor(
        np.stack([pairs["item"].to_numpy(dtype=np.int64), pairs["topic"].map(topic_index).to_numpy(dtype=np.int64)]),
        dtype=torch.long,
    ).reshape(2, -1)
    return edges, len(genres), len(entities), tuple(genres + entities)


# --------------------------------------------------------------------------------------------
# Scorer


class UigGCNScorer:
    """A fitted UIG GCN as a :class:`~models.evaluation.Scorer` (formula in the module docstring).

    A fresh scorer from :func:`fit_uig_gcn` carries the prior of the train window at the
    validation start; call :meth:`with_inputs` with everything before a window to score it.
    """

    def __init__(
        self,
        config: GCNTrainConfig,
        item_ids: tuple[Hashable, ...],
        model: InterestGCN,
        item_text: Tensor,
        user_item: Tensor,
        n_users: int,
        item_topic: Tensor,
        topic_ids: tuple[str, ...],
        prior: Tensor,
        as_of: float,
    ) -> None:
        self.config = config
        self.item_ids = tuple(item_ids)
        self.model = model
        self.item_text = item_text
        self.user_item = user_item
        self.n_users = n_users
        self.item_topic = item_topic
        self.topic_ids = topic_ids
        self.prior = prior
        self.as_of = float(as_of)
        self._graph: PropagationGraph | None = None
        self._items: Tensor | None = None
        #: Interest communities of the training window (models.communities.Community.to_dict rows).
        self.communities: list[dict[str, Any]] = []

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def graph(self) -> PropagationGraph:
        """The sparse operators of the training graph, built once."""
        if self._graph is None:
            self._graph = PropagationGraph.build(
                self.user_item, torch.ones(self.user_item.size(1)), self.n_users, self.n_items,
                self.item_topic, self.model.n_topics, self.config.topic_weight,
            )
        return self._graph

    def forget_embeddings(self) -> None:
        """Drop the cached item embeddings (after the parameters changed)."""
        self._items = None

    def item_embeddings(self) -> Tensor:
        """Final item embeddings [n_items, dim] (cached; items without interactions from text and topics)."""
        if self._items is None:
            with torch.no_grad():
                self._items = self.model(self.item_text, self.graph())
        return self._items

    def item_scores(self) -> Tensor:
        """The user-independent part of the score: bias + λ · prior, [n_items]."""
        return self.model.item_bias.detach() + self.config.prior_weight * self.prior

    def user_vectors(self, users: Tensor, history: History) -> Tensor:
        """Fold-in: the mean final embedding of each user's history items (zeros without history)."""
        rows, items = history.pairs(users)
        return fold_in_users(torch.stack([rows, items]), torch.ones(rows.numel()), self.item_embeddings(), len(users))

    def score(self, users: Tensor, history: History) -> Tensor:
        if history.n_items != self.n_items:
            raise GCNTrainError(
                f"the model ranks {self.n_items} items but the history is over {history.n_items}; "
                "score with the item index it was fitted on"
            )
        with torch.no_grad():
            users_v = self.config.personal_weight * self.user_vectors(users, history)
            return score(users_v, self.item_embeddings(), self.item_scores())

    def with_inputs(self, inputs: Interactions, as_of_seconds: float) -> UigGCNScorer:
        """This model with the prior recomputed from ``inputs`` (all strictly before ``as_of_seconds``).

        No retraining: only the non-learned popularity prior changes. Raises
        :class:`~models.evaluation.LeakageError` if an input is at or after ``as_of_seconds``.
        """
        if tuple(inputs.items) != self.item_ids:
            raise GCNTrainError("inputs are over a different item index than the model; use the split it was fitted on")
        check_no_leakage(inputs, as_of_seconds, "scorer input")
        other = UigGCNScorer(self.config, self.item_ids, self.model, self.item_text, self.user_item, self.n_users,
                             self.item_topic, self.topic_ids,
                             _prior(inputs, float(as_of_seconds), self.config.prior_half_life_days), as_of_seconds)
        other._graph, other._items = self._graph, self._items  # same parameters, same embeddings
        other.communities = self.communities
        return other

    def recommend(self, histories: Sequence[Sequence[Hashable]], k: int = 10) -> list[list[tuple[Hashable, float]]]:
        """Top-``k`` ``(item_id, score)`` per user, best first, from item-id histories (fold-in).

        A history's own items are never recommended; ids outside the model's item index are
        ignored (an item the model never saw cannot be folded in). An empty history gets the
        non-personalised ranking (bias + prior).
        """
        if k < 1:
            raise GCNTrainError(f"k must be >= 1, got {k}")
        index = {item: i for i, item in enumerate(self.item_ids)}
        lists = [sorted({index[item] for item in history if item in index}) for history in histories]
        if not lists:
            return []
        history = History.from_lists(lists, self.n_items)
        scores = self.score(torch.arange(len(lists)), history).clone()
        rows, items = history.pairs()
        scores[rows, items] = float("-inf")
        ranked = rank_items(scores, k)
        result = []
        for row, top in enumerate(ranked.tolist()):
            result.append([(self.item_ids[i], float(scores[row, i])) for i in top if i >= 0])
        return result

    # ---- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything scoring needs, as plain values and tensors (``torch.save``-able, weights_only)."""
        return {
            "format": STATE_FORMAT,
            "loader": STATE_LOADER,
            "config": self.config.to_params(),
            "item_ids": list(self.item_ids),
            "topic_ids": list(self.topic_ids),
            "n_genres": self.model.n_genres,
            "n_entities": self.model.n_entities,
            "n_users": self.n_users,
            "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "item_text": self.item_text.clone(),
            "user_item": self.user_item.clone(),
            "item_topic": self.item_topic.clone(),
            "prior": self.prior.clone(),
            "as_of": self.as_of,
            "communities": [dict(c) for c in self.communities],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UigGCNScorer:
        """Rebuild a scorer saved by :meth:`to_state`; it scores bit-identically on the same machine."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise GCNTrainError(f"not a UIG GCN state of format {STATE_FORMAT} (found {found!r}); save it with to_state")
        config = GCNTrainConfig(**state["config"])
        text = state["item_text"]
        model = InterestGCN(len(state["item_ids"]), state["n_genres"], state["n_entities"], text.size(1),
                            config.dim, config.num_layers)
        model.load_state_dict(state["state_dict"])
        model.eval()
        scorer = cls(config, tuple(state["item_ids"]), model, text, state["user_item"], int(state["n_users"]),
                     state["item_topic"], tuple(state["topic_ids"]), state["prior"], float(state["as_of"]))
        scorer.communities = [dict(c) for c in state.get("communities", [])]
        return scorer


# --------------------------------------------------------------------------------------------
# Fit


def _check_inputs(
    train: Interactions, item_text: np.ndarray, validation: ValidationSet | None, as_of: float
) -> np.ndarray:
    text = np.asarray(item_text, dtype=np.float32)
    if text.ndim != 2 or text.shape[0] != train.n_items or text.shape[1] < 1:
        raise GCNTrainError(
            f"item_text must be [n_items={train.n_items}, d] with row i the embedding of train.items[i], "
            f"got shape {text.shape}"
        )
    if not np.isfinite(text).all():
        raise GCNTrainError("item_text holds NaN or infinite values; re-encode those items")
    check_no_leakage(train, as_of, "training")
    if validation is not None:
        hist = validation.history
        if hist.n_items != train.n_items or hist.n_users != train.n_users:
            raise GCNTrainError(
                f"validation is over {hist.n_users} users × {hist.n_items} items, train over "
                f"{train.n_users} × {train.n_items}; build both from one EncodedSplit"
            )
        keys = np.unique(train.user_ids * train.n_items + train.item_ids)
        rows = np.repeat(np.arange(hist.n_users), hist.lengths())
        inputs = rows * hist.n_items + hist.indices
        outside = ~np.isin(keys, inputs)
        if outside.any():
            raise LeakageError(
                f"{int(outside.sum())} training (user, item) pairs are not in the validation input history: "
                "the model would train on events after the validation inputs (e.g. the validation window's "
                "labels); fit on the train window and validate with ValidationSet.from_split"
            )
    return text


@dataclass(frozen=True)
class _Pairs:
    """The distinct training (user, item) pairs ordered by (user, first time, item), and for each
    pair (looked up by its key ``user * n_items + item``) what training needs: its position, the
    span of the user's pairs strictly earlier in time, its day and the prior of every day."""

    keys: Tensor  # sorted keys
    position: Tensor  # [pairs] position of key k in the (user, time) order
    items: Tensor  # [pairs] item of each position
    user_start: Tensor  # [pairs] first position of the pair's user
    earlier_end: Tensor  # [pairs] end (exclusive) of the user's strictly earlier pairs
    day: Tensor  # [pairs] day index of the pair's first event (by key)
    day_prior: Tensor  # [days, n_items] log(1 + decayed popularity) at the start of each day

    @classmethod
    def build(cls, train: Interactions, half_life_days: float) -> _Pairs:
        first = (
            pd.DataFrame({"user": train.user_ids, "item": train.item_ids, "ts": train.ts})
            .groupby(["user", "item"], as_index=False)["ts"].min()
            .sort_values(["user", "ts", "item"], kind="mergesort")
            .reset_index(drop=True)
        )
        user, item, ts = (first[c].to_numpy() for c in ("user", "item", "ts"))
        n = len(first)
        new_user = np.r_[True, user[1:] != user[:-1]]
        user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        new_time = new_user | np.r_[True, ts[1:] != ts[:-1]]
        earlier_end = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))  # first pair at the same time
        keys = user * train.n_items + item
        order = np.argsort(keys, kind="mergesort")
        position = order  # position[k] = place of the k-th smallest key in the (user, time) order
        t0 = float(train.ts.min())
        day = np.floor((ts - t0) / _DAY).astype(np.int64)
        grid = np.stack([
            np.log1p(decayed_popularity(train.item_ids, train.ts, train.n_items, t0 + d * _DAY, half_life_days))
            for d in range(int(day.max()) + 1)
        ])
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
        return cls(as_t(keys[order]), as_t(position), as_t(item), as_t(user_start), as_t(earlier_end),
                   as_t(day[order]), torch.from_numpy(grid.astype(np.float32)))

    def context(self, final: Tensor, keys: Tensor) -> Tensor:
        """Users' vectors for the pairs ``keys``: the mean final embedding of the user's items
        strictly earlier than the pair, zeros where there are none."""
        at = self.position[torch.searchsorted(self.keys, keys)]
        start = self.user_start[at]
        counts = self.earlier_end[at] - start
        offsets = torch.cumsum(counts, 0) - counts
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(offsets, counts)
        items = self.items[torch.repeat_interleave(start, counts) + within]
        return F.embedding_bag(items, final, offsets, mode="mean")


def fit_uig_gcn(
    train: Interactions,
    item_text: np.ndarray,
    item_topics: pd.DataFrame,
    validation: ValidationSet | None,
    config: GCNTrainConfig = GCNTrainConfig(),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    as_of: float | None = None,
) -> tuple[UigGCNScorer, FitReport]:
    """Train the UIG GCN on ``train`` (the train window only); see the module docstring.

    ``validation`` (train as input, the validation window as targets) drives early stopping on
    ``config.metric`` and the best epoch's parameters are kept; ``None`` runs all epochs.
    ``as_of`` is the start of the window after train (the validation start): where the returned
    scorer's prior is taken; default just after the last training event. ``on_epoch(epoch,
    values)`` gets ``loss``, ``seconds`` (training time of the epoch) and ``val_<metric>``.
    Raises :class:`~models.evaluation.LeakageError` if a training event is at or after
    ``as_of`` or a training pair is missing from the validation input history.
    """
    config.check()
    if not isinstance(train, Interactions) or len(train) == 0:
        raise GCNTrainError("fit_uig_gcn needs a non-empty models.evaluation.Interactions (the train window)")
    as_of = float(np.nextafter(train.ts.max(), np.inf)) if as_of is None else float(as_of)
    text_np = _check_inputs(train, item_text, validation, as_of)
    generator = torch.Generator().manual_seed(config.seed)
    history = train.history()
    rows, items = history.pairs()
    user_item = torch.stack([rows, items])
    item_topic, n_genres, n_entities, topic_ids = item_topic_edges(item_topics, train.items)
    text = torch.from_numpy(text_np.copy())
    model = InterestGCN(train.n_items, n_genres, n_entities, text.size(1), config.dim, config.num_layers, generator)
    scorer = UigGCNScorer(config, train.items, model, text, user_item, train.n_users, item_topic, topic_ids,
                          _prior(train, as_of, config.prior_half_life_days), as_of)
    graph = scorer.graph()
    sampler = _BPRSampler(history, generator)
    pairs = _Pairs.build(train, config.prior_half_life_days)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    lam = config.prior_weight
    epoch_log: list[dict[str, float]] = []

    def run_epoch() -> float:
        t0 = time.perf_counter()
        total = 0.0
        for u, i, j in sampler.epoch(config.batch_size):
            items0 = model.item_layer0(text)
            final = model.propagate(items0, graph)
            keys = u * train.n_items + i
            user = pairs.context(final, keys)
            day = pairs.day[torch.searchsorted(pairs.keys, keys)]
            bias = model.item_bias
            pos = (user * final[i]).sum(-1) + bias[i] + lam * pairs.day_prior[day, i]
            neg = (user * final[j]).sum(-1) + bias[j] + lam * pairs.day_prior[day, j]
            reg = (items0[i].pow(2).sum() + items0[j].pow(2).sum() + bias[i].pow(2).sum() + bias[j].pow(2).sum())
            loss = -F.logsigmoid(pos - neg).mean() + config.reg * reg / u.numel()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * u.numel()
        epoch_log.append({"loss": total / len(sampler), "seconds": time.perf_counter() - t0})
        return epoch_log[-1]["loss"]

    def emit() -> None:
        if on_epoch is not None:
            on_epoch(len(epoch_log), dict(epoch_log[-1]))

    validate: Callable[[], float] | None = None
    if validation is not None:
        k = _metric_k(config.metric)

        def validate() -> float:
            value = validation.evaluate(scorer, ks=(k,))[config.metric]
            epoch_log[-1][f"val_{config.metric}"] = value
            emit()
            return value

    def on_change() -> None:
        scorer.forget_embeddings()
        if validation is None and len(epoch_log) > 0:
            emit()

    report = _train(model, run_epoch, validate, config.epochs, config.patience, on_change)
    scorer.forget_embeddings()
    return scorer, report
