"""Baselines: popularity and item-KNN by hand; BPR-MF and LightGCN learn a two-cluster toy problem."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.baselines import (
    BPRMF,
    BaselineInputError,
    ItemKNN,
    LightGCNBaseline,
    MostPopular,
    NotFittedError,
)
from models.evaluation import History, Interactions, Scorer, ValidationSet, evaluate, rank_items


def interactions(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> Interactions:
    df = pd.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs], "ts": np.arange(len(pairs))})
    return Interactions.from_frame(df, users=range(n_users), items=range(n_items))


def test_most_popular_ranks_by_count():
    # counts: item 0 -> 1, item 1 -> 3, item 2 -> 2, item 3 -> 0
    train = interactions([(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 0)], 3, 4)
    model = MostPopular().fit(train)
    assert isinstance(model, Scorer)
    scores = model.score(torch.tensor([0, 2]), History.empty(3, 4))
    assert scores.tolist() == [[1.0, 3.0, 2.0, 0.0]] * 2
    assert rank_items(scores, 4)[0].tolist() == [1, 2, 0, 3]


# Binary matrix:  u0 {0, 1}, u1 {0, 1, 2}, u2 {2, 3}
# item columns: 0 -> {u0, u1}, 1 -> {u0, u1}, 2 -> {u1, u2}, 3 -> {u2}
# cosine: (0,1) = 2/(√2·√2) = 1; (0,2) = (1,2) = 1/(√2·√2) = 0.5; (2,3) = 1/(√2·1) = 1/√2; (0,3) = (1,3) = 0
KNN_TRAIN = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]
R2 = 1 / math.sqrt(2)


def test_item_knn_full_neighbourhood_by_hand():
    model = ItemKNN(k=3).fit(interactions(KNN_TRAIN, 3, 4))
    history = History.from_lists([[0], [2], [0, 2]], n_items=4)
    scores = model.score(torch.tensor([0, 1, 2]), history)
    # history {0}: sim(0, ·) = [0, 1, 0.5, 0]; {2}: [0.5, 0.5, 0, 1/√2]; {0, 2}: the sum
    expected = torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.5, 0.5, 0.0, R2], [0.5, 1.5, 0.5, R2]])
    assert torch.allclose(scores, expected, atol=1e-6)


def test_item_knn_keeps_k_neighbours_per_history_item():
    model = ItemKNN(k=1).fit(interactions(KNN_TRAIN, 3, 4))
    # nearest neighbour: 0 -> 1 (1.0), 1 -> 0 (1.0), 2 -> 3 (1/√2 > 0.5), 3 -> 2
    history = History.from_lists([[0], [2], [0, 2], []], n_items=4)
    scores = model.score(torch.tensor([0, 1, 2, 3]), history)
    assert torch.allclose(scores[:3], torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, R2], [0.0, 1.0, 0.0, R2]]), atol=1e-6)
    # a user without history gets the input popularity: counts [2, 2, 2, 1]
    assert scores[3].tolist() == [2.0, 2.0, 2.0, 1.0]


# Two clusters: users 0-9 interact with items 0-9, users 10-19 with items 10-19. Each user holds
# out one in-cluster item (train has the other 9). User 20 never appears in training.
N_USERS, N_ITEMS, CLUSTER = 21, 20, 10


def held_out(u: int) -> int:
    return (u % CLUSTER) + (u // CLUSTER) * CLUSTER


def toy() -> tuple[Interactions, History]:
    pairs = [
        (u, i)
        for u in range(2 * CLUSTER)
        for i in range((u // CLUSTER) * CLUSTER, (u // CLUSTER + 1) * CLUSTER)
        if i != held_out(u)
    ]
    train = interactions(pairs, N_USERS, N_ITEMS)
    targets = History.from_lists([[held_out(u)] for u in range(2 * CLUSTER)] + [[]], N_ITEMS)
    return train, targets


EPOCHS = 40


def fit(kind: str, seed: int = 0, validation: ValidationSet | None = None) -> BPRMF | LightGCNBaseline:
    train, _ = toy()
    if kind == "bpr":
        model: BPRMF | LightGCNBaseline = BPRMF(dim=16, epochs=EPOCHS, batch_size=64, lr=0.05, reg=1e-4, seed=seed)
    else:
        model = LightGCNBaseline(dim=16, num_layers=2, epochs=EPOCHS, batch_size=64, lr=0.05, reg=1e-4, seed=seed)
    return model.fit(train, validation)


_FITTED: dict[tuple[str, int], BPRMF | LightGCNBaseline] = {}


def trained(kind: str, seed: int = 0) -> BPRMF | LightGCNBaseline:
    """One fit per (kind, seed) for the tests that only read the model."""
    if (kind, seed) not in _FITTED:
        _FITTED[kind, seed] = fit(kind, seed)
    return _FITTED[kind, seed]


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_learns_the_clusters(kind: str):
    model = trained(kind)
    train, targets = toy()
    history = train.history()
    users = torch.arange(2 * CLUSTER)
    scores = model.score(users, history)
    for u in users.tolist():
        other = range(CLUSTER, 2 * CLUSTER) if u < CLUSTER else range(CLUSTER)
        assert scores[u, held_out(u)] > scores[u, list(other)].max(), f"user {u}"
    # hence, with history masked, the held-out item is ranked first for every user
    result = evaluate(model, history, targets, N_ITEMS, ks=(1,))
    assert result["hit@1"] == 1.0 and result["n_users"] == 2 * CLUSTER


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_folds_in_users_unseen_in_training(kind: str):
    model = trained(kind)
    # user 20 was never trained on; at scoring time their history is three cluster-A items
    history = History.from_lists([[]] * 20 + [[0, 1, 2]], N_ITEMS)
    scores = model.score(torch.tensor([20]), history)[0]
    assert scores[3:CLUSTER].min() > scores[CLUSTER:].max()
    # with no history at all, they are scored as the average training user: finite scores
    empty = model.score(torch.tensor([20]), History.empty(N_USERS, N_ITEMS))
    assert torch.isfinite(empty).all()


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_seeded_fits_are_reproducible(kind: str):
    history = toy()[0].history()
    users = torch.arange(N_USERS)
    first = trained(kind, 0).score(users, history)
    again, other = (fit(kind, s).score(users, history) for s in (0, 1))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("kind", ["bpr", "lightgcn"])
def test_early_stopping_keeps_the_best_epoch(kind: str):
    train, targets = toy()
    validation = ValidationSet(train.history(), targets)
    model = fit(kind, validation=validation)
    report = model.report
    assert len(report.validation_scores) == report.epochs_run
    assert report.best_score == max(report.validation_scores)
    assert report.validation_scores[report.best_epoch - 1] == report.best_score
    assert report.epochs_run - report.best_epoch <= 3 or report.epochs_run == EPOCHS
    # the restored parameters are the best epoch's: re-evaluating gives its score
    assert validation.evaluate(model)["ndcg@10"] == pytest.approx(report.best_score)
    assert report.seconds_per_epoch > 0


def test_errors_are_named_and_actionable():
    with pytest.raises(NotFittedError):
        BPRMF().score(torch.tensor([0]), History.empty(1, 1))
    with pytest.raises(BaselineInputError, match="no interactions"):
        MostPopular().fit(interactions([], 2, 2))
    with pytest.raises(BaselineInputError, match="k >= 1"):
        ItemKNN(k=0)
    with pytest.raises(BaselineInputError, match="ndcg@10"):
        LightGCNBaseline(metric="ndcg10")
    model = MostPopular().fit(interactions([(0, 0)], 1, 2))
    with pytest.raises(BaselineInputError, match="same item index"):
        model.score(torch.tensor([0]), History.empty(1, 3))
