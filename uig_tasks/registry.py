"""MLflow side of ``uig train``: log a training run, register the model, gate it into ``@champion``.

Each training run becomes one MLflow run (params, per-epoch and final metrics, the Delta
versions of its input tables, the git commit) and one new version of the registered model
``uig-gcn``. The alias ``@champion`` moves to the new version only if it beats the current
champion on the candidate's validation window by a margin (the quality gate); the decision and
both scores are stored as tags on the version, so the MLflow UI and ``uig models`` show why.
Rollback is :func:`set_champion` on an older version.

The model is stored as a pyfunc model wrapping a ``torch.save``-d *state* (plain tensors,
lists, dicts, str, numbers) plus the import path of the function that rebuilds a scorer from
it (``state["loader"]``, e.g. ``"models.training:UigGCNScorer.from_state"``). Loading needs the
project's code importable, not a pickled object graph. The state is loaded with
``weights_only=True``, so loading a model never runs pickled code.

Storage: a SQLite registry and local artifacts under ``<data_root>/mlflow`` by default;
``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``) override it for an MLflow server.
"""

from __future__ import annotations

import getpass
import importlib
import logging
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd  # resolvable annotation of UigScorerModel.predict: MLflow reads it at class creation

from uig_tasks.config import PROJECT_ROOT, UigConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

MODEL_NAME = "uig-gcn"
CHAMPION_ALIAS = "champion"
#: Name of the state file inside the logged model (``artifacts/state.pt``).
STATE_ARTIFACT = "state"
#: Top-k returned by the served model when the caller passes no ``k``.
DEFAULT_K = 10

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


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says what to do instead."""


class IncomparableChampion(Exception):
    """Raised by a ``score_champion`` callback when the champion cannot be scored on the candidate's
    window at all (e.g. it was trained over another item catalog). The gate then promotes the
    candidate and says why: a model that cannot rank today's catalog is no bar to clear."""


class ServingScorer(Protocol):
    """What the served model needs from the scorer that ``state["loader"]`` rebuilds.

    ``recommend(histories, k)`` gets one list of item ids per user (the items the user already
    has) and returns, per user, up to ``k`` ``(item_id, score)`` pairs, best first, never an item
    from that user's history.
    """

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]: ...


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the quality gate for one newly registered version."""

    version: int
    promoted: bool
    metric: str
    candidate_score: float
    champion_version: int | None
    champion_score: float | None
    margin: float
    reason: str
    run_id: str = ""


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
def _connected(config: UigConfig) -> Iterator[MlflowClient]:
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
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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


def _champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    return _by_alias(client, model_name, CHAMPION_ALIAS)


def _version(client: MlflowClient, model_name: str, ref: str | int) -> ModelVersion:
    """The model version named by ``ref``: a version number or an alias."""
    from mlflow.exceptions import MlflowException

    if isinstance(ref, int) or str(ref).isdigit():
        try:
            return client.get_model_version(model_name, str(int(ref)))
        except MlflowException as exc:
            raise RegistryError(
                f"model {model_name!r} has no version {ref} in {client.tracking_uri}: "
                "list the versions with `uig models`"
            ) from exc
    version = _by_alias(client, model_name, str(ref))
    if version is not None:
        return version
    if ref == CHAMPION_ALIAS:
        raise RegistryError(
            f"model {model_name!r} has no @{CHAMPION_ALIAS} yet in {client.tracking_uri}: "
            "run `uig train` (or point it at a version with `uig models --promote VERSION`)"
        )
    raise RegistryError(f"model {model_name!r} has no alias @{ref}: list versions and aliases with `uig models`")


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


def _check_record(record: TrainingRecord) -> None:
    loader = record.state.get("loader") if isinstance(record.state, Mapping) else None
    if not isinstance(loader, str) or ":" not in loader:
        raise RegistryError(
            "TrainingRecord.state needs a 'loader' entry like 'models.training:UigGCNScorer.from_state' "
            f"(module:callable that rebuilds the scorer), got {loader!r}"
        )
    for name, value in [*record.metrics.items(), *((k, v) for row in record.epoch_metrics for k, v in row.items())]:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RegistryError(f"metric {name!r} must be a number, got {type(value).__name__}")


def _save_state(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` the state and prove it loads with ``weights_only=True`` before logging it."""
    import pickle

    import torch

    torch.save(dict(state), path)
    try:
        torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        raise RegistryError(
            "the model state must hold only tensors, lists, tuples, dicts, str, int, float, bool "
            f"and None (it is loaded with torch.load(weights_only=True)); convert numpy arrays and "
            f"other objects before registering: {exc}"
        ) from exc


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.string), "history")]),
        outputs=Schema([ColSpec(Array(DataType.string), "items"), ColSpec(Array(DataType.double), "scores")]),
        params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
    )


