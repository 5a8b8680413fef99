"""UIG GCN trainer and scorer on a tiny hand-made data set (two taste clusters, random text)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluation import History, Interactions, LeakageError, Scorer, ValidationSet, check_no_leakage
from models.gcn import PropagationGraph, topic_edges
from models.graph import USER_ITEM, GraphInputError, InterestGraph, train_window_graph
from models.snapshot import GRAPH_FILE, TrainingSnapshot
from models.training import (
    GCNTrainConfig,
    GCNTrainError,
    UigGCNScorer,
    decayed_popularity,
    fit_uig_gcn,
)

# 24 users, 16 items: users 0-9 like items 0-6, users 10-19 items 7-13 (each takes 5 of its
# cluster, one a day); items 14 and 15 are never interacted with; users 20-23 never appear in
# training. Validation: one more in-cluster item per user 0-19, after the train window.
N_USERS, N_ITEMS, DAY = 24, 16, 86_400.0
CONFIG = GCNTrainConfig(dim=8, num_layers=2, epochs=6, batch_size=32, lr=0.02, patience=2, personal_weight=1.0)


def cluster_items(u: int) -> list[int]:
    base, size = (0, 7) if u < 10 else (7, 7)
    return [base + (u + k) % size for k in range(6)]


def frame(valid: bool) -> pd.DataFrame:
    rows = []
    for u in range(20):
        items = cluster_items(u)
        if valid:
            rows.append((u, items[5], 10 * DAY + u))
        else:
            rows += [(u, i, k * DAY + u) for k, i in enumerate(items[:5])]
    return pd.DataFrame(rows, columns=["user", "item", "ts"])


def split() -> tuple[Interactions, Interactions]:
    users, items = range(N_USERS), range(N_ITEMS)
    return (Interactions.from_frame(frame(False), users, items), Interactions.from_frame(frame(True), users, items))


def text() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(N_ITEMS, 12)).astype(np.float32)


def topics() -> pd.DataFrame:
    rows = [(str(i), "genre:A" if i < 7 else "genre:B", "genre") for i in range(N_ITEMS)]
    rows += [(str(i), "kg:m.dir", "kg:directed_by") for i in (0, 1, 15)]
    rows += [("99", "genre:A", "genre")]  # an item outside the index is ignored
    return pd.DataFrame(rows, columns=["item_id", "topic_id", "topic_type"])


def graph(train: Interactions | None = None, cut: float | None = 10 * DAY) -> InterestGraph:
    """The train window's interest graph at the validation start (edges: affinity, half-life 30 days)."""
    return train_window_graph(split()[0] if train is None else train, topics(), text(), 30.0, cut)


def fit(config: GCNTrainConfig = CONFIG, **kw: object) -> tuple[UigGCNScorer, object]:
    train, valid = split()
    validation = ValidationSet(train.history(), valid.history())
    return fit_uig_gcn(train, graph(), validation, config, **kw)


ALL = torch.arange(N_USERS)


def test_fit_runs_reports_epochs_and_early_stops():
    seen: list[tuple[int, dict[str, float]]] = []
    scorer, report = fit(on_epoch=lambda e, v: seen.append((e, v)))
    assert isinstance(scorer, Scorer)
    assert 1 <= report.best_epoch <= report.epochs_run <= CONFIG.epochs
    assert report.epochs_run == len(seen) == len(report.validation_scores)
    assert [e for e, _ in seen] == list(range(1, report.epochs_run + 1))
    assert {"loss", "seconds", "val_ndcg@10"} <= set(seen[0][1])
    assert report.best_score == max(report.validation_scores)
    scores = scorer.score(ALL, split()[0].history())
    assert scores.shape == (N_USERS, N_ITEMS) and scores.dtype == torch.float32 and torch.isfinite(scores).all()


