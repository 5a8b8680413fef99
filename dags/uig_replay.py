"""DAG ``uig_replay``: land the next MovieLens day, then ingest → aggregate → refresh.

Wiring only. Each run moves the replay one day forward, so the interest graph can be watched
evolving day by day (trigger it by hand, or unpause it for one day per schedule tick).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from assets import AGGREGATE_OUTLETS, INGEST_OUTLETS, REFRESH_OUTLETS
from failures import fail_fast_on_uig_error
from params import data_root_param
from pools import GPU_POOL, WRITER_POOL, WRITERS_DOC

DOC_MD = """
### UIG replay (MovieLens-100k, one day per run)

1. **land_next_day** — the first MovieLens day after the newest one in `landing/` (real
   ratings with their real timestamps);
2. **ingest** and **aggregate** as of the end of that day;
3. **refresh** — interest edges of that day's users.

Inspect the result with `uig user USER_ID` or `uig tables`. When every day is landed, the run
does nothing more. **Params**: `data_root`.

""" + WRITERS_DOC + "\n"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "uig",
    "retries": 1,
    "retry_delay": timedelta(minutes=1),
    "execution_timeout": timedelta(hours=1),
}

PARAMS: dict[str, Param] = {
    "data_root": data_root_param(),
}


@dag(
    dag_id="uig_replay",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["uig", "replay", "demo"],
    doc_md=DOC_MD,
)
def uig_replay() -> None:
    @task
    @fail_fast_on_uig_error
    def land_next_day(**context: Any) -> dict[str, object]:
        """The next MovieLens day into landing/ (uig_tasks.movielens.land_next_day)."""
        from uig_tasks.airflow_context import config_from_params
        from uig_tasks.movielens import land_next_day as land

        return land(config_from_params(context["params"]).landing_dir)

    @task(pool=WRITER_POOL, outlets=list(INGEST_OUTLETS))
    @fail_fast_on_uig_error
    def ingest(landed: dict[str, object], **context: Any) -> dict[str, object]:
        """Bronze + silver as of the end of the landed day (uig_tasks.pipeline.run_ingest)."""
        from uig_tasks.airflow_context import config_from_params
        from uig_tasks.movielens import end_of_replayed_day
        from uig_tasks.pipeline import run_ingest

        return run_ingest(config_from_params(context["params"]), end_of_replayed_day(landed))

    @task(pool=WRITER_POOL, outlets=list(AGGREGATE_OUTLETS))
    @fail_fast_on_uig_error
    def aggregate(landed: dict[str, object], ingested: dict[str, object], **context: Any) -> dict[str, object]:
        """Gold affinities as of the end of the landed day (uig_tasks.pipeline.run_aggregate)."""
        from uig_tasks.airflow_context import config_from_params
        from uig_tasks.movielens import end_of_replayed_day
        from uig_tasks.pipeline import run_aggregate

        return run_aggregate(config_from_params(context["params"]), end_of_replayed_day(landed))

    @task(pool=GPU_POOL, outlets=list(REFRESH_OUTLETS))
    @fail_fast_on_uig_error
    def refresh(aggregated: dict[str, object], **context: Any) -> dict[str, object]:
        """Interest edges of the day's users (uig_tasks.refresh.run_refresh)."""
        from uig_tasks.airflow_context import config_from_params
        from uig_tasks.refresh import run_refresh

        return run_refresh(config_from_params(context["params"]))

    landed = land_next_day()
    ingested = ingest(landed)
    refresh(aggregate(landed, ingested))


uig_replay()
