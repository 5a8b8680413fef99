"""DAG ``uig_ingest``: landing files → bronze/silver tables → gold affinities, once a day.

Wiring only: each task builds its config from the run's params and calls one function in
``uig_tasks.pipeline``. Heavy imports (pyspark via the pipeline) happen inside the task bodies so
parsing this file stays cheap.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from assets import AGGREGATE_OUTLETS, INGEST_OUTLETS
from failures import fail_fast_on_uig_error
from params import data_root_param
from pools import WRITER_POOL, WRITERS_DOC

DOC_MD = """
### UIG ingest

Ingests every new complete line of the landing event files (plus the item / user catalog) into
`bronze.events_raw` → `silver.events` / `silver.quarantine`, then recomputes the time-decayed
gold affinities (`gold.user_item_affinity`, `gold.user_topic_affinity`) for the users that got
new events.

* **Time**: both tasks run "as of" the run's logical date (for a manual run without one: the
  time the run was asked for). Re-running a date gives the same tables (MERGE / slice overwrite).
* **Params**: `data_root` (default `UIG_DATA_ROOT` or `./data`), `half_life_days` (default from
  config), `full_aggregate` (recompute every user instead of only the dirty ones).
* **Assets**: `ingest` updates the silver tables, `aggregate` the gold ones; DAGs downstream
  schedule on them (see `dags/assets.py`).
""" + WRITERS_DOC + "\n"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "uig",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=2),
}

PARAMS: dict[str, Param] = {
    "data_root": data_root_param(),
    "half_life_days": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        title="Half-life (days)",
        description="Time-decay half-life of affinities; empty means the configured default.",
    ),
    "full_aggregate": Param(
        False,
        type="boolean",
        title="Full aggregate",
        description="Recompute gold affinities for every user, not only users with new events.",
    ),
}


@dag(
    dag_id="uig_ingest",
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["uig", "ingest"],
    doc_md=DOC_MD,
)
def uig_ingest() -> None:
    @task(pool=WRITER_POOL, outlets=list(INGEST_OUTLETS))
    @fail_fast_on_uig_error
    def ingest(**context: Any) -> dict[str, object]:
        """Bronze + silver from new landing files (uig_tasks.pipeline.run_ingest)."""
        from uig_tasks.airflow_context import task_inputs
        from uig_tasks.pipeline import run_ingest

        config, logical_time = task_inputs(context)
        return run_ingest(config, logical_time)

    @task(pool=WRITER_POOL, outlets=list(AGGREGATE_OUTLETS))
    @fail_fast_on_uig_error
    def aggregate(**context: Any) -> dict[str, object]:
        """Gold affinities as of the run's time (uig_tasks.pipeline.run_aggregate)."""
        from uig_tasks.airflow_context import task_inputs
        from uig_tasks.pipeline import run_aggregate

        config, as_of = task_inputs(context)
        return run_aggregate(config, as_of, full=bool(context["params"]["full_aggregate"]))

    ingest() >> aggregate()


uig_ingest()
