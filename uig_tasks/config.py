"""One configuration object for every task, overridable by environment and by Airflow params.

Precedence (lowest to highest): dataclass defaults < ``UIG_*`` environment variables <
explicit overrides (CLI flags, Airflow params). The object is frozen so a task cannot change
it half-way through a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from spark_jobs.settings import AggregateSettings, IngestSettings, Lake, SparkSettings
from uig_common.errors import InputError
from uig_tasks.datadir import UMASK, secrets_dir

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(InputError):
    """A configuration value is missing or invalid."""


def _default_event_weights() -> dict[str, float]:
    # Base strength of one event of each type before time decay; a rating r contributes r/5.
    return {"view": 0.1, "click": 0.25, "search": 0.0, "rate": 1.0, "like": 0.6, "purchase": 1.0}


@dataclass(frozen=True)
class UigConfig:
    """Everything a UIG task needs to know; build it with :meth:`from_env`."""

    data_root: Path = Path("data")
    spark_master: str = "local[2]"
    spark_jars_dir: Path = PROJECT_ROOT / ".jars"
    spark_shuffle_partitions: int = 4
    spark_driver_memory: str = "2g"
    # The JVM's own output on the terminal (`uig -v`); otherwise in <data_root>/logs/spark.log.
    spark_verbose: bool = False
    user_salt: str | None = None  # None: read or create <data_root>/.secrets/user_salt
    max_line_bytes: int = 4096
    future_tolerance_seconds: int = 86_400
    half_life_days: float = 30.0
    # Above this share of dirty users, an incremental aggregate rewrites the gold tables instead
    # of MERGE-ing into them: the result is the same, and rewriting is cheaper than updating most rows.
    max_dirty_fraction: float = 0.5
    kg_min_items: int = 5
    event_weights: Mapping[str, float] = field(default_factory=_default_event_weights)
    # A new model version becomes @champion only if its validation score beats the champion's
    # (re-scored on the same window) by at least this much.
    gate_margin: float = 0.002
    policy_gate_margin: float = 0.001  # mean reward (NDCG@10 - churn cost) a new update policy must add over @champion
    # The update policy's reward is NDCG@10 minus this times the share of the user's profile the
    # update moved (models.update_policy.profile_churn): what rewriting a whole profile must buy.
    policy_churn_cost: float = 0.02
    mlflow_experiment: str = "uig"
    # How long a task that writes tables waits for another one holding the data root's writer
    # lock (uig_tasks.locking) before it fails with DataRootBusyError.
    lock_timeout_seconds: float = 600.0

    # --- derived locations -------------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.data_root / "landing"

    @property
    def delta_dir(self) -> Path:
        return self.data_root / "delta"

    # --- the narrow values handed to the lower layers ---------------------------------
    @property
    def lake(self) -> Lake:
        return Lake(self.delta_dir)

    @property
    def spark(self) -> SparkSettings:
        return SparkSettings(
            master=self.spark_master,
            jars_dir=self.spark_jars_dir,
            shuffle_partitions=self.spark_shuffle_partitions,
            driver_memory=self.spark_driver_memory,
            work_dir=self.data_root,
            file_umask=UMASK,
            verbose=self.spark_verbose,
        )

    def ingest_settings(self) -> IngestSettings:
        """Ingestion inputs, the user salt resolved here (see :meth:`resolved_user_salt`)."""
        return IngestSettings(
            landing_dir=self.landing_dir,
            user_salt=self.resolved_user_salt(),
            max_line_bytes=self.max_line_bytes,
            future_tolerance_seconds=self.future_tolerance_seconds,
        )

    @property
    def aggregate_settings(self) -> AggregateSettings:
        return AggregateSettings(
            half_life_days=self.half_life_days,
            event_weights=self.event_weights,
            kg_min_items=self.kg_min_items,
            max_dirty_fraction=self.max_dirty_fraction,
        )

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "UigConfig":
        """Defaults, then ``UIG_<FIELD>`` environment variables, then ``overrides`` (None ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"UIG_{f.name.upper()}")
            if raw is not None and f.name != "event_weights":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()}).validated()

    def with_overrides(self, **overrides: Any) -> "UigConfig":
        values = {k: _coerce(type(self), k, v) for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **values).validated()

    def validated(self) -> "UigConfig":
        if self.half_life_days <= 0:
            raise ConfigError(f"half_life_days must be > 0, got {self.half_life_days}")
        if self.max_line_bytes < 64:
            raise ConfigError(f"max_line_bytes must be >= 64, got {self.max_line_bytes}")
        if not 0 <= self.max_dirty_fraction <= 1:
            raise ConfigError(f"max_dirty_fraction must lie in [0, 1], got {self.max_dirty_fraction}")
        if self.gate_margin < 0:
            raise ConfigError(f"gate_margin must be >= 0, got {self.gate_margin}")
        if self.policy_gate_margin < 0:
            raise ConfigError(f"policy_gate_margin must be >= 0, got {self.policy_gate_margin}")
        if not (math.isfinite(self.policy_churn_cost) and self.policy_churn_cost >= 0):
            raise ConfigError(f"policy_churn_cost must be >= 0, got {self.policy_churn_cost}")
        if self.future_tolerance_seconds < 0:
            raise ConfigError("future_tolerance_seconds must be >= 0")
        if self.lock_timeout_seconds < 0:
            raise ConfigError(f"lock_timeout_seconds must be >= 0, got {self.lock_timeout_seconds}")
        return self

    def resolved_user_salt(self) -> str:
        """The secret salt for user pseudonymisation.

        Taken from config/``UIG_USER_SALT`` when set; otherwise a random salt is created once per
        data root in ``.secrets/user_salt`` (mode 0600), so the same deployment always maps a
        raw user id to the same ``user_key`` and the salt never lives in code.
        """
        if self.user_salt:
            return self.user_salt
        path = secrets_dir(self.data_root) / "user_salt"  # .secrets/ 0700 in a 0750 data root
        if path.exists():
            return path.read_text().strip()
        salt = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(salt)
        return salt


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(cls: type, name: str, value: Any) -> Any:
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    if name not in types:
        raise ConfigError(f"unknown config key {name!r}")
    kind = str(types[name])
    try:
        if "Path" in kind:
            return Path(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool" and isinstance(value, str):
            if value.strip().lower() not in _BOOLEANS:
                raise ValueError(value)
            return _BOOLEANS[value.strip().lower()]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {name}={value!r} is not a valid {kind}") from exc
    return value
