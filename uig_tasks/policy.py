"""``uig train-policy``: learn the per-user update policy, register it, gate it into ``@champion``.

The environment (:mod:`models.update_policy`) replays the training snapshot's events with the
``@champion`` GCN: at each refresh (one ``step``), every dirty user's profile is updated by one of
the policy's actions and rewarded by the NDCG@10 it earns on the user's next step, minus
``policy_churn_cost`` times the share of the profile it moved. Honest by
construction:

* the DQN (and the contextual bandit it is compared with) trains on the **validation window**
  with the training users;
* the reward ranks with the popularity prior at the weight under which today's rule earns most
  on that same training window (:func:`models.update_policy.choose_reward_prior_weight`), minus
  ``policy_churn_cost`` times the share of the profile the update moved (a stable graph is
  worth something: a full rewrite must buy that much NDCG@10);
* it is evaluated on the **test window** with **held-out users** only (no user in both:
  :func:`models.update_policy.check_disjoint`), against every fixed action — ``keep``,
  ``rebuild`` (= ``fixed-shares-v1``, today's rule) and the decay / admit / prune operators — with
  paired bootstrap intervals of the difference to the best fixed action.

The policy is an MLflow run and a version of ``uig-update-policy``; the quality gate re-scores the
current ``@champion`` policy on the same held-out evaluation and promotes the new one only if its
mean reward is higher by ``policy_gate_margin``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from uig_common import names as C
from uig_common.errors import InputError
from uig_tasks.config import UigConfig

log = logging.getLogger(__name__)

__all__ = ["train_policy"]

#: The module:callable that rebuilds a registered policy from its state.
POLICY_LOADER = "models.update_policy:QPolicy.from_state"
METRIC = "mean_reward"


def _environments(config: UigConfig, snapshot_path: Path, step: str, held_out_share: float, seed: int) -> dict[str, Any]:
    """The training and the held-out evaluation environments over the snapshot, with the champion GCN."""
    import numpy as np

    from models.rolling import parse_step
    from models.update_policy import PolicyEnvironment, check_disjoint, choose_reward_prior_weight, split_users
    from uig_tasks import scorer_model
    from uig_tasks.train import TrainingSnapshot

    _, data = TrainingSnapshot.load(snapshot_path).split()
    scorer, gcn_version = scorer_model.load_scorer(config)
    if tuple(scorer.item_ids) != tuple(data.train.items):
        raise InputError(f"{C.GCN_MODEL} version {gcn_version} ranks another item index than this snapshot; retrain it")
    events = data.before_test.concat(data.test)
    train_users, held_out = split_users(np.unique(events.user_ids), held_out_share, seed)
    check_disjoint(train_users, held_out)
    seconds = parse_step(step)
    end = float(data.test.ts.max()) + 1
    prior_weight, by_weight = choose_reward_prior_weight(
        lambda w: PolicyEnvironment(events, scorer.with_prior_weight(w), data.valid_start, data.test_start, seconds,
                                    train_users, churn_cost=config.policy_churn_cost), scorer.config.prior_weight)
    log.info("reward prior weight %g (mean reward of rebuild on the training window: %s)", prior_weight,
             ", ".join(f"{w:g} {m:.4f}" for w, m in by_weight.items()))
    judged = scorer.with_prior_weight(prior_weight)
    return {
        "gcn_version": gcn_version, "train_users": train_users, "held_out": held_out, "prior_weight": prior_weight,
        "train": PolicyEnvironment(events, judged, data.valid_start, data.test_start, seconds, train_users,
                                   churn_cost=config.policy_churn_cost),
        "eval": PolicyEnvironment(events, judged, data.test_start, end, seconds, held_out,
                                  churn_cost=config.policy_churn_cost),
    }


def train_policy(
    config: UigConfig,
    snapshot_path: str | Path | None = None,
    *,
    episodes: int = 10,
    seed: int = 0,
    step: str = "1d",
    held_out_share: float = 0.3,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, register and gate an update policy (module docstring); returns the numbers
    and the gate's decision."""
    import dataclasses

    from models.update_policy import DQNConfig, QPolicy, compare_to_best_fixed, evaluate_policies, train_bandit, train_dqn
    from uig_tasks import mlflow_store, quality_gate
    from uig_tasks.train import TrainingSnapshot, latest_snapshot

    snapshot_path = Path(snapshot_path) if snapshot_path else latest_snapshot(config)
    envs = _environments(config, snapshot_path, step, held_out_share, seed)
    dqn_config = DQNConfig(episodes=episodes, seed=seed)
    t0 = time.perf_counter()
    policy, history = train_dqn(envs["train"], dqn_config)
    dqn_seconds = time.perf_counter() - t0
    bandit, _ = train_bandit(envs["train"], dqn_config)
    log.info("update policy trained in %.0fs on %d users of the validation window", dqn_seconds,
             envs["train_users"].size)
    results = evaluate_policies(envs["eval"], {"dqn": policy, "bandit": bandit})
    compared = compare_to_best_fixed(results)
    score = float(results["mean"]["dqn"])
    vs_best = compared["comparisons"]["dqn"]
    log.info("held-out evaluation: dqn %.4f, bandit %.4f, best fixed %s %.4f (dqn - best %+.4f [%+.4f, %+.4f])",
             score, results["mean"]["bandit"], compared["best_fixed"], compared["best_fixed_mean"],
             vs_best["diff"], vs_best["diff_lo"], vs_best["diff_hi"])

    def score_champion(state: dict[str, Any]) -> float:
        champion = QPolicy.from_state(state)
        if tuple(champion.feature_names) != tuple(policy.feature_names) or tuple(champion.action_names) != tuple(
                policy.action_names):
            raise quality_gate.IncomparableChampion("it reads other state features or takes other actions")
        return float(evaluate_policies(envs["eval"], {"champion": champion}, include_fixed=False)["mean"]["champion"])

    record = mlflow_store.TrainingRecord(
        state={**policy.to_state(), "loader": POLICY_LOADER},
        params={**{k: v for k, v in dataclasses.asdict(dqn_config).items() if v is not None}, "step": step, "held_out_share": held_out_share,
                "gcn_version": envs["gcn_version"], "reward_prior_weight": envs["prior_weight"],
                "churn_cost": config.policy_churn_cost,
                "train_window": "validation", "eval_window": "test",
                "train_users": int(envs["train_users"].size), "held_out_users": int(envs["held_out"].size)},
        metrics={METRIC: score, "bandit_mean_reward": float(results["mean"]["bandit"]),
                 "best_fixed_mean_reward": float(compared["best_fixed_mean"]),
                 "dqn_minus_best_fixed": vs_best["diff"], "dqn_minus_best_fixed_lo": vs_best["diff_lo"],
                 "dqn_minus_best_fixed_hi": vs_best["diff_hi"], "eval_user_steps": float(len(results["user_steps"])),
                 "train_seconds": dqn_seconds},
        epoch_metrics=[{"epoch": float(row["episode"]), **{k: float(v) for k, v in row.items() if k != "episode"}}
                       for row in history],
        input_versions=TrainingSnapshot.load(snapshot_path).input_versions,
        tags={"snapshot": str(snapshot_path.resolve()), "best_fixed_action": compared["best_fixed"]},
    )
    decision = quality_gate.register_candidate(
        config, record, metric=METRIC, candidate_score=score, score_champion=score_champion,
        margin=config.policy_gate_margin, experiment=config.mlflow_experiment, run_name=run_name,
        model_name=C.POLICY_MODEL,
    )
    return {
        "version": decision.version, "promoted": decision.promoted, "reason": decision.reason,
        "mean_reward": {name: round(float(v), 4) for name, v in results["mean"].items()},
        "churn_cost": config.policy_churn_cost,
        "mean_churn": {name: round(float(v.mean()), 4) for name, v in results["churn"].items()},
        "mean_ndcg": {name: round(float(v.mean()), 4) for name, v in results["ndcg"].items()},
        "best_fixed": compared["best_fixed"], "dqn_minus_best_fixed": vs_best,
        "eval_user_steps": len(results["user_steps"]), "gcn_version": envs["gcn_version"],
        "train_seconds": round(dqn_seconds, 1),
    }
