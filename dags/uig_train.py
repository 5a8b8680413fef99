"""DAG ``uig_train``: encode → build graph → train → evaluate → gate → update policy, weekly or on demand.

Wiring only: each task calls one function in ``uig_tasks.encode`` / ``uig_tasks.train`` and
passes small values (a snapshot path, a model version, scores) through XCom. Model tasks run in
the ``gpu`` pool (one slot locally), so a deployment can route them to GPU workers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from failures import fail_fast_on_uig_error
from params import data_root_param
from pools import GPU_POOL, WRITERS_DOC

DOC_MD = """
### UIG train

1. **encode** — new or changed catalog items → `gold.item_embeddings` (all-MiniLM-L6-v2).
2. **build_graph** — reads the Delta tables once into a *training snapshot* (interactions,
   item text vectors, item topics, their Delta versions) and applies the global temporal split
   80/10/10.
3. **train** — fits the UIG GCN on the train window with early stopping on the validation
   window; logs params, per-epoch metrics, input Delta versions and the git commit to MLflow and
   registers a new `uig-gcn` version.
4. **evaluate** — test-window metrics of the new version beside the baselines (reported only).
5. **gate** — moves `@champion` to the new version only if it beats the current champion on the
   validation window by `gate_margin`. The decision and both scores become version tags.
6. **train_policy** — learns the per-user update policy (a DQN over replayed refreshes with the
   `@champion` GCN) on the validation window, evaluates it on held-out users of the test window
   against every fixed update rule, registers a `uig-update-policy` version and gates it into
   `@champion` the same way (`policy_gate_margin`). `policy_episodes` = 0 skips it.

**Params**: `data_root`, `epochs`, `seed`, `dim`, `gate_margin`, `evaluate_models`, `policy_episodes`,
`policy_churn_cost`.
Roll back with `uig models --promote VERSION` (or the MLflow UI's alias editor).

""" + WRITERS_DOC + "\n"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "uig",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(hours=4),
}

PARAMS: dict[str, Param] = {
    "data_root": data_root_param(),
    "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=1000, title="Max epochs",
                    description="Upper bound on training epochs (early stopping decides); empty means the default."),
    "seed": Param(0, type="integer", minimum=0, title="Seed"),
    "dim": Param(None, type=["null", "integer"], minimum=2, maximum=1024, title="Embedding size"),
    "gate_margin": Param(None, type=["null", "number"], minimum=0, title="Gate margin",
                         description="How much better than the champion (validation NDCG@10) a version must be."),
    "evaluate_models": Param(
        ["uig-gcn", "most-popular", "item-knn", "bpr-mf", "lightgcn"],
        type="array",
        items={"type": "string", "enum": ["uig-gcn", "most-popular", "item-knn", "bpr-mf", "lightgcn"]},
        minItems=1,
        title="Models to evaluate",
        description="The candidate ('uig-gcn') and the baselines to score on the test window.",
    ),
    "policy_episodes": Param(10, type="integer", minimum=0, maximum=1000, title="Update-policy episodes",
                             description="Replays of the training window for the update policy; 0 skips it."),
    "policy_churn_cost": Param(None, type=["null", "number"], minimum=0, title="Update-policy churn cost",
                               description="The policy's reward is NDCG@10 minus this times the share of a profile "
                                           "an update moves; empty means the default (0.02)."),
}


def _config(context: dict[str, Any]):  # -> UigConfig
    from uig_tasks.airflow_context import config_from_params

    return config_from_params(context["params"])


@dag(
    dag_id="uig_train",
    schedule="@weekly",
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["uig", "train", "models"],
    doc_md=DOC_MD,
)
def uig_train() -> None:
    @task(pool=GPU_POOL)
    @fail_fast_on_uig_error
    def encode(**context: Any) -> dict[str, object]:
        """Text vectors for new or changed items (uig_tasks.encode.run_encode)."""
        from uig_tasks.airflow_context import run_logical_time
        from uig_tasks.encode import run_encode

        return run_encode(_config(context), run_logical_time(context))

    @task
    @fail_fast_on_uig_error
    def build_graph(encoded: dict[str, object], **context: Any) -> dict[str, object]:
        """Training snapshot from Delta (uig_tasks.train.build_snapshot)."""
        from uig_tasks.airflow_context import run_logical_time
        from uig_tasks.train import build_snapshot

        config = _config(context)
        run_id = context["run_id"].replace(":", "").replace("+", "")
        return build_snapshot(config, run_logical_time(context), config.data_root / "snapshots" / f"train-{run_id}")

    @task(pool=GPU_POOL)
    @fail_fast_on_uig_error
    def train(snapshot: dict[str, object], **context: Any) -> dict[str, object]:
        """Fit, log and register a uig-gcn version (uig_tasks.train.train_candidate)."""
        from uig_tasks.train import train_candidate

        params = context["params"]
        overrides = {"epochs": params.get("epochs"), "seed": params.get("seed"), "dim": params.get("dim")}
        return train_candidate(_config(context), str(snapshot["path"]), overrides, run_name=context["run_id"])

    @task(pool=GPU_POOL)
    @fail_fast_on_uig_error
    def evaluate(snapshot: dict[str, object], trained: dict[str, object], **context: Any) -> dict[str, object]:
        """Test-window metrics of the new version and the baselines (uig_tasks.train.evaluate_snapshot)."""
        from uig_tasks.train import evaluate_snapshot

        models = list(context["params"]["evaluate_models"])
        return evaluate_snapshot(_config(context), str(snapshot["path"]), models, ref=int(trained["version"]))

    @task
    @fail_fast_on_uig_error
    def gate(snapshot: dict[str, object], trained: dict[str, object], **context: Any) -> dict[str, object]:
        """Move @champion only if the new version beats it on validation (uig_tasks.train.gate_candidate)."""
        from uig_tasks.train import gate_candidate

        return gate_candidate(
            _config(context), str(snapshot["path"]), int(trained["version"]),
            str(trained["metric"]), float(trained["validation_score"]),
        )

    @task(pool=GPU_POOL)
    @fail_fast_on_uig_error
    def train_policy(snapshot: dict[str, object], gated: dict[str, object], **context: Any) -> dict[str, object]:
        """Learn, register and gate the update policy with the @champion GCN (uig_tasks.policy.train_policy)."""
        from uig_tasks.policy import train_policy

        params = context["params"]
        if not params.get("policy_episodes"):
            return {"skipped": True}
        return train_policy(_config(context), str(snapshot["path"]), episodes=int(params["policy_episodes"]),
                            seed=int(params.get("seed") or 0), run_name=f"policy-{context['run_id']}")

    snapshot = build_graph(encode())
    trained = train(snapshot)
    gated = gate(snapshot, trained)
    evaluate(snapshot, trained) >> gated
    train_policy(snapshot, gated)


uig_train()
