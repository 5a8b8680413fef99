"""``uig`` — the command line of the user interest graph platform.

Every sub-command is a thin wrapper over a function in ``uig_tasks``; ``uig COMMAND --help``
says what it does. Global options come before the command: ``uig --data-root /srv/uig tables``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from uig_common import names as C
from uig_common.errors import InputError, UigError
from uig_common.timeutil import parse_time
from uig_tasks.config import UigConfig
from uig_tasks.datadir import restrict_umask

log = logging.getLogger("uig")


def _print_table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _emit(args: argparse.Namespace, result: object, human: Callable[[], None] | None = None) -> None:
    if args.json or human is None:
        print(json.dumps(result, indent=2, default=str))
    else:
        human()


def _config(args: argparse.Namespace, **overrides: object) -> UigConfig:
    # -v also shows the JVM's own output (else it goes to <data root>/logs/spark.log)
    return UigConfig.from_env(data_root=args.data_root, spark_verbose=args.verbose or None, **overrides)


# --- commands ---------------------------------------------------------------------------
def cmd_data_prepare(args: argparse.Namespace) -> int:
    from uig_tasks.movielens import prepare

    config = _config(args)
    until = parse_time(args.until).date() if args.until else None
    day = parse_time(args.day).date() if args.day else None
    result = prepare(config.landing_dir, until=until, day=day)
    _emit(
        args,
        result.__dict__,
        lambda: print(
            f"landed {result.events} MovieLens-100k rate events over days {result.first_day} .. {result.last_day} "
            f"({result.days_written} day files written, {result.days_skipped} unchanged), "
            f"{result.items} items, {result.users} users -> {config.landing_dir}"
        ),
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from uig_tasks.synthetic import generate, generate_drift

    config = _config(args)
    if args.drift:
        result = generate_drift(config.landing_dir, n_users=args.users, n_days=args.days, seed=args.seed,
                                shift_share=args.shift_share, start=parse_time(args.start))
        _emit(args, result, lambda: print(f"SYNTHETIC drift data landed (ground truth: {result['ground_truth']}): {result}"))
        return 0
    result = generate(
        config.landing_dir, n_events=args.events, n_users=args.users, n_days=args.days, seed=args.seed,
        start=parse_time(args.start), session_events=args.session_events,
    )
    _emit(args, result, lambda: print(f"SYNTHETIC data landed: {result}"))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import run_ingest

    logical = parse_time(args.logical_time) if args.logical_time else datetime.now(timezone.utc)
    result = run_ingest(_config(args), logical)

    def human() -> None:
        if not result["batches"]:
            print("no new complete lines under landing: nothing to ingest (`uig quarantine` lists skipped files)")
            return
        _print_table(
            result["batches"],  # type: ignore[arg-type]
            ["batch_id", "n_files", "n_raw", "n_clean", "n_quarantined", "n_duplicates", "n_late", "resumed"],
        )

    _emit(args, result, human)
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import run_aggregate

    result = run_aggregate(_config(args), parse_time(args.as_of, end_of_day=True), full=args.full)
    _emit(
        args,
        result,
        lambda: print(
            f"aggregate ({result['mode']}) at {result['as_of']}: {result['dirty_users']} users recomputed; "
            f"gold.user_item_affinity {result['user_item_rows']} rows, gold.user_topic_affinity {result['user_topic_rows']} rows"
        ),
    )
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from uig_tasks.refresh import Refresher, run_refresh

    if args.watch is not None:
        return _watch_refresh(args, Refresher(_config(args), keep_warm=True))
    as_of = parse_time(args.as_of, end_of_day=True) if args.as_of else None
    result = run_refresh(_config(args), as_of, full=args.full)
    _emit(args, result, lambda: print(_refresh_line(result)))
    return 0


def _refresh_line(result: dict) -> str:
    return (f"refresh ({result['mode']}) at {result['as_of']}: {result['dirty_users']} users, "
            f"{result['edges_written']} edges written with uig-gcn v{result['model_version']} in {result['seconds']:.1f}s")


def _watch_refresh(args: argparse.Namespace, refresher) -> int:
    """``uig refresh --watch S``: one warm refresher that refreshes after every aggregate (polling
    every S seconds), until interrupted or ``--max-runs`` refreshes have written edges."""
    if args.as_of or args.full:
        raise InputError("--watch refreshes as of each aggregate: it takes no --as-of or --full")
    written = 0
    try:
        while args.max_runs == 0 or written < args.max_runs:
            result = refresher.refresh()
            if result["mode"] != "noop":
                written += 1
                _emit(args, result, lambda: print(_refresh_line(result), flush=True))
                continue  # new behaviour may have landed meanwhile: look again at once
            time.sleep(args.watch)
    except KeyboardInterrupt:
        print("uig refresh --watch: stopped", file=sys.stderr)
    finally:
        refresher.close()
    return 0


def _unknown_user(exc: LookupError) -> int:
    print(f"uig: {exc}", file=sys.stderr)
    return 1


def cmd_user(args: argparse.Namespace) -> int:
    from uig_tasks.inspect import UnknownUserError, draw_user, interest_history, user_report

    config = _config(args)
    try:
        report = user_report(config, args.user_id)
    except UnknownUserError as exc:
        return _unknown_user(exc)
    if args.png:
        report["png"] = draw_user(report, interest_history(config, report["user_key"]), str(args.png))

    def human() -> None:
        print(f"user {report['user']} (key {report['user_key']}); last activity {report['last_activity']}")
        if not report["interests"]:
            print("no interest edges yet: run `uig refresh --as-of …`")
            return
        print(f"refreshed as of {report['refreshed_as_of']}; model uig-gcn v{', v'.join(report['model_versions'])}; "
              f"policy {', '.join(report['policy_versions'])}")
        if report.get("update_action"):
            print(f"last refresh's update: {report['update_action']} — {report['update_reason']}")
        for kind, edges in report["interests"].items():
            print(f"\n{kind}")
            for edge in edges:
                rank = "-" if edge["rank"] is None else str(edge["rank"])
                print(f"  {rank:>3} {edge['change']:<7} {edge['explanation']}")
        if args.png:
            print(f"\nwrote {report['png']}")

    _emit(args, report, human)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from uig_tasks.inspect import UnknownUserError, recommend

    try:
        result = recommend(_config(args), args.user_id, args.k)
    except UnknownUserError as exc:
        return _unknown_user(exc)

    def human() -> None:
        print(f"user {result['user']}: {result['history_items']} items in history; uig-gcn v{result['model_version']}; "
              f"from the {result['source']}")
        for rank, item in enumerate(result["items"], start=1):
            print(f"  {rank:>3}. {item['title']}  ← {item['reason']}")

    _emit(args, result, human)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from uig_tasks.encode import run_encode

    result = run_encode(_config(args), datetime.now(timezone.utc), batch_size=args.batch_size)
    _emit(
        args,
        result,
        lambda: print(
            f"encoded {result['encoded']} of {result['total']} items ({result['skipped']} unchanged) "
            f"with {result['encoder_version']} on {result['device']} in {result['seconds']}s"
        ),
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from uig_tasks.train import run_train

    overrides = {"epochs": args.epochs, "seed": args.seed, "dim": args.dim, "patience": args.patience}
    result = run_train(_config(args, gate_margin=args.margin), datetime.now(timezone.utc), overrides, args.run_name)
    trained, gate = result["train"], result["gate"]

    def human() -> None:
        snap = result["snapshot"]
        print(f"data: {snap['interactions']} interactions, {snap['users']} users, {snap['items']} items; "
              f"train/valid/test {snap['train']}/{snap['valid']}/{snap['test']} (test starts {snap['test_start']})")
        print(f"trained uig-gcn version {trained['version']} (run {trained['run_id']}): {trained['epochs_run']} epochs, "
              f"best {trained['best_epoch']}, {trained['seconds_per_epoch']}s/epoch, "
              f"validation {trained['metric']} {trained['validation_score']:.4f}")
        print(f"gate: {gate['reason']}")

    _emit(args, result, human)
    return 0


def _evaluation_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    metrics = ["ndcg@10", "recall@10", "recall@20", "mrr@10", "hit@10", "precision@10", "ndcg@20", "coverage@10"]
    rows = []
    for group in ("all", "warm"):
        for model, by_group in results.items():
            values = by_group[group]
            rows.append({"model": model, "users": f"{group} ({int(values['n_users'])})",
                         **{m: f"{values[m]:.4f}" for m in metrics}})
    _print_table(rows, ["model", "users", *metrics])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from uig_tasks.train import MODEL_CHOICES, evaluate_rolling, evaluate_snapshot, latest_snapshot

    config = _config(args)
    snapshot = args.snapshot or latest_snapshot(config)
    ref: str | int = int(args.model_version) if args.model_version.isdigit() else args.model_version
    progress = (lambda message: None) if args.json else (lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    if args.rolling:
        models = args.models or [C.GCN_MODEL, *C.ROLLING_BASELINES]
        rolling = evaluate_rolling(config, snapshot, ref=ref, step=args.step, models=models, seed=args.seed,
                                   progress=progress)
        rows = [{"model": m, "variant": v, "ndcg@10": f"{r['ndcg@10']:.4f}", "recall@20": f"{r['recall@20']:.4f}",
                 "coverage@10": f"{r['coverage@10']:.3f}", "user_steps": int(r["user_steps"])}
                for m, variants in rolling["models"].items() for v, r in variants.items()]
        diffs = [{"comparison": name, "ndcg@10 diff": f"{c['diff']:+.4f}", "95% CI": f"[{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]",
                  "ratio": f"{c['ratio']:.2f}"} for name, c in rolling["comparisons"].items()]
        _emit(args, rolling, lambda: (
            print(f"test window of {snapshot}, one step every {args.step}: {rolling['user_steps']} user-steps "
                  f"over {rolling['steps_with_targets']} steps (fresh = history up to each step, stale = frozen at the window start)"),
            _print_table(rows, ["model", "variant", "ndcg@10", "recall@20", "coverage@10", "user_steps"]),
            print("paired bootstrap, 95 % intervals over user-steps:"),
            _print_table(diffs, ["comparison", "ndcg@10 diff", "95% CI", "ratio"])))
        return 0
    unknown = set(args.models or ()) - set(MODEL_CHOICES)
    if unknown:
        raise InputError(f"unknown models {sorted(unknown)} for the static protocol; choose from {', '.join(MODEL_CHOICES)}")
    results = evaluate_snapshot(config, snapshot, args.models or list(MODEL_CHOICES), ref=ref, seed=args.seed, progress=progress)
    _emit(args, results, lambda: (print(f"test window of {snapshot}"), _evaluation_table(results)))
    return 0


def cmd_train_policy(args: argparse.Namespace) -> int:
    from uig_tasks.policy import train_policy

    overrides = {"policy_gate_margin": args.margin, "policy_churn_cost": args.churn_cost}
    result = train_policy(_config(args, **{k: v for k, v in overrides.items() if v is not None}),
                          args.snapshot, episodes=args.episodes, seed=args.seed, step=args.step,
                          held_out_share=args.held_out, run_name=args.run_name)

    def human() -> None:
        c = result["dqn_minus_best_fixed"]
        print(f"{C.POLICY_MODEL} version {result['version']}: "
              f"{'promoted to @' + C.CHAMPION_ALIAS if result['promoted'] else 'not promoted'} ({result['reason']})")
        cost = result["churn_cost"]
        print(f"held-out users, test window, {result['eval_user_steps']} user-steps; mean reward = NDCG@10 on the "
              f"user's next active step - {cost:g} x churn (share of the profile the update moved):")
        _print_table([{"policy": k, "mean reward": f"{v:.4f}", "NDCG@10": f"{result['mean_ndcg'][k]:.4f}",
                       "churn": f"{result['mean_churn'][k]:.2f}"} for k, v in result["mean_reward"].items()],
                     ["policy", "mean reward", "NDCG@10", "churn"])
        print(f"dqn - best fixed action ({result['best_fixed']}): {c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]")

    _emit(args, result, human)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from uig_tasks import mlflow_store

    config = _config(args)
    if args.promote is not None:
        previous = mlflow_store.set_champion(config, args.promote, model_name=args.model or C.GCN_MODEL,
                                             reason=args.reason or "set by hand with `uig models --promote`")
        print(f"{args.model or C.GCN_MODEL} @{C.CHAMPION_ALIAS} -> version {args.promote} (was {previous})")
    if args.model is not None:
        rows = mlflow_store.list_versions(config, args.model)
    else:
        rows = [{"model": name, **row} for name in (C.GCN_MODEL, C.POLICY_MODEL)
                for row in mlflow_store.list_versions(config, name)]

    def human() -> None:
        if not rows:
            print("no model versions yet: run `uig train` (and `uig train-policy`)")
            return
        shown = [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows]
        _print_table(shown, list(rows[0]))

    _emit(args, rows, human)
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import table_summary

    rows = table_summary(_config(args))
    _emit(args, rows, lambda: _print_table(rows, ["table", "rows", "version", "last_operation"]))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from uig_tasks.pipeline import quarantine_report

    report = quarantine_report(_config(args))

    def human() -> None:
        if report["lines"]:
            _print_table(report["lines"], ["reason", "lines"])
        else:
            print("quarantine is empty")
        if report["conflicting_duplicates"]:
            print("\nreused event ids (same event_id, different content; the earliest event was kept):")
            _print_table(report["conflicting_duplicates"], ["event_id", "source_file", "line_no", "duplicate_of_batch"])
        if report["landing_files"]:
            print("\nlanding files not (fully) ingested by the last scan:")
            _print_table(report["landing_files"], ["source_file", "status", "reason", "pending_bytes", "detail"])

    _emit(args, report, human)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job end to end: land MovieLens-100k, ingest, aggregate, encode, train + gate, evaluate, refresh."""
    from uig_tasks.movielens import prepare, timeline
    from uig_tasks.pipeline import run_aggregate, run_ingest, table_summary

    config = _config(args)
    steps = 4 if args.no_models else 8
    t0 = time.perf_counter()
    print(f"[1/{steps}] landing MovieLens-100k (from the installed recbole package) into {config.landing_dir}", flush=True)
    prepared = prepare(config.landing_dir)
    print(f"      {prepared.events} events over {prepared.days_written + prepared.days_skipped} days, "
          f"{prepared.items} items, {prepared.users} users", flush=True)
    end = timeline()[-1]
    logical = parse_time(end, end_of_day=True)
    print(f"[2/{steps}] ingesting landing -> bronze -> silver (batch logical time {logical:%Y-%m-%d %H:%M})", flush=True)
    ing = run_ingest(config, logical)
    print(f"      raw {ing['n_raw']} = clean {ing['n_clean']} + quarantined {ing['n_quarantined']} + "
          f"duplicates {ing['n_duplicates']} ({len(ing['batches'])} new batch(es))", flush=True)  # type: ignore[arg-type]
    print(f"[3/{steps}] aggregating gold affinities as of {logical:%Y-%m-%d %H:%M:%S}Z "
          f"(half-life {config.half_life_days} days)", flush=True)
    agg = run_aggregate(config, logical)
    print(f"      {agg['mode']}: {agg['dirty_users']} users recomputed", flush=True)
    if not args.no_models:
        _demo_models(config, logical, steps)
    print(f"[{steps}/{steps}] tables under {config.delta_dir}", flush=True)
    rows = table_summary(config)
    _print_table(rows, ["table", "rows", "version", "last_operation"])
    print(f"done in {time.perf_counter() - t0:.0f}s. Next: `uig user 1 --png user-1.png`, `uig recommend 1`, "
          f"`uig models`, `uig evaluate`, "
          f"`mlflow ui --backend-store-uri sqlite:///{config.data_root.resolve() / 'mlflow' / 'mlflow.db'}`, "
          "or land more with `uig data prepare --day YYYY-MM-DD`.")
    return 0


