"""The MLflow registry on a real SQLite store: logging, the quality gate, loading back, rollback.

One registry (one SQLite file, created once: its schema migration is the slow part) serves the
whole module; each scenario uses its own registered-model name so the tests stay independent.
The scorer is a tiny stand-in with the same state contract as the GCN scorer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before anything imports mlflow

import torch  # noqa: E402

from uig_common.names import CHAMPION_ALIAS, GCN_MODEL  # noqa: E402
from uig_tasks import mlflow_store, quality_gate, scorer_model  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_tasks.mlflow_store import RegistryError, TrainingRecord  # noqa: E402

pytestmark = [
    pytest.mark.integration,
]

LOADER = f"{__name__}:TinyScorer.from_state"
METRIC = "ndcg@10"


class TinyScorer:
    """Mean-of-history item embeddings dotted with every item embedding, plus an item bias."""

    def __init__(self, item_ids: Sequence[str], embeddings: torch.Tensor, bias: torch.Tensor, quality: float) -> None:
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.embeddings, self.bias, self.quality = embeddings, bias, quality

    @classmethod
    def random(cls, seed: int, quality: float, n_items: int = 40, dim: int = 8) -> TinyScorer:
        g = torch.Generator().manual_seed(seed)
        return cls([str(100 + i) for i in range(n_items)], torch.randn(n_items, dim, generator=g),
                   torch.randn(n_items, generator=g), quality)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TinyScorer:
        return cls(state["item_ids"], state["embeddings"], state["bias"], state["quality"])

    def to_state(self) -> dict[str, Any]:
        return {"loader": LOADER, "item_ids": list(self.item_ids), "embeddings": self.embeddings.clone(),
                "bias": self.bias.clone(), "quality": self.quality, "config": {"dim": self.embeddings.size(1)}}

    def score(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        users = torch.stack([self.embeddings[[self.index[i] for i in h]].mean(0) if h
                             else torch.zeros(self.embeddings.size(1)) for h in histories])
        return users @ self.embeddings.T + self.bias

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        scores = self.score(histories)
        for row, history in enumerate(histories):
            scores[row, [self.index[i] for i in history]] = float("-inf")
        values, order = torch.sort(scores, dim=1, descending=True, stable=True)
        return [[(self.item_ids[int(i)], float(v)) for i, v in zip(o[:k], vals[:k]) if v != float("-inf")]
                for o, vals in zip(order, values)]


def record(scorer: TinyScorer, **extra: Any) -> TrainingRecord:
    epochs = [{"epoch": e, "train_loss": 1.0 / e, METRIC: scorer.quality * e / 3} for e in (1, 2, 3)]
    return TrainingRecord(
        state=scorer.to_state(),
        params={"dim": scorer.embeddings.size(1), "epochs": 3, "seed": 0},
        metrics={METRIC: scorer.quality, "best_epoch": 3},
        epoch_metrics=epochs,
        input_versions={"gold.user_item_affinity": 7, "silver.items": 2},
        tags={"snapshot": "snap-1"},
        **extra,
    )


def rescore(state: dict[str, Any]) -> float:
    """Stands in for re-scoring a champion on the candidate's validation window."""
    return float(state["quality"])


def register(config: UigConfig, scorer: TinyScorer, model_name: str, margin: float = 0.01,
             score_champion=rescore) -> quality_gate.GateDecision:
    return quality_gate.register_candidate(config, record(scorer), metric=METRIC, candidate_score=scorer.quality,
                                           score_champion=score_champion, margin=margin, model_name=model_name)


