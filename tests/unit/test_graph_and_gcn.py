"""Graph builder time cut and the InterestGCN encoder on tiny hand-made graphs."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch

from models.gcn import InterestGCN, fold_in_users, score
from models.graph import LeakageError, build_graph

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
    inputs = InterestGCN.inputs_from_graph(g.data)
    items = model.encode(**inputs)
    torch.manual_seed(0)
    again = InterestGCN(n_items=4, n_genres=2, n_entities=1, text_dim=8, dim=4).encode(**inputs)
    assert items.shape == (4, 4) and torch.allclose(items, again)
    # an unseen user with history {item 2} scores like the mean of that item's embedding
    users = fold_in_users(torch.tensor([[0], [2]]), torch.tensor([1.0]), items, n_users=2)
    assert torch.allclose(users[0], items[2]) and torch.count_nonzero(users[1]) == 0
    scores = score(users, items, model.item_bias)
    assert scores.shape == (2, 4) and torch.all(scores[1] == 0)  # no history: only the bias (still 0)