def _demo_models(config: UigConfig, logical: datetime, steps: int) -> None:
    from uig_tasks.encode import run_encode
    from uig_tasks.inspect import user_report
    from uig_tasks.refresh import run_refresh
    from uig_tasks.train import evaluate_snapshot, run_train

    print(f"[4/{steps}] encoding the catalog with all-MiniLM-L6-v2 -> gold.item_embeddings", flush=True)
    enc = run_encode(config, logical)
    print(f"      {enc['encoded']} items encoded, {enc['skipped']} unchanged, on {enc['device']}", flush=True)
    print(f"[5/{steps}] training the UIG GCN (early stopping on the validation window), MLflow + quality gate", flush=True)
    result = run_train(config, datetime.now(timezone.utc))
    trained, gate = result["train"], result["gate"]
    print(f"      uig-gcn version {trained['version']}: {trained['epochs_run']} epochs, validation "
          f"{trained['metric']} {trained['validation_score']:.4f}; gate: {gate['reason']}", flush=True)
    print(f"[6/{steps}] test window: the champion beside most-popular (`uig evaluate` adds every baseline)", flush=True)
    results = evaluate_snapshot(config, result["snapshot"]["path"], ["uig-gcn", "most-popular"],
                                progress=lambda message: print(f"      {message}", flush=True))
    _evaluation_table(results)
    print(f"[7/{steps}] refreshing the user interest graph (gold.interest_edges) with @champion", flush=True)
    refreshed = run_refresh(config, logical)
    print(f"      {refreshed['mode']}: {refreshed['dirty_users']} users, {refreshed['edges_written']} edges "
          f"in {refreshed['seconds']:.0f}s. A user's interests, e.g. `uig user 1`:", flush=True)
    report = user_report(config, "1")
    for kind in ("genre", "community", "item"):
        for edge in report["interests"].get(kind, [])[:2]:
            print(f"      {kind:<9} {edge['explanation']}", flush=True)