@pytest.fixture(scope="module", autouse=True)
def isolated_mlflow_env() -> Iterator[None]:
    """No ambient MLflow server or registry: everything goes to this module's SQLite file."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        yield


@pytest.fixture(scope="module")
def cfg(isolated_mlflow_env: None, tmp_path_factory: pytest.TempPathFactory) -> UigConfig:
    return UigConfig.from_env(env={}, data_root=tmp_path_factory.mktemp("registry") / "data", user_salt="test-salt")


@pytest.fixture(scope="module")
def gated(cfg: UigConfig) -> list[quality_gate.GateDecision]:
    """Three candidates for one model: first, clearly better, then worse than champion + margin."""
    seen: list[float] = []

    def rescore_and_remember(state: dict[str, Any]) -> float:
        seen.append(state["quality"])
        return rescore(state)

    decisions = [register(cfg, TinyScorer.random(1, 0.30), "gate-test", score_champion=rescore_and_remember)]
    decisions.append(register(cfg, TinyScorer.random(2, 0.31), "gate-test", score_champion=rescore_and_remember))
    decisions.append(register(cfg, TinyScorer.random(3, 0.315), "gate-test", score_champion=rescore_and_remember))
    assert seen == [0.30, 0.31]  # the current champion's state was re-scored each time
    return decisions


def client(cfg: UigConfig):
    import mlflow

    uri = mlflow_store.tracking_uri(cfg)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_tags(cfg: UigConfig, model_name: str, version: int) -> dict[str, str]:
    return client(cfg).get_model_version(model_name, str(version)).tags


def test_first_version_becomes_champion(cfg, gated):
    first = gated[0]
    assert (first.version, first.promoted, first.champion_version, first.champion_score) == (1, True, None, None)
    tags = version_tags(cfg, "gate-test", 1)
    assert tags["gate.decision"] == "promoted"
    assert tags["gate.champion_version"] == ""
    assert "became @champion (first champion)" in tags["alias.history"]


def test_candidate_at_champion_plus_margin_is_promoted(cfg, gated):
    second = gated[1]
    # 0.31 >= 0.30 + 0.01 exactly, although 0.30 + 0.01 is 0.31000000000000005 in floats
    assert (second.version, second.promoted, second.champion_version, second.champion_score) == (2, True, 1, 0.30)
    assert "left @champion (now version 2)" in version_tags(cfg, "gate-test", 1)["alias.history"]


def test_worse_candidate_is_rejected_and_tagged(cfg, gated):
    third = gated[2]
    assert (third.version, third.promoted, third.champion_version, third.champion_score) == (3, False, 2, 0.31)
    assert scorer_model.load_state(cfg, model_name="gate-test")[1] == 2  # alias unchanged
    tags = version_tags(cfg, "gate-test", 3)
    assert tags["gate.decision"] == "rejected"
    assert tags["gate.metric"] == METRIC
    assert float(tags["gate.candidate_score"]) == 0.315
    assert float(tags["gate.champion_score"]) == 0.31
    assert tags["gate.champion_version"] == "2"
    assert float(tags["gate.margin"]) == 0.01
    assert "0.3150 < champion version 2 0.3100 + margin 0.01" in tags["gate.reason"]
    assert "alias.history" not in tags


def test_run_logs_params_metrics_inputs_and_git_commit(cfg, gated):
    import mlflow

    store = client(cfg)
    run = store.get_run(gated[2].run_id)
    history = store.get_metric_history(run.info.run_id, "ndcg_at_10")  # ndcg@10: '@' is not allowed in keys
    experiment = store.get_experiment(run.info.experiment_id)
    assert run.data.params["dim"] == "8"
    assert run.data.params["input.gold.user_item_affinity.version"] == "7"
    assert run.data.params["input.silver.items.version"] == "2"
    assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [
        (1, 0.105), (2, 0.21), (3, 0.315), (4, 0.315)]  # per epoch, then the final value after them
    assert run.data.metrics["ndcg_at_10"] == 0.315 and run.data.metrics["best_epoch"] == 3
    tags = run.data.tags
    commit = tags["git_commit"]
    assert commit == "unknown" or (len(commit) == 40 and tags["mlflow.source.git.commit"] == commit)
    assert tags["git_dirty"] in {"true", "false", "unknown"}
    assert tags["snapshot"] == "snap-1"
    assert tags["gate.decision"] == "rejected" and float(tags["gate.champion_score"]) == 0.31
    assert experiment.artifact_location == (cfg.data_root / "mlflow" / "artifacts").resolve().as_uri()
    assert mlflow.get_tracking_uri() != mlflow_store.tracking_uri(cfg)  # the global URI was put back
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_list_versions_rows_for_the_cli(cfg, gated):
    rows = mlflow_store.list_versions(cfg, "gate-test")
    assert [(r["version"], r["aliases"], r["decision"]) for r in rows] == [
        (3, "", "rejected"), (2, "champion", "promoted"), (1, "", "promoted")]
    assert rows[0]["metric"] == METRIC and rows[0]["score"] == 0.315 and rows[0]["champion_score"] == 0.31
    assert rows[0]["run_id"] == gated[2].run_id


def test_champion_uri_loads_back_and_scores_exactly_as_trained(cfg, monkeypatch):
    import mlflow
    import pandas as pd

    trained = TinyScorer.random(7, 0.4)
    decision = register(cfg, trained, GCN_MODEL)
    assert decision.promoted

    scorer, version = scorer_model.load_scorer(cfg)
    histories = [["100", "105", "110"], ["139"], []]
    assert version == decision.version
    assert torch.equal(scorer.score(histories), trained.score(histories))
    state, by_number = scorer_model.load_state(cfg, decision.version)
    assert by_number == decision.version and state["item_ids"] == trained.item_ids
    assert torch.equal(state["embeddings"], trained.embeddings) and state["config"] == {"dim": 8}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store.tracking_uri(cfg))
    served = mlflow.pyfunc.load_model(f"models:/{GCN_MODEL}@{CHAMPION_ALIAS}")
    out = served.predict(pd.DataFrame({"history": histories}), params={"k": 5})
    expected = trained.recommend(histories, 5)
    assert [list(items) for items in out["items"]] == [[i for i, _ in row] for row in expected]
    assert [list(scores) for scores in out["scores"]] == [[s for _, s in row] for row in expected]
    assert not set(out["items"][0]) & set(histories[0])


def test_set_champion_rolls_back(cfg):
    register(cfg, TinyScorer.random(11, 0.20), "rollback-test")
    register(cfg, TinyScorer.random(12, 0.25), "rollback-test")
    assert scorer_model.load_state(cfg, model_name="rollback-test")[1] == 2

    previous = mlflow_store.set_champion(cfg, 1, model_name="rollback-test", reason="v2 misbehaves in production")
    assert previous == 2
    state, version = scorer_model.load_state(cfg, model_name="rollback-test")
    assert (version, state["quality"]) == (1, 0.20)
    history = version_tags(cfg, "rollback-test", 1)["alias.history"].splitlines()
    assert len(history) == 3  # first champion, left for v2, back from v2
    assert "became @champion (from version 2): v2 misbehaves in production" in history[-1]
    with pytest.raises(RegistryError, match="no version 9"):
        mlflow_store.set_champion(cfg, 9, model_name="rollback-test")


def test_champion_that_cannot_be_rescored_blocks_promotion(cfg):
    register(cfg, TinyScorer.random(21, 0.20), "error-test")

    def broken(state: dict[str, Any]) -> float:
        raise KeyError("item 999 not in the champion's catalog")

    with pytest.raises(RegistryError, match="version 2 is registered but was not gated.*--promote 2"):
        register(cfg, TinyScorer.random(22, 0.90), "error-test", score_champion=broken)
    assert scorer_model.load_state(cfg, model_name="error-test")[1] == 1
    tags = version_tags(cfg, "error-test", 2)
    assert tags["gate.decision"] == "error" and "item 999" in tags["gate.reason"]


def test_champion_over_another_catalog_is_no_bar(cfg):
    register(cfg, TinyScorer.random(31, 0.90), "catalog-test")

    def other_catalog(state: dict[str, Any]) -> float:
        raise quality_gate.IncomparableChampion("it ranks 40 items, this window's catalog has 41")

    decision = register(cfg, TinyScorer.random(32, 0.10), "catalog-test", score_champion=other_catalog)
    assert decision.promoted and decision.champion_version == 1 and decision.champion_score is None
    assert "cannot be scored" in decision.reason and "41" in decision.reason
    assert scorer_model.load_state(cfg, model_name="catalog-test")[1] == 2
    assert version_tags(cfg, "catalog-test", 2)["gate.decision"] == "promoted"


def test_tracking_uri_env_overrides_the_data_root(cfg, tmp_path, monkeypatch):
    other = UigConfig.from_env(env={}, data_root=tmp_path / "other-root")
    assert mlflow_store.tracking_uri(other) == f"sqlite:///{(tmp_path / 'other-root' / 'mlflow' / 'mlflow.db').resolve()}"

    shared = mlflow_store.tracking_uri(cfg)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared)
    assert mlflow_store.tracking_uri(other) == shared
    decision = register(other, TinyScorer.random(31, 0.5), "override-test")
    assert not (tmp_path / "other-root").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert [r["version"] for r in mlflow_store.list_versions(cfg, "override-test")] == [decision.version]


def test_clear_errors(cfg, tmp_path):
    with pytest.raises(RegistryError, match="no @champion yet.*run `uig train`"):
        scorer_model.load_state(cfg, model_name="never-trained")
    with pytest.raises(RegistryError, match="no alias @staging"):
        scorer_model.load_scorer(cfg, "staging", model_name="gate-test")
    scorer = TinyScorer.random(41, 0.1)
    no_loader = TrainingRecord(state={k: v for k, v in scorer.to_state().items() if k != "loader"})
    with pytest.raises(RegistryError, match="needs a 'loader' entry"):
        quality_gate.register_candidate(cfg, no_loader, metric=METRIC, candidate_score=0.1, score_champion=None,
                                        margin=0.0, model_name="bad-test")
    import numpy as np

    numpy_state = TrainingRecord(state={**scorer.to_state(), "embeddings": np.zeros((2, 2))})
    with pytest.raises(RegistryError, match="convert numpy arrays"):
        quality_gate.register_candidate(cfg, numpy_state, metric=METRIC, candidate_score=0.1, score_champion=None,
                                        margin=0.0, model_name="bad-test")
    with pytest.raises(RegistryError, match="pass score_champion"):
        quality_gate.register_candidate(cfg, record(scorer), metric=METRIC, candidate_score=0.1, score_champion=None,
                                        margin=0.0, model_name="gate-test")
    assert mlflow_store.list_versions(cfg, "bad-test") == []


def test_the_registry_database_is_readable_by_its_owner_only(cfg, gated):
    db = cfg.data_root / "mlflow" / "mlflow.db"
    assert db.stat().st_size > 0 and db.stat().st_mode & 0o777 == 0o600
