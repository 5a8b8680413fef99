"""DAG ``uig_refresh``: re-materialise the interest edges of users with new behaviour.

Wiring only. Scheduled by the Asset that ``aggregate`` updates (``gold.user_item_affinity``), so
it runs after every aggregate, with no polling; each run calls ``uig_tasks.refresh.run_refresh``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from assets import GOLD_USER_ITEM_AFFINITY, REFRESH_OUTLETS
from failures import fail_fast_on_uig_error
from params import data_root_param
from pools import GPU_POOL, WRITERS_DOC

DOC_MD = """
### UIG refresh

Recomputes `gold.interest_edges` for the users whose events `aggregate` folded in since the last
refresh (late events included), with the `@champion` GCN by fold-in; other users' rows are not
rewritten, and a run with no dirty user writes nothing. When `@champion` moved (new model or
rollback), every user is refreshed.

* **Trigger**: every update of the `gold.user_item_affinity` Asset (from `uig_ingest` or
  `uig_replay`), or by hand.
* **Params**: `data_root`, `full` (refresh every user).
* **Time**: the refresh is as of the last aggregate's time.
""" + WRITERS_DOC + "\n"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "uig",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "execution_timeout": timedelta(hours=2),
}

PARAMS: dict[str, Param] = {
    "data_root": data_root_param(),
    "full": Param(False, type="boolean", title="Full refresh", description="Refresh every user, not only dirty ones."),
}


@dag(
    dag_id="uig_refresh",
    schedule=[GOLD_USER_ITEM_AFFINITY],
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["uig", "refresh"],
    doc_md=DOC_MD,
)
def uig_refresh() -> None:
    @task(pool=GPU_POOL, outlets=list(REFRESH_OUTLETS))
    @fail_fast_on_uig_error
    def refresh(**context: Any) -> dict[str, object]:
        """Interest edges of dirty users (uig_tasks.refresh.run_refresh)."""
        from uig_tasks.airflow_context import config_from_params
        from uig_tasks.refresh import run_refresh

        return run_refresh(config_from_params(context["params"]), full=bool(context["params"]["full"]))

    refresh()


uig_refresh()
