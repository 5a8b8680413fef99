"""DAG checks: every file in ``dags/`` parses cleanly and cheaply, and ``uig_ingest`` really runs.

Airflow reads its configuration once, when first imported, so the isolated ``AIRFLOW_HOME``
(with a freshly migrated SQLite DB) is set up by a session fixture *before* anything imports
airflow; airflow itself is imported only inside tests.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import FIRST_DAY, SECOND_DAY
from uig_tasks.airflow_context import config_from_params, run_logical_time, task_inputs
from uig_tasks.config import UigConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
#: Packages a DAG file must not import at parse time (the dag-processor re-parses files often).
HEAVY_MODULES = ("pyspark", "delta", "torch", "mlflow", "transformers", "uig_tasks.pipeline", "spark_jobs.io")


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An isolated AIRFLOW_HOME with a migrated SQLite metadata DB, for the whole session."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }
    if "airflow" in sys.modules:
        from airflow.configuration import AIRFLOW_HOME

        if Path(AIRFLOW_HOME) != home:
            pytest.fail(
                f"airflow was imported before this fixture (AIRFLOW_HOME={AIRFLOW_HOME}); "
                "import airflow lazily inside tests so they use the isolated home"
            )
    root_handlers = list(logging.getLogger().handlers)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        proc = subprocess.run(
            [str(AIRFLOW_BIN), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout}\n{proc.stderr}"
        for pool in ("gpu", "uig_writer"):  # as infra/airflow-standalone.sh creates them
            proc = subprocess.run(
                [str(AIRFLOW_BIN), "pools", "set", pool, "1", f"UIG {pool} pool"],
                env=dict(os.environ), capture_output=True, text=True, timeout=600,
            )
            assert proc.returncode == 0, f"airflow pools set failed:\n{proc.stdout}\n{proc.stderr}"
        yield home
    # Importing airflow adds a root StreamHandler on the sys.stdout of that moment (pytest's
    # capture file); py4j logs to it from __del__ at exit, after it is closed ("Logging error").
    for handler in set(logging.getLogger().handlers) - set(root_handlers):
        logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path) -> Any:
    """``dags/`` parsed the way the dag-processor parses a bundle (bundle root on sys.path)."""
    # DagBag moved to airflow.dag_processing.dagbag in Airflow 3 (airflow.models.dagbag.DagBag is
    # a deprecated shim) and lost ``include_examples``: examples follow [core] load_examples.
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS_DIR, bundle_path=DAGS_DIR, bundle_name="dags-folder", safe_mode=False)


# --- DagBag -------------------------------------------------------------------------------


def test_dagbag_has_no_import_errors_or_warnings(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.captured_warnings == {}
    assert {"uig_ingest", "uig_train", "uig_refresh", "uig_replay"} <= set(dagbag.dag_ids)


def test_every_dag_is_tagged_documented_and_retried(dagbag: Any) -> None:
    assert dagbag.dags, "no DAGs found in dags/"
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"DAG {dag_id} has no tags"
        assert dag.doc_md, f"DAG {dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has retries={task.retries}"


def test_uig_ingest_wiring(dagbag: Any) -> None:
    from assets import AGGREGATE_OUTLETS, INGEST_OUTLETS

    dag = dagbag.dags["uig_ingest"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert set(dag.params.keys()) == {"data_root", "half_life_days", "full_aggregate"}
    assert dag.task_dict["aggregate"].upstream_task_ids == {"ingest"}
    assert [a.name for a in dag.task_dict["ingest"].outlets] == [a.name for a in INGEST_OUTLETS]
    assert [a.name for a in dag.task_dict["aggregate"].outlets] == [a.name for a in AGGREGATE_OUTLETS]
    assert {a.name for a in INGEST_OUTLETS + AGGREGATE_OUTLETS} == {
        "silver.events",
        "silver.quarantine",
        "silver.items",
        "silver.users",
        "gold.user_item_affinity",
        "gold.user_topic_affinity",
    }


def test_uig_train_wiring(dagbag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["uig_train"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    upstream = {task_id: task.upstream_task_ids for task_id, task in dag.task_dict.items()}
    assert upstream == {
        "encode": set(),
        "build_graph": {"encode"},
        "train": {"build_graph"},
        "evaluate": {"build_graph", "train"},
        "gate": {"build_graph", "train", "evaluate"},
        "train_policy": {"build_graph", "gate"},
    }
    assert {t.task_id for t in dag.tasks if t.pool == "gpu"} == {"encode", "train", "evaluate", "train_policy"}
    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError):
        params.get_param("evaluate_models").resolve(value=["uig-gcn", "random"])
    with pytest.raises(ParamValidationError):
        params.get_param("gate_margin").resolve(value=-0.1)
    with pytest.raises(ParamValidationError):
        params.get_param("policy_churn_cost").resolve(value=-0.01)
    assert params.get_param("epochs").resolve(value=2) == 2


def test_table_writers_run_in_the_writer_pool_or_the_gpu_pool(dagbag: Any) -> None:
    """Two DAGs never run their table writers at once: one `uig_writer` slot (model tasks: `gpu`)."""
    from pools import GPU_POOL, WRITER_POOL

    pools = {(dag_id, t.task_id): t.pool for dag_id, dag in dagbag.dags.items() for t in dag.tasks}
    assert {key for key, pool in pools.items() if pool == WRITER_POOL} == {
        ("uig_ingest", "ingest"), ("uig_ingest", "aggregate"), ("uig_replay", "ingest"), ("uig_replay", "aggregate"),
    }
    writers = {(dag_id, t.task_id) for dag_id, dag in dagbag.dags.items() for t in dag.tasks if t.outlets}
    writers.add(("uig_train", "encode"))  # writes gold.item_embeddings (no Asset declared)
    assert {pools[key] for key in writers} == {WRITER_POOL, GPU_POOL}
    for dag_id in ("uig_ingest", "uig_replay", "uig_refresh", "uig_train"):
        assert WRITER_POOL in dagbag.dags[dag_id].doc_md, dag_id


def test_uig_refresh_is_scheduled_by_the_aggregate_asset_and_replay_chains_the_day(dagbag: Any) -> None:
    from assets import GOLD_USER_ITEM_AFFINITY, REFRESH_OUTLETS

    refresh = dagbag.dags["uig_refresh"]
    assert [asset.name for asset in refresh.timetable.asset_condition.objects] == [GOLD_USER_ITEM_AFFINITY.name]
    assert [a.name for a in refresh.task_dict["refresh"].outlets] == [a.name for a in REFRESH_OUTLETS]
    replay = dagbag.dags["uig_replay"]
    upstream = {task_id: task.upstream_task_ids for task_id, task in replay.task_dict.items()}
    assert upstream == {"land_next_day": set(), "ingest": {"land_next_day"},
                        "aggregate": {"land_next_day", "ingest"}, "refresh": {"aggregate"}}


def test_params_are_validated(dagbag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["uig_ingest"].params)  # resolve(value=...) stores the value
    assert params.validate() == {"data_root": None, "half_life_days": None, "full_aggregate": False}
    for key, good in (("data_root", "/srv/uig"), ("half_life_days", 7.5), ("full_aggregate", True)):
        assert params.get_param(key).resolve(value=good) == good
    for key, bad in (("half_life_days", 0), ("half_life_days", "soon"), ("full_aggregate", "yes"), ("data_root", 3)):
        with pytest.raises(ParamValidationError):
            params.get_param(key).resolve(value=bad)


def test_dag_files_parse_without_heavy_imports(airflow_home: Path) -> None:
    """Parsing every DAG file in a fresh interpreter must not pull in Spark, torch or MLflow."""
    code = (
        "import json, runpy, sys\n"
        f"sys.path.insert(0, {str(DAGS_DIR)!r})\n"
        f"for f in sorted(__import__('pathlib').Path({str(DAGS_DIR)!r}).glob('*.py')): runpy.run_path(str(f))\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# --- the context helper (no airflow needed) -----------------------------------------------


class _Run:
    def __init__(self, run_after: datetime | None) -> None:
        self.run_after = run_after


def test_logical_time_prefers_logical_date_then_run_after_then_now() -> None:
    day = datetime(1997, 9, 22, tzinfo=timezone.utc)
    later = day + timedelta(hours=5)
    assert run_logical_time({"logical_date": day, "data_interval_end": later}) == day
    assert run_logical_time({"data_interval_end": later}) == later
    # Airflow 3 manual runs without a logical date: the context has no logical_date at all.
    assert run_logical_time({"dag_run": _Run(later)}) == later
    assert run_logical_time({"dag_run": _Run(None)}, now=lambda: day) == day
    naive = run_logical_time({"logical_date": datetime(1997, 9, 22, 1, 2, 3)})
    assert naive == datetime(1997, 9, 22, 1, 2, 3, tzinfo=timezone.utc) and type(naive) is datetime


def test_config_from_params_ignores_nulls(tmp_path: Path) -> None:
    env = {"UIG_DATA_ROOT": str(tmp_path / "env"), "UIG_HALF_LIFE_DAYS": "9"}
    assert config_from_params({"data_root": None, "half_life_days": None}, env) == UigConfig.from_env(env)
    config = config_from_params({"data_root": str(tmp_path / "p"), "half_life_days": 3, "full_aggregate": True}, env)
    assert config.data_root == tmp_path / "p" and config.half_life_days == 3.0
    assert config_from_params({"policy_churn_cost": 0.05}, env).policy_churn_cost == 0.05
    config, when = task_inputs({"params": {"data_root": str(tmp_path)}, "logical_date": datetime(1997, 9, 22)})
    assert config.data_root == tmp_path and when == datetime(1997, 9, 22, tzinfo=timezone.utc)


# --- a real run ---------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_uig_ingest_dag_test_writes_delta_tables(dagbag: Any, spark: Any, tmp_path: Path) -> None:
    """``dag.test()`` on two real MovieLens days: both tasks succeed, tables and Assets updated."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    from uig_tasks.movielens import prepare
    from uig_tasks.pipeline import table_summary

    data_root = tmp_path / "data"
    config = UigConfig.from_env(data_root=data_root)
    landed = prepare(config.landing_dir, until=SECOND_DAY)
    assert landed.first_day is not None and landed.first_day <= FIRST_DAY.isoformat() and landed.events > 0

    logical_date = datetime.combine(SECOND_DAY + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    dag = dagbag.dags["uig_ingest"]
    run = dag.test(logical_date=logical_date, run_conf={"data_root": str(data_root)})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, f"run {run.run_id} ended {run.state}: {states}"
    assert states == {"ingest": TaskInstanceState.SUCCESS, "aggregate": TaskInstanceState.SUCCESS}

    ingest_ti = run.get_task_instance("ingest")
    ingested = ingest_ti.xcom_pull(task_ids="ingest")  # test-only helper kept on the core TI
    aggregated = ingest_ti.xcom_pull(task_ids="aggregate")
    assert ingested["logical_time"] == logical_date.isoformat()
    assert ingested["n_raw"] == landed.events and ingested["n_quarantined"] == 0
    assert aggregated["mode"] == "full" and aggregated["as_of"] == logical_date.isoformat()

    rows = {r["table"]: r["rows"] for r in table_summary(config)}
    assert rows["silver.events"] == ingested["n_clean"] > 0
    assert rows["silver.items"] and rows["silver.users"]
    assert rows["gold.user_item_affinity"] == aggregated["user_item_rows"] > 0
    assert rows["gold.user_topic_affinity"]

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id).all()
        published = {(e.source_task_id, e.name) for e in events}
    assert published == {
        ("ingest", "silver.events"),
        ("ingest", "silver.quarantine"),
        ("ingest", "silver.items"),
        ("ingest", "silver.users"),
        ("aggregate", "gold.user_item_affinity"),
        ("aggregate", "gold.user_topic_affinity"),
    }


