"""Training of the UIG GCN (:class:`models.gcn.InterestGCN`) under the offline protocol.

What is trained and how it scores: :mod:`models.scoring` (``s(u, i) = α·⟨ē_u, f_i⟩ + b_i + λ·prior``).

Inputs: the train window's interactions (the BPR pairs and their times) and its interest graph
(:func:`models.graph.train_window_graph`, stored in the snapshot as ``train_graph.pt``): the
graph is what the model propagates over — item text, user–item edges (with their affinity
weights or unit weights, ``GCNTrainConfig.edge_weights``), item–genre and item–entity edges —
and it must be the graph of exactly these interactions, cut at the validation start.

Training: BPR (Rendle et al., UAI 2009; :mod:`models.bpr`) on the train window with uniform
negatives, all terms at full weight (α = 1). The user vector of a training pair ``(u, i)`` is
the fold-in of the user's items *strictly earlier* than ``i`` — the situation of fold-in at test
time, where only the past is known (FISM, Kabbur et al., KDD 2013, leaves the target out; here
the future is left out too). A user's first pair therefore trains the non-personalised part
(bias over prior), as a user without history is scored. The prior of a training pair is the one
of its own day (events before that day's start), so the bias learns what the contemporaneous
popularity does not explain. Early stopping (:func:`models.bpr.fit_epochs`) evaluates on the
validation window with train as input and the prior at the validation start, i.e. the way the
test window is scored.

``α`` shrinks the personal term at scoring time. On MovieLens-100k the taste learned inside the
train window transfers poorly to the next window (returning users mostly rate what is new), so
the validation window chose a small ``α``; ``λ``, the half-life, the edge weights and every other
default were chosen there too (``bench/quality.py --select``), never on the test window.

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
from collections.abc import Callable


import numpy as np
import pandas as pd
import torch
from torch import Tensor
from uig_common.timeutil import SECONDS_PER_DAY

from models.bpr import BPRSampler, FitReport, bpr_loss, fit_epochs, validator
from models.evaluation import Interactions, LeakageError, ValidationSet, check_no_leakage
from models.gcn import InterestGCN
from models.graph import USER_ITEM, InterestGraph
from models.propagation import fold_in
from models.scoring import GCNTrainConfig, GCNTrainError, UigGCNScorer, decayed_popularity, popularity_prior

__all__ = [
    "GCNTrainConfig",
    "GCNTrainError",
    "UigGCNScorer",
    "decayed_popularity",
    "fit_uig_gcn",
]


def _check_inputs(train: Interactions, graph: InterestGraph, validation: ValidationSet | None) -> None:
    """The graph is the train window's, over the same items; validation inputs hold every training pair."""
    if [str(item) for item in train.items] != graph.item_ids:
        raise GCNTrainError(
            f"the graph's {len(graph.item_ids)} items are not train.items ({train.n_items}) in the same order; "
            "build the graph from the training interactions (models.graph.train_window_graph)"
        )
    text = graph.data["item"].get("x")
    if text is None or text.dim() != 2 or text.size(1) < 1:
        raise GCNTrainError("the graph's item nodes carry no text vectors (x [n_items, d]); build it with item_text")
    if not torch.isfinite(text).all():
        raise GCNTrainError("item_text holds NaN or infinite values; re-encode those items")
    check_no_leakage(train, graph.cut_seconds, "training")
    user_index = {str(user): k for k, user in enumerate(train.users)}
    graph_users = np.array([user_index.get(user, -1) for user in graph.user_ids], dtype=np.int64)
    edges = graph.data[USER_ITEM].edge_index.numpy()
    graph_keys = np.unique(graph_users[edges[0]] * train.n_items + edges[1])
    train_keys = np.unique(train.user_ids * train.n_items + train.item_ids)
    if (graph_users < 0).any() or not np.array_equal(graph_keys, train_keys):
        raise GCNTrainError(
            f"the graph's {edges.shape[1]} user–item edges are not the {train_keys.size} training pairs; "
            "build the graph from the same train window"
        )
    if validation is not None:
        hist = validation.history
        if hist.n_items != train.n_items or hist.n_users != train.n_users:
            raise GCNTrainError(
                f"validation is over {hist.n_users} users × {hist.n_items} items, train over "
                f"{train.n_users} × {train.n_items}; build both from one EncodedSplit"
            )
        rows = np.repeat(np.arange(hist.n_users), hist.lengths())
        outside = ~np.isin(train_keys, rows * hist.n_items + hist.indices)
        if outside.any():
            raise LeakageError(
                f"{int(outside.sum())} training (user, item) pairs are not in the validation input history: "
                "the model would train on events after the validation inputs (e.g. the validation window's "
                "labels); fit on the train window and validate with ValidationSet.from_split"
            )


