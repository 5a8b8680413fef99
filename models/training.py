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
import torch.nn.functional as F
from torch import Tensor
from uig_common.timeutil import SECONDS_PER_DAY

from models.bpr import BPRSampler, FitReport, bpr_loss, fit_epochs, validator
from models.evaluation import Interactions, LeakageError, ValidationSet, check_no_leakage
from models.gcn import InterestGCN, PropagationGraph
from models.graph import USER_ITEM, InterestGraph
from models.propagation import csr_from_parts, sparse_matmul
from models.scoring import GCNTrainConfig, GCNTrainError, UigGCNScorer, decayed_popularity, popularity_prior

__all__ = [
    "GCNEpochs",
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
    """The distinct training (user, item) pairs ordered by (user, first time, item) — their
    *positions* — and for each pair what training needs: the span of its user's pairs strictly
    earlier in time, its day and the prior of every day. A pair is looked up by its key
    ``user * n_items + item`` (:meth:`locate`)."""

    keys: Tensor  # sorted keys
    position: Tensor  # [pairs] position of key k in the (user, time) order
    items: Tensor  # [pairs] item of each position
    user_start: Tensor  # [pairs] first position of the pair's user
    earlier_end: Tensor  # [pairs] end (exclusive) of the user's strictly earlier pairs
    day: Tensor  # [pairs] day index of the pair's first event (by position)
    day_prior: Tensor  # [days, n_items] log(1 + decayed popularity) at the start of each day
    user_starts: Tensor  # [users + 1] first position of every user, then the number of pairs
    by_item_crow: Tensor  # [n_items + 1] CSR row pointers of the item × position incidence
    by_item_position: Tensor  # [pairs] positions ordered by (item, position): its column indices

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
        by_item = np.argsort(item, kind="mergesort")
        by_item_crow = np.r_[0, np.cumsum(np.bincount(item, minlength=train.n_items))]
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
        return cls(as_t(keys[order]), as_t(position), as_t(item), as_t(user_start), as_t(earlier_end),
                   as_t(day), grid, as_t(np.r_[np.flatnonzero(new_user), n]), as_t(by_item_crow), as_t(by_item))

    def to(self, device: torch.device | str) -> _Pairs:
        """The same lookups on ``device``."""
        return _Pairs(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def locate(self, keys: Tensor) -> Tensor:
        """Positions of the training pairs ``keys`` (each must be one)."""
        return self.position[torch.searchsorted(self.keys, keys)]

    def context(self, final: Tensor, at: Tensor) -> Tensor:
        """Users' vectors for the pairs at positions ``at``: the mean final embedding of the user's
        items strictly earlier than the pair, zeros where there are none.

        A pair's earlier items are a run of the (user, time) order from its user's start, so the
        order is cut at every user's start and every pair's end: one CSR product sums each piece
        between cuts, and each pair adds up its user's pieces before its end. The work grows with
        the number of pairs, not with the batch's summed history lengths, which a per-pair gather
        of every earlier item costs (about 100× more on MovieLens-100k)."""
        start, end = self.user_start[at], self.earlier_end[at]
        cuts = torch.unique(torch.cat([self.user_starts, end]))  # sorted, from 0 to the number of pairs
        n_pieces = cuts.numel() - 1
        piece = torch.arange(n_pieces, device=cuts.device)
        piece_of = torch.repeat_interleave(piece, cuts.diff(), output_size=self.items.numel())
        ones = torch.ones(self.items.numel(), dtype=final.dtype, device=final.device)
        pieces = csr_from_parts(cuts, self.items, ones, (n_pieces, final.size(0)))
        pieces_t = csr_from_parts(self.by_item_crow, piece_of[self.by_item_position], ones, (final.size(0), n_pieces))
        sums = sparse_matmul(pieces, pieces_t, final)  # [pieces, dim]
        first = torch.searchsorted(cuts, start)
        counts = torch.searchsorted(cuts, end) - first  # pieces of each pair
        offsets = torch.cumsum(counts, 0) - counts
        bags = torch.arange(int(counts.sum()), device=cuts.device) - torch.repeat_interleave(offsets - first, counts)
        weights = torch.repeat_interleave(1.0 / (end - start).clamp_min(1).to(final.dtype), counts)
        return F.embedding_bag(bags, sums, offsets, mode="sum", per_sample_weights=weights)


def _new_model(train: Interactions, graph: InterestGraph, config: GCNTrainConfig,
               generator: torch.Generator) -> InterestGCN:
    """The untrained model of a fit: its initialisation is the first thing ``generator`` draws."""
    data = graph.data
    return InterestGCN(train.n_items, data["genre"].num_nodes, data["entity"].num_nodes, data["item"].x.size(1),
                       config.dim, config.num_layers, generator)


class GCNEpochs:
    """The training epochs of :func:`fit_uig_gcn`, on any device: the model, its optimiser, the
    propagation operators and the per-pair lookups live on ``device``; the sampler draws on the
    CPU, so a seed gives the same batches everywhere."""

    def __init__(
        self,
        train: Interactions,
        graph: InterestGraph,
        model: InterestGCN,
        propagation: PropagationGraph,
        config: GCNTrainConfig,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.text = graph.data["item"].x.to(self.device)
        self.propagation = propagation.to(self.device)
        self.sampler = BPRSampler(train.history(), generator)
        self.pairs = _Pairs.build(train, config.prior_half_life_days).to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.n_items, self.config = train.n_items, config

    @classmethod
    def fresh(cls, train: Interactions, graph: InterestGraph, config: GCNTrainConfig,
              device: torch.device | str = "cpu") -> GCNEpochs:
        """A newly initialised model (seeded by ``config.seed``, as :func:`fit_uig_gcn` starts)
        over the train window's graph: what timing an epoch on a device needs, nothing more."""
        generator = torch.Generator().manual_seed(config.seed)
        propagation = PropagationGraph.from_graph(graph.data, config.topic_weight, config.edge_weights)
        return cls(train, graph, _new_model(train, graph, config, generator), propagation, config, generator, device)

    def run(self) -> float:
        """One epoch over every training pair; the mean BPR loss."""
        model, pairs, lam, total = self.model, self.pairs, self.config.prior_weight, 0.0
        for u, i, j in self.sampler.epoch(self.config.batch_size, self.device):
            items0 = model.item_layer0(self.text)
            final = model.propagate(items0, self.propagation)
            at = pairs.locate(u * self.n_items + i)
            user = pairs.context(final, at)
            ij = torch.cat([i, j])  # one gather per table for positives and negatives
            final_i, final_j = final[ij].chunk(2)
            bias_i, bias_j = model.item_bias[ij].chunk(2)
            prior_i, prior_j = pairs.day_prior[pairs.day[at].repeat(2), ij].chunk(2)
            pos = (user * final_i).sum(-1) + bias_i + lam * prior_i
            neg = (user * final_j).sum(-1) + bias_j + lam * prior_j
            loss = bpr_loss(pos, neg, (*items0[ij].chunk(2), bias_i, bias_j), self.config.reg)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * u.numel()
        return total / len(self.sampler)


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
    model = _new_model(train, graph, config, generator)
    # Training and its early stopping see the GCN alone: the fold-in's recency and the two-hop
    # term are scoring-time settings, chosen afterwards on the rolling protocol for this model.
    alone = dataclasses.replace(config, cooccurrence_weight=0.0, fold_in_half_life_days=math.inf)
    scorer = UigGCNScorer(alone, train.items, model, data, tuple(graph.topic_ids),
                          popularity_prior(train, as_of, config.prior_half_life_days), as_of)
    epochs = GCNEpochs(train, graph, model, scorer.propagation(), config, generator)
    epoch_log: list[dict[str, float]] = []

    def run_epoch() -> float:
        t0 = time.perf_counter()
        loss = epochs.run()
        epoch_log.append({"loss": loss, "seconds": time.perf_counter() - t0})
        return loss

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
