"""Tasks of ``uig train`` / ``uig evaluate`` and the ``uig_train`` DAG.

The steps are separate functions so the DAG can run them as separate tasks that hand each other
only a path or a version number:

1. :func:`build_snapshot` reads the Delta tables once (events, catalog, topics, text vectors),
   applies the project's global temporal split and writes a small *training snapshot* folder.
   Training and evaluation then read the snapshot, not Delta, so every step of one run sees the
   same data and the Delta versions it came from are recorded.
2. :func:`train_candidate` fits the UIG GCN on the train window (early stopping on validation),
   logs it to MLflow and registers a new ``uig-gcn`` version.
3. :func:`evaluate_snapshot` scores models on the test window (the candidate or the champion,
   and the baselines in the same run) — reported, never used for any decision.
4. :func:`gate_candidate` moves ``@champion`` to the candidate only if it beats the current
   champion on the *validation* window by the configured margin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uig_tasks.config import UigConfig
from uig_common.errors import InputError

log = logging.getLogger(__name__)

#: Event types that name an item and therefore become user–item interactions (search does not).
INTERACTION_TYPES = ("view", "click", "rate", "like", "purchase")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: Model names `uig evaluate` knows, in table order; "uig-gcn" is the registered model.
MODEL_CHOICES = ("uig-gcn", "most-popular", "item-knn", "bpr-mf", "lightgcn")


class SnapshotError(InputError):
    """The Delta tables cannot make a training snapshot (missing tables, too little data)."""


@dataclass(frozen=True)
class TrainingSnapshot:
    """What one training run reads: interactions, the item index with its text vectors and topics."""

    interactions: pd.DataFrame  # user (user_key), item (item_id), ts (epoch seconds)
    item_ids: tuple[str, ...]
    item_text: np.ndarray  # [n_items, d] float32, row i = item_ids[i]
    item_topics: pd.DataFrame  # item_id, topic_id, topic_type
    input_versions: dict[str, int]
    encoder_version: str
    built_at: str
    meta: dict[str, Any] = field(default_factory=dict)

    # --- persistence: a folder of parquet + npy + json, readable without this code ----------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        self.item_topics.to_parquet(folder / "item_topics.parquet", index=False)
        np.save(folder / "item_text.npy", self.item_text)
        manifest = {
            "item_ids": list(self.item_ids),
            "input_versions": self.input_versions,
            "encoder_version": self.encoder_version,
            "built_at": self.built_at,
            "meta": self.meta,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> TrainingSnapshot:
        folder = Path(folder)
        if not (folder / "manifest.json").exists():
            raise SnapshotError(f"{folder} is not a training snapshot (no manifest.json); run `uig train` or the build_graph task")
        manifest = json.loads((folder / "manifest.json").read_text())
        return cls(
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            item_ids=tuple(manifest["item_ids"]),
            item_text=np.load(folder / "item_text.npy"),
            item_topics=pd.read_parquet(folder / "item_topics.parquet"),
            input_versions={k: int(v) for k, v in manifest["input_versions"].items()},
            encoder_version=manifest["encoder_version"],
            built_at=manifest["built_at"],
            meta=manifest.get("meta", {}),
        )

    # --- the protocol ---------------------------------------------------------------------
    def split(self):  # -> tuple[Split, EncodedSplit]; models.evaluation imported lazily (torch)
        """The project's global temporal split, indexed over every user and the whole catalog."""
        from models.evaluation import temporal_split

        split = temporal_split(self.interactions, SPLIT_FRACTIONS)
        return split, split.encode(items=self.item_ids)


