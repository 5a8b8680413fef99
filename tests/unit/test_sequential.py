"""SASRec baseline on hand-made sequences: learning, causality, reproducibility, early stopping."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from models.interactions import Interactions
from models.sequential import NotFittedError, SASRec, SASRecConfig, SequentialInputError

N_USERS, N_ITEMS, STEPS = 30, 10, 20
SMALL = SASRecConfig(dim=32, heads=2, blocks=1, max_len=8, dropout=0.1, epochs=15, batch_size=16, lr=5e-3)
FAST = SASRecConfig(dim=16, heads=2, blocks=1, max_len=8, dropout=0.1, epochs=2, batch_size=16, lr=5e-3)


def _cycles(n_users: int = N_USERS, steps: int = STEPS) -> Interactions:
    """User u walks 0→1→…→9→0 from item u % 10, one step per second."""
    rows = [(u, (u + k) % N_ITEMS, u * 1000.0 + k) for u in range(n_users) for k in range(steps)]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]), items=range(N_ITEMS))


def _events(users, items, ts, like: Interactions) -> Interactions:
    return Interactions(np.asarray(users), np.asarray(items), np.asarray(ts, dtype=float), like.users, like.items)


@pytest.fixture(scope="module")
def train() -> Interactions:
    return _cycles()


@pytest.fixture(scope="module")
def model(train) -> SASRec:
    return SASRec(SMALL, device="cpu").fit(train)


def test_learns_the_next_item_of_a_cycle(model, train):
    scores = model.score_at(np.arange(N_USERS), train, as_of=1e9)
    assert scores.shape == (N_USERS, N_ITEMS) and scores.dtype == torch.float32
    last = (np.arange(N_USERS) + STEPS - 1) % N_ITEMS
    assert (scores.argmax(1).numpy() == (last + 1) % N_ITEMS).mean() >= 0.9

    # prefixes of varying length: the prediction follows the last input item, not the user
    keep = (train.ts - train.user_ids * 1000.0) < 3 + train.user_ids % 7
    prefix = _events(train.user_ids[keep], train.item_ids[keep], train.ts[keep], train)
    last = (np.arange(N_USERS) + 2 + np.arange(N_USERS) % 7) % N_ITEMS
    hits = model.score_at(np.arange(N_USERS), prefix, as_of=1e9).argmax(1).numpy() == (last + 1) % N_ITEMS
    assert hits.mean() >= 0.8


def test_events_at_or_after_as_of_are_rejected(model, train):
    with pytest.raises(SequentialInputError, match="at or after as_of"):
        model.score_at(np.arange(3), train, as_of=float(train.ts.max()))
    with pytest.raises(SequentialInputError, match="NaN"):
        model.score_at(np.arange(3), train, as_of=float("nan"))


def test_scores_ignore_other_users_and_batching(model, train):
    users = np.array([0, 1])
    base = model.score_at(users, train, as_of=1e9)
    others = train.user_ids >= 2
    shuffled = np.where(others, (train.item_ids * 7 + 3) % N_ITEMS, train.item_ids)
    changed = _events(train.user_ids, shuffled, train.ts, train)
    torch.testing.assert_close(model.score_at(users, changed, as_of=1e9), base, rtol=0, atol=1e-6)
    only_mine = _events(train.user_ids[~others], train.item_ids[~others], train.ts[~others], train)
    torch.testing.assert_close(model.score_at(users, only_mine, as_of=1e9), base, rtol=0, atol=1e-6)
    # alone, repeated, in another order or inside a larger batch: the same rows
    mixed = model.score_at(np.array([5, 1, 0, 1, 7]), train, as_of=1e9)
    torch.testing.assert_close(mixed[[2, 1]], base, rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[3], base[1], rtol=0, atol=1e-6)


def test_scores_depend_only_on_the_last_max_len_items(model, train):
    span = SMALL.max_len
    recent = [3, 4, 5, 9, 0, 1, 2, 7]
    assert len(recent) == span
    a = [1, 1] + recent  # different, differently long pasts before the same last max_len items
    b = [6, 2, 8, 8, 0] + recent
    inputs = _events([0] * len(a) + [1] * len(b), a + b, list(range(len(a))) + list(range(len(b))), train)
    scores = model.score_at(np.array([0, 1]), inputs, as_of=100.0)
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-6)
    c = [6] + recent[1:]  # one of the last max_len items differs: the scores do too
    inputs = _events([0] * len(a) + [1] * len(c), a + c, list(range(len(a))) + list(range(len(c))), train)
    scores = model.score_at(np.array([0, 1]), inputs, as_of=100.0)
    assert not torch.allclose(scores[0], scores[1])


def test_ties_in_time_keep_the_input_order(model, train):
    # user 0: items 2, 5, 7 at increasing times; user 1: the same items, all at one instant, in that row order
    inputs = _events([1, 0, 1, 0, 1, 0], [2, 2, 5, 5, 7, 7], [50, 1, 50, 2, 50, 3], train)
    scores = model.score_at(np.array([0, 1]), inputs, as_of=100.0)
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-6)


def test_empty_history_gets_finite_shared_scores(model, train):
    inputs = _events(train.user_ids[train.user_ids >= 2], train.item_ids[train.user_ids >= 2],
                     train.ts[train.user_ids >= 2], train)
    scores = model.score_at(np.array([0, 1, 5]), inputs, as_of=1e9)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=1e-6)  # the learned empty-sequence output
    empty = _events([], [], [], train)
    torch.testing.assert_close(model.score_at(np.array([0]), empty, as_of=0.0)[0], scores[0], rtol=0, atol=1e-6)
    assert model.score_at(np.array([], dtype=np.int64), train, as_of=1e9).shape == (0, N_ITEMS)


def test_same_seed_same_scores_and_global_rng_untouched(train):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = SASRec(FAST, device="cpu").fit(train).score_at(np.arange(N_USERS), train, as_of=1e9)
    assert torch.equal(torch.rand(3), expected)
    second = SASRec(FAST, device="cpu").fit(train).score_at(np.arange(N_USERS), train, as_of=1e9)
    assert torch.equal(first, second)
    other = SASRec(SASRecConfig(**{**FAST.to_params(), "seed": 1}), device="cpu").fit(train)
    assert not torch.equal(other.score_at(np.arange(N_USERS), train, as_of=1e9), first)


def test_early_stopping_restores_the_best_epoch(train):
    metrics = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9, 1.0])
    snapshots: list[torch.Tensor] = []

    def on_epoch(m: SASRec) -> float:
        assert not m.net.training
        snapshots.append(m.score_at(np.arange(N_USERS), train, as_of=1e9))
        return next(metrics)

    config = SASRecConfig(**{**FAST.to_params(), "epochs": 10, "patience": 3})
    model = SASRec(config, device="cpu").fit(train, on_epoch=on_epoch)
    assert [h["epoch"] for h in model.history] == [1, 2, 3, 4, 5]
    assert [h["metric"] for h in model.history] == [0.1, 0.5, 0.3, 0.2, 0.4]
    assert all(h["loss"] > 0 and h["seconds"] >= 0 for h in model.history)
    assert model.best_epoch == 2
    final = model.score_at(np.arange(N_USERS), train, as_of=1e9)
    assert torch.equal(final, snapshots[1])
    assert not torch.equal(final, snapshots[-1])


def test_without_on_epoch_every_epoch_runs_and_the_last_is_kept(train):
    model = SASRec(FAST, device="cpu").fit(train)
    assert [h["epoch"] for h in model.history] == [1, 2]
    assert all(h["metric"] is None for h in model.history)
    assert model.best_epoch == 2


@pytest.mark.parametrize(
    "changes",
    [{"dim": 0}, {"dim": 33, "heads": 2}, {"heads": -1}, {"blocks": 0}, {"max_len": 0}, {"dropout": 1.0},
     {"dropout": -0.1}, {"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": float("nan")},
     {"weight_decay": -1.0}, {"patience": 0}, {"seed": 1.5}, {"epochs": True}, {"max_len": 2.0}],
)
def test_bad_config_is_rejected(changes):
    config = SASRecConfig(**{**SASRecConfig().to_params(), **changes})
    with pytest.raises(SequentialInputError):
        config.check()
    with pytest.raises(SequentialInputError):
        SASRec(config)


def test_default_config_and_params():
    params = SASRecConfig().check().to_params()
    assert params == {"dim": 64, "heads": 2, "blocks": 2, "max_len": 50, "dropout": 0.2, "epochs": 30,
                      "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "patience": 3, "seed": 0}
    assert SASRec(device="cpu").to_params() == params


def test_bad_inputs_are_rejected(model, train):
    with pytest.raises(NotFittedError):
        SASRec(FAST).score_at(np.arange(2), train, as_of=1e9)
    with pytest.raises(SequentialInputError):
        SASRec(FAST).fit(_events([], [], [], train))
    with pytest.raises(SequentialInputError):
        SASRec(FAST).fit(train.user_ids)  # type: ignore[arg-type]
    more_items = Interactions(train.user_ids, train.item_ids, train.ts, train.users, tuple(range(N_ITEMS + 1)))
    with pytest.raises(SequentialInputError, match="fitted over 10 items"):
        model.score_at(np.arange(2), more_items, as_of=1e9)
    reordered = Interactions(train.user_ids, train.item_ids, train.ts, train.users, tuple(reversed(range(N_ITEMS))))
    with pytest.raises(SequentialInputError, match="same item index"):
        model.score_at(np.arange(2), reordered, as_of=1e9)
    with pytest.raises(SequentialInputError, match="user indices"):
        model.score_at(np.array([N_USERS]), train, as_of=1e9)


def test_score_at_builds_sequences_fast(model):
    rng = np.random.default_rng(0)
    n, n_users = 100_000, 5_000
    inputs = Interactions(rng.integers(0, n_users, n), rng.integers(0, N_ITEMS, n), rng.random(n) * 1e6,
                          tuple(range(n_users)), tuple(range(N_ITEMS)))
    users = rng.choice(n_users, 200, replace=False)
    start = time.perf_counter()
    scores = model.score_at(users, inputs, as_of=2e6)
    assert time.perf_counter() - start < 1.0
    assert scores.shape == (200, N_ITEMS) and torch.isfinite(scores).all()


def test_users_shorter_than_the_window_train_without_the_start_token_as_a_target():
    # 3 items each, max_len 8: every training window is left-padded before its start token
    short = _cycles(n_users=12, steps=3)
    fitted = SASRec(FAST, device="cpu").fit(short)
    assert all(np.isfinite(h["loss"]) for h in fitted.history)
    assert torch.isfinite(fitted.score_at(np.arange(12), short, as_of=1e9)).all()
