"""Tasks of ``uig train`` / ``uig evaluate`` and the ``uig_train`` DAG.

The steps are separate functions so the DAG can run them as separate tasks that hand each other
only a path or a version number:

1. :func:`build_snapshot` reads the Delta tables once (events, catalog, topics, text vectors),
   applies the project's global temporal split and writes a small *training snapshot* folder
   (:mod:`models.snapshot`) with the train window's interest graph. Training and evaluation
   then read the snapshot, not Delta, so every step of one run sees the same data and the
   Delta versions it came from are recorded.
2. :func:`train_candidate` fits the UIG GCN on the train window over the snapshot's graph
   (early stopping on validation), finds the interest communities of that graph, logs it to
   MLflow and registers a new ``uig-gcn`` version.
3. :func:`evaluate_snapshot` scores models on the test window (the candidate or the champion,
   and the baselines in the same run) — reported, never used for any decision.
4. :func:`gate_candidate` moves ``@champion`` to the candidate only if it beats the current
   champion on the *validation* window by the configured margin.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.snapshot import SnapshotError, TrainingSnapshot
from uig_tasks.config import UigConfig
from uig_common import names as C
from uig_common.errors import InputError

__all__ = ["SnapshotError", "TrainingSnapshot", "build_snapshot", "evaluate_rolling", "evaluate_snapshot",
           "gate_candidate", "latest_snapshot", "run_train", "train_candidate", "train_config_from"]

log = logging.getLogger(__name__)

#: Model names `uig evaluate` knows, in table order; "uig-gcn" is the registered model.
MODEL_CHOICES = ("uig-gcn", "most-popular", "item-knn", "bpr-mf", "lightgcn")


def build_snapshot(config: UigConfig, built_at: datetime, folder: Path | None = None) -> dict[str, Any]:
    """Read silver/gold Delta tables into a training snapshot folder; returns a small summary (for XCom).

    Read the tables (:mod:`spark_jobs.snapshot_job`) and the text vectors → check them and split
    (:func:`models.snapshot.make_snapshot`) → the train window's interest graph at the validation
    start (edges weigh their affinity with the aggregation's half-life) → save both.
    """
    from models.snapshot import make_snapshot
    from models.text_encoder import item_encoder_version
    from spark_jobs.io import get_spark
    from spark_jobs.snapshot_job import read_training_tables
    from uig_tasks.encode import load_item_embeddings

    spark = get_spark(config.spark, "uig-snapshot")
    tables = read_training_tables(spark, config.lake)
    encoder_version = item_encoder_version()
    vectors = load_item_embeddings(spark, config, encoder_version)
    snapshot = make_snapshot(tables.events, tables.titles, tables.item_topics, vectors, tables.versions,
                             encoder_version, built_at, where=str(config.delta_dir))
    _, data = snapshot.split()
    graph = snapshot.train_graph(config.half_life_days)
    folder = snapshot.save(folder or config.data_root / "snapshots" / f"train-{built_at:%Y%m%dT%H%M%S}", graph)
    summary = {
        "path": str(folder.resolve()),
        "train_graph": graph.summary(),
        "interactions": len(snapshot.interactions),
        "users": data.n_users,
        "items": data.n_items,
        "train": len(data.train),
        "valid": len(data.valid),
        "test": len(data.test),
        "valid_start": _iso(data.valid_start),
        "test_start": _iso(data.test_start),
        "input_versions": snapshot.input_versions,
    }
    log.info("training snapshot %s: %d interactions, %d users, %d items; train/valid/test %d/%d/%d; train graph %s",
             summary["path"], summary["interactions"], data.n_users, data.n_items, len(data.train), len(data.valid),
             len(data.test), summary["train_graph"])
    return summary


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


# --- training -------------------------------------------------------------------------------
def train_config_from(overrides: dict[str, Any] | None = None):  # -> GCNTrainConfig
    """The GCN's training config: its validated defaults, then the non-None ``overrides``."""
    from models.training import GCNTrainConfig

    fields = {f.name for f in dataclasses.fields(GCNTrainConfig)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - fields
    if unknown:
        raise InputError(f"unknown training settings {sorted(unknown)}; known: {sorted(fields)}")
    config = GCNTrainConfig(**given)
    config.check()
    return config


def _validation_score(scorer: Any, data: Any, metric: str) -> float:
    """``metric`` of ``scorer`` on the validation window, with the train window as its input."""
    from models.evaluation import ValidationSet

    k = int(metric.partition("@")[2])
    ready = scorer.with_inputs(data.train, data.valid_start)
    return float(ValidationSet.from_split(data).evaluate(ready, ks=(k,))[metric])


def train_candidate(
    config: UigConfig, snapshot_path: str | Path, overrides: dict[str, Any] | None = None, run_name: str | None = None
) -> dict[str, Any]:
    """Fit the UIG GCN on the snapshot's train window, log the run to MLflow, register a version.

    Returns ``{run_id, version, metric, validation_score, epochs_run, best_epoch, seconds_per_epoch}``.
    """
    import torch

    from models.communities import graph_communities
    from models.evaluation import ValidationSet, check_no_leakage
    from models.training import fit_uig_gcn
    from uig_tasks import mlflow_store, scorer_model

    snapshot = TrainingSnapshot.load(snapshot_path)
    _, data = snapshot.split()
    check_no_leakage(data.train, data.valid_start, "train")
    train_config = train_config_from(overrides)
    torch.manual_seed(train_config.seed)
    epoch_rows: list[dict[str, float]] = []

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        epoch_rows.append({"epoch": float(epoch), **values})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        log.info("epoch %d/%d  %s", epoch, train_config.epochs, shown)

    t0 = time.perf_counter()
    graph = TrainingSnapshot.load_graph(snapshot_path)  # what training, scoring and communities read
    scorer, report = fit_uig_gcn(data.train, graph, ValidationSet.from_split(data), train_config, on_epoch)
    communities = graph_communities(graph, snapshot.meta.get("titles", {}))
    log.info("%d interest communities over %d items: %s", len(communities), sum(len(c.members) for c in communities),
             "; ".join(c.name for c in communities[:5]))
    scorer.communities = [c.to_dict() for c in communities]
    metric = train_config.metric
    score = _validation_score(scorer, data, metric)
    log.info("trained in %.0fs: %d epochs (best %d), validation %s %.4f",
             time.perf_counter() - t0, report.epochs_run, report.best_epoch, metric, score)
    record = mlflow_store.TrainingRecord(
        state=scorer.to_state(),
        params={**train_config.to_params(), "encoder_version": snapshot.encoder_version,
                "split": "global-temporal-80/10/10", "valid_start": _iso(data.valid_start),
                "test_start": _iso(data.test_start), "n_train": len(data.train)},
        metrics={f"valid_{metric}": score, "epochs_run": float(report.epochs_run),
                 "best_epoch": float(report.best_epoch), "seconds_per_epoch": report.seconds_per_epoch,
                 "communities": float(len(communities)),
                 "community_items": float(sum(len(c.members) for c in communities))},
        epoch_metrics=epoch_rows,
        input_versions=snapshot.input_versions,
        tags={"snapshot": str(Path(snapshot_path).resolve())},
    )
    run_id, version = scorer_model.log_candidate(config, record, experiment=config.mlflow_experiment, run_name=run_name)
    return {
        "run_id": run_id,
        "version": version,
        "metric": metric,
        "validation_score": score,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "seconds_per_epoch": round(report.seconds_per_epoch, 3),
    }


def gate_candidate(
    config: UigConfig, snapshot_path: str | Path, version: int, metric: str, candidate_score: float
) -> dict[str, Any]:
    """Promote ``version`` to ``@champion`` if it beats the champion on this snapshot's validation window.

    The champion is re-scored here on the same window: scores from different data are not comparable.
    A champion trained over another item catalog cannot rank this one: the candidate is promoted.
    """
    from uig_tasks import quality_gate, scorer_model

    snapshot = TrainingSnapshot.load(snapshot_path)
    _, data = snapshot.split()

    def score_champion(state: dict[str, Any]) -> float:
        champion = scorer_model.scorer_from_state(state)
        if tuple(champion.item_ids) != tuple(data.train.items):
            raise quality_gate.IncomparableChampion(
                f"it ranks {len(champion.item_ids)} items, this window's catalog has {len(data.train.items)}"
            )
        return _validation_score(champion, data, metric)

    decision = quality_gate.gate_version(
        config, version, metric=metric, candidate_score=candidate_score,
        score_champion=score_champion, margin=config.gate_margin,
    )
    return dataclasses.asdict(decision)


# --- evaluation -----------------------------------------------------------------------------
def _registered_scorer(config: UigConfig, ref: str | int, items: Sequence[object]) -> tuple[Any, str]:
    """The registered GCN ``ref`` and its label; InputError if it ranks another item index than ``items``."""
    from uig_tasks import scorer_model

    scorer, version = scorer_model.load_scorer(config, ref)
    if tuple(scorer.item_ids) != tuple(items):
        raise InputError(f"{C.GCN_MODEL} version {version} was trained over another item index; retrain it")
    return scorer, f"{C.GCN_MODEL} v{version}"


def evaluate_snapshot(
    config: UigConfig,
    snapshot_path: str | Path,
    models: Sequence[str] = MODEL_CHOICES,
    ref: str | int = C.CHAMPION_ALIAS,
    seed: int = 0,
    progress: Callable[[str], None] = lambda message: log.info("%s", message),
) -> dict[str, dict[str, dict[str, float]]]:
    """Test-window metrics ``{model: {"all"|"warm": {metric: value}}}`` under the project's protocol.

    Every model gets everything before the test window as input (fold-in, no retraining of the
    registered model); the trained baselines fit on the train window with early stopping on the
    validation window, exactly as the GCN did.
    """
    import torch

    from models.baselines import BPRMF, ItemKNN, LightGCNBaseline, MostPopular
    from models.evaluation import ValidationSet, check_no_leakage, evaluate_all_and_warm
    from models.rolling_models import AtFixedInputs

    unknown = set(models) - set(MODEL_CHOICES)
    if unknown:
        raise InputError(f"unknown models {sorted(unknown)}; choose from {', '.join(MODEL_CHOICES)}")
    snapshot = TrainingSnapshot.load(snapshot_path)
    _, data = snapshot.split()
    inputs = data.before_test
    check_no_leakage(inputs, data.test_start, "test-time input")
    history, targets = inputs.history(), data.test.history()
    warm = data.train.active_users()
    torch.manual_seed(seed)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in models:
        t0 = time.perf_counter()
        if name == C.GCN_MODEL:
            scorer, label = _registered_scorer(config, ref, data.train.items)
            scorer = AtFixedInputs(scorer, inputs, data.test_start)  # recency-weighted fold-in at the test start
        elif name == "most-popular":
            scorer, label = MostPopular().fit(inputs), name
        elif name == "item-knn":
            scorer, label = ItemKNN().fit(inputs), name
        elif name == "bpr-mf":
            scorer, label = BPRMF(seed=seed).fit(data.train, ValidationSet.from_split(data)), name
        else:
            scorer, label = LightGCNBaseline(seed=seed).fit(data.train, ValidationSet.from_split(data)), name
        results[label] = evaluate_all_and_warm(scorer, history, targets, data.n_items, warm, ks=(10, 20))
        progress(f"{label}: NDCG@10 {results[label]['all']['ndcg@10']:.4f} (all), "
                 f"{results[label]['warm']['ndcg@10']:.4f} (warm) in {time.perf_counter() - t0:.0f}s")
    return results


def evaluate_rolling(
    config: UigConfig, snapshot_path: str | Path, ref: str | int = C.CHAMPION_ALIAS, step: str = "1d",
    models: Sequence[str] = (C.GCN_MODEL, *C.ROLLING_BASELINES), seed: int = 0,
    progress: Callable[[str], None] = lambda message: log.info("%s", message),
) -> dict[str, Any]:
    """The rolling protocol on the snapshot's test window (:mod:`models.rolling`): every model fresh
    and stale on the same user-steps, with paired bootstrap intervals of fresh − stale and of the
    registered model against each baseline. Baselines are fitted on the train window here."""
    from models.rolling import rolling_protocol
    from models.rolling_models import fit_rolling_baseline

    unknown = set(models) - {C.GCN_MODEL, *C.ROLLING_BASELINES}
    if unknown:
        raise InputError(f"unknown models {sorted(unknown)}; choose from {C.GCN_MODEL}, {', '.join(C.ROLLING_BASELINES)}")
    _, data = TrainingSnapshot.load(snapshot_path).split()
    scorers: dict[str, Any] = {}
    for name in models:
        t0 = time.perf_counter()
        if name == C.GCN_MODEL:
            scorer, label = _registered_scorer(config, ref, data.train.items)
            scorers[label] = scorer
        else:
            scorers[name] = fit_rolling_baseline(name, data, seed)
        progress(f"{name} ready in {time.perf_counter() - t0:.0f}s")
    everything = data.before_test.concat(data.test)
    result = rolling_protocol(everything, data.test_start, float(data.test.ts.max()) + 1, step, scorers,
                              progress=progress)
    summary = result.summary()
    comparisons = {f"{m}: fresh - stale": result.compare((m, "fresh"), (m, "stale")) for m in scorers}
    uig = next((m for m in scorers if m.startswith(C.GCN_MODEL)), None)
    if uig is not None:
        for m in scorers:
            if m != uig:
                comparisons[f"{uig} fresh - {m} fresh"] = result.compare((uig, "fresh"), (m, "fresh"))
    return {"step": step, "window": "test", "user_steps": len(result.user_steps),
            "steps_with_targets": result.steps_with_targets, "models": summary, "comparisons": comparisons}


def latest_snapshot(config: UigConfig) -> Path:
    """The most recently built snapshot folder under the data root (what `uig evaluate` uses by default)."""
    manifests = list((config.data_root / "snapshots").glob("train-*/manifest.json"))
    if not manifests:
        raise SnapshotError(f"no training snapshot under {config.data_root / 'snapshots'}; run `uig train` first")
    return max(manifests, key=lambda m: (m.stat().st_mtime_ns, m.parent.name)).parent


def run_train(
    config: UigConfig, started_at: datetime, overrides: dict[str, Any] | None = None, run_name: str | None = None
) -> dict[str, Any]:
    """``uig train``: snapshot → fit + register → gate, in one process."""
    snapshot = build_snapshot(config, started_at)
    trained = train_candidate(config, snapshot["path"], overrides, run_name)
    decision = gate_candidate(config, snapshot["path"], trained["version"], trained["metric"], trained["validation_score"])
    return {"snapshot": snapshot, "train": trained, "gate": decision}
