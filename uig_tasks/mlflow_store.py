"""The MLflow store: the one module that talks to MLflow's tracking server and model registry.

Training runs (params, per-epoch and final metrics, the Delta versions of the inputs, the git
commit), registered model versions, the ``@champion`` alias with a history of its moves, and the
tags the quality gate leaves on a version all live here, so the gate (:mod:`uig_tasks.quality_gate`)
and the model format (:mod:`uig_tasks.scorer_model`) never spell a tracking URI, an experiment
lookup or an alias move. Nothing here knows what a model contains: every function takes the
registered model's name, so a second model is stored and gated the same way.

Storage: a SQLite registry and local artifacts under ``<data_root>/mlflow`` by default;
``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``) override it for an MLflow server.
``mlflow`` is imported inside the functions: DAG files and the CLI import this module at parse time.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uig_common import names as C
from uig_common.errors import NotFoundError, UigError
from uig_tasks.config import PROJECT_ROOT, UigConfig
from uig_tasks.datadir import SECRET_FILE_MODE, ensure_private_file

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

# Tags stored on every model version (and on its run) by the quality gate.
TAG_DECISION = "gate.decision"
TAG_METRIC = "gate.metric"
TAG_CANDIDATE_SCORE = "gate.candidate_score"
TAG_CHAMPION_SCORE = "gate.champion_score"
TAG_CHAMPION_VERSION = "gate.champion_version"
TAG_MARGIN = "gate.margin"
TAG_REASON = "gate.reason"
#: One line per move of ``@champion`` onto or off a version: when, who, from/to, why.
TAG_ALIAS_HISTORY = "alias.history"
_HISTORY_LIMIT = 5000  # MLflow caps tag values (8000 chars for model versions); keep the newest lines

_MLFLOW_NAME = re.compile(r"[^/\w.\- :]")  # characters MLflow refuses in metric/param/tag keys


class RegistryError(UigError, RuntimeError):
    """The registry cannot do what was asked; the message says what to do instead."""


class ModelVersionNotFoundError(RegistryError, NotFoundError):
    """The model version or alias a user named does not exist (yet)."""


@dataclass(frozen=True)
class TrainingRecord:
    """Everything ``uig train`` hands over to be logged and registered."""

    state: dict[str, Any]  # torch.save-able (tensors, lists, dicts, str, numbers), with "loader"
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # final metrics (validation, ...)
    epoch_metrics: list[dict[str, float]] = field(default_factory=list)  # per epoch, "epoch" key optional
    input_versions: dict[str, int] = field(default_factory=dict)  # Delta table -> version read
    tags: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Connection


def tracking_uri(config: UigConfig) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite registry ``<data_root>/mlflow/mlflow.db``."""
    override = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if override:
        return override
    return f"sqlite:///{(config.data_root / 'mlflow' / 'mlflow.db').resolve()}"


def artifact_location(config: UigConfig) -> str | None:
    """Where new experiments keep artifacts: ``<data_root>/mlflow/artifacts``, unless an MLflow
    server is the tracking store (then the server decides, as ``--artifacts-destination`` says)."""
    if tracking_uri(config).split(":", 1)[0] in {"http", "https", "databricks", "databricks-uc", "uc"}:
        return None
    return (config.data_root / "mlflow" / "artifacts").resolve().as_uri()


@contextmanager
def connected(config: UigConfig) -> Iterator[MlflowClient]:
    """Point MLflow (fluent API and a client) at this config's registry, for the block only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` (and ``set_registry_uri``
    ``MLFLOW_REGISTRY_URI``) into ``os.environ``; left there, the next call with another data root
    would take it for an operator override. Both variables are put back on exit.
    """
    # Offline by default: MLflow's usage telemetry would call out to the internet. An operator
    # who wants it sets MLFLOW_DISABLE_TELEMETRY=false. Must happen before mlflow is imported.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = tracking_uri(config)
    registry = os.environ.get("MLFLOW_REGISTRY_URI", "").strip() or uri
    if uri.startswith("sqlite:///"):  # created empty 0600 (SQLite fills it in): no one else reads the registry
        ensure_private_file(Path(uri.removeprefix("sqlite:///")), SECRET_FILE_MODE)
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    try:
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=registry)
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None: unset again, as before
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _experiment_id(client: MlflowClient, config: UigConfig, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(config))
        except MlflowException:  # created concurrently by another task
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise RegistryError(
            f"MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}`) or log to another experiment"
        )
    return experiment.experiment_id