@dataclasses.dataclass(frozen=True)
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
        day = np.floor((ts - t0) / SECONDS_PER_DAY).astype(np.int64)
        grid = torch.stack([popularity_prior(train, t0 + d * SECONDS_PER_DAY, half_life_days)
                            for d in range(int(day.max()) + 1)])
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
        return cls(as_t(keys[order]), as_t(position), as_t(item), as_t(user_start), as_t(earlier_end),
                   as_t(day[order]), grid)

    def context(self, final: Tensor, keys: Tensor) -> Tensor:
        """Users' vectors for the pairs ``keys``: the mean final embedding of the user's items
        strictly earlier than the pair, zeros where there are none."""
        at = self.position[torch.searchsorted(self.keys, keys)]
        start = self.user_start[at]
        counts = self.earlier_end[at] - start
        offsets = torch.cumsum(counts, 0) - counts
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(offsets, counts)
        items = self.items[torch.repeat_interleave(start, counts) + within]
        rows = torch.repeat_interleave(torch.arange(keys.numel()), counts)
        return fold_in(torch.stack([rows, items]), None, final, keys.numel())


def fit_uig_gcn(
    train: Interactions,
    graph: InterestGraph,
    validation: ValidationSet | None,
    config: GCNTrainConfig = GCNTrainConfig(),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[UigGCNScorer, FitReport]:
    """Train the UIG GCN on ``train`` (the train window only) over its interest ``graph``.

    ``graph`` is the train window's graph (:func:`models.graph.train_window_graph`, or the
    snapshot's ``train_graph.pt``): the model propagates over it, and its cut (the validation
    start) is where the returned scorer's prior is taken. ``validation`` (train as input, the
    validation window as targets) drives early stopping on ``config.metric`` and the best
    epoch's parameters are kept; ``None`` runs all epochs. ``on_epoch(epoch, values)`` gets
    ``loss``, ``seconds`` (training time of the epoch) and ``val_<metric>``. Raises
    :class:`~models.evaluation.LeakageError` if a training event is at or after the graph's cut
    or a training pair is missing from the validation input history.
    """
    config.check()
    if not isinstance(train, Interactions) or len(train) == 0:
        raise GCNTrainError("fit_uig_gcn needs a non-empty models.evaluation.Interactions (the train window)")
    if not isinstance(graph, InterestGraph):
        raise GCNTrainError(f"fit_uig_gcn needs the train window's models.graph.InterestGraph, got {type(graph).__name__}")
    _check_inputs(train, graph, validation)
    as_of = graph.cut_seconds
    generator = torch.Generator().manual_seed(config.seed)
    data = graph.data
    text = data["item"].x
    model = InterestGCN(train.n_items, data["genre"].num_nodes, data["entity"].num_nodes, text.size(1), config.dim,
                        config.num_layers, generator)
    # Training and its early stopping see the GCN alone: the fold-in's recency and the two-hop
    # term are scoring-time settings, chosen afterwards on the rolling protocol for this model.
    alone = dataclasses.replace(config, cooccurrence_weight=0.0, fold_in_half_life_days=math.inf)
    scorer = UigGCNScorer(alone, train.items, model, data, tuple(graph.topic_ids),
                          popularity_prior(train, as_of, config.prior_half_life_days), as_of)
    propagation = scorer.propagation()
    sampler = BPRSampler(train.history(), generator)
    pairs = _Pairs.build(train, config.prior_half_life_days)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    lam = config.prior_weight
    epoch_log: list[dict[str, float]] = []

    def run_epoch() -> float:
        t0 = time.perf_counter()
        total = 0.0
        for u, i, j in sampler.epoch(config.batch_size):
            items0 = model.item_layer0(text)
            final = model.propagate(items0, propagation)
            keys = u * train.n_items + i
            user = pairs.context(final, keys)
            day = pairs.day[torch.searchsorted(pairs.keys, keys)]
            bias = model.item_bias
            pos = (user * final[i]).sum(-1) + bias[i] + lam * pairs.day_prior[day, i]
            neg = (user * final[j]).sum(-1) + bias[j] + lam * pairs.day_prior[day, j]
            loss = bpr_loss(pos, neg, (items0[i], items0[j], bias[i], bias[j]), config.reg)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * u.numel()
        epoch_log.append({"loss": total / len(sampler), "seconds": time.perf_counter() - t0})
        return epoch_log[-1]["loss"]

    def emit() -> None:
        if on_epoch is not None:
            on_epoch(len(epoch_log), dict(epoch_log[-1]))

    score_validation = validator(scorer, validation, config.metric)

    def validate() -> float:
        assert score_validation is not None
        value = score_validation()
        epoch_log[-1][f"val_{config.metric}"] = value
        emit()
        return value

    def on_change() -> None:
        scorer.forget_embeddings()
        if validation is None and len(epoch_log) > 0:
            emit()

    report = fit_epochs(model, run_epoch, None if score_validation is None else validate, config.epochs,
                        config.patience, on_change)
    scorer.forget_embeddings()
    scorer.config = config
    return scorer, report