def test_early_stopping_stops_and_keeps_the_best_epoch():
    train, valid = split()
    validation = ValidationSet(train.history(), valid.history())
    config = GCNTrainConfig(**{**CONFIG.to_params(), "epochs": 40, "patience": 1})
    scorer, report = fit_uig_gcn(train, graph(), validation, config)
    assert report.epochs_run < config.epochs  # stopped on a validation score that did not improve
    assert report.validation_scores[-1] <= report.best_score
    # the kept parameters are those of the best epoch: re-evaluating gives its score
    assert validation.evaluate(scorer)["ndcg@10"] == pytest.approx(report.best_score, abs=1e-12)


def test_without_validation_runs_every_epoch():
    train, _ = split()
    seen: list[int] = []
    _, report = fit_uig_gcn(train, graph(cut=None), None, CONFIG, on_epoch=lambda e, v: seen.append(e))
    assert report.epochs_run == report.best_epoch == CONFIG.epochs and seen == list(range(1, CONFIG.epochs + 1))


def test_same_seed_same_scores_other_seed_differs():
    history = split()[0].history()
    a = fit()[0].score(ALL, history)
    b = fit()[0].score(ALL, history)
    c = fit(GCNTrainConfig(**{**CONFIG.to_params(), "seed": 1}))[0].score(ALL, history)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_state_round_trip_scores_bit_identically():
    train, _ = split()
    scorer = fit()[0].with_inputs(train, 10 * DAY)
    scorer.communities = [{"community_id": "c01", "name": "A", "members": ["1", "2"], "top_genres": ["A"]}]
    history = train.history()
    buffer = io.BytesIO()
    torch.save(scorer.to_state(), buffer)
    buffer.seek(0)
    loaded = UigGCNScorer.from_state(torch.load(buffer, weights_only=True))
    assert loaded.item_ids == scorer.item_ids == tuple(range(N_ITEMS))
    assert loaded.communities == scorer.communities
    assert torch.equal(loaded.score(ALL, history), scorer.score(ALL, history))
    assert torch.equal(UigGCNScorer.from_state(scorer.to_state()).score(ALL, history), scorer.score(ALL, history))
    assert GCNTrainConfig(**scorer.to_state()["config"]) == scorer.config
    with pytest.raises(GCNTrainError, match="to_state"):
        UigGCNScorer.from_state({"format": 0})


def test_unseen_user_is_folded_in_from_history():
    scorer, _ = fit()
    # users 20 and 21 never trained; 20 has cluster-A items as input, 21 nothing at all
    history = History.from_lists([[]] * 20 + [[0, 1, 2], [], [], []], N_ITEMS)
    scores = scorer.score(torch.tensor([20, 21]), history)
    assert not torch.equal(scores[0], scores[1])
    assert torch.equal(scores[1], scorer.item_scores())  # no history: the non-personalised ranking
    # the folded-in user prefers their own cluster's remaining items over the other cluster's
    assert scores[0, 3:7].mean() > scores[0, 7:14].mean()
    # scores depend on the user's history only, not on the batch or on the user index
    alone = scorer.score(torch.tensor([20]), history)
    assert torch.allclose(alone[0], scores[0])


def test_recommend_ranks_by_id_excludes_history_and_serves_empty_histories():
    scorer, _ = fit()
    ranked = scorer.recommend([[0, 1, 2], [], [0, 999]], k=5)  # 999: not in the model's item index
    assert [len(r) for r in ranked] == [5, 5, 5]
    assert not {item for item, _ in ranked[0]} & {0, 1, 2} and 0 not in {item for item, _ in ranked[2]}
    for row in ranked:
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)
    assert [item for item, _ in ranked[1]] == torch.sort(scorer.item_scores(), descending=True, stable=True)[1][:5].tolist()
    assert scorer.recommend([[0]], k=100)[0][-1][0] != 0 and len(scorer.recommend([[0]], k=100)[0]) == N_ITEMS - 1
    assert scorer.recommend([], k=3) == []
    with pytest.raises(GCNTrainError, match="k must be"):
        scorer.recommend([[0]], k=0)