# --------------------------------------------------------------------------------------------
# Versions and aliases


def _by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version ``@alias`` points at; None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        # sqlite store: unknown model -> RESOURCE_DOES_NOT_EXIST, unknown alias -> INVALID_PARAMETER_VALUE
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version ``@champion`` points at; None before the model's first champion."""
    return _by_alias(client, model_name, C.CHAMPION_ALIAS)


def model_version(client: MlflowClient, model_name: str, ref: str | int) -> ModelVersion:
    """The model version named by ``ref``: a version number or an alias."""
    from mlflow.exceptions import MlflowException

    if isinstance(ref, int) or str(ref).isdigit():
        try:
            return client.get_model_version(model_name, str(int(ref)))
        except MlflowException as exc:
            raise ModelVersionNotFoundError(
                f"model {model_name!r} has no version {ref} in {client.tracking_uri}: "
                "list the versions with `uig models`"
            ) from exc
    version = _by_alias(client, model_name, str(ref))
    if version is not None:
        return version
    if ref == C.CHAMPION_ALIAS:
        raise ModelVersionNotFoundError(
            f"model {model_name!r} has no @{C.CHAMPION_ALIAS} yet in {client.tracking_uri}: "
            "run `uig train` (or point it at a version with `uig models --promote VERSION`)"
        )
    raise ModelVersionNotFoundError(
        f"model {model_name!r} has no alias @{ref}: list versions and aliases with `uig models`"
    )


def _history_line(user: str, verb: str, reason: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} {user}: {verb}" + (f": {reason}" if reason else "")


def _append_history(client: MlflowClient, model_name: str, version: int | str, line: str) -> None:
    current = client.get_model_version(model_name, str(version)).tags.get(TAG_ALIAS_HISTORY, "")
    text = f"{current}\n{line}" if current else line
    while len(text) > _HISTORY_LIMIT and "\n" in text:  # drop the oldest lines
        text = text.split("\n", 1)[1]
    client.set_model_version_tag(model_name, str(version), TAG_ALIAS_HISTORY, text[-_HISTORY_LIMIT:])


def move_champion(client: MlflowClient, model_name: str, version: int, reason: str) -> int | None:
    """Point ``@champion`` at ``version``; note the move on both versions; return the previous one."""
    previous = champion(client, model_name)
    previous_version = int(previous.version) if previous is not None else None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    alias = C.CHAMPION_ALIAS
    client.set_registered_model_alias(model_name, alias, str(version))
    came_from = f"from version {previous_version}" if previous_version is not None else "first champion"
    _append_history(client, model_name, version, _history_line(user, f"became @{alias} ({came_from})", reason))
    if previous_version is not None and previous_version != version:
        _append_history(client, model_name, previous_version,
                        _history_line(user, f"left @{alias} (now version {version})", reason))
    return previous_version


def set_champion(config: UigConfig, version: int, model_name: str = C.GCN_MODEL, reason: str = "") -> int | None:
    """Point ``@champion`` at ``version`` by hand (rollback or override); returns the previous champion.

    Who moved it, when and why is appended to the ``alias.history`` tag of both versions.
    """
    with connected(config) as client:
        target = model_version(client, model_name, int(version))
        previous = move_champion(client, model_name, int(target.version), reason or "set by hand")
    log.info("@%s of %s moved to version %s (was %s)%s", C.CHAMPION_ALIAS, model_name, version, previous,
             f": {reason}" if reason else "")
    return previous


# --------------------------------------------------------------------------------------------
# Tags


def tag_version(client: MlflowClient, model_name: str, version: int, run_id: str, tags: Mapping[str, str]) -> None:
    """Set ``tags`` on the model version and on the run that logged it (both show them in the UI)."""
    from mlflow.entities import RunTag

    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def gate_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """The quality gate's tags of one version as values (None where absent or empty)."""
    return {
        "decision": tags.get(TAG_DECISION),
        "metric": tags.get(TAG_METRIC),
        "score": _float_tag(tags.get(TAG_CANDIDATE_SCORE)),
        "champion_version": _int_tag(tags.get(TAG_CHAMPION_VERSION)),
        "champion_score": _float_tag(tags.get(TAG_CHAMPION_SCORE)),
        "margin": _float_tag(tags.get(TAG_MARGIN)),
        "reason": tags.get(TAG_REASON),
    }