# --- parser -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uig", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=None, help="data folder (default: $UIG_DATA_ROOT or ./data)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and Spark's own (JVM) output on the terminal instead of <data root>/logs/spark.log")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="land input files (MovieLens-100k or synthetic)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser("prepare", help="convert MovieLens-100k into landing files (catalog + one JSONL per day)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--until", help="land every day up to and including DATE (YYYY-MM-DD)")
    which.add_argument("--day", help="land exactly one DATE (replay one day at a time)")
    p.set_defaults(func=cmd_data_prepare)
    p = data_sub.add_parser("synth", help="land a SYNTHETIC event set for scale tests (says so in every event)")
    p.add_argument("--events", type=int, default=2_000_000, help="number of events (default 2,000,000)")
    p.add_argument("--users", type=int, default=50_000, help="number of synthetic users")
    p.add_argument("--days", type=int, default=60, help="number of days (one landing file each)")
    p.add_argument("--start", default="2024-01-01", help="first day (YYYY-MM-DD)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--session-events", type=float, default=20,
                   help="mean events of a user active on a day: a day touches about its events / this many users "
                        "(default 20)")
    p.add_argument("--drift", action="store_true",
                   help="the drift simulator instead: users with latent genre interests, sessions, heavy-tailed activity "
                        "and interest shifts at known times, plus a ground-truth file (ignores --events)")
    p.add_argument("--shift-share", type=float, default=0.3, help="with --drift: share of users whose interests shift")
    p.set_defaults(func=cmd_data_synth)

    p = sub.add_parser("ingest", help="landing -> bronze -> silver for every new complete line (appends included)")
    p.add_argument("--logical-time", help="the batch's logical time (default: now); events more than a day after it are quarantined")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("aggregate", help="silver -> gold affinities at --as-of (dirty users only unless --full)")
    p.add_argument("--as-of", required=True, help="evaluation time; a bare date means the end of that day (UTC)")
    p.add_argument("--full", action="store_true", help="rebuild every user instead of only dirty ones")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("refresh", help="recompute the interest edges of users with new behaviour -> gold.interest_edges")
    p.add_argument("--as-of", help="refresh time, at or after the last aggregate (default: that aggregate's time); "
                                   "a bare date means its end, UTC")
    p.add_argument("--full", action="store_true", help="refresh every user instead of only dirty ones")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="stay warm: keep the Spark session and @champion loaded and refresh after every aggregate, "
                        "looking for one every SECONDS (Ctrl-C stops)")
    p.add_argument("--max-runs", type=int, default=0, metavar="N",
                   help="with --watch: stop after N refreshes that wrote edges (default 0: never)")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("user", help="one user's interests by type, with weight, change since the last refresh and why")
    p.add_argument("user_id", help="raw user id (as in the logs) or its user_key")
    p.add_argument("--png", type=Path, help="also draw the ego interest graph and the interest drift over refreshes here")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("recommend", help="top items for one user from the @champion GCN, each with its reason")
    p.add_argument("user_id", help="raw user id (as in the logs) or its user_key")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("encode", help="silver.items -> gold.item_embeddings (only new or changed items)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("train", help="fit the UIG GCN, log it to MLflow, register it, gate it into @champion")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping on the validation window)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--dim", type=int, help="embedding size")
    p.add_argument("--patience", type=int, help="epochs without validation gain before stopping")
    p.add_argument("--margin", type=float, help="quality-gate margin over the champion (default: config gate_margin)")
    p.add_argument("--run-name", help="MLflow run name")
    p.set_defaults(func=cmd_train)

    from uig_tasks.train import MODEL_CHOICES

    p = sub.add_parser("evaluate", help="test-window metrics of the registered GCN and the baselines (one protocol)")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help=f"models to score (default: all); static protocol: {', '.join(MODEL_CHOICES)}; "
                        f"--rolling: {', '.join((C.GCN_MODEL, *C.ROLLING_BASELINES))}")
    p.add_argument("--model-version", default="champion", help="uig-gcn alias or version number (default: champion)")
    p.add_argument("--snapshot", type=Path, help="training snapshot folder (default: the newest under DATA_ROOT/snapshots)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trained baselines")
    p.add_argument("--rolling", action="store_true",
                   help="the rolling protocol over the test window: every model fresh (history up to each step) and "
                        "stale (frozen at the window start) on the same user-steps, with bootstrap intervals")
    p.add_argument("--step", choices=list(C.ROLLING_STEPS), default="1d", help="step of --rolling (default 1d)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train-policy", help="learn the per-user update policy (DQN) on the validation window, evaluate it "
                       "on held-out users of the test window, register it as uig-update-policy, gate it into @champion")
    p.add_argument("--episodes", type=int, default=10, help="replays of the training window (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", choices=list(C.ROLLING_STEPS), default="1d", help="refresh interval replayed (default 1d)")
    p.add_argument("--held-out", type=float, default=0.3, help="share of users held out for the evaluation (default 0.3)")
    p.add_argument("--snapshot", type=Path, help="training snapshot folder (default: the newest under DATA_ROOT/snapshots)")
    p.add_argument("--margin", type=float, help="gate margin in mean reward (default: config policy_gate_margin)")
    p.add_argument("--churn-cost", type=float, help="reward = NDCG@10 - this x the share of the profile an update "
                   "moves (default: config policy_churn_cost, 0.02)")
    p.add_argument("--run-name", help="MLflow run name")
    p.set_defaults(func=cmd_train_policy)

    p = sub.add_parser("models", help="registered versions (uig-gcn, uig-update-policy) with gate decisions; "
                       "--promote V moves @champion (rollback)")
    p.add_argument("--model", choices=[C.GCN_MODEL, C.POLICY_MODEL], help="one registered model (default: both)")
    p.add_argument("--promote", type=int, metavar="VERSION", help="point @champion at this version (of --model, default uig-gcn)")
    p.add_argument("--reason", help="why (stored as a version tag)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("tables", help="row count, Delta version and last operation of every table")
    p.set_defaults(func=cmd_tables)
    p = sub.add_parser("quarantine", help="quarantined lines by reason")
    p.set_defaults(func=cmd_quarantine)
    p = sub.add_parser("demo", help="the main job end to end: MovieLens-100k -> ingest -> aggregate -> encode -> train "
                                    "-> evaluate -> refresh the interest graph")
    p.add_argument("--no-models", action="store_true", help="stop after the Delta tables (no encode/train/evaluate/refresh)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    restrict_umask()  # nothing any command writes under the data root is world-readable
    try:
        return int(args.func(args) or 0)
    except UigError as exc:  # named errors carry an actionable message; anything else is a bug
        print(f"uig: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
