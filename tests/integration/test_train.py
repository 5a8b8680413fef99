"""``uig train`` / ``uig evaluate`` / ``uig models`` on real MovieLens data, real Delta, real MLflow.

One module-scoped data root (MovieLens ingested up to ``TRAIN_UNTIL``, catalog encoded with the
real MiniLM weights) is trained once with a short schedule; the tests then read the snapshot,
the registry and the CLI it left behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before anything imports mlflow

from uig_common import names as C  # noqa: E402
from uig_tasks import mlflow_store, scorer_model  # noqa: E402
from uig_tasks.cli import main  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_tasks.train import TrainingSnapshot, gate_candidate, run_train, train_candidate  # noqa: E402

pytestmark = [
    pytest.mark.integration,
]

SHORT = {"epochs": 3, "patience": 2, "dim": 32, "seed": 0}
#: Deliberately worse: one epoch and no popularity prior — untrained embeddings against the prior.
WORSE = {"epochs": 1, "dim": 32, "seed": 0, "prior_weight": 0.0}


@pytest.fixture(scope="module")
def trained(trainable_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[UigConfig, dict[str, Any]]:
    """A private copy of the trainable data root after one ``run_train`` (version 1, the first champion)."""
    root = tmp_path_factory.mktemp("trained") / "data"
    shutil.copytree(trainable_root, root)
    config = UigConfig.from_env(data_root=root, user_salt="test-salt")
    result = run_train(config, datetime(2026, 1, 1, tzinfo=timezone.utc), SHORT, run_name="first")
    return config, result


def test_snapshot_applies_the_temporal_split_without_leakage(trained) -> None:
    _, result = trained
    summary = result["snapshot"]
    snapshot = TrainingSnapshot.load(summary["path"])
    split, data = snapshot.split()

    assert summary["train"] + summary["valid"] + summary["test"] == summary["interactions"] == len(snapshot.interactions)
    assert summary["train"] == pytest.approx(0.8 * summary["interactions"], abs=2)
    assert data.train.ts.max() < data.valid_start <= data.valid.ts.min()
    assert data.valid.ts.max() < data.test_start <= data.test.ts.min()
    assert data.n_items == len(snapshot.item_ids) == snapshot.item_text.shape[0] == 1682  # whole catalog
    assert np.allclose(np.linalg.norm(snapshot.item_text, axis=1), 1.0, atol=1e-4)  # L2-normalised text vectors
    graph = summary["train_graph"]  # the HeteroData of the train window, cut at the validation start
    assert graph["cut"] == summary["valid_start"]
    assert graph["nodes"]["item"] == 1682 and graph["nodes"]["user"] == split.train["user"].nunique()
    assert graph["edges"]["user__interacts__item"] == len(split.train.drop_duplicates(["user", "item"]))
    assert graph["edges"]["item__rev_interacts__user"] == graph["edges"]["user__interacts__item"]
    assert graph["nodes"]["genre"] > 10 and graph["edges"]["item__has_genre__genre"] > 0
    assert set(snapshot.input_versions) == {"silver.events", "silver.items", "gold.item_topics", "gold.item_embeddings"}


def test_the_model_is_trained_on_the_stored_graph(trained) -> None:
    """What is inspected (train_graph.pt) is what is learned: the model's own graph is the stored one."""
    import torch

    from models.graph import ITEM_ENTITY, ITEM_GENRE, USER_ITEM

    config, result = trained
    stored = TrainingSnapshot.load_graph(result["snapshot"]["path"])
    scorer, _ = scorer_model.load_scorer(config, C.CHAMPION_ALIAS)
    assert stored.cut.isoformat() == result["snapshot"]["valid_start"]
    for edge_type in (USER_ITEM, ITEM_GENRE, ITEM_ENTITY):
        assert torch.equal(scorer.graph[edge_type].edge_index, stored.data[edge_type].edge_index)
    assert torch.equal(scorer.graph[USER_ITEM].edge_weight, stored.data[USER_ITEM].edge_weight)
    assert torch.equal(scorer.item_text, stored.data["item"].x)
    assert scorer.topic_ids == tuple(stored.topic_ids)
    assert float(stored.data[USER_ITEM].edge_weight.min()) > 0  # affinity decayed to the cut


def test_first_model_is_registered_and_becomes_champion(trained) -> None:
    config, result = trained
    gate = result["gate"]
    assert result["train"]["version"] == 1 and gate["version"] == 1 and gate["promoted"]
    assert gate["champion_version"] is None and "first" in gate["reason"]

    import mlflow

    rows = mlflow_store.list_versions(config)
    assert [(r["version"], r["aliases"], r["decision"]) for r in rows] == [(1, "champion", "promoted")]
    client = mlflow.MlflowClient(tracking_uri=mlflow_store.tracking_uri(config))
    run = client.get_run(result["train"]["run_id"])
    assert run.data.params["input.silver.events.version"] == str(result["snapshot"]["input_versions"]["silver.events"])
    assert run.data.params["prior_half_life_days"] == "14.0"
    assert run.data.metrics["valid_ndcg_at_10"] == pytest.approx(result["train"]["validation_score"])
    assert len(run.data.tags["git_commit"]) in (40, len("unknown"))
    curve = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert len(curve) == result["train"]["epochs_run"]