def _float_tag(value: str | None) -> float | None:
    return float(value) if value else None


def _int_tag(value: str | None) -> int | None:
    return int(value) if value else None


def list_versions(config: UigConfig, model_name: str = C.GCN_MODEL) -> list[dict[str, object]]:
    """One row per version, newest first: aliases, creation time, gate decision and scores, run."""
    from mlflow.exceptions import MlflowException

    with connected(config) as client:
        try:
            aliases = client.get_registered_model(model_name).aliases
        except MlflowException:
            return []
        quoted = model_name.replace("'", "\\'")
        versions = client.search_model_versions(f"name = '{quoted}'")
    by_version: dict[int, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(int(number), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc)
        gated = gate_tags(v.tags)
        reason = gated.pop("reason")  # last column: the longest
        rows.append({
            "version": int(v.version),
            "aliases": ",".join(sorted(by_version.get(int(v.version), []))),
            "created": created.strftime("%Y-%m-%d %H:%M:%S UTC"),
            **gated,
            "run_id": v.run_id,
            "reason": reason,
        })
    return rows


# --------------------------------------------------------------------------------------------
# Logging a run


def mlflow_key(name: str) -> str:
    """``name`` as a valid MLflow metric/param/tag key: ``ndcg@10`` -> ``ndcg_at_10``.

    MLflow accepts only letters, digits, ``_ - . / : `` and space in keys, and the project's
    metric names carry ``@K``.
    """
    return _MLFLOW_NAME.sub("_", name.replace("@", "_at_"))


def git_revision(root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """(commit, dirty) of the checkout the code runs from; ``("unknown", "unknown")`` outside git.

    ``dirty`` is ``"true"`` when tracked files are modified or untracked files exist, i.e. when the
    commit alone does not reproduce the code that ran.
    """
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit or "unknown", "true" if status.strip() else "false"


def _check_metrics(record: TrainingRecord) -> None:
    for name, value in [*record.metrics.items(), *((k, v) for row in record.epoch_metrics for k, v in row.items())]:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RegistryError(f"metric {name!r} must be a number, got {type(value).__name__}")


def _run_entities(record: TrainingRecord) -> tuple[list, list, list]:
    """(metrics, params, tags) of a training record as MLflow entities, for one ``log_batch``."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    metrics: list[Metric] = []
    for position, row in enumerate(record.epoch_metrics):
        step = int(row.get("epoch", position))
        metrics += [Metric(mlflow_key(k), float(v), now, step) for k, v in row.items() if k != "epoch"]
    # Final metrics sit after the last epoch, so a name shared with a per-epoch curve reads as final.
    final_step = max((m.step for m in metrics), default=-1) + 1
    metrics += [Metric(mlflow_key(k), float(v), now, final_step) for k, v in record.metrics.items()]

    params = {mlflow_key(k): str(v) for k, v in record.params.items()}
    for table, version in record.input_versions.items():
        params[mlflow_key(f"input.{table}.version")] = str(int(version))
    commit, dirty = git_revision()
    tags = {mlflow_key(k): str(v) for k, v in record.tags.items()}
    tags.update({"git_commit": commit, "git_dirty": dirty})
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown as "Git commit" in the MLflow UI
    return metrics, [Param(k, v) for k, v in params.items()], [RunTag(k, v) for k, v in tags.items()]


def log_run(
    config: UigConfig,
    record: TrainingRecord,
    log_model: Callable[[], int],
    *,
    experiment: str = "uig",
    run_name: str | None = None,
) -> tuple[str, int]:
    """Log one training run (params, metrics, input versions, git commit) and, inside it, its model.

    ``log_model()`` runs in the active run, logs and registers the model (its format is the
    caller's: :func:`uig_tasks.scorer_model.log_candidate`) and returns the new version number.
    Returns ``(run_id, version)``. The metrics are checked before anything is logged.
    """
    _check_metrics(record)
    import mlflow

    with connected(config) as client:
        experiment_id = _experiment_id(client, config, experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            run_id = run.info.run_id
            metrics, params, tags = _run_entities(record)
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            version = log_model()
    return run_id, version