def _pip_requirements() -> list[str]:
    """Pinned from the running environment, so MLflow does not infer them (slow, may touch the network)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "torch", "pandas", "numpy"):
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


class _DropPickleWarning(logging.Filter):
    # UigScorerModel is importable, so cloudpickle stores a reference to the class, not code;
    # the model's real content is the weights_only state file.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Passing a Python object as `python_model`" not in record.getMessage()


def _log_model(state_path: Path, model_name: str) -> int:
    import mlflow

    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    quiet = _DropPickleWarning()
    pyfunc_log.addFilter(quiet)
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_model_class()(),
            artifacts={STATE_ARTIFACT: str(state_path)},
            signature=_signature(),
            # A user without history: valid for every catalog. MLflow serves it once right after
            # logging (a smoke test that only warns on failure).
            input_example=(pd.DataFrame({"history": [[]]}), {"k": DEFAULT_K}),
            pip_requirements=_pip_requirements(),
            registered_model_name=model_name,
        )
    finally:
        pyfunc_log.removeFilter(quiet)
    if info.registered_model_version is None:
        raise RegistryError(f"MLflow logged the model but did not register it as {model_name!r}")
    return int(info.registered_model_version)


# --------------------------------------------------------------------------------------------
# Quality gate and champion moves


def _history_line(user: str, verb: str, reason: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} {user}: {verb}" + (f": {reason}" if reason else "")


def _append_history(client: MlflowClient, model_name: str, version: int | str, line: str) -> None:
    current = client.get_model_version(model_name, str(version)).tags.get(TAG_ALIAS_HISTORY, "")
    text = f"{current}\n{line}" if current else line
    while len(text) > _HISTORY_LIMIT and "\n" in text:  # drop the oldest lines
        text = text.split("\n", 1)[1]
    client.set_model_version_tag(model_name, str(version), TAG_ALIAS_HISTORY, text[-_HISTORY_LIMIT:])


def _move_champion(client: MlflowClient, model_name: str, version: int, reason: str) -> int | None:
    """Point ``@champion`` at ``version``; note the move on both versions; return the previous one."""
    previous = _champion(client, model_name)
    previous_version = int(previous.version) if previous is not None else None
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    came_from = f"from version {previous_version}" if previous_version is not None else "first champion"
    _append_history(client, model_name, version, _history_line(user, f"became @{CHAMPION_ALIAS} ({came_from})", reason))
    if previous_version is not None and previous_version != version:
        _append_history(client, model_name, previous_version,
                        _history_line(user, f"left @{CHAMPION_ALIAS} (now version {version})", reason))
    return previous_version


def log_candidate(
    config: UigConfig,
    record: TrainingRecord,
    *,
    experiment: str = "uig",
    run_name: str | None = None,
    model_name: str = MODEL_NAME,
) -> tuple[str, int]:
    """Log one training run (params, metrics, input versions, git commit) and register its model.

    Returns ``(run_id, version)``. The new version is *not* a champion yet: :func:`gate` decides.
    """
    _check_record(record)
    import mlflow

    with _connected(config) as client, tempfile.TemporaryDirectory(prefix="uig-model-") as tmp:
        state_path = Path(tmp) / "state.pt"
        _save_state(record.state, state_path)
        experiment_id = _experiment_id(client, config, experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            run_id = run.info.run_id
            metrics, params, tags = _run_entities(record)
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            version = _log_model(state_path, model_name)
    log.info("logged run %s, registered %s version %d", run_id, model_name, version)
    return run_id, version


def gate(
    config: UigConfig,
    version: int,
    *,
    metric: str,
    candidate_score: float,
    score_champion: Callable[[dict[str, Any]], float] | None,
    margin: float,
    model_name: str = MODEL_NAME,
) -> GateDecision:
    """Promote ``version`` to ``@champion`` iff it beats the current champion by ``margin``.

    The gate compares scores on the *candidate's* validation window: the current champion is
    re-scored there with ``score_champion(champion_state)``. Scores measured on different data
    windows are not comparable (users, items and difficulty all move), so the champion's own
    stored score is never used. Promote iff ``candidate_score >= champion_score + margin``; with
    no champion yet, the candidate is promoted. The decision and both scores are tagged on the
    version and its run. If re-scoring the champion fails, the version stays registered and
    tagged ``gate.decision=error`` and :class:`RegistryError` says how to promote it by hand.
    Gating a version that already is the champion (a retried task) changes nothing.
    """
    if not math.isfinite(candidate_score):
        raise RegistryError(f"candidate {metric} score must be a finite number, got {candidate_score}")
    if not math.isfinite(margin) or margin < 0:
        raise RegistryError(f"gate margin must be a finite number >= 0, got {margin}")
    with _connected(config) as client:
        candidate = _version(client, model_name, int(version))
        champion = _champion(client, model_name)
        if champion is not None and int(champion.version) == int(version):
            tags = candidate.tags
            stored = _float_tag(tags.get(TAG_CANDIDATE_SCORE))
            log.info("%s version %s already is @%s; nothing to gate", model_name, version, CHAMPION_ALIAS)
            return GateDecision(int(version), True, tags.get(TAG_METRIC, metric),
                                float(candidate_score) if stored is None else stored,
                                _int_tag(tags.get(TAG_CHAMPION_VERSION)), _float_tag(tags.get(TAG_CHAMPION_SCORE)),
                                float(margin), tags.get(TAG_REASON, "already champion"), candidate.run_id or "")
        if champion is not None and score_champion is None:
            raise RegistryError(
                f"{model_name} version {champion.version} is @{CHAMPION_ALIAS}: pass score_champion so it "
                "can be re-scored on the candidate's validation window"
            )
        return _gate(client, model_name, int(version), champion, score_champion, metric=metric,
                     candidate_score=float(candidate_score), margin=float(margin), run_id=candidate.run_id or "")


def register_candidate(
    config: UigConfig,
    record: TrainingRecord,
    *,
    metric: str,
    candidate_score: float,
    score_champion: Callable[[dict[str, Any]], float] | None,
    margin: float,
    experiment: str = "uig",
    run_name: str | None = None,
    model_name: str = MODEL_NAME,
) -> GateDecision:
    """:func:`log_candidate` then :func:`gate`, for callers that train and gate in one step.

    The arguments are checked before anything is logged, so a bad score or margin leaves no
    half-registered version behind.
    """
    if not math.isfinite(candidate_score):
        raise RegistryError(f"candidate {metric} score must be a finite number, got {candidate_score}")
    if not math.isfinite(margin) or margin < 0:
        raise RegistryError(f"gate margin must be a finite number >= 0, got {margin}")
    _check_record(record)
    with _connected(config) as client:
        champion = _champion(client, model_name)
    if champion is not None and score_champion is None:
        raise RegistryError(
            f"{model_name} version {champion.version} is @{CHAMPION_ALIAS}: pass score_champion so it "
            "can be re-scored on the candidate's validation window"
        )
    _, version = log_candidate(config, record, experiment=experiment, run_name=run_name, model_name=model_name)
    return gate(config, version, metric=metric, candidate_score=candidate_score, score_champion=score_champion,
                margin=margin, model_name=model_name)


def _gate(
    client: MlflowClient,
    model_name: str,
    version: int,
    champion: ModelVersion | None,
    score_champion: Callable[[dict[str, Any]], float] | None,
    *,
    metric: str,
    candidate_score: float,
    margin: float,
    run_id: str,
) -> GateDecision:
    from mlflow.entities import RunTag

    champion_version = int(champion.version) if champion is not None else None
    champion_score: float | None = None
    error: Exception | None = None
    incomparable: IncomparableChampion | None = None
    if champion is None:
        promoted, reason = True, f"first {model_name} champion ({metric} {candidate_score:.4f})"
    else:
        assert score_champion is not None
        try:
            state, _ = _load_state(client, model_name, champion)
            champion_score = float(score_champion(state))
            if not math.isfinite(champion_score):
                raise ValueError(f"score_champion returned {champion_score}")
        except IncomparableChampion as exc:
            incomparable, champion_score = exc, None
        except Exception as exc:  # noqa: BLE001 - recorded on the version, then re-raised below
            error, champion_score = exc, None
        if incomparable is not None:
            promoted = True
            reason = (f"champion version {champion_version} cannot be scored on the candidate's validation "
                      f"window ({incomparable}); {metric} {candidate_score:.4f} promoted without comparison")
        elif error is not None:
            promoted = False
            reason = f"could not re-score champion version {champion_version}: {error}"
        else:
            assert champion_score is not None
            threshold = champion_score + margin
            # isclose: 0.31 must pass 0.30 + 0.01 although 0.30 + 0.01 == 0.31000000000000005
            promoted = candidate_score >= threshold or math.isclose(candidate_score, threshold, rel_tol=1e-9, abs_tol=1e-12)
            relation = ">=" if promoted else "<"
            reason = (f"{metric} {candidate_score:.4f} {relation} champion version {champion_version} "
                      f"{champion_score:.4f} + margin {margin:g} on the candidate's validation window")
    decision = GateDecision(version, promoted, metric, candidate_score, champion_version, champion_score,
                            margin, reason, run_id)
    tags = {
        TAG_DECISION: "error" if error is not None else ("promoted" if promoted else "rejected"),
        TAG_METRIC: metric,
        TAG_CANDIDATE_SCORE: repr(candidate_score),
        TAG_CHAMPION_SCORE: "" if champion_score is None else repr(champion_score),
        TAG_CHAMPION_VERSION: "" if champion_version is None else str(champion_version),
        TAG_MARGIN: repr(margin),
        TAG_REASON: reason,
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    if error is not None:
        log.error("%s version %d registered but not gated: %s", model_name, version, reason)
        raise RegistryError(
            f"{model_name} version {version} is registered but was not gated: {reason}. Fix the champion "
            f"scoring, or promote by hand with `uig models --promote {version}`"
        ) from error
    if promoted:
        _move_champion(client, model_name, version, reason)
        log.info("%s version %d promoted to @%s: %s", model_name, version, CHAMPION_ALIAS, reason)
    else:
        log.info("%s version %d rejected, @%s stays on version %s: %s", model_name, version, CHAMPION_ALIAS,
                 champion_version, reason)
    return decision


def set_champion(config: UigConfig, version: int, model_name: str = MODEL_NAME, reason: str = "") -> int | None:
    """Point ``@champion`` at ``version`` by hand (rollback or override); returns the previous champion.

    Who moved it, when and why is appended to the ``alias.history`` tag of both versions.
    """
    with _connected(config) as client:
        target = _version(client, model_name, int(version))
        previous = _move_champion(client, model_name, int(target.version), reason or "set by hand")
    log.info("@%s of %s moved to version %s (was %s)%s", CHAMPION_ALIAS, model_name, version, previous,
             f": {reason}" if reason else "")
    return previous


def list_versions(config: UigConfig, model_name: str = MODEL_NAME) -> list[dict[str, object]]:
    """One row per version, newest first: aliases, creation time, gate decision and scores, run."""
    from mlflow.exceptions import MlflowException

    with _connected(config) as client:
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
        tags = v.tags
        created = datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc)
        rows.append({
            "version": int(v.version),
            "aliases": ",".join(sorted(by_version.get(int(v.version), []))),
            "created": created.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "decision": tags.get(TAG_DECISION),
            "metric": tags.get(TAG_METRIC),
            "score": _float_tag(tags.get(TAG_CANDIDATE_SCORE)),
            "champion_version": _int_tag(tags.get(TAG_CHAMPION_VERSION)),
            "champion_score": _float_tag(tags.get(TAG_CHAMPION_SCORE)),
            "margin": _float_tag(tags.get(TAG_MARGIN)),
            "run_id": v.run_id,
            "reason": tags.get(TAG_REASON),
        })
    return rows


def _float_tag(value: str | None) -> float | None:
    return float(value) if value else None


def _int_tag(value: str | None) -> int | None:
    return int(value) if value else None


# --------------------------------------------------------------------------------------------
# Loading


def _load_state(client: MlflowClient, model_name: str, version: ModelVersion) -> tuple[dict[str, Any], int]:
    import mlflow
    import torch
    from mlflow.models import Model

    uri = f"models:/{model_name}/{version.version}"  # the resolved version, even if an alias moves meanwhile
    with tempfile.TemporaryDirectory(prefix="uig-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
        if STATE_ARTIFACT not in artifacts:
            raise RegistryError(f"{uri} is not a UIG scorer model (no {STATE_ARTIFACT!r} artifact)")
        state = torch.load(local / artifacts[STATE_ARTIFACT]["path"], weights_only=True, map_location="cpu")
    return state, int(version.version)


def load_state(config: UigConfig, ref: str | int = CHAMPION_ALIAS, model_name: str = MODEL_NAME) -> tuple[dict[str, Any], int]:
    """(state, version) of ``models:/NAME@ref`` (alias) or ``models:/NAME/ref`` (version number)."""
    with _connected(config) as client:
        return _load_state(client, model_name, _version(client, model_name, ref))


def resolve_loader(path: str) -> Callable[[dict[str, Any]], Any]:
    """The callable named by ``"package.module:Class.method"``."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(
            f"cannot import the model loader {path!r}: {exc}. The code that trained the model must be "
            "importable (same project version); roll back with `uig models --promote VERSION` otherwise"
        ) from exc
    if not callable(target):
        raise RegistryError(f"model loader {path!r} is not callable")
    return target


