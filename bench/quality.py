"""Recommendation quality on MovieLens-100k: the UIG GCN against every baseline, one protocol.

Protocol (models/evaluation.py): global temporal split 80/10/10; full ranking over all items
with each user's earlier interactions masked; metrics over all test users and over warm ones
(with a training interaction). Popularity and item-KNN take everything before the test window
as input; BPR-MF, LightGCN and the UIG GCN train on the train window only, stop early on
validation NDCG@10 (train as input), and are tested with train + validation as input history
(fold-in for users unseen in training; the UIG GCN also recomputes its popularity prior at the
test start — its recency-weighted fold-in through ``score_at``). Trained models: mean ± std over ``--seeds``.

The UIG GCN trains over the train window's interest graph (``models.graph.train_window_graph``,
edges weighted by affinity at the validation start with the aggregation's half-life — the graph
``uig train`` stores as ``train_graph.pt``). Every UIG GCN setting, whether propagation uses
those affinity weights or unit weights included, was chosen on the validation window;
``--select`` reruns that comparison (train → validation only, the test window is never read) and
writes it as its own section.

    .venv/bin/python bench/quality.py                 # seeds 0 1 2, writes the "quality" section
    .venv/bin/python bench/quality.py --quick         # one seed, few epochs, prints only
    .venv/bin/python bench/quality.py --select        # the validation comparison behind the defaults
                                                      # (the edge weights over --seeds)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, stamp, write_section  # noqa: E402
from models.baselines import BPRMF, ItemKNN, LightGCNBaseline, MostPopular  # noqa: E402
from models.bpr import FitReport  # noqa: E402
from models.evaluation import (  # noqa: E402
    EncodedSplit,
    History,
    Interactions,
    Scorer,
    ValidationSet,
    check_no_leakage,
    evaluate_all_and_warm,
    temporal_split,
)
from models.gcn import EDGE_WEIGHTS  # noqa: E402
from models.rolling_models import AtFixedInputs  # noqa: E402
from models.graph import InterestGraph, train_window_graph  # noqa: E402
from models.training import GCNTrainConfig, UigGCNScorer, decayed_popularity, fit_uig_gcn  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_tasks.movielens import items as catalog_items, movielens_dir, rating_events  # noqa: E402

COLUMNS = [
    ("NDCG@10", "ndcg@10"),
    ("Recall@10", "recall@10"),
    ("Recall@20", "recall@20"),
    ("MRR@10", "mrr@10"),
    ("Hit@10", "hit@10"),
    ("Precision@10", "precision@10"),
    ("Coverage@10", "coverage@10"),
]
UIG = "UIG GCN"


# --------------------------------------------------------------------------------------------
# Data: ratings, item text embeddings and item topics, as the product builds them


def load_ratings(ml_dir: Path) -> pd.DataFrame:
    """Every rating as an implicit (user, item, ts) interaction; ids are the files' strings."""
    events = [e for day in rating_events(ml_dir).values() for e in day]
    return pd.DataFrame(
        {
            "user": [str(e["user_id"]) for e in events],
            "item": [str(e["item_id"]) for e in events],
            "ts": np.array([e["ts"] for e in events], dtype=np.int64),
        }
    )


def item_text_embeddings(catalog: list[dict[str, object]], item_ids: tuple) -> np.ndarray:
    """Text embeddings [len(item_ids), 384] from the product's item text recipe, row i = item_ids[i]."""
    from models.text_encoder import TextEncoder, item_text

    by_id = {str(r["item_id"]): r for r in catalog}
    missing = [i for i in item_ids if str(i) not in by_id]
    if missing:
        raise LookupError(f"{len(missing)} rated items are not in the catalog (e.g. {missing[:5]})")
    texts = [item_text(r["title"], r["genres"], r["year"], r["entities"])
             for r in (by_id[str(i)] for i in item_ids)]
    return TextEncoder(device="cpu").encode(texts)


def item_topics_frame(catalog: list[dict[str, object]], kg_min_items: int) -> pd.DataFrame:
    """Item → topic rows as ``spark_jobs.transforms.aggregate.item_topics`` makes them: every genre
    (``genre:<name>``) and each KG entity shared by at least ``kg_min_items`` items
    (``kg:<entity>``, type ``kg:<relation>``)."""
    genres = [(str(r["item_id"]), f"genre:{g}", "genre") for r in catalog for g in r["genres"]]
    entities = pd.DataFrame(
        [(str(r["item_id"]), f"kg:{e['entity_id']}", "kg:" + e["relation"].removeprefix("film.film."))
         for r in catalog for e in r["entities"]],
        columns=["item_id", "topic_id", "topic_type"],
    )
    shared = entities.groupby("topic_id")["item_id"].nunique()
    kg = entities[entities["topic_id"].isin(shared[shared >= kg_min_items].index)]
    frame = pd.concat([pd.DataFrame(genres, columns=kg.columns), kg], ignore_index=True)
    return frame.drop_duplicates().reset_index(drop=True)