def test_item_without_interactions_gets_a_text_and_topic_embedding():
    scorer, _ = fit()
    items = scorer.item_embeddings()
    assert items.shape == (N_ITEMS, CONFIG.dim)
    assert items[14].norm() > 0 and items[15].norm() > 0
    # another text for the never-seen item 14 changes its embedding (and only through the text)
    changed = text()
    changed[14] = -changed[14]
    state = scorer.to_state()
    state["graph"]["item"]["x"] = torch.from_numpy(changed)
    other = UigGCNScorer.from_state(state).item_embeddings()
    assert not torch.allclose(other[14], items[14])


def test_with_inputs_recomputes_the_prior_without_retraining():
    train, valid = split()
    scorer, _ = fit()
    later = scorer.with_inputs(train.concat(valid), 11 * DAY)
    assert later.model is scorer.model and torch.equal(later.item_embeddings(), scorer.item_embeddings())
    expected = np.log1p(decayed_popularity(train.concat(valid).item_ids, train.concat(valid).ts, N_ITEMS, 11 * DAY, 14.0))
    assert np.allclose(later.prior.numpy(), expected, atol=1e-6)
    assert not torch.equal(later.prior, scorer.prior)
    with pytest.raises(LeakageError):
        scorer.with_inputs(train.concat(valid), 10 * DAY)  # validation events are not before 10 days


def test_decayed_popularity_by_hand():
    pop = decayed_popularity(np.array([0, 0, 1, 2]), np.array([0.0, 2 * DAY, 3 * DAY, 4 * DAY]), 3, 4 * DAY, 2.0)
    assert np.allclose(pop, [0.25 + 0.5, 2 ** -0.5, 0.0])  # the event at as_of is not before it
    assert decayed_popularity(np.array([0, 0, 1]), np.zeros(3), 2, 1.0, float("inf")).tolist() == [2.0, 1.0]


def test_topic_edges_map_genres_then_entities():
    g = graph()
    edges = topic_edges(g.data)
    assert (g.data["genre"].num_nodes, g.data["entity"].num_nodes) == (2, 1)
    assert g.topic_ids == ["genre:A", "genre:B", "kg:m.dir"]
    assert edges.shape == (2, N_ITEMS + 3) and int(edges[1].max()) == 2  # item "99" is outside the index
    with pytest.raises(GraphInputError, match="topic_type"):
        train_window_graph(split()[0], topics().drop(columns="topic_type"), text(), 30.0)


def test_training_reads_the_stored_graph(tmp_path: Path):
    """The model's input is the graph saved as train_graph.pt: change an edge weight there and it changes."""
    train, valid = split()
    validation = ValidationSet(train.history(), valid.history())
    graph().save(tmp_path / GRAPH_FILE)
    affinity = GCNTrainConfig(**{**CONFIG.to_params(), "epochs": 1, "edge_weights": "affinity"})

    def model_input(config: GCNTrainConfig = affinity) -> PropagationGraph:
        scorer, _ = fit_uig_gcn(train, TrainingSnapshot.load_graph(tmp_path), validation, config)
        return scorer.propagation()

    before = model_input()
    stored = InterestGraph.load(tmp_path / GRAPH_FILE)
    assert torch.equal(before.adjacency.values(), PropagationGraph.from_graph(stored.data, CONFIG.topic_weight).adjacency.values())
    stored.data[USER_ITEM].edge_weight[0] *= 8.0  # user 0's first item
    stored.save(tmp_path / GRAPH_FILE)
    after = model_input()
    assert not torch.equal(after.adjacency.values(), before.adjacency.values())
    assert not torch.equal(after.user_pool.values(), before.user_pool.values())
    # with unit edge weights (a choice made on the validation window) the weight does not enter
    unit = GCNTrainConfig(**{**affinity.to_params(), "edge_weights": "unit"})
    assert torch.equal(model_input(unit).adjacency.values(), PropagationGraph.from_graph(graph().data, 1.0, "unit").adjacency.values())


def test_the_graph_must_be_the_train_windows():
    train, valid = split()
    with pytest.raises(GCNTrainError, match="training pairs"):
        fit_uig_gcn(train, graph(train.concat(valid), cut=11 * DAY), None, CONFIG)  # validation pairs in the graph
    other_items = Interactions(train.user_ids, train.item_ids, train.ts, train.users, tuple(range(1, N_ITEMS + 1)))
    with pytest.raises(GCNTrainError, match="items"):
        fit_uig_gcn(other_items, graph(), None, CONFIG)


