"""Rolling (day-by-day) evaluation of the refresh loop on a tiny split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.evaluation import temporal_split
from models.graph import train_window_graph
from models.rolling import ROLLING_MODELS, rolling_evaluation
from models.training import GCNTrainConfig, fit_uig_gcn

DAY = 86_400.0


def test_rolling_scores_every_model_over_the_same_user_days():
    # 30 users over 10 days; each takes 4 items of its cluster, one a day, starting on day u % 7
    rows = []
    for u in range(30):
        base = 0 if u % 2 else 6
        rows += [(f"u{u}", f"i{base + (u + k) % 6}", (u % 7 + k) * DAY + 3600 * (u % 5)) for k in range(4)]
    split = temporal_split(pd.DataFrame(rows, columns=["user", "item", "ts"]))
    data = split.encode(items=[f"i{k}" for k in range(12)])
    text = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    topics = pd.DataFrame([(f"i{k}", "genre:A" if k < 6 else "genre:B", "genre") for k in range(12)],
                          columns=["item_id", "topic_id", "topic_type"])
    graph = train_window_graph(data.train, topics, text, 30.0, data.valid_start)
    scorer = fit_uig_gcn(data.train, graph, None, GCNTrainConfig(dim=4, epochs=2, batch_size=16))[0]
    seen: list[str] = []
    result = rolling_evaluation(data, scorer, seen.append)

    assert list(result) == list(ROLLING_MODELS) and seen
    counts = {r["user_days"] for r in result.values()}
    assert len(counts) == 1 and counts.pop() > 0  # every model is scored on the same (user, day) pairs
    for values in result.values():
        assert 0 <= values["ndcg@10"] <= 1 and 0 <= values["recall@20"] <= 1
    assert result["gcn, refreshed daily"] != result["gcn, no refresh"] or result["gcn, no refresh"]["days"] == 1
    assert result["most-popular (daily)"]["days"] == pytest.approx(result["gcn, refreshed daily"]["days"])