@pytest.mark.integration
@pytest.mark.slow
def test_uig_train_dag_test_registers_and_gates(dagbag: Any, trainable_config: UigConfig) -> None:
    """``dag.test()`` of encode → build_graph → train → evaluate → gate on a reduced config."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    from uig_tasks import mlflow_store

    conf = {"data_root": str(trainable_config.data_root), "epochs": 2, "dim": 16,
            "evaluate_models": ["uig-gcn", "most-popular"], "policy_episodes": 1}
    run = dagbag.dags["uig_train"].test(logical_date=datetime(2026, 1, 5, tzinfo=timezone.utc), run_conf=conf)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, f"run {run.run_id} ended {run.state}: {states}"
    assert set(states.values()) == {TaskInstanceState.SUCCESS} and len(states) == 6

    ti = run.get_task_instance("gate")
    encoded, trained, evaluated, gated = (ti.xcom_pull(task_ids=t) for t in ("encode", "train", "evaluate", "gate"))
    assert encoded["encoded"] == 0  # the fixture encoded the catalog already
    assert trained["version"] == 1 and trained["epochs_run"] <= 2
    assert set(evaluated) == {"uig-gcn v1", "most-popular"}
    assert gated["promoted"] and gated["version"] == 1
    assert mlflow_store.list_versions(trainable_config)[0]["aliases"] == "champion"
    policy = run.get_task_instance("train_policy").xcom_pull(task_ids="train_policy")
    assert policy["version"] == 1 and policy["promoted"]  # the first policy has no champion to beat
    assert {"dqn", "bandit", "fixed:rebuild", "fixed:keep"} <= set(policy["mean_reward"])
    assert mlflow_store.list_versions(trainable_config, "uig-update-policy")[0]["aliases"] == "champion"


@pytest.mark.integration
@pytest.mark.slow
def test_uig_replay_dag_test_lands_a_day_and_refreshes_its_users(dagbag: Any, trainable_config: UigConfig) -> None:
    """``dag.test()`` of land_next_day → ingest → aggregate → refresh after a first full refresh."""
    from airflow.utils.state import DagRunState

    from tests.conftest import TRAIN_UNTIL
    from uig_tasks.refresh import run_refresh
    from uig_tasks.train import run_train

    run_train(trainable_config, datetime(2026, 1, 1, tzinfo=timezone.utc), {"epochs": 1, "dim": 8})
    assert run_refresh(trainable_config)["mode"] == "full"
    run = dagbag.dags["uig_replay"].test(run_conf={"data_root": str(trainable_config.data_root)})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, f"run {run.run_id} ended {run.state}: {states}"
    ti = run.get_task_instance("refresh")
    landed, refreshed = ti.xcom_pull(task_ids="land_next_day"), ti.xcom_pull(task_ids="refresh")
    assert landed["day"] > TRAIN_UNTIL.isoformat() and landed["events"] > 0
    assert refreshed["mode"] == "incremental" and refreshed["dirty_users"] > 0
    assert refreshed["as_of"].startswith(landed["day"])