def build_snapshot(config: UigConfig, built_at: datetime, folder: Path | None = None) -> dict[str, Any]:
    """Read silver/gold Delta tables into a training snapshot folder; returns a small summary (for XCom)."""
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs.io import get_spark, read_table, table_version
    from uig_tasks.encode import load_item_embeddings

    from models.text_encoder import item_encoder_version

    spark = get_spark(config.spark, "uig-snapshot")
    tables = (C.SILVER_EVENTS, C.SILVER_ITEMS, C.GOLD_ITEM_TOPICS, C.GOLD_ITEM_EMBEDDINGS)
    versions = {t: table_version(spark, config.lake, t) for t in tables}
    events = (
        read_table(spark, config.lake, C.SILVER_EVENTS)
        .where(F.col(C.EVENT_TYPE).isin(*INTERACTION_TYPES) & F.col(C.ITEM_ID).isNotNull())
        .select(
            F.col(C.USER_KEY).alias("user"),
            F.col(C.ITEM_ID).alias("item"),
            F.col(C.TS).cast("double").alias("ts"),  # epoch seconds
        )
        .toPandas()
    )
    if len(events) < 10:
        raise SnapshotError(
            f"silver.events has {len(events)} item interactions under {config.delta_dir}; "
            "land and ingest data first (`uig data prepare && uig ingest`)"
        )
    titles = {r[C.ITEM_ID]: r[C.TITLE] for r in read_table(spark, config.lake, C.SILVER_ITEMS).select(C.ITEM_ID, C.TITLE).collect()}
    catalog = sorted(titles)
    encoder_version = item_encoder_version()
    vector_ids, vectors = load_item_embeddings(spark, config, encoder_version)
    row_of = {item: i for i, item in enumerate(vector_ids)}
    missing = [item for item in catalog if item not in row_of]
    if missing:
        raise SnapshotError(
            f"{len(missing)} catalog items have no {encoder_version} vector (e.g. {missing[:3]}); run `uig encode` first"
        )
    unknown = sorted(set(events["item"]) - set(catalog))
    if unknown:
        raise SnapshotError(f"{len(unknown)} interacted items are not in silver.items (e.g. {unknown[:3]})")
    topics = (
        read_table(spark, config.lake, C.GOLD_ITEM_TOPICS)
        .select(C.ITEM_ID, C.TOPIC_ID, C.TOPIC_TYPE)
        .toPandas()
        .sort_values([C.ITEM_ID, C.TOPIC_ID], kind="stable")
        .reset_index(drop=True)
    )
    if topics.empty:
        raise SnapshotError(f"gold.item_topics is empty under {config.delta_dir}; run `uig aggregate` first")
    snapshot = TrainingSnapshot(
        interactions=events.sort_values(["ts", "user", "item"], kind="stable").reset_index(drop=True),
        item_ids=tuple(catalog),
        item_text=vectors[[row_of[item] for item in catalog]].astype(np.float32),
        item_topics=topics,
        input_versions=versions,
        encoder_version=encoder_version,
        built_at=built_at.isoformat(),
        meta={"titles": titles},
    )
    split, data = snapshot.split()
    folder = folder or config.data_root / "snapshots" / f"train-{built_at:%Y%m%dT%H%M%S}"
    graph = train_graph(snapshot, split.train, data.valid_start, config.half_life_days)
    snapshot.meta["train_graph"] = graph_summary(graph)
    snapshot.save(folder)
    torch_save_graph(graph, folder / "train_graph.pt")
    summary = {
        "path": str(folder.resolve()),
        "train_graph": snapshot.meta["train_graph"],
        "interactions": len(events),
        "users": data.n_users,
        "items": data.n_items,
        "train": len(data.train),
        "valid": len(data.valid),
        "test": len(data.test),
        "valid_start": _iso(data.valid_start),
        "test_start": _iso(data.test_start),
        "input_versions": versions,
    }
    log.info("training snapshot %s: %d interactions, %d users, %d items; train/valid/test %d/%d/%d; train graph %s",
             summary["path"], len(events), data.n_users, data.n_items, len(data.train), len(data.valid), len(data.test),
             summary["train_graph"])
    return summary


def train_graph(snapshot: TrainingSnapshot, train: pd.DataFrame, cut_seconds: float, half_life_days: float):  # -> InterestGraph
    """The heterogeneous interest graph of the train window at its cut (the validation start).

    User–item edges weigh ``Σ 2^(-age / half-life)`` over the pair's events at the cut; item
    nodes carry their text vectors. :func:`models.graph.build_graph` refuses anything at or
    after the cut, so the validation and test windows cannot enter.
    """
    from models.graph import build_graph

    age_days = (cut_seconds - train["ts"].to_numpy()) / 86_400.0
    edges = (
        train.assign(weight=np.exp2(-age_days / half_life_days))
        .groupby(["user", "item"], as_index=False)
        .agg(weight=("weight", "sum"), last_ts=("ts", "max"))
        .rename(columns={"user": "user_key", "item": "item_id"})
    )
    edges["last_ts"] = pd.to_datetime(edges["last_ts"], unit="s", utc=True)
    cut = datetime.fromtimestamp(cut_seconds, timezone.utc)
    return build_graph(edges, snapshot.item_topics, list(snapshot.item_ids), cut, item_features=snapshot.item_text)


