"""Graph builder time cut and the InterestGCN encoder on tiny hand-made graphs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.gcn import InterestGCN, PropagationGraph, score
from models.graph import USER_ITEM, InterestGraph, LeakageError, build_graph
from models.propagation import fold_in

CUT = datetime(1998, 1, 1, tzinfo=timezone.utc)


def tiny(last_ts: str = "1997-12-31T23:59:59Z") -> tuple[pd.DataFrame, pd.DataFrame]:
    interactions = pd.DataFrame(
        {"user_key": ["a", "a", "b"], "item_id": ["1", "2", "3"], "weight": [1.0, 0.5, 2.0],
         "last_ts": pd.to_datetime(["1997-12-01T00:00:00Z", "1997-12-02T00:00:00Z", last_ts], utc=True)}
    )
    topics = pd.DataFrame(
        {"item_id": ["1", "2", "3", "1"], "topic_id": ["genre:Drama", "genre:Drama", "genre:Comedy", "kg:m.x"],
         "topic_type": ["genre", "genre", "genre", "kg:directed_by"]}
    )
    return interactions, topics


def test_graph_has_typed_nodes_weighted_edges_and_reverse_edges():
    interactions, topics = tiny()
    g = build_graph(interactions, topics, ["1", "2", "3", "4"], CUT, item_features=np.eye(4, 8, dtype=np.float32))
    data = g.data
    assert (data["user"].num_nodes, data["item"].num_nodes, data["genre"].num_nodes, data["entity"].num_nodes) == (2, 4, 2, 1)
    assert data["user", "interacts", "item"].edge_index.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert data["user", "interacts", "item"].edge_weight.tolist() == [1.0, 0.5, 2.0]
    assert ("item", "rev_interacts", "user") in data.edge_types
    assert g.genre_ids == ["genre:Comedy", "genre:Drama"]


def test_nothing_at_or_after_the_cut_enters():
    interactions, topics = tiny(last_ts="1998-01-01T00:00:00Z")
    with pytest.raises(LeakageError, match="at or after the cut"):
        build_graph(interactions, topics, ["1", "2", "3"], CUT)


def test_encoder_is_seeded_and_folds_in_unseen_users():
    interactions, topics = tiny()
    g = build_graph(interactions, topics, ["1", "2", "3", "4"], CUT, item_features=np.eye(4, 8, dtype=np.float32))
    torch.manual_seed(0)
    model = InterestGCN(n_items=4, n_genres=2, n_entities=1, text_dim=8, dim=4)
    graph = PropagationGraph.from_graph(g.data)
    items = model(g.data["item"].x, graph)
    torch.manual_seed(0)
    again = InterestGCN(n_items=4, n_genres=2, n_entities=1, text_dim=8, dim=4)(g.data["item"].x, graph)
    assert items.shape == (4, 4) and torch.allclose(items, again)
    # an unseen user with history {item 2} scores like the mean of that item's embedding
    users = fold_in(torch.tensor([[0], [2]]), torch.tensor([1.0]), items, n_rows=2)
    assert torch.allclose(users[0], items[2]) and torch.count_nonzero(users[1]) == 0
    scores = score(users, items, model.item_bias)
    assert scores.shape == (2, 4) and torch.all(scores[1] == 0)  # no history: only the bias (still 0)


def test_topic_rows_of_items_outside_the_index_are_ignored():
    interactions, topics = tiny()
    topics = pd.concat([topics, pd.DataFrame({"item_id": ["99"], "topic_id": ["genre:Horror"], "topic_type": ["genre"]})])
    g = build_graph(interactions, topics, ["1", "2", "3", "4"], CUT)
    assert g.genre_ids == ["genre:Comedy", "genre:Drama"] and g.data["item", "has_genre", "genre"].edge_index.size(1) == 3


def test_graph_saves_and_loads_as_plain_tensors(tmp_path: Path):
    interactions, topics = tiny()
    g = build_graph(interactions, topics, ["1", "2", "3", "4"], CUT, item_features=np.eye(4, 8, dtype=np.float32))
    loaded = InterestGraph.load(g.save(tmp_path / "train_graph.pt"))  # weights_only: no pickled code runs
    assert (loaded.user_ids, loaded.item_ids, loaded.topic_ids, loaded.cut) == (g.user_ids, g.item_ids, g.topic_ids, g.cut)
    assert loaded.summary() == g.summary()
    assert torch.equal(loaded.data[USER_ITEM].edge_weight, g.data[USER_ITEM].edge_weight)
    assert torch.equal(loaded.data["item"].x, g.data["item"].x)


def test_propagation_reads_affinity_or_unit_weights():
    interactions, topics = tiny()
    g = build_graph(interactions, topics, ["1", "2", "3", "4"], CUT)
    affinity, unit = PropagationGraph.from_graph(g.data), PropagationGraph.from_graph(g.data, edge_weights="unit")
    # user a (node 0) took items 1 and 2 (nodes 2, 3) with weights 1.0 and 0.5; users pool their items by weight
    assert affinity.user_pool.to_dense()[0, :2].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert unit.user_pool.to_dense()[0, :2].tolist() == pytest.approx([0.5, 0.5])
    a, u = affinity.adjacency.to_dense(), unit.adjacency.to_dense()
    assert torch.allclose(a, a.T) and torch.allclose(u, u.T) and not torch.allclose(a, u)
    assert a.size(0) == 2 + 4 + 2 + 1  # users, items, genres, entities