def test_champion_loads_back_and_scores_exactly_as_trained(trained) -> None:
    from models.evaluation import ValidationSet

    config, result = trained
    scorer, version = scorer_model.load_scorer(config, C.CHAMPION_ALIAS)
    assert version == 1
    _, data = TrainingSnapshot.load(result["snapshot"]["path"]).split()
    ready = scorer.with_inputs(data.train, data.valid_start)
    score = ValidationSet.from_split(data).evaluate(ready, ks=(10,))["ndcg@10"]
    assert score == result["train"]["validation_score"]  # exactly, not approximately


def test_champion_uri_serves_through_pyfunc(trained) -> None:
    import mlflow
    import pandas as pd

    config, result = trained
    snapshot = TrainingSnapshot.load(result["snapshot"]["path"])
    history = list(snapshot.interactions[C.ITEM_ID].iloc[:5])
    mlflow.set_tracking_uri(mlflow_store.tracking_uri(config))
    try:
        model = mlflow.pyfunc.load_model(f"models:/{C.GCN_MODEL}@{C.CHAMPION_ALIAS}")
        out = model.predict(pd.DataFrame({"history": [history, []]}), params={"k": 7})
    finally:
        mlflow.set_tracking_uri(None)
    assert [len(items) for items in out["items"]] == [7, 7]
    assert not set(out["items"][0]) & set(history)
    assert list(out["scores"][0]) == sorted(out["scores"][0], reverse=True)
    assert set(out["items"][1]) <= set(snapshot.item_ids)


def test_gate_refuses_a_worse_model_and_an_equal_one(trained) -> None:
    config, result = trained
    path = result["snapshot"]["path"]
    champion_score = result["train"]["validation_score"]

    worse = train_candidate(config, path, WORSE, run_name="one-epoch-no-prior")
    assert worse["validation_score"] < champion_score
    decision = gate_candidate(config, path, worse["version"], worse["metric"], worse["validation_score"])
    assert not decision["promoted"] and decision["champion_version"] == 1
    assert decision["champion_score"] == champion_score  # champion re-scored on the same window
    assert decision["margin"] == config.gate_margin

    # Same settings, same seed: the same score is not "better by the margin".
    same = train_candidate(config, path, SHORT, run_name="same-again")
    assert same["validation_score"] == champion_score
    assert not gate_candidate(config, path, same["version"], same["metric"], same["validation_score"])["promoted"]

    rows = {r["version"]: r for r in mlflow_store.list_versions(config)}
    assert rows[1]["aliases"] == "champion"
    assert rows[worse["version"]]["decision"] == "rejected" and rows[worse["version"]]["aliases"] == ""
    assert rows[worse["version"]]["champion_score"] == champion_score
    assert rows[worse["version"]]["score"] == worse["validation_score"]
    # a retried gate task on the champion itself changes nothing
    again = gate_candidate(config, path, 1, "ndcg@10", champion_score)
    assert again["promoted"] and mlflow_store.list_versions(config)[-1]["aliases"] == "champion"


def test_cli_evaluate_json_and_models_rollback(trained, capsys) -> None:
    config, _ = trained
    root = ["--data-root", str(config.data_root)]

    assert main([*root, "--json", "evaluate", "--models", "uig-gcn", "most-popular"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"uig-gcn v1", "most-popular"}
    for by_users in results.values():
        assert set(by_users) == {"all", "warm"}
        assert {"ndcg@10", "recall@20", "mrr@10", "hit@10", "precision@10", "coverage@10"} <= set(by_users["all"])
        assert all(math.isfinite(v) for v in by_users["all"].values())

    versions = [r["version"] for r in mlflow_store.list_versions(config)]
    target = max(versions)
    assert main([*root, "models", "--promote", str(target), "--reason", "test rollback"]) == 0
    assert f"-> version {target} (was 1)" in capsys.readouterr().out
    assert scorer_model.load_state(config)[1] == target
    assert main([*root, "models", "--promote", "1"]) == 0  # and back
    capsys.readouterr()
    assert main([*root, "--json", "models"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1]["version"] == 1 and rows[-1]["aliases"] == "champion"

    assert main([*root, "models", "--promote", "99"]) == 2
    assert "no version 99" in capsys.readouterr().err


def test_cli_evaluate_rolling_scores_fresh_and_stale_on_the_same_user_steps(trained, capsys) -> None:
    config, _ = trained
    root = ["--data-root", str(config.data_root)]
    assert main([*root, "--json", "evaluate", "--rolling", "--step", "1d",
                 "--models", "uig-gcn", "decayed-popularity", "recency-item-knn"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == "1d" and result["window"] == "test" and result["user_steps"] > 0
    assert set(result["models"]) == {"uig-gcn v1", "decayed-popularity", "recency-item-knn"}
    for variants in result["models"].values():
        assert set(variants) == {"fresh", "stale"}
        assert {v["user_steps"] for v in variants.values()} == {result["user_steps"]}  # the same user-steps
        assert all(0 <= v["ndcg@10"] <= 1 for v in variants.values())
    uig_vs_pop = result["comparisons"]["uig-gcn v1 fresh - decayed-popularity fresh"]
    assert uig_vs_pop["diff_lo"] <= uig_vs_pop["diff"] <= uig_vs_pop["diff_hi"]
    assert main([*root, "evaluate", "--rolling", "--models", "most-popular"]) == 2  # a static-only name
    assert "unknown models" in capsys.readouterr().err