def scorer_from_state(state: Mapping[str, Any]) -> Any:
    """The scorer a model state describes, rebuilt through its ``state["loader"]``."""
    return resolve_loader(str(state.get("loader")))(dict(state))


def load_scorer(config: UigConfig, ref: str | int = CHAMPION_ALIAS, model_name: str = MODEL_NAME) -> tuple[Any, int]:
    """(scorer, version): the state of ``ref`` rebuilt through its ``state["loader"]``."""
    state, version = load_state(config, ref, model_name)
    return scorer_from_state(state), version


def _build_model_class() -> type:
    from mlflow.pyfunc import PythonModel

    class UigScorerModel(PythonModel):
        """Serving wrapper: ``history`` column (item ids per row) -> top-``k`` ``items`` and ``scores``.

        ``load_context`` loads the state with ``weights_only=True`` and rebuilds the scorer through
        ``state["loader"]``, which must satisfy :class:`ServingScorer`.
        """

        def load_context(self, context) -> None:
            import torch

            state = torch.load(context.artifacts[STATE_ARTIFACT], weights_only=True, map_location="cpu")
            self.scorer = resolve_loader(str(state.get("loader")))(state)

        def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            k = int((params or {}).get("k", DEFAULT_K))
            if k < 1:
                raise RegistryError(f"k must be >= 1, got {k}")
            histories = [[str(i) for i in h] if h is not None else [] for h in model_input["history"]]
            ranked = self.scorer.recommend(histories, k)
            return pd.DataFrame({
                "items": [[str(item) for item, _ in row] for row in ranked],
                "scores": [[float(score) for _, score in row] for row in ranked],
            })

    UigScorerModel.__module__ = __name__
    UigScorerModel.__qualname__ = "UigScorerModel"  # importable by name: pickled by reference
    return UigScorerModel


def _model_class() -> type:
    cls = globals().get("UigScorerModel")
    if cls is None:
        cls = globals()["UigScorerModel"] = _build_model_class()
    return cls


def __getattr__(name: str) -> Any:
    # ``UigScorerModel`` subclasses mlflow's PythonModel; building it on first use keeps
    # ``import uig_tasks.registry`` free of mlflow (DAG files and the CLI import it cheaply).
    # Cached as a module global, so pickling the model refers to this one class.
    if name == "UigScorerModel":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