def test_leakage_guards():
    train, valid = split()
    validation = ValidationSet(train.history(), valid.history())
    # training on train + validation while validating on the validation window: its labels leak
    with pytest.raises(LeakageError, match="validation input history"):
        fit_uig_gcn(train.concat(valid), graph(train.concat(valid), cut=None), validation, CONFIG)
    # a training event at or after the graph's cut (the declared start of the next window)
    with pytest.raises(LeakageError):
        fit_uig_gcn(train.concat(valid), graph(), validation, CONFIG)
    with pytest.raises(LeakageError):
        graph(cut=4 * DAY)
    check_no_leakage(train, 10 * DAY)  # the data themselves are clean


def test_bad_inputs_are_named():
    train, _ = split()
    with pytest.raises(GraphInputError, match="item_features"):
        train_window_graph(train, topics(), text()[:5], 30.0)
    with pytest.raises(GCNTrainError, match="prior_weight"):
        fit_uig_gcn(train, graph(), None, GCNTrainConfig(prior_weight=-1.0))
    with pytest.raises(GCNTrainError, match="edge_weights"):
        fit_uig_gcn(train, graph(), None, GCNTrainConfig(edge_weights="log"))
    with pytest.raises(GCNTrainError, match="InterestGraph"):
        fit_uig_gcn(train, graph().data, None, CONFIG)  # type: ignore[arg-type]
    scorer, _ = fit()
    with pytest.raises(GCNTrainError, match="item index"):
        scorer.score(ALL, History.empty(N_USERS, N_ITEMS + 1))


def test_a_state_of_format_1_still_loads():
    """Models registered before the graph travelled in the state (unit weights, raw edge tensors)."""
    train, _ = split()
    scorer = fit(GCNTrainConfig(**{**CONFIG.to_params(), "edge_weights": "unit"}))[0]
    rows, items = train.history().pairs()
    item_topic = topic_edges(scorer.graph)
    params = {k: v for k, v in scorer.config.to_params().items() if k != "edge_weights"}
    old = {"format": 1, "loader": "models.training:UigGCNScorer.from_state", "config": params,
           "item_ids": list(scorer.item_ids), "topic_ids": list(scorer.topic_ids), "n_genres": 2, "n_entities": 1,
           "n_users": N_USERS, "state_dict": scorer.model.state_dict(), "item_text": scorer.item_text,
           "user_item": torch.stack([rows, items]), "item_topic": item_topic, "prior": scorer.prior,
           "as_of": scorer.as_of, "communities": []}
    loaded = UigGCNScorer.from_state(old)
    assert loaded.config == scorer.config
    history = train.history()
    assert torch.allclose(loaded.score(ALL, history), scorer.score(ALL, history), atol=1e-5)


def test_pair_context_equals_the_mean_of_each_users_strictly_earlier_items() -> None:
    """The piecewise context (CSR sums between cuts) equals the direct mean over each pair's earlier items."""
    from models.training import _Pairs

    rows = [(0, 3, 1.0), (0, 1, 2.0), (0, 4, 2.0), (0, 0, 5.0), (1, 2, 1.0), (1, 0, 3.0), (2, 1, 7.0)]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]), range(3), range(5))
    pairs = _Pairs.build(train, 14.0)
    final = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    earlier = {(0, 3): [], (0, 1): [3], (0, 4): [3], (0, 0): [3, 1, 4], (1, 2): [], (1, 0): [2], (2, 1): []}
    keys = torch.tensor([u * 5 + i for u, i in earlier])
    got = pairs.context(final, pairs.locate(keys))
    want = torch.stack([final[items].mean(0) if items else torch.zeros(3) for items in earlier.values()])
    assert torch.allclose(got, want, atol=1e-6)
    got.sum().backward()
    assert torch.allclose(final.grad, torch.tensor([0.0, 1 / 3, 1.0, 1 + 1 + 1 / 3, 1 / 3]).unsqueeze(1).expand(5, 3))