def train_communities(snapshot: TrainingSnapshot, train: pd.DataFrame) -> list:  # -> list[Community]
    """Interest communities of the train window (:mod:`models.communities`), named by genres and titles."""
    from models.communities import find_communities

    genres = snapshot.item_topics[snapshot.item_topics["topic_type"] == "genre"]
    item_genres = {item: [t.split(":", 1)[-1] for t in group["topic_id"]] for item, group in genres.groupby("item_id")}
    found = find_communities(train, item_genres, snapshot.meta.get("titles", {}))
    log.info("%d interest communities over %d items: %s", len(found), sum(len(c.members) for c in found),
             "; ".join(c.name for c in found[:5]))
    return found


def graph_summary(graph: Any) -> dict[str, Any]:
    """Node and edge counts per type of an :class:`models.graph.InterestGraph` (for logs and XCom)."""
    data = graph.data
    return {
        "cut": graph.cut.isoformat(),
        "nodes": {t: int(data[t].num_nodes) for t in data.node_types},
        "edges": {"__".join(t): int(data[t].edge_index.size(1)) for t in data.edge_types},
    }


def torch_save_graph(graph: Any, path: Path) -> None:
    """The HeteroData and its node ids, for inspection (``torch.load(path, weights_only=False)``)."""
    import torch

    torch.save({"data": graph.data, "user_ids": graph.user_ids, "item_ids": graph.item_ids,
                "genre_ids": graph.genre_ids, "entity_ids": graph.entity_ids, "cut": graph.cut.isoformat()}, path)


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

    from models.evaluation import ValidationSet, check_no_leakage
    from models.training import fit_uig_gcn
    from uig_tasks import mlflow_store, scorer_model

    snapshot = TrainingSnapshot.load(snapshot_path)
    split, data = snapshot.split()
    check_no_leakage(data.train, data.valid_start, "train")
    train_config = train_config_from(overrides)
    torch.manual_seed(train_config.seed)
    epoch_rows: list[dict[str, float]] = []

    def on_epoch(epoch: int, values: dict[str, float]) -> None:
        epoch_rows.append({"epoch": float(epoch), **values})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        log.info("epoch %d/%d  %s", epoch, train_config.epochs, shown)

    t0 = time.perf_counter()
    scorer, report = fit_uig_gcn(
        data.train, snapshot.item_text, snapshot.item_topics, ValidationSet.from_split(data), train_config, on_epoch,
        as_of=data.valid_start,
    )
    communities = train_communities(snapshot, split.train)
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
def evaluate_snapshot(
    config: UigConfig,
    snapshot_path: str | Path,
    models: Sequence[str] = MODEL_CHOICES,
    ref: str | int = "champion",
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
    from uig_tasks import scorer_model

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
        if name == "uig-gcn":
            scorer, version = scorer_model.load_scorer(config, ref)
            if tuple(scorer.item_ids) != tuple(data.train.items):
                raise InputError(f"uig-gcn version {version} was trained over another item index; retrain it")
            scorer = scorer.with_inputs(inputs, data.test_start)
            label = f"uig-gcn v{version}"
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
    config: UigConfig, snapshot_path: str | Path, ref: str | int = "champion",
    progress: Callable[[str], None] = lambda message: log.info("%s", message),
) -> dict[str, dict[str, float]]:
    """Day-by-day evaluation of the refresh loop over the test window (:mod:`models.rolling`)."""
    from models.rolling import rolling_evaluation
    from uig_tasks import scorer_model

    _, data = TrainingSnapshot.load(snapshot_path).split()
    scorer, version = scorer_model.load_scorer(config, ref)
    if tuple(scorer.item_ids) != tuple(data.train.items):
        raise InputError(f"uig-gcn version {version} was trained over another item index; retrain it")
    results = rolling_evaluation(data, scorer, progress)
    return {name.replace("gcn", f"uig-gcn v{version}"): values for name, values in results.items()}


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
