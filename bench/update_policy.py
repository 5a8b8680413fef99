"""Does a learned update policy (double DQN) beat fixed update rules? MovieLens-100k and the SYNTHETIC simulator.

The environment, actions, state and reward are those of ``models/update_policy.py`` (its module
docstring): at each refresh every dirty user gets one of ten profile updates; the reward is
NDCG@10 of the updated profile's ranking (the fitted UIG GCN's ``score_profiles``) against the
user's new items the next time they act; the replay is counterfactual, so every policy is measured on
the same user-steps. The weight of the popularity prior in that ranking is chosen per data set
on its policy-training window with the training users (``choose_reward_prior_weight``: the weight
under which today's rule earns most). At the weight trained for ranking every user, cold ones
included, the prior can rank nearly alone, and every profile update then earns about the same.
Each table also gives the headroom: what an oracle that picks each user-step's best action after
the fact would earn (an upper bound that includes luck, not a reachable target). The reward subtracts
``--churn-cost`` (default: ``UigConfig``'s default ``policy_churn_cost``, 0.02) times the share of the
profile an update moved; the DQN is also retrained and evaluated under churn costs 0, 0.01 and
0.05 (0: NDCG@10 alone), so the result's dependence on that choice is on the page.

Protocol — a policy is trained on earlier steps with one set of users and evaluated on later
steps with *other* users (held-out users: ``split_users``, 30 % held out, seed 0,
``check_disjoint`` asserted):

* **MovieLens-100k** (80/10/10 global temporal split, ``bench/quality.py``): the UIG GCN is
  trained on the train window (``GCNTrainConfig`` defaults, seed 0). The policy trains on the
  validation window ``[valid_start, test_start)`` with the training users and is evaluated on the
  test window ``[test_start, end]`` with the held-out users only. The environment gets every event
  (train + validation + test); it reads only what lies before each refresh. The step (1 d or
  6 h) is chosen on the validation window only — the one with more scored user-steps (ties →
  1 d) — before the test window is read.
* **Drift simulator (SYNTHETIC)**: ``drift_world(n_users=8000, n_days=60, seed=0)`` over the real
  MovieLens catalog (8,000 users: with 2,000 the training window held 90 scored user-steps, too
  few for any learner to tell ten actions apart). The UIG GCN trains on the events before the first shift as
  ``bench/drift.py`` does. The rest of the timeline is cut at the middle of the shift window
  (55 % of the timeline, a day boundary): the policy trains on the earlier part with the training
  users and is evaluated on the later part with the held-out users. (Shifts happen between 40 %
  and 70 % of the timeline and the GCN's data end at the first shift, so cutting the rest in
  halves would leave every shift in the training part; the cut at 55 % leaves about half of the
  shifts on each side — the counts are reported.) Step: 1 day.

Compared on the evaluation environment: the DQN, the contextual bandit (``train_bandit``: the same
network, loop and settings with γ = 0) and every fixed action. ``rebuild`` is today's production
rule ``fixed-shares-v1`` (every dirty user recomputed from the full history with the model's own
recency fold-in at each refresh). Reported: mean reward per scored user-step, the paired bootstrap
95 % interval of each learner's difference to the best fixed action (``compare_to_best_fixed``:
the best fixed action is picked on the evaluation user-steps themselves, which favours it) and
to each other. On the simulator also: how often each policy picks an action that forgets fast
(``decay_1h_*``, ``decay_1d_*``, ``rebuild``) at a shifted user's first dirty step after the
shift — what the ground truth says is right there — and on the other user-steps.

DQN settings: ``DQNConfig()`` and a few alternatives are compared on the *training* environment
only (training users split again, 30 % of them held out for the choice, same window); the chosen
one is retrained on all training users. The evaluation environment is never used for a choice.

    .venv/bin/python bench/update_policy.py            # writes the "update-policy" section + bench/update_policy.png
    .venv/bin/python bench/update_policy.py --quick    # 500 simulated users, fewer episodes, prints only
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, save_figure, stamp, write_section  # noqa: E402
from bench.quality import fit_uig, item_text_embeddings, item_topics_frame, load_data  # noqa: E402
from models.evaluation import ValidationSet, temporal_split  # noqa: E402
from models.graph import train_window_graph  # noqa: E402
from models.rolling import paired_bootstrap  # noqa: E402
from models.training import GCNTrainConfig, fit_uig_gcn  # noqa: E402
from models.update_policy import (  # noqa: E402
    ACTIONS,
    DQNConfig,
    PolicyEnvironment,
    check_disjoint,
    choose_reward_prior_weight,
    compare_to_best_fixed,
    evaluate_policies,
    q_network,
    split_users,
    train_bandit,
    train_dqn,
)
from uig_common.timeutil import SECONDS_PER_DAY  # noqa: E402
from uig_tasks.config import UigConfig  # noqa: E402
from uig_tasks.movielens import items as catalog_items, movielens_dir  # noqa: E402
from uig_tasks.synthetic import drift_world  # noqa: E402

PNG = Path(__file__).resolve().parent / "update_policy.png"
HELD_OUT = 0.3
N_BOOT = 2000
FAST = tuple(a.name for a in ACTIONS if a.name == "rebuild" or a.name.startswith(("decay_1h_", "decay_1d_")))
REBUILD_LABEL = "rebuild (= fixed-shares-v1, today's rule)"
#: The code default of the product's churn cost (``UigConfig.policy_churn_cost``).
DEFAULT_CHURN_COST = UigConfig().policy_churn_cost
#: The reward's churn cost in this run (``--churn-cost``).
CHURN_COST = DEFAULT_CHURN_COST
#: Other churn costs the DQN is retrained and evaluated under, to show how the result depends on it.
SENSITIVITY = (0.0, 0.01, 0.05)


# --------------------------------------------------------------------------------------------
# One environment: choose the DQN settings, train both learners, evaluate


def scored_user_steps(env: PolicyEnvironment) -> int:
    return int(sum(int(rep.scored.sum()) for rep in env.replay(0, counterfactual=False)))


def per_step_actions(env: PolicyEnvironment, policy: Any) -> dict[str, Any]:
    """The action a policy takes at each scored user-step (the order of ``evaluate_policies``) and
    at every dirty user-step (scored or not; which user-steps are dirty depends on events only)."""
    keys: list[tuple[float, int]] = []
    acts: list[np.ndarray] = []
    dirty_keys: list[tuple[float, int]] = []
    dirty_acts: list[np.ndarray] = []
    for rep in env.replay(policy, counterfactual=False):
        rows = np.flatnonzero(rep.scored)
        keys.extend((rep.refresh_ts, int(u)) for u in rep.users[rows])
        acts.append(rep.actions[rows])
        dirty_keys.extend((rep.refresh_ts, int(u)) for u in rep.users)
        dirty_acts.append(rep.actions)
    empty = np.zeros(0, dtype=np.int64)
    return {"keys": keys, "actions": np.concatenate(acts) if acts else empty,
            "dirty_keys": dirty_keys, "dirty_actions": np.concatenate(dirty_acts) if dirty_acts else empty}


def cross_fitted(states: np.ndarray, rewards: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """What the state can tell: each user-step's action from an MLP (2 × 64) that regressed every
    action's reward on the state of the *other* folds of the same user-steps. It reads the
    evaluation window, so it is a diagnostic of the features (optimistic: same users, same
    window, the behaviour's profiles), never a policy to compare fairly."""
    order = np.random.default_rng(seed).permutation(len(states))
    acts = np.zeros(len(states), dtype=np.int64)
    for fold in np.array_split(order, folds):
        fit = np.setdiff1d(order, fold)
        torch.manual_seed(seed)
        net = q_network(states.shape[1], rewards.shape[1], hidden=64, layers=2)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = torch.from_numpy(states[fit]), torch.from_numpy(rewards[fit])
        gen = torch.Generator().manual_seed(seed)
        for _ in range(100):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 256):
                batch = perm[i:i + 256]
                loss = torch.nn.functional.mse_loss(net(x[batch]), y[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            acts[fold] = net(torch.from_numpy(states[fold])).argmax(1).numpy()
    return acts


def _diagnostics(env: PolicyEnvironment, results: dict[str, Any], best_fixed: str) -> dict[str, Any]:
    """The oracle's headroom and the cross-fitted policy's gain over the best fixed action, on the
    evaluation user-steps (the profiles the best fixed action carried)."""
    index = [f"fixed:{a.name}" for a in env.actions].index(best_fixed)
    keys, states, every_reward = env.all_action_rewards(index)
    if keys != results["user_steps"]:
        raise RuntimeError("the oracle replay scored other user-steps than the evaluation")
    base = every_reward[:, index]
    oracle = every_reward.max(1)
    fitted = every_reward[np.arange(len(keys)), cross_fitted(states, every_reward)]
    return {"mean": float(oracle.mean()), "gain": paired_bootstrap(oracle, base, N_BOOT, 0),
            "cross_fitted": float(fitted.mean()), "cross_fitted_gain": paired_bootstrap(fitted, base, N_BOOT, 0)}


def choose_config(make_env, train_users: np.ndarray, candidates: dict[str, DQNConfig]) -> tuple[str, list[str]]:
    """The DQN settings with the highest mean reward on a held-out slice of the *training* users
    (same window as training); ties → the earlier candidate (the defaults come first)."""
    fit_users, pick_users = split_users(train_users, HELD_OUT, seed=1)
    check_disjoint(fit_users, pick_users)
    fit_env, pick_env = make_env(fit_users), make_env(pick_users)
    scores: dict[str, float] = {}
    n = 0
    for label, config in candidates.items():
        t0 = time.perf_counter()
        policy, _ = train_dqn(fit_env, config)
        result = evaluate_policies(pick_env, {"dqn": policy}, include_fixed=False)
        scores[label] = result["mean"]["dqn"]
        n = len(result["user_steps"])
        print(f"  selection {label}: {scores[label]:.4f} on {n} user-steps ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    best = max(candidates, key=lambda label: (scores[label], -list(candidates).index(label)))
    lines = [f"DQN settings chosen on the training window only: training users split again "
             f"({len(fit_users)} fit / {len(pick_users)} choose, seed 1), mean reward of the greedy policy on the "
             f"{n} scored user-steps of the choosing users: "
             + "; ".join(f"{label} {scores[label]:.4f}" for label in candidates) + f" → **{best}**."]
    return best, lines


def reward_prior_weight(name: str, make_env, trained: float) -> tuple[float, str]:
    """The popularity prior's weight in the reward (``choose_reward_prior_weight`` on the training
    window with the training users) and a line for the table."""
    t0 = time.perf_counter()
    weight, means = choose_reward_prior_weight(make_env, trained)
    print(f"[{name}] reward prior weight {weight:g} (rebuild's mean reward: "
          + ", ".join(f"{w:g} {m:.4f}" for w, m in means.items()) + f"; {time.perf_counter() - t0:.0f} s)", flush=True)
    line = ("Weight of the popularity prior in the reward's ranking, chosen on the training window with the training "
            "users by the mean reward of `rebuild` (today's rule): "
            + "; ".join(f"{w:g} {m:.4f}" for w, m in means.items()) + f" → **{weight:g}**"
            + (" (the trained weight)." if weight == trained else "."))
    return weight, line


def run_environment(name: str, make_train_env, make_eval_env, train_users: np.ndarray, eval_users: np.ndarray,
                    candidates: dict[str, DQNConfig]) -> dict[str, Any]:
    """Choose the DQN settings, train the DQN and the bandit on the training environment
    (``make_train_env(users)``), evaluate everything on ``make_eval_env(eval_users)``."""
    check_disjoint(train_users, eval_users)
    print(f"[{name}] choosing DQN settings", flush=True)
    best, selection = choose_config(make_train_env, train_users, candidates)
    config = candidates[best]
    train_env = make_train_env(train_users)
    n_train = scored_user_steps(train_env)
    print(f"[{name}] training window: {n_train} scored user-steps (transitions) per episode", flush=True)
    t0 = time.perf_counter()
    dqn, dqn_history = train_dqn(train_env, config)
    dqn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bandit, bandit_history = train_bandit(train_env, config)
    bandit_s = time.perf_counter() - t0
    print(f"[{name}] trained the DQN in {dqn_s:.0f} s and the bandit in {bandit_s:.0f} s", flush=True)
    eval_env = make_eval_env(eval_users)
    results = evaluate_policies(eval_env, {"DQN": dqn, "bandit": bandit}, include_fixed=True)
    comparison = compare_to_best_fixed(results, n_boot=N_BOOT, seed=0)
    dqn_vs_bandit = paired_bootstrap(results["rewards"]["DQN"], results["rewards"]["bandit"], N_BOOT, 0)
    actions = {}
    for label, policy in (("DQN", dqn), ("bandit", bandit)):
        actions[label] = per_step_actions(eval_env, policy)
        if actions[label]["keys"] != results["user_steps"]:
            raise RuntimeError(f"{label}: the action replay scored other user-steps than the evaluation")
    headroom = _diagnostics(eval_env, results, comparison["best_fixed"])
    print(f"[{name}] evaluated on {len(results['user_steps'])} user-steps; best fixed "
          f"{comparison['best_fixed']} {comparison['best_fixed_mean']:.4f}, DQN {results['mean']['DQN']:.4f}, "
          f"bandit {results['mean']['bandit']:.4f}", flush=True)
    sensitivity = [{"churn_cost": CHURN_COST, "results": results, "comparison": comparison, "headroom": headroom}]
    for cost in (c for c in SENSITIVITY if c != CHURN_COST):
        train_env.churn_cost = eval_env.churn_cost = cost  # the reward is computed during each replay
        policy, _ = train_dqn(train_env, config)
        got = evaluate_policies(eval_env, {"DQN": policy}, include_fixed=True)
        compared = compare_to_best_fixed(got, N_BOOT, 0)
        sensitivity.append({"churn_cost": cost, "results": got, "comparison": compared,
                            "headroom": _diagnostics(eval_env, got, compared["best_fixed"])})
        print(f"[{name}] churn cost {cost:g}: DQN - best fixed "
              f"{_ci(sensitivity[-1]['comparison']['comparisons']['DQN'])}", flush=True)
    train_env.churn_cost = eval_env.churn_cost = CHURN_COST
    return {"name": name, "config_label": best, "config": config, "selection": selection,
            "results": results, "comparison": comparison, "dqn_vs_bandit": dqn_vs_bandit,
            "history": {"DQN": dqn_history, "bandit": bandit_history}, "seconds": {"DQN": dqn_s, "bandit": bandit_s},
            "actions": actions, "n_train": n_train, "headroom": headroom,
            "sensitivity": sorted(sensitivity, key=lambda row: row["churn_cost"])}


# --------------------------------------------------------------------------------------------
# The two data sets


def movielens(quick: bool, candidates: dict[str, DQNConfig]) -> dict[str, Any]:
    data = load_data()
    split = data.split
    scorer, report = fit_uig(data, dataclasses.replace(GCNTrainConfig(), seed=0), "uig")
    everything = split.before_test.concat(split.test)
    end = float(split.test.ts.max()) + 1
    train_users, eval_users = split_users(np.arange(split.n_users), HELD_OUT, seed=0)
    check_disjoint(train_users, eval_users)
    # the step, on the validation window with the training users (the test window is not read)
    counts = {}
    for label, seconds in (("1 d", SECONDS_PER_DAY), ("6 h", SECONDS_PER_DAY / 4)):
        env = PolicyEnvironment(everything, scorer, split.valid_start, split.test_start, seconds, train_users,
                                churn_cost=CHURN_COST)
        counts[label] = (seconds, scored_user_steps(env))
    step_label = max(counts, key=lambda label: (counts[label][1], label == "1 d"))
    step = counts[step_label][0]
    print(f"[MovieLens] scored validation user-steps: "
          + ", ".join(f"{k} {v[1]}" for k, v in counts.items()) + f" → step {step_label}", flush=True)
    weight, prior_line = reward_prior_weight(
        "MovieLens", lambda w: PolicyEnvironment(everything, scorer.with_prior_weight(w), split.valid_start,
                                                 split.test_start, step, train_users, churn_cost=CHURN_COST),
        scorer.config.prior_weight)
    judged = scorer.with_prior_weight(weight)

    def make_env(users: np.ndarray, window: str) -> PolicyEnvironment:
        lo, hi = (split.valid_start, split.test_start) if window == "valid" else (split.test_start, end)
        return PolicyEnvironment(everything, judged, lo, hi, step, users, churn_cost=CHURN_COST)

    out = run_environment("MovieLens", lambda users: make_env(users, "valid"), lambda users: make_env(users, "test"),
                          train_users, eval_users, candidates)
    out["prior"] = prior_line
    days = lambda a, b: (b - a) / SECONDS_PER_DAY  # noqa: E731
    out["protocol"] = (
        f"{data.summary} UIG GCN: {report.epochs_run} epochs (best {report.best_epoch}). Users: "
        f"{train_users.size} training, {eval_users.size} held out (disjoint). Policy training window: validation "
        f"({days(split.valid_start, split.test_start):.1f} days), evaluation window: test "
        f"({days(split.test_start, end):.1f} days), held-out users only. Step {step_label}, chosen on the validation "
        f"window by scored user-steps (" + ", ".join(f"{k}: {v[1]}" for k, v in counts.items()) + "; ties → 1 d)."
    )
    return out




_TEXT: dict[str, np.ndarray] = {}


def catalog_text(catalog: list[dict[str, object]], item_ids: tuple) -> np.ndarray:
    """Item text embeddings in ``item_ids`` order, encoded once per run."""
    if not _TEXT:
        ids = tuple(str(r["item_id"]) for r in catalog)
        _TEXT.update(zip(ids, item_text_embeddings(catalog, ids)))
    return np.stack([_TEXT[str(i)] for i in item_ids])


def simulator(quick: bool, candidates: dict[str, DQNConfig], n_days: int = 60, seed: int = 0) -> dict[str, Any]:
    n_users = 500 if quick else 8000
    world = drift_world(n_users, n_days, seed=seed)
    events, truth = world.events, world.truth
    config = UigConfig()
    catalog = catalog_items(movielens_dir())
    item_ids = tuple(str(r["item_id"]) for r in catalog)
    topics = item_topics_frame(catalog, config.kg_min_items)
    frame = pd.DataFrame({"user": events["user_id"], "item": events["item_id"], "ts": events["ts"].astype(float)})
    first_shift = float(truth["shift_ts"].min())
    train_share = float((frame["ts"] < first_shift).mean()) * 0.9  # as bench/drift.py: GCN data end before any shift
    split = temporal_split(frame, (train_share, 0.1 * train_share / 0.9, 1 - train_share / 0.9))
    data = split.encode(items=item_ids)
    graph = train_window_graph(data.train, topics, catalog_text(catalog, item_ids), config.half_life_days,
                               data.valid_start)
    t0 = time.perf_counter()
    scorer, report = fit_uig_gcn(data.train, graph, ValidationSet.from_split(data), GCNTrainConfig())
    print(f"[simulator] trained the UIG GCN on {len(data.train):,} SYNTHETIC events in "
          f"{time.perf_counter() - t0:.0f} s (best epoch {report.best_epoch})", flush=True)
    everything = data.before_test.concat(data.test)
    timeline_start = math.floor(float(frame["ts"].min()) / SECONDS_PER_DAY) * SECONDS_PER_DAY
    lo = math.ceil(data.test_start / SECONDS_PER_DAY) * SECONDS_PER_DAY
    cut = timeline_start + round(0.55 * n_days) * SECONDS_PER_DAY
    end = float(frame["ts"].max()) + 1
    users = np.arange(data.n_users)
    train_users, eval_users = split_users(users, HELD_OUT, seed=0)
    check_disjoint(train_users, eval_users)
    index = everything.user_index
    truth = truth.assign(user_index=truth["user_id"].map(index))
    shifted = truth[truth["shifted"]]
    in_train = shifted["user_index"].isin(train_users)
    counts = {
        "train users, shift in the training window": int((in_train & shifted.shift_ts.between(lo, cut - 1e-6)).sum()),
        "held-out users, shift in the evaluation window": int((~in_train & (shifted.shift_ts >= cut)).sum()),
        "shift before the policy windows (any user)": int((shifted.shift_ts < lo).sum()),
        "train users, shift in the evaluation window (unused)": int((in_train & (shifted.shift_ts >= cut)).sum()),
        "held-out users, shift in the training window (unused)": int((~in_train & shifted.shift_ts.between(lo, cut - 1e-6)).sum()),
    }
    print("[simulator] shifted users: " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)

    weight, prior_line = reward_prior_weight(
        "simulator", lambda w: PolicyEnvironment(everything, scorer.with_prior_weight(w), lo, cut, SECONDS_PER_DAY,
                                                 train_users, churn_cost=CHURN_COST), scorer.config.prior_weight)
    judged = scorer.with_prior_weight(weight)

    def make_env(env_users: np.ndarray, a: float, b: float) -> PolicyEnvironment:
        return PolicyEnvironment(everything, judged, a, b, SECONDS_PER_DAY, env_users, churn_cost=CHURN_COST)

    out = run_environment("simulator", lambda u: make_env(u, lo, cut), lambda u: make_env(u, cut, end),
                          train_users, eval_users, candidates)
    out["prior"] = prior_line
    out["after_shift"] = after_shift(out, frame, shifted[~in_train], index, cut, end)
    days = lambda a, b: (b - a) / SECONDS_PER_DAY  # noqa: E731
    out["shift_counts"] = counts
    out["protocol"] = (
        f"SYNTHETIC: `drift_world(n_users={n_users}, n_days={n_days}, seed={seed})` over the real MovieLens catalog, "
        f"{len(events):,} events, {int(truth.shifted.sum())} users shift between 40 % and 70 % of the timeline. "
        f"UIG GCN (defaults) trained on the {len(data.train):,} events before the first shift (best epoch "
        f"{report.best_epoch}). Users: {train_users.size} training, {eval_users.size} held out (disjoint). Policy "
        f"training window: days {days(timeline_start, lo):.0f}–{days(timeline_start, cut):.0f} with the training users; "
        f"evaluation window: days {days(timeline_start, cut):.0f}–{days(timeline_start, end):.1f} with the held-out "
        f"users; step 1 d. Shifted users: " + "; ".join(f"{k}: {v}" for k, v in counts.items()) + "."
    )
    return out


def after_shift(out: dict[str, Any], frame: pd.DataFrame, shifted: pd.DataFrame, index: dict, cut: float,
                end: float) -> dict[str, Any]:
    """Per policy: the share of fast-forgetting actions at held-out shifted users' first dirty step
    after their shift — among the scored user-steps of the evaluation window and among all its
    dirty user-steps — and at the other user-steps."""
    results = out["results"]
    first_after: set[tuple[float, int]] = set()
    for row in shifted.itertuples():
        ts = frame.loc[(frame["user"] == row.user_id) & (frame["ts"] >= row.shift_ts), "ts"]
        if ts.empty or not cut <= float(ts.min()) < end:
            continue
        k = math.floor((float(ts.min()) - cut) / SECONDS_PER_DAY)
        first_after.add((min(cut + (k + 1) * SECONDS_PER_DAY, end), int(index[row.user_id])))
    some = next(iter(out["actions"].values()))
    is_first = np.array([key in first_after for key in results["user_steps"]], dtype=bool)
    is_first_dirty = np.array([key in first_after for key in some["dirty_keys"]], dtype=bool)
    fast = np.array([a.name in FAST for a in ACTIONS])
    share = lambda acts, mask: float(fast[acts[mask]].mean()) if mask.any() else math.nan  # noqa: E731
    names = [a.name for a in ACTIONS]
    best = out["comparison"]["best_fixed"]
    table = {}
    for name in ["DQN", "bandit", best, *(f for f in ("fixed:rebuild", "fixed:keep") if f != best)]:
        if name in out["actions"]:
            scored_acts, dirty_acts = out["actions"][name]["actions"], out["actions"][name]["dirty_actions"]
        else:
            index_of = names.index(name.removeprefix("fixed:"))
            scored_acts = np.full(is_first.size, index_of)
            dirty_acts = np.full(is_first_dirty.size, index_of)
        table[name] = {"first_scored": share(scored_acts, is_first), "first_dirty": share(dirty_acts, is_first_dirty),
                       "other_scored": share(scored_acts, ~is_first), "other_dirty": share(dirty_acts, ~is_first_dirty),
                       "reward_first": float(results["rewards"][name][is_first].mean()) if is_first.any() else math.nan}
    return {"n_first": int(is_first.sum()), "n_first_dirty": int(is_first_dirty.sum()),
            "n_candidates": len(first_after), "n_other": int((~is_first).sum()),
            "n_other_dirty": int((~is_first_dirty).sum()), "table": table}


# --------------------------------------------------------------------------------------------
# Report


def _ci(c: dict[str, float]) -> str:
    return f"{c['diff']:+.4f} [{c['diff_lo']:+.4f}, {c['diff_hi']:+.4f}]"


def _label(name: str) -> str:
    if name == "fixed:rebuild":
        return REBUILD_LABEL
    return name.removeprefix("fixed:") if name.startswith("fixed:") else f"**{name}**"


def result_table(out: dict[str, Any]) -> list[str]:
    results, comparison = out["results"], out["comparison"]
    best = comparison["best_fixed"]
    n = len(results["user_steps"])
    lines = [f"| policy | mean reward (NDCG@10 − {CHURN_COST:g} × churn) | NDCG@10 | churn | diff to best fixed "
             "[95 % CI] | user-steps |", "|---|---|---|---|---|---|"]
    order = ["DQN", "bandit"] + sorted(results["fixed"], key=lambda f: -results["mean"][f])
    for name in order:
        if name == best:
            diff = "— (best fixed)"
        elif name in comparison["comparisons"]:
            diff = _ci(comparison["comparisons"][name])
        else:
            diff = _ci(paired_bootstrap(results["rewards"][name], results["rewards"][best], N_BOOT, 0))
        lines.append(f"| {_label(name)} | {results['mean'][name]:.4f} | {results['ndcg'][name].mean():.4f} "
                     f"| {results['churn'][name].mean():.2f} | {diff} | {n} |")
    h = out["headroom"]
    lines += ["", f"Headroom: an oracle that takes, at every user-step, the action that earned most there (given the "
              f"profile the best fixed action carried) would earn {h['mean']:.4f}, {_ci(h['gain'])} over the best "
              "fixed action: an upper bound that includes luck, not a target a policy can reach. What the state can "
              f"tell: a policy cross-fitted on the evaluation user-steps themselves (5 folds, an MLP regressing every "
              f"action's reward on the state) earns {h['cross_fitted']:.4f}, {_ci(h['cross_fitted_gain'])}: a diagnostic "
              "that reads the evaluation window (optimistic), not a fair competitor."]
    return lines


def sensitivity_table(out: dict[str, Any]) -> list[str]:
    """The DQN retrained and evaluated under each churn cost (same settings, windows and users)."""
    lines = ["| churn cost | best fixed action | its reward | its NDCG@10 / churn | DQN reward | DQN NDCG@10 / churn "
             "| DQN − best fixed [95 % CI] | cross-fitted on the evaluation − best fixed | oracle − best fixed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in out["sensitivity"]:
        res, comp, cost = row["results"], row["comparison"], row["churn_cost"]
        best = comp["best_fixed"]

        def ndcg_churn(name: str) -> str:
            return f"{res['ndcg'][name].mean():.4f} / {res['churn'][name].mean():.2f}"

        mark = " (the tables above)" if cost == CHURN_COST else ""
        lines.append(f"| {cost:g}{mark} | {best.removeprefix('fixed:')} | {res['mean'][best]:.4f} | {ndcg_churn(best)} "
                     f"| {res['mean']['DQN']:.4f} | {ndcg_churn('DQN')} | {_ci(comp['comparisons']['DQN'])} "
                     f"| {_ci(row['headroom']['cross_fitted_gain'])} | {_ci(row['headroom']['gain'])} |")
    return lines


def verdict(out: dict[str, Any]) -> list[str]:
    results, comparison = out["results"], out["comparison"]
    best = comparison["best_fixed"].removeprefix("fixed:")
    c = comparison["comparisons"]["DQN"]
    if c["diff_lo"] > 0:
        vs_best = f"the DQN **beats** the best fixed action ({best}): {_ci(c)}, the interval excludes zero"
    elif c["diff_hi"] < 0:
        vs_best = f"the DQN **loses** to the best fixed action ({best}): {_ci(c)}, the interval excludes zero"
    else:
        vs_best = (f"the DQN does **not** beat the best fixed action ({best}): {_ci(c)}, the interval includes zero")
    b = out["dqn_vs_bandit"]
    if b["diff_lo"] > 0:
        vs_bandit = f"it beats the bandit: {_ci(b)}"
    elif b["diff_hi"] < 0:
        vs_bandit = f"it loses to the bandit: {_ci(b)}"
    else:
        vs_bandit = f"DQN − bandit {_ci(b)}: no difference shown"
    r = paired_bootstrap(results["rewards"]["DQN"], results["rewards"]["fixed:rebuild"], N_BOOT, 0)
    return [f"**Verdict ({out['name']}, {len(results['user_steps'])} user-steps):** {vs_best}; {vs_bandit}; "
            f"DQN − rebuild (today's rule) {_ci(r)}."]


def action_mix(out: dict[str, Any]) -> str:
    parts = []
    for name in ("DQN", "bandit"):
        counts = out["results"]["actions"][name]
        total = max(int(counts.sum()), 1)
        top = np.argsort(-counts, kind="stable")[:3]
        parts.append(f"{name}: " + ", ".join(f"{ACTIONS[i].name} {counts[i] / total:.0%}" for i in top if counts[i]))
    return "Actions taken on the evaluation window (all dirty user-steps), top three: " + "; ".join(parts) + "."


def shift_table(out: dict[str, Any]) -> list[str]:
    a = out["after_shift"]
    pct = lambda v: "–" if math.isnan(v) else f"{v:.0%}"  # noqa: E731
    lines = [f"{a['n_candidates']} held-out shifted users have their first dirty step after the shift inside the "
             f"evaluation window, {a['n_first_dirty']} of them at a decision refresh (the window's last step only "
             f"supplies targets); {a['n_first']} of those steps are scored user-steps (the user comes back with new items "
             f"inside the window). Because so few are scored, the share is also given over every dirty user-step (the "
             f"action is taken whether or not the step is scored). Fast-forgetting actions: {', '.join(FAST)}.", "",
             f"| policy | fast action, first step after a shift: scored (n = {a['n_first']}) "
             f"| … all dirty (n = {a['n_first_dirty']}) | other scored user-steps (n = {a['n_other']}) "
             f"| other dirty user-steps (n = {a['n_other_dirty']}) | mean reward, scored first steps after a shift |",
             "|---|---|---|---|---|---|"]
    best = out["comparison"]["best_fixed"]
    for name, row in a["table"].items():
        label = _label(name) + (" (best fixed)" if name == best else "")
        reward = "–" if math.isnan(row["reward_first"]) else f"{row['reward_first']:.4f}"
        lines.append(f"| {label} | {pct(row['first_scored'])} | {pct(row['first_dirty'])} | "
                     f"{pct(row['other_scored'])} | {pct(row['other_dirty'])} | {reward} |")
    return lines


def train_line(out: dict[str, Any]) -> str:
    c = out["config"]
    return (f"Trained on all training users with γ {c.gamma:g}, {c.episodes} episodes, "
            f"hidden {c.hidden} × {c.layers}, lr {c.lr:g}: {out['n_train']} scored user-steps (transitions) per "
            f"episode of the training window.")


def plot(outs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(outs), figsize=(6 * len(outs), 4.2), dpi=120)
    for ax, out in zip(np.atleast_1d(axes), outs):
        loss_ax = ax.twinx()
        for learner, colour in (("DQN", "tab:blue"), ("bandit", "tab:orange")):
            hist = out["history"][learner]
            x = [h["episode"] + 1 for h in hist]
            ax.plot(x, [h["behaviour_reward"] for h in hist], color=colour, marker="o", label=f"{learner} reward")
            loss_ax.plot(x, [h["loss"] for h in hist], color=colour, ls="--", label=f"{learner} loss")
        ax.set_xlabel("episode")
        ax.set_ylabel(f"behaviour policy's mean reward (NDCG@10 − {CHURN_COST:g} × churn)")
        loss_ax.set_ylabel("mean TD loss (dashed)")
        ax.set_title(f"{out['title']}: training window")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + loss_ax.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="best")
    save_figure(fig, PNG)


def candidates_for(quick: bool) -> dict[str, DQNConfig]:
    base = DQNConfig(episodes=3) if quick else DQNConfig()
    return {f"defaults (γ {base.gamma:g}, {base.episodes} episodes)": base,
            f"γ 0.9": dataclasses.replace(base, gamma=0.9),
            f"{2 * base.episodes} episodes": dataclasses.replace(base, episodes=2 * base.episodes)}


def main(argv: list[str] | None = None) -> int:
    global CHURN_COST
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 simulated users, fewer episodes; print, do not write")
    parser.add_argument("--churn-cost", type=float, default=CHURN_COST,
                        help=f"the reward's churn cost (default {DEFAULT_CHURN_COST:g}, UigConfig's policy_churn_cost)")
    args = parser.parse_args(argv)
    CHURN_COST = args.churn_cost
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    candidates = candidates_for(args.quick)
    ml = movielens(args.quick, candidates)
    ml["title"] = "MovieLens-100k"
    sim = simulator(args.quick, candidates)
    sim["title"] = "Drift simulator (SYNTHETIC)"
    if not args.quick:
        plot([ml, sim])
    minutes = (time.perf_counter() - t_start) / 60
    times = ["| learner | MovieLens-100k | simulator (SYNTHETIC) |", "|---|---|---|"]
    for learner in ("DQN", "bandit"):
        times.append(f"| {learner} | {ml['seconds'][learner]:.0f} s | {sim['seconds'][learner]:.0f} s |")
    text = "\n".join([
        "## Learned update policy (DQN) against fixed update rules", "",
        f"{stamp()} · {machine()} · 1 torch thread · seed 0 · whole run {minutes:.1f} min · "
        "`.venv/bin/python bench/update_policy.py"
        + ("" if CHURN_COST == DEFAULT_CHURN_COST else f" --churn-cost {CHURN_COST:g}") + "`", "",
        "Protocol (`models/update_policy.py`): at each refresh every dirty user gets one of ten profile updates "
        "(keep, rebuild, decay with half-life 1 h / 1 d / 7 d / ∞ admitting the step's top-3 or all items); reward = "
        "NDCG@10 of the updated profile's ranking (the fitted UIG GCN with the popularity prior at a weight chosen per "
        "data set on its training window, see below; full catalog, earlier items masked) against the "
        "user's new items the next time they act (their next step with events), "
        f"minus {CHURN_COST:g} × churn, the share of the user's profile the update moved (`profile_churn`: total "
        "variation between the normalised weights before and after; 0 for `keep`, about 1 when the profile is replaced "
        "by the step's items): a rewrite of a whole profile must buy that much NDCG@10, since a graph rewritten at every "
        "refresh makes recommendations flicker and costs writes. "
        + (f"{CHURN_COST:g} is the product's default `policy_churn_cost`; it was set after a scratch sweep that did "
           "read an evaluation window, so" if CHURN_COST == DEFAULT_CHURN_COST else
           f"{CHURN_COST:g} is not the product's default `policy_churn_cost` ({DEFAULT_CHURN_COST:g}); as always,")
        + " each data set also "
        f"gets the DQN retrained and evaluated under churn costs {', '.join(f'{c:g}' for c in SENSITIVITY)} (0 = NDCG@10 "
        "alone, the reward of earlier runs). Counterfactual replay, so every policy is scored on the same user-steps. "
        "The policies train on an earlier window with training users and are evaluated on a later window with "
        "held-out users only (`split_users`, 30 % held out, seed 0, disjointness checked). The bandit is the same "
        "network, loop and settings with γ = 0. `rebuild` is today's production rule `fixed-shares-v1` (every dirty "
        "user recomputed from the full history with the model's own recency fold-in). Differences are paired "
        f"bootstrap 95 % intervals ({N_BOOT:,} resamples of user-steps) against the best fixed action, which is "
        "picked on the evaluation user-steps themselves (this favours it). DQN settings tried: "
        + ", ".join(candidates) + " — chosen per environment on its training window only.", "",
        "### MovieLens-100k", "", ml["protocol"], "", ml["prior"], "", *ml["selection"], "", train_line(ml), "", *result_table(ml), "", action_mix(ml), "",
        *verdict(ml), "",
        "Under other churn costs (the DQN retrained with the same settings; each row picks its own best fixed action):",
        "", *sensitivity_table(ml), "",
        "### Drift simulator (SYNTHETIC)", "", sim["protocol"], "", sim["prior"], "", *sim["selection"], "", train_line(sim), "", *result_table(sim), "",
        action_mix(sim), "", *verdict(sim), "",
        "Under other churn costs (the DQN retrained with the same settings; each row picks its own best fixed action):",
        "", *sensitivity_table(sim), "",
        "### Simulator (SYNTHETIC): the right action after a shift", "",
        "After a shift the ground truth says the old interests are gone, so an action that forgets fast is right.", "",
        *shift_table(sim), "",
        "### Training time (training window, all training users)", "", *times, "",
        "![learning curves](update_policy.png)",
    ])
    print(text)
    if not args.quick:
        write_section("update-policy", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
