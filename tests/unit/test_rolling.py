"""The rolling protocol and its baselines on hand-made data (models/rolling.py, models/rolling_models.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.baselines import BPRMF, BaselineInputError
from models.evaluation import evaluate
from models.graph import train_window_graph
from models.interactions import History, Interactions, temporal_split
from models.rolling import (
    FRESH, STALE, RollingInputError, paired_bootstrap, parse_step, refresh_variants, rolling_protocol,
)
from models.rolling_models import AtFixedInputs, DecayedPopularity, FoldInRecommender, RecentItemKNN
from models.training import GCNTrainConfig, fit_uig_gcn

DAY = 86_400.0
ITEMS = tuple(f"i{k}" for k in range(8))


def interactions(rows: list[tuple[str, str, float]], users: tuple[str, ...] | None = None) -> Interactions:
    df = pd.DataFrame(rows, columns=["user", "item", "ts"])
    return Interactions.from_frame(df, users=users, items=ITEMS)


class NextItem:
    """Scores item (last input item + 1): an oracle for users who walk i0 → i1 → i2 …"""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []  # (as_of, latest input ts)

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> torch.Tensor:
        self.calls.append((as_of, float(inputs.ts.max()) if len(inputs) else -math.inf))
        rows, items, last_ts = inputs.last_events(users)
        scores = torch.arange(inputs.n_items, dtype=torch.float32).repeat(len(users), 1) / 100  # ties: high ids first
        for row in range(len(users)):
            mine = rows == row
            if mine.any():
                latest = items[mine][np.argmax(last_ts[mine])]
                scores[row, (latest + 1) % inputs.n_items] = 1.0 + 1
        return scores


def walkers() -> Interactions:
    """u0 and u1 take i0, i1, … one a day (u1 one day later); u2 acts once, on day 5, with no past."""
    rows = [("u0", f"i{d}", d * DAY + 60) for d in range(6)]
    rows += [("u1", f"i{d}", (d + 1) * DAY + 60) for d in range(5)]
    rows += [("u2", "i3", 5 * DAY + 120)]
    return interactions(rows)


def test_user_steps_targets_and_fresh_against_stale():
    result = rolling_protocol(walkers(), 2 * DAY, 6 * DAY, "1d", {"next": NextItem()})
    # steps 2..5; u0 and u1 act on each; u2 has no earlier event and never counts
    assert result.user_steps == [(d * DAY, u) for d in range(2, 6) for u in (0, 1)]
    summary = result.summary()["next"]
    assert summary["fresh"]["ndcg@10"] == pytest.approx(1.0)  # the fresh history always points at the target
    # stale: frozen at day 2 → right on the first step only
    stale = result.scores[("next", "stale")].ndcg10
    assert stale[:2].tolist() == [1.0, 1.0] and (stale[2:] <= 0.5).all()
    assert summary["fresh"]["user_steps"] == summary["stale"]["user_steps"] == 8


def test_no_input_reaches_the_model_at_or_after_its_as_of_and_variants_refresh_on_schedule():
    model = NextItem()
    variants = {"fresh": FRESH, "every 2d": 2 * DAY, "stale": STALE}
    rolling_protocol(walkers(), 2 * DAY, 6 * DAY, "1d", {"next": model}, variants)
    assert all(latest < as_of for as_of, latest in model.calls)
    as_of_by_step = sorted({as_of for as_of, _ in model.calls})
    assert as_of_by_step == [2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY]  # fresh: each step; every 2d: 2, 4; stale: 2
    with pytest.raises(RollingInputError):
        rolling_protocol(walkers(), 2 * DAY, 6 * DAY, "2d", {"next": model})
    with pytest.raises(RollingInputError):
        rolling_protocol(walkers(), 6 * DAY, 2 * DAY, "1d", {"next": model})
    assert refresh_variants(["never", "1d"]) == {"never": STALE, "1d": DAY} and parse_step("6h") == 6 * 3600


def test_seen_items_are_masked_and_never_targets():
    rows = [("u0", "i0", 10.0), ("u0", "i1", DAY + 10), ("u0", "i0", DAY + 20)]  # i0 again: not a target
    result = rolling_protocol(interactions(rows), DAY, 2 * DAY, "1d", {"pop": DecayedPopularity(1.0)})
    assert result.user_steps == [(DAY, 0)]
    # popularity ranks i0 first, but i0 is masked: i1 (tied with the rest at 0, lowest index) is first
    assert result.scores[("pop", "fresh")].top10[0, 0] == 1


def test_metrics_agree_with_the_static_evaluation_on_one_step():
    events = walkers()
    knn = RecentItemKNN(k=3, half_life_days=1.0).fit(events)
    result = rolling_protocol(events, 3 * DAY, 4 * DAY, "1d", {"knn": knn}, {"fresh": FRESH})
    before = Interactions(*(a[events.ts < 3 * DAY] for a in (events.user_ids, events.item_ids, events.ts)),
                          events.users, events.items)
    window = events.ts >= 3 * DAY
    window &= events.ts < 4 * DAY
    targets = History.from_pairs(events.user_ids[window], events.item_ids[window], events.n_users, events.n_items)
    static = evaluate(AtFixedInputs(knn, before, 3 * DAY), before.history(), targets, events.n_items,
                      ks=(10, 20), users=np.array([0, 1]))
    summary = result.summary()["knn"]["fresh"]
    assert summary["ndcg@10"] == pytest.approx(static["ndcg@10"])
    assert summary["recall@20"] == pytest.approx(static["recall@20"])


def test_paired_bootstrap_intervals():
    a = np.array([0.2, 0.4, 0.6, 0.8] * 25)
    same = paired_bootstrap(a, a)
    assert same["diff"] == same["diff_lo"] == same["diff_hi"] == 0 and same["ratio"] == pytest.approx(1)
    better = paired_bootstrap(a + 0.1, a)
    assert better["diff_lo"] > 0 and better["diff"] == pytest.approx(0.1) and better["ratio_lo"] > 1
    assert paired_bootstrap(a, a[::-1], seed=3) == paired_bootstrap(a, a[::-1], seed=3)
    with pytest.raises(RollingInputError):
        paired_bootstrap(a, a[:3])


def test_decayed_popularity_and_recency_knn_follow_recent_behaviour():
    # items 0-3 and 4-7 form two clusters; u9 moved from cluster A to cluster B yesterday
    rows = [(f"u{u}", f"i{k}", 10.0 * u + k) for u in range(8) for k in (range(4) if u % 2 else range(4, 8))]
    rows += [("u9", "i0", 100.0), ("u9", "i1", 200.0), ("u9", "i4", 5 * DAY)]
    events = interactions(rows)
    as_of = 6 * DAY
    pop = DecayedPopularity(1.0).score_at(np.array([0]), events, as_of)[0]
    assert int(pop.argmax()) == 4  # the item used most recently outweighs older, more frequent ones
    knn = RecentItemKNN(k=3, half_life_days=0.5).fit(events)
    scores = knn.score_at(np.array([events.user_index["u9"]]), events, as_of)[0]
    assert scores[5:8].min() > scores[2:4].max()  # the new cluster's neighbours lead
    flat = RecentItemKNN(k=3, half_life_days=math.inf).fit(events).score_at(
        np.array([events.user_index["u9"]]), events, as_of)[0]
    assert flat[2:4].max() > flat[5:8].min()  # without recency the old cluster (two items) wins


def test_fold_in_modes_of_a_trained_baseline():
    rows = [(f"u{u}", f"i{k}", 10.0 * u + k) for u in range(8) for k in (range(4) if u % 2 else range(4, 8))]
    train = interactions(rows + [("u9", "i0", 1.0)], users=tuple(f"u{u}" for u in range(11)))
    bpr = BPRMF(dim=8, epochs=3, batch_size=8).fit(train)
    later = Interactions(np.r_[train.user_ids, 9, 10], np.r_[train.item_ids, 5, 6], np.r_[train.ts, 500.0, 600.0],
                         train.users, train.items)
    users = np.array([9, 10])
    all_users = FoldInRecommender(bpr, 1.0, "all").score_at(users, later, 700.0)
    unseen = FoldInRecommender(bpr, 1.0, "unseen").score_at(users, later, 700.0)
    assert torch.allclose(all_users[1], unseen[1])  # u10 never trained: folded in both ways
    assert not torch.allclose(all_users[0], unseen[0])  # u9 trained: its vector, or its fresh history
    with pytest.raises(BaselineInputError, match="fold_in"):
        FoldInRecommender(bpr, 1.0, "sometimes")


def test_uig_score_at_weighs_recent_items_and_matches_the_plain_mean_without_decay():
    rows = [(f"u{u}", f"i{(u + k) % 8}", k * DAY + u) for u in range(16) for k in range(4)]
    split = temporal_split(pd.DataFrame(rows, columns=["user", "item", "ts"]))
    data = split.encode(items=ITEMS)
    text = np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32)
    topics = pd.DataFrame([(i, "genre:A" if k < 4 else "genre:B", "genre") for k, i in enumerate(ITEMS)],
                          columns=["item_id", "topic_id", "topic_type"])
    graph = train_window_graph(data.train, topics, text, 30.0, data.valid_start)
    config = GCNTrainConfig(dim=4, epochs=2, batch_size=16, fold_in_half_life_days=math.inf)
    scorer = fit_uig_gcn(data.train, graph, None, config)[0]
    inputs, as_of = data.before_test, data.test_start
    users = np.arange(data.n_users)
    plain = scorer.with_inputs(inputs, as_of).score(torch.from_numpy(users), inputs.history())
    assert torch.allclose(scorer.score_at(users, inputs, as_of), plain, atol=1e-5)  # fold-in half-life inf
    import dataclasses
    scorer.config = dataclasses.replace(scorer.config, fold_in_half_life_days=1e-4, personal_weight=1.0,
                                        cooccurrence_weight=0.0)
    rows_, items_, last = inputs.last_events(users[:1])
    latest = items_[np.argmax(last)]
    recent = scorer.score_at(users[:1], inputs, as_of)[0]
    bias = scorer.model.item_bias.detach() + scorer.config.prior_weight * scorer.with_inputs(inputs, as_of).prior
    expected = scorer.item_embeddings()[latest] @ scorer.item_embeddings().T + bias
    assert torch.allclose(recent, expected, atol=1e-4)  # a tiny half-life: the newest item alone
    # recommend() with ages gives the same ranking as score_at for that user
    history = [inputs.items[i] for i in items_]
    recs = scorer.with_inputs(inputs, as_of).recommend([history], 3, ages_seconds=[list(as_of - last)])[0]
    masked = recent.clone()
    masked[torch.from_numpy(items_)] = float("-inf")
    assert [inputs.items.index(i) for i, _ in recs] == masked.argsort(descending=True)[:3].tolist()


def test_uig_two_hop_term_adds_the_neighbours_of_recent_items():
    import dataclasses

    from models.propagation import cosine_neighbours
    from models.scoring import UigGCNScorer

    rows = [(f"u{u}", f"i{(u + k) % 4 + (0 if u % 2 else 4)}", k * DAY + u) for u in range(16) for k in range(3)]
    split = temporal_split(pd.DataFrame(rows, columns=["user", "item", "ts"]))
    data = split.encode(items=ITEMS)
    text = np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32)
    topics = pd.DataFrame([(i, "genre:A", "genre") for i in ITEMS], columns=["item_id", "topic_id", "topic_type"])
    graph = train_window_graph(data.train, topics, text, 30.0, data.valid_start)
    base = fit_uig_gcn(data.train, graph, None, GCNTrainConfig(dim=4, epochs=1, batch_size=16))[0]
    inputs, as_of = data.before_test, data.test_start
    users = np.array([0, 1])
    without = dataclasses.replace(base.config, cooccurrence_weight=0.0, fold_in_half_life_days=1e-4)
    with_term = dataclasses.replace(without, cooccurrence_weight=2.0, cooccurrence_neighbours=3)
    plain, two_hop = UigGCNScorer.from_state(base.to_state()), UigGCNScorer.from_state(base.to_state())
    plain.config, two_hop.config = without, with_term
    rows_, items_, last = inputs.last_events(users)
    newest = [items_[rows_ == r][np.argmax(last[rows_ == r])] for r in range(2)]
    e_rows, e_items = graph.data[("user", "interacts", "item")].edge_index
    c = cosine_neighbours(e_rows, e_items, graph.data["user"].num_nodes, len(ITEMS), 3)
    difference = two_hop.score_at(users, inputs, as_of) - plain.score_at(users, inputs, as_of)
    assert torch.allclose(difference, 2.0 * c[newest], atol=1e-4)  # a tiny half-life: the newest item's neighbours
    assert ((c > 0).sum(1) <= 3).all() and torch.allclose(c.diagonal(), torch.zeros(8))
