"""Turns an Airflow task context into the explicit arguments that ``uig_tasks`` functions take.

The context is read as a plain mapping, so this module needs no airflow import: ``uig_tasks``
stays importable (and testable) without Airflow, and DAG files stay pure wiring.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from uig_tasks.config import UigConfig
from uig_common.timeutil import parse_time

#: Airflow params that map onto ``UigConfig`` fields (None means "keep the env / default").
CONFIG_PARAMS = ("data_root", "half_life_days", "gate_margin", "policy_churn_cost")


def run_logical_time(
    context: Mapping[str, Any], *, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> datetime:
    """The time a run is "as of", as a plain aware UTC datetime.

    The run's logical date when it has one. Airflow 3 manual runs may have none (the context then
    lacks ``logical_date`` and ``data_interval_*`` altogether), so fall back to the data interval
    end, then to the run's ``run_after`` (when it was asked to run), then to ``now``.
    """
    for key in ("logical_date", "data_interval_end"):
        value = context.get(key)
        if value is not None:
            return _plain_utc(value)
    run_after = getattr(context.get("dag_run"), "run_after", None)
    return _plain_utc(run_after if run_after is not None else now())


def config_from_params(params: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> UigConfig:
    """``UigConfig.from_env`` with the run's params as overrides (None values are ignored)."""
    params = params or {}
    return UigConfig.from_env(env, **{name: params.get(name) for name in CONFIG_PARAMS})


def task_inputs(context: Mapping[str, Any]) -> tuple[UigConfig, datetime]:
    """(config, logical time) for a task, from its Airflow context."""
    return config_from_params(context.get("params")), run_logical_time(context)


def _plain_utc(value: datetime) -> datetime:
    # Airflow hands out pendulum DateTimes; Spark and XCom get a plain datetime instead.
    utc = parse_time(value)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=timezone.utc
    )