@dataclasses.dataclass
class Data:
    split: EncodedSplit
    graph: InterestGraph  # the train window's, cut at the validation start
    warm: np.ndarray
    validation: ValidationSet
    summary: str


def load_data() -> Data:
    ml_dir = movielens_dir()
    df = load_ratings(ml_dir)
    split = temporal_split(df, (0.8, 0.1, 0.1))
    data = split.encode()
    check_no_leakage(data.train, data.valid_start, "train")
    catalog = catalog_items(ml_dir)
    t0 = time.perf_counter()
    text = item_text_embeddings(catalog, data.train.items)
    print(f"encoded {len(text)} item texts in {time.perf_counter() - t0:.0f} s", flush=True)
    topics = item_topics_frame(catalog, UigConfig.kg_min_items)
    graph = train_window_graph(data.train, topics, text, UigConfig.half_life_days, data.valid_start)
    warm = data.train.active_users()
    test_users, valid_users = data.test.active_users(), data.valid.active_users()
    with_input = np.unique(data.before_test.user_ids)
    n = len(df)
    summary = (
        f"MovieLens-100k: {n:,} ratings, {data.n_users} users, {data.n_items} items, "
        f"{(topics.topic_type == 'genre').sum():,} item–genre and {(topics.topic_type != 'genre').sum():,} item–KG edges "
        f"(entities shared by ≥ {UigConfig.kg_min_items} items). Split: train {len(data.train):,}, "
        f"validation {len(data.valid):,}, test {len(data.test):,}. Test users {test_users.size}: "
        f"{np.intersect1d(test_users, warm).size} warm, {np.intersect1d(test_users, with_input).size} with any "
        f"input before the test window, {test_users.size - np.intersect1d(test_users, with_input).size} with none. "
        f"Validation users {valid_users.size} ({np.intersect1d(valid_users, warm).size} warm)."
    )
    print(summary, flush=True)
    return Data(data, graph, warm, ValidationSet.from_split(data), summary)


# --------------------------------------------------------------------------------------------
# Runs


@dataclasses.dataclass
class Row:
    name: str
    results: list[dict[str, dict[str, float]]]
    reports: list[FitReport]
    trained: bool
    kind: str = "baseline"  # baseline | uig | ablation


def test_run(model: Scorer, data: EncodedSplit, warm: np.ndarray) -> dict[str, dict[str, float]]:
    """Test-window metrics with everything before the test window as input history."""
    inputs = data.before_test
    check_no_leakage(inputs, data.test_start, "test-time input")
    return evaluate_all_and_warm(model, inputs.history(), data.test.history(), data.n_items, warm, ks=(10, 20))


class DecayedPopularity:
    """Ablation: the UIG GCN's non-learned prior alone (same list for every user)."""

    def __init__(self, half_life_days: float) -> None:
        self.half_life_days = half_life_days
        self.scores: torch.Tensor | None = None
        self.report = FitReport()

    def fit(self, inputs: Interactions, as_of: float) -> DecayedPopularity:
        t0 = time.perf_counter()
        pop = decayed_popularity(inputs.item_ids, inputs.ts, inputs.n_items, as_of, self.half_life_days)
        self.scores = torch.from_numpy(pop.astype(np.float32))
        self.report = FitReport(epochs_run=1, best_epoch=1, train_seconds=time.perf_counter() - t0)
        return self

    def score(self, users: torch.Tensor, history: History) -> torch.Tensor:
        assert self.scores is not None, "fit first"
        return self.scores.unsqueeze(0).repeat(len(users), 1)


