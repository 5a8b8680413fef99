"""Freshness on MovieLens-100k: does each model follow the user, step by step? (models/rolling.py)

1. **Selection, validation window only** (daily step, fresh NDCG@10): every model family's
   settings — decay half-lives, neighbours, fold-in mode, the UIG GCN's fold-in half-life and
   two-hop weight (scoring-time settings of one trained model: training never sees them),
   SASRec's epochs — are chosen on the rolling validation protocol. The test window is not read here.
2. **Test window**: the chosen models at steps 1h / 6h / 1d / 7d, each scored fresh (history up
   to the step) and stale (history frozen at the window start) on the same user-steps, with
   paired bootstrap 95 % intervals (user-steps resampled).
3. **Refresh interval**: hourly targets on the test window, inputs refreshed never / 7 d / 1 d /
   6 h / 1 h — a PNG of NDCG@10 against the refresh interval.

Every model is fitted once, on the train window (the UIG GCN with its `GCNTrainConfig`
defaults; BPR-MF, LightGCN stop early on the static validation metric; SASRec on the rolling
validation one) and never refitted inside a window.

    .venv/bin/python bench/freshness.py            # writes the freshness sections + bench/freshness.png
    .venv/bin/python bench/freshness.py --quick    # fewer settings, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, save_figure, stamp, write_section  # noqa: E402
from bench.quality import fit_uig, load_data  # noqa: E402
from models.baselines import BPRMF, LightGCNBaseline  # noqa: E402
from models.rolling import FRESH, RollingResult, refresh_variants, rolling_protocol  # noqa: E402
from models.rolling_models import DecayedPopularity, FoldInRecommender, RecentItemKNN  # noqa: E402
from models.scoring import GCNTrainConfig, UigGCNScorer  # noqa: E402
from models.sequential import SASRec, SASRecConfig  # noqa: E402

PNG = Path(__file__).resolve().parent / "freshness.png"
UIG = "UIG GCN"
INF = math.inf


def _hl(value: float) -> str:
    return "inf" if math.isinf(value) else (f"{value * 24:g} h" if value < 1 else f"{value:g} d")


def candidates(data, quick: bool, seed: int) -> dict[str, dict[str, object]]:
    """Family → setting label → fitted RollingScorer (everything fitted on the train window)."""
    train = data.split.train
    knn_k = (100,) if quick else (50, 100, 200)
    half_lives = (1 / 24, 1.0, 7.0, INF)
    families: dict[str, dict[str, object]] = {}
    families["decayed popularity"] = {f"half-life {_hl(h)}": DecayedPopularity(h)
                                      for h in ((3.0, 14.0) if quick else (1.0, 3.0, 7.0, 14.0, 30.0))}
    knn = families["recency item-kNN"] = {}
    for k in knn_k:
        base = RecentItemKNN(k).fit(train)
        for h in half_lives:
            model = RecentItemKNN(k, h)
            model.knn = base.knn
            knn[f"k={k}, half-life {_hl(h)}"] = model
    t0 = time.perf_counter()
    bpr = BPRMF(seed=seed).fit(train, data.validation)
    lgcn = LightGCNBaseline(seed=seed).fit(train, data.validation)
    print(f"fitted BPR-MF and LightGCN in {time.perf_counter() - t0:.0f} s", flush=True)
    for name, fitted in (("BPR-MF", bpr), ("LightGCN", lgcn)):
        families[name] = {f"fold-in {mode}, half-life {_hl(h)}": FoldInRecommender(fitted, h, mode)
                          for mode in ("all", "unseen") for h in half_lives}
    families["SASRec"] = {"early-stopped on rolling validation": fit_sasrec(data, quick, seed)}
    scorer, _ = fit_uig(data, dataclasses.replace(GCNTrainConfig(), seed=seed), "uig")
    uig = families[UIG] = {}
    for h in half_lives:
        for gamma in ((0.0, 1.0) if quick else (0.0, 0.5, 1.0, 1.5, 2.0)):
            variant = UigGCNScorer.from_state(scorer.to_state())
            variant.config = dataclasses.replace(variant.config, fold_in_half_life_days=h, cooccurrence_weight=gamma)
            uig[f"fold-in half-life {_hl(h)}, two-hop weight {gamma:g}"] = variant
    return families


def fit_sasrec(data, quick: bool, seed: int) -> SASRec:
    """SASRec on the train window; epochs chosen by fresh NDCG@10 on the rolling validation protocol."""
    split = data.split
    everything = split.before_test.concat(split.test)

    def on_epoch(model: SASRec) -> float:
        result = rolling_protocol(everything, split.valid_start, split.test_start, "1d", {"sasrec": model},
                                  {"fresh": FRESH})
        return result.summary()["sasrec"]["fresh"]["ndcg@10"]

    t0 = time.perf_counter()
    model = SASRec(SASRecConfig(epochs=5 if quick else 40, seed=seed), device="cpu").fit(split.train, on_epoch)
    print(f"fitted SASRec in {time.perf_counter() - t0:.0f} s (best epoch {model.best_epoch})", flush=True)
    return model


def select(data, families) -> tuple[dict[str, tuple[str, object]], list[str]]:
    """The best setting of each family on the validation window (daily, fresh NDCG@10) and its table."""
    split = data.split
    everything = split.before_test.concat(split.test)
    flat = {(family, label): model for family, settings in families.items() for label, model in settings.items()}
    named = {f"{family} | {label}": model for (family, label), model in flat.items()}
    t0 = time.perf_counter()
    result = rolling_protocol(everything, split.valid_start, split.test_start, "1d", named)
    summary = result.summary()
    print(f"selection: {len(named)} settings on {len(result.user_steps)} validation user-steps "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    chosen: dict[str, tuple[str, object]] = {}
    lines = ["| model | setting | valid fresh NDCG@10 | valid stale NDCG@10 | chosen |", "|---|---|---|---|---|"]
    for family, settings in families.items():
        scores = {label: summary[f"{family} | {label}"] for label in settings}
        best = max(settings, key=lambda label: (scores[label]["fresh"]["ndcg@10"], label))
        chosen[family] = (best, settings[best])
        for label in settings:
            s = scores[label]
            lines.append(f"| {family} | {label} | {s['fresh']['ndcg@10']:.4f} | {s['stale']['ndcg@10']:.4f} | "
                         f"{'**yes**' if label == best else ''} |")
    header = (f"Validation window (train → validation, the test window is not read), one step a day: "
              f"{len(result.user_steps)} user-steps over {result.steps_with_targets} days. "
              "Rule: the highest fresh NDCG@10 of each family wins (ties → the later label).")
    return chosen, [header, "", *lines]


def _ci(c: dict[str, float], ratio: bool = False) -> str:
    if ratio:
        return f"{c['ratio']:.2f}× [{c['ratio_lo']:.2f}, {c['ratio_hi']:.2f}]"
    return f"{c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]"


def test_tables(data, chosen, steps) -> tuple[list[str], dict[str, RollingResult]]:
    split = data.split
    everything = split.before_test.concat(split.test)
    end = float(split.test.ts.max()) + 1
    models = {family: model for family, (_, model) in chosen.items()}
    results: dict[str, RollingResult] = {}
    lines = ["| step | model | fresh NDCG@10 | stale NDCG@10 | fresh − stale [95 % CI] | fresh / stale [95 % CI] "
             "| fresh Recall@20 | stale Recall@20 | fresh coverage@10 | user-steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for step in steps:
        t0 = time.perf_counter()
        result = results[step] = rolling_protocol(everything, split.test_start, end, step, models)
        print(f"test step {step}: {len(result.user_steps)} user-steps in {time.perf_counter() - t0:.0f} s", flush=True)
        summary = result.summary()
        for family in models:
            s = summary[family]
            c = result.compare((family, "fresh"), (family, "stale"))
            lines.append(f"| {step} | {family} | {s['fresh']['ndcg@10']:.4f} | {s['stale']['ndcg@10']:.4f} | {_ci(c)} "
                         f"| {_ci(c, True)} | {s['fresh']['recall@20']:.4f} | {s['stale']['recall@20']:.4f} "
                         f"| {s['fresh']['coverage@10']:.3f} | {int(s['fresh']['user_steps'])} |")
        baselines = [f for f in models if f != UIG]
        best = max(baselines, key=lambda f: summary[f]["fresh"]["ndcg@10"])
        vs_best = result.compare((UIG, "fresh"), (best, "fresh"))
        vs_stale = result.compare((UIG, "fresh"), (UIG, "stale"))
        verdicts.append(f"- step {step}: UIG fresh vs the best baseline ({best}, fresh): {_ci(vs_best)} NDCG@10, "
                        f"ratio {_ci(vs_best, True)}; UIG fresh vs UIG stale: ratio {_ci(vs_stale, True)}.")
    return [*lines, "", *verdicts], results


def refresh_curve(data, chosen, intervals) -> tuple[list[str], RollingResult]:
    """Hourly targets of the test window, inputs refreshed at each interval (never = stale)."""
    split = data.split
    everything = split.before_test.concat(split.test)
    end = float(split.test.ts.max()) + 1
    models = {family: model for family, (_, model) in chosen.items()}
    t0 = time.perf_counter()
    result = rolling_protocol(everything, split.test_start, end, "1h", models, refresh_variants(intervals))
    print(f"refresh curve: {len(result.user_steps)} hourly user-steps in {time.perf_counter() - t0:.0f} s", flush=True)
    summary = result.summary()
    lines = ["| model | " + " | ".join(f"refresh {i}" for i in intervals) + " |",
             "|---|" + "---|" * len(intervals)]
    for family in models:
        lines.append(f"| {family} | " + " | ".join(f"{summary[family][i]['ndcg@10']:.4f}" for i in intervals) + " |")
    c = result.compare((UIG, intervals[-1]), (UIG, intervals[0]))
    lines += ["", f"UIG GCN refreshed every {intervals[-1]} vs never: ratio {_ci(c, True)} "
              f"({len(result.user_steps)} hourly user-steps)."]
    plot(summary, intervals, len(result.user_steps))
    return lines, result


def plot(summary, intervals, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    x = np.arange(len(intervals))
    for family, variants in summary.items():
        ax.plot(x, [variants[i]["ndcg@10"] for i in intervals], marker="o", lw=2.5 if family == UIG else 1.2,
                label=family)
    ax.set_xticks(x, [f"refresh {i}" for i in intervals])
    ax.set_ylabel("NDCG@10 of the next hour's interactions")
    ax.set_title(f"MovieLens-100k test window: quality against refresh interval ({n} user-hours)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, PNG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer settings and epochs; print, do not write")
    parser.add_argument("--seed", type=int, default=0, help="seed of every trained model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_data()
    families = candidates(data, args.quick, args.seed)
    chosen, selection = select(data, families)
    steps = ("1h", "6h", "1d", "7d")
    table, _ = test_tables(data, chosen, steps)
    intervals = ("never", "7d", "1d", "6h", "1h")
    curve, _ = refresh_curve(data, chosen, intervals)
    head = (f"{stamp()} · {machine()} · 1 torch thread · seed {args.seed} · whole run "
            f"{(time.perf_counter() - t0) / 60:.1f} min · `.venv/bin/python bench/freshness.py`")
    chosen_lines = [f"- {family}: {label}" for family, (label, _) in chosen.items()]
    text = "\n".join([
        "## Freshness: the rolling protocol (MovieLens-100k)", "", head, "",
        "Protocol: `models/rolling.py` — at each step start t, targets are each user's new items in [t, t + step) "
        "for users with an earlier event; input is every event before t (fresh) or before the window start "
        "(stale); full ranking, earlier items masked; pooled over user-steps; intervals are paired bootstrap "
        "95 % (2,000 resamples of user-steps). Models fitted on the train window once.", "",
        "### Settings chosen on the validation window", "", *selection, "", "Chosen:", *chosen_lines, "",
        "### Test window: fresh against stale at each step", "", *table, "",
        "### Test window: quality against refresh interval (hourly targets)", "", *curve, "",
        "![quality against refresh interval](freshness.png)",
    ])
    print(text)
    if not args.quick:
        write_section("freshness", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
