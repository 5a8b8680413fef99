"""A UIG scorer as an MLflow model: how a candidate is packaged, and how ``@champion`` is loaded back.

The model is stored as a pyfunc model wrapping a ``torch.save``-d *state* (plain tensors,
lists, dicts, str, numbers) plus the import path of the function that rebuilds a scorer from
it (``state["loader"]``, e.g. ``"models.training:UigGCNScorer.from_state"``). Loading needs the
project's code importable, not a pickled object graph. The state is loaded with
``weights_only=True``, so loading a model never runs pickled code.

``models:/uig-gcn@champion`` loads with ``mlflow.pyfunc.load_model`` (input: a ``history`` column
of item ids; output: ``items`` and ``scores``); the project's own tasks use :func:`load_scorer`,
which rebuilds the scorer from the state directly. Runs, versions and aliases are the store's
(:mod:`uig_tasks.mlflow_store`); this module only knows the model's format.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd  # resolvable annotation of UigScorerModel.predict: MLflow reads it at class creation

from uig_common import names as C
from uig_tasks import mlflow_store as store
from uig_tasks.config import UigConfig
from uig_tasks.mlflow_store import RegistryError, TrainingRecord

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

#: Name of the state file inside the logged model (``artifacts/state.pt``).
STATE_ARTIFACT = "state"
#: Top-k returned by the served model when the caller passes no ``k``.
DEFAULT_K = 10


class ServingScorer(Protocol):
    """What the served model needs from the scorer that ``state["loader"]`` rebuilds.

    ``recommend(histories, k)`` gets one list of item ids per user (the items the user already
    has) and returns, per user, up to ``k`` ``(item_id, score)`` pairs, best first, never an item
    from that user's history.
    """

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]: ...


# --------------------------------------------------------------------------------------------
# Packaging a candidate


def _check_loader(state: Mapping[str, Any]) -> None:
    loader = state.get("loader") if isinstance(state, Mapping) else None
    if not isinstance(loader, str) or ":" not in loader:
        raise RegistryError(
            "TrainingRecord.state needs a 'loader' entry like 'models.training:UigGCNScorer.from_state' "
            f"(module:callable that rebuilds the scorer), got {loader!r}"
        )


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


def _signature(model_name: str):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    if model_name == C.POLICY_MODEL:  # a user's state features in, the update action out
        return ModelSignature(inputs=Schema([ColSpec(Array(DataType.double), "state")]),
                              outputs=Schema([ColSpec(DataType.string, "action")]))
    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.string), "history")]),
        outputs=Schema([ColSpec(Array(DataType.string), "items"), ColSpec(Array(DataType.double), "scores")]),
        params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
    )


def _input_example(model_name: str, state: Mapping[str, Any]) -> Any:
    """What MLflow serves once right after logging (a smoke test that only warns on failure)."""
    if model_name == C.POLICY_MODEL:
        return pd.DataFrame({"state": [[0.0] * len(state.get("feature_names", []))]})
    return (pd.DataFrame({"history": [[]]}), {"k": DEFAULT_K})  # a user without history: valid for every catalog


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


def _log_model(state_path: Path, model_name: str, state: Mapping[str, Any]) -> int:
    """Log the pyfunc model into the active run and register it; the new version number."""
    import mlflow

    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    quiet = _DropPickleWarning()
    pyfunc_log.addFilter(quiet)
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_model_class()(),
            artifacts={STATE_ARTIFACT: str(state_path)},
            signature=_signature(model_name),
            input_example=_input_example(model_name, state),
            pip_requirements=_pip_requirements(),
            registered_model_name=model_name,
        )
    finally:
        pyfunc_log.removeFilter(quiet)
    if info.registered_model_version is None:
        raise RegistryError(f"MLflow logged the model but did not register it as {model_name!r}")
    return int(info.registered_model_version)


def log_candidate(
    config: UigConfig,
    record: TrainingRecord,
    *,
    experiment: str = "uig",
    run_name: str | None = None,
    model_name: str = C.GCN_MODEL,
) -> tuple[str, int]:
    """Log one training run and register its scorer as a new version of ``model_name``.

    Returns ``(run_id, version)``. The new version is *not* a champion yet: the quality gate
    (:func:`uig_tasks.quality_gate.gate_version`) decides. The record is checked before anything
    is logged: a state without a loader, or one ``weights_only`` cannot load, is refused.
    """
    _check_loader(record.state)
    with tempfile.TemporaryDirectory(prefix="uig-model-") as tmp:
        state_path = Path(tmp) / "state.pt"
        _save_state(record.state, state_path)
        run_id, version = store.log_run(config, record, lambda: _log_model(state_path, model_name, record.state),
                                        experiment=experiment, run_name=run_name)
    log.info("logged run %s, registered %s version %d", run_id, model_name, version)
    return run_id, version


# --------------------------------------------------------------------------------------------
# Loading


def read_state(model_name: str, version: ModelVersion) -> tuple[dict[str, Any], int]:
    """(state, version number) of one registered version; call inside :func:`mlflow_store.connected`."""
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


def load_state(
    config: UigConfig, ref: str | int = C.CHAMPION_ALIAS, model_name: str = C.GCN_MODEL
) -> tuple[dict[str, Any], int]:
    """(state, version) of ``models:/NAME@ref`` (alias) or ``models:/NAME/ref`` (version number)."""
    with store.connected(config) as client:
        return read_state(model_name, store.model_version(client, model_name, ref))


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


def load_scorer(config: UigConfig, ref: str | int = C.CHAMPION_ALIAS, model_name: str = C.GCN_MODEL) -> tuple[Any, int]:
    """(scorer, version): the state of ``ref`` rebuilt through its ``state["loader"]``."""
    state, version = load_state(config, ref, model_name)
    return scorer_from_state(state), version


def _build_model_class() -> type:
    from mlflow.pyfunc import PythonModel

    class UigScorerModel(PythonModel):
        """Serving wrapper: ``history`` column (item ids per row) -> top-``k`` ``items`` and ``scores``;
        for an update policy, ``state`` column (feature vectors) -> ``action``.

        ``load_context`` loads the state with ``weights_only=True`` and rebuilds the scorer through
        ``state["loader"]``, which must satisfy :class:`ServingScorer`.
        """

        def load_context(self, context) -> None:
            import torch

            state = torch.load(context.artifacts[STATE_ARTIFACT], weights_only=True, map_location="cpu")
            self.scorer = resolve_loader(str(state.get("loader")))(state)

        def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            if hasattr(self.scorer, "act"):  # an update policy: state features -> action name
                import numpy as np

                states = np.array([list(s) for s in model_input["state"]], dtype=np.float32)
                names = self.scorer.action_names
                return pd.DataFrame({"action": [names[int(a)] for a in self.scorer.act(states)]})
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
    # ``import uig_tasks.scorer_model`` free of mlflow (DAG files and the CLI import it cheaply).
    # Cached as a module global, so pickling the model refers to this one class.
    if name == "UigScorerModel":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