def fit_uig(data: Data, config: GCNTrainConfig, label: str) -> tuple[UigGCNScorer, FitReport]:
    t0 = time.perf_counter()

    def progress(epoch: int, values: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        print(f"  {label} epoch {epoch}: {shown}", flush=True)

    scorer, report = fit_uig_gcn(data.split.train, data.graph, data.validation, config, progress)
    print(f"{label}: {report.epochs_run} epochs (best {report.best_epoch}, valid {config.metric} "
          f"{report.best_score:.4f}), {report.seconds_per_epoch:.2f} s/epoch, {time.perf_counter() - t0:.0f} s",
          flush=True)
    return scorer, report


def run_all(data: Data, seeds: list[int], epochs: int | None, knn_k: int, patience: int) -> list[Row]:
    split, warm = data.split, data.warm
    rows: list[Row] = []
    for name, model in (("MostPopular", MostPopular()), (f"ItemKNN (k={knn_k})", ItemKNN(k=knn_k))):
        check_no_leakage(split.before_test, split.test_start, f"{name} input")
        model.fit(split.before_test)
        rows.append(Row(name, [test_run(model, split, warm)], [model.report], trained=False))
        print(f"{name}: done", flush=True)
    epochs_kw = {} if epochs is None else {"epochs": epochs}
    trained: dict[str, Callable[[int], BPRMF | LightGCNBaseline]] = {
        "BPR-MF": lambda s: BPRMF(seed=s, patience=patience, **epochs_kw),
        "LightGCN": lambda s: LightGCNBaseline(seed=s, patience=patience, **epochs_kw),
    }
    for name, make in trained.items():
        results, reports = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            model = make(seed)
            model.fit(split.train, data.validation)
            r = model.report
            results.append(test_run(model, split, warm))
            reports.append(r)
            print(f"{name} seed {seed}: {r.epochs_run} epochs (best {r.best_epoch}, valid NDCG@10 {r.best_score:.4f}), "
                  f"{r.seconds_per_epoch:.2f} s/epoch, {time.perf_counter() - t0:.0f} s", flush=True)
        rows.append(Row(name, results, reports, trained=True))

    config = GCNTrainConfig(patience=patience, **epochs_kw)
    prior = DecayedPopularity(config.prior_half_life_days).fit(split.before_test, split.test_start)
    rows.append(Row(f"ablation: UIG prior alone (decayed popularity, half-life {config.prior_half_life_days:g} d)",
                    [test_run(prior, split, warm)], [prior.report], trained=False, kind="ablation"))
    results, reports = [], []
    for seed in seeds:
        scorer, report = fit_uig(data, dataclasses.replace(config, seed=seed), f"{UIG} seed {seed}")
        # recency-weighted fold-in and the prior, both at the test start (what `uig evaluate` scores)
        results.append(test_run(AtFixedInputs(scorer, split.before_test, split.test_start), split, warm))
        reports.append(report)
    rows.append(Row(UIG, results, reports, trained=True, kind="uig"))
    return rows


# --------------------------------------------------------------------------------------------
# Report


def fmt(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mean_metric(row: Row, group: str, key: str = "ndcg@10") -> float:
    return statistics.mean(r[group][key] for r in row.results)


def verdict(rows: list[Row]) -> list[str]:
    """Whether the UIG GCN beats every baseline on NDCG@10 (means over seeds), from the numbers."""
    uig = next(r for r in rows if r.kind == "uig")
    baselines = [r for r in rows if r.kind == "baseline"]
    lines = []
    for group, label in (("all", "all test users"), ("warm", "warm test users")):
        best = max(baselines, key=lambda r: mean_metric(r, group))
        ours, theirs = mean_metric(uig, group), mean_metric(best, group)
        sd = statistics.stdev([r[group]["ndcg@10"] for r in uig.results]) if len(uig.results) > 1 else 0.0
        word = "**beats**" if all(ours > mean_metric(b, group) for b in baselines) else "**does not beat**"
        lines.append(f"- {label}: the UIG GCN {word} every baseline on NDCG@10 — {ours:.4f} vs the best baseline "
                     f"({best.name}) {theirs:.4f}, difference {ours - theirs:+.4f} (UIG seed std {sd:.4f}).")
    ablation = next((r for r in rows if r.kind == "ablation"), None)
    if ablation is not None:
        lines.append(
            f"- against its own prior alone (ablation): all {mean_metric(uig, 'all') - mean_metric(ablation, 'all'):+.4f}, "
            f"warm {mean_metric(uig, 'warm') - mean_metric(ablation, 'warm'):+.4f} NDCG@10 — what training adds."
        )
    return lines


def table(rows: list[Row]) -> list[str]:
    header = ["model", "users", *(c for c, _ in COLUMNS), "train s/epoch (epochs run)"]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for group in ("all", "warm"):
        for row in rows:
            n_users = int(row.results[0][group]["n_users"])
            cells = [fmt([r[group][key] for r in row.results]) for _, key in COLUMNS]
            if row.trained:
                spe = f"{statistics.mean(r.seconds_per_epoch for r in row.reports):.2f} ({'/'.join(str(r.epochs_run) for r in row.reports)})"
            else:
                spe = f"{row.reports[0].train_seconds:.2f} s fit"
            name = f"{row.name} ({len(row.results)} seeds)" if row.trained else row.name
            out.append(f"| {name} | {group} ({n_users}) | " + " | ".join(cells) + f" | {spe} |")
    return out


def markdown(rows: list[Row], data: Data, seeds: list[int], seconds: float) -> str:
    uig = next(r for r in rows if r.kind == "uig")
    config = GCNTrainConfig()
    return "\n".join([
        "## Recommendation quality (MovieLens-100k, global temporal split)",
        "",
        f"{stamp()} · {machine()} · 1 torch thread · seeds {' '.join(map(str, seeds))} · whole run {seconds / 60:.1f} min",
        "· `.venv/bin/python bench/quality.py`",
        "",
        data.summary,
        "",
        "Protocol: `models/evaluation.py` — split 80/10/10 by time; full ranking over all items, input items masked; "
        "MostPopular and ItemKNN use everything before the test window as input; the trained models fit on the train "
        "window only, stop early on validation NDCG@10 (train as input), and are tested with train + validation as "
        "input history (fold-in). Trained models: mean ± std over seeds; \"warm\" = users with a training interaction.",
        "",
        *table(rows),
        "",
        "NDCG@10 verdict (computed from the table):",
        "",
        *verdict(rows),
        "",
        f"UIG GCN settings (`GCNTrainConfig` defaults, chosen on the validation window — see the "
        f"`quality-selection` section): `{config.to_params()}`; best validation NDCG@10 per seed: "
        + ", ".join(f"{r.best_score:.4f}" for r in uig.reports) + ".",
    ])


# --------------------------------------------------------------------------------------------
# Selection on the validation window (the test window is never read here)


TIE = 0.002  # validation NDCG@10 differences below this are treated as noise


def selection_candidates(base: GCNTrainConfig) -> list[tuple[str, GCNTrainConfig]]:
    """One factor at a time around ``base`` (the defaults); the edge weights have their own table."""
    variants: list[tuple[str, dict[str, object]]] = [("defaults", {})]
    for field, values in (
        ("personal_weight", (0.0, 0.05, 0.25, 1.0)),
        ("prior_weight", (0.5, 2.0)),
        ("prior_half_life_days", (7.0, 30.0)),
        ("topic_weight", (0.0,)),
        ("num_layers", (1, 3)),
        ("lr", (1e-3,)),
        ("reg", (1e-3,)),
    ):
        for value in values:
            if getattr(base, field) != value:
                variants.append((f"{field}={value:g}", {field: value}))
    return [(label, dataclasses.replace(base, **kw)) for label, kw in variants]


def select(data: Data, quick: bool, seeds: list[int]) -> str:
    split = data.split
    lines = ["## UIG GCN settings chosen on the validation window", "",
             f"{stamp()} · {machine()} · 1 torch thread · `.venv/bin/python bench/quality.py --select`", "",
             "Train window → validation window only (train as input, prior at the validation start); the test window "
             "is not read. Non-learned half-life of the prior (the popularity ranking alone):", "",
             "| half-life (days) | valid NDCG@10 all | warm |", "|---|---|---|"]
    valid_history, targets = split.train.history(), split.valid.history()
    for hl in (3.5, 7.0, 14.0, 30.0, 60.0, float("inf")):
        model = DecayedPopularity(hl).fit(split.train, split.valid_start)
        r = evaluate_all_and_warm(model, valid_history, targets, split.n_items, data.warm, ks=(10,))
        lines.append(f"| {hl:g} | {r['all']['ndcg@10']:.4f} | {r['warm']['ndcg@10']:.4f} |")
        print(lines[-1], flush=True)
    fitted: dict[GCNTrainConfig, tuple[dict[str, dict[str, float]], FitReport]] = {}

    def validate(label: str, config: GCNTrainConfig) -> tuple[dict[str, dict[str, float]], FitReport]:
        if config not in fitted:
            scorer, report = fit_uig(data, config, label)
            fitted[config] = (evaluate_all_and_warm(AtFixedInputs(scorer, split.train, split.valid_start), valid_history,
                                                    targets, split.n_items, data.warm, ks=(10,)), report)
        return fitted[config]

    lines += ["", "Trained UIG GCN (seed 0, one setting changed at a time from the defaults; early stopping on "
              "validation NDCG@10 over all users):", "",
              "| setting | valid NDCG@10 all | warm | best epoch / run | s/epoch |", "|---|---|---|---|---|"]
    base = GCNTrainConfig(epochs=3) if quick else GCNTrainConfig()
    scores: dict[str, float] = {}
    for label, config in selection_candidates(base)[: 3 if quick else None]:
        r, report = validate(label, config)
        scores[label] = r["all"]["ndcg@10"]
        lines.append(f"| {label} | {r['all']['ndcg@10']:.4f} | {r['warm']['ndcg@10']:.4f} | "
                     f"{report.best_epoch} / {report.epochs_run} | {report.seconds_per_epoch:.2f} |")
        print(lines[-1], flush=True)
    best = max(scores, key=scores.__getitem__)
    gain = scores[best] - scores["defaults"]
    decision = (f"within {TIE:g} of the defaults, which counts as a tie on 197 validation users: the defaults stay"
                if gain < TIE else "more than the tie margin: make it the default and rerun")
    lines += ["", f"Rule: the highest validation NDCG@10 (all users) wins; a gain under {TIE:g} is a tie and keeps "
              f"the defaults. Best here: `{best}` ({scores[best]:.4f}, {gain:+.4f} over the defaults) — {decision}."]
    lines += edge_weight_selection(base, seeds, validate)
    return "\n".join(lines)


def edge_weight_selection(
    base: GCNTrainConfig, seeds: list[int],
    validate: Callable[[str, GCNTrainConfig], tuple[dict[str, dict[str, float]], FitReport]],
) -> list[str]:
    """Propagation over the stored graph's time-decayed affinity weights vs one per user–item edge, over seeds."""
    lines = ["", f"User–item edge weights in propagation (`edge_weights`; the graph `uig train` stores weighs each "
             f"edge by its affinity at the validation start, half-life {UigConfig.half_life_days:g} days): "
             f"seeds {' '.join(map(str, seeds))}, everything else at the defaults:", "",
             "| edge weights | valid NDCG@10 all | warm | best epochs |", "|---|---|---|---|"]
    means: dict[str, float] = {}
    for weights in EDGE_WEIGHTS:
        runs = [validate(f"edge_weights={weights} seed {seed}", dataclasses.replace(base, edge_weights=weights, seed=seed))
                for seed in seeds]
        means[weights] = statistics.mean(r["all"]["ndcg@10"] for r, _ in runs)
        default = " (default)" if weights == base.edge_weights else ""
        lines.append(f"| {weights}{default} | {fmt([r['all']['ndcg@10'] for r, _ in runs])} | "
                     f"{fmt([r['warm']['ndcg@10'] for r, _ in runs])} | {'/'.join(str(rep.best_epoch) for _, rep in runs)} |")
        print(lines[-1], flush=True)
    other = next(w for w in EDGE_WEIGHTS if w != base.edge_weights)
    gain = means[other] - means[base.edge_weights]
    decision = (f"`{other}` is better by more than {TIE:g}: make it the default and rerun" if gain >= TIE else
                f"`{other}` is not better by {TIE:g} or more ({gain:+.4f} on the seed mean): `{base.edge_weights}` stays")
    return lines + ["", f"Rule: the default changes only if the other weighting's mean validation NDCG@10 (all users) is "
                    f"higher by at least {TIE:g} — {decision}."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the trained models")
    parser.add_argument("--quick", action="store_true", help="one seed, 3 epochs; prints, writes nothing")
    parser.add_argument("--select", action="store_true",
                        help="compare UIG GCN settings on the validation window; writes the quality-selection section")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience of the trained models")
    parser.add_argument("--knn-k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: small ops on a shared box)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_data()
    if args.select:
        md = select(data, args.quick, args.seeds[:1] if args.quick else args.seeds)
        if not args.quick:
            write_section("quality-selection", md)
        print(md)
        return 0
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = run_all(data, seeds, 3 if args.quick else None, args.knn_k, args.patience)
    md = markdown(rows, data, seeds, time.perf_counter() - t0)
    print()
    print(md)
    if not args.quick:
        write_section("quality", md)
        print(f"\nwrote the quality section of {Path(__file__).resolve().parent / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
