from __future__ import annotations

import stat
from pathlib import Path

import pytest

from uig_common.errors import InputError
from uig_tasks.config import ConfigError, UigConfig


def test_precedence_defaults_env_overrides(tmp_path: Path):
    env = {"UIG_DATA_ROOT": str(tmp_path), "UIG_HALF_LIFE_DAYS": "7", "UIG_MAX_LINE_BYTES": "1000"}
    config = UigConfig.from_env(env, max_line_bytes=2000)
    assert config.data_root == tmp_path
    assert config.half_life_days == 7.0
    assert config.max_line_bytes == 2000
    assert config.lake.path("silver.events").endswith("delta/silver/events")


def test_invalid_values_raise_named_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="half_life_days"):
        UigConfig.from_env({}, data_root=tmp_path, half_life_days=0)
    with pytest.raises(ConfigError, match="not a valid"):
        UigConfig.from_env({"UIG_MAX_LINE_BYTES": "lots"})
    with pytest.raises(ConfigError, match="policy_churn_cost"):
        UigConfig.from_env({"UIG_POLICY_CHURN_COST": "-0.5"}, data_root=tmp_path)
    with pytest.raises(ConfigError, match="policy_churn_cost"):
        UigConfig.from_env({"UIG_POLICY_CHURN_COST": "inf"}, data_root=tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        UigConfig.from_env({}, colour="red")
    with pytest.raises(InputError, match="layer.name"):
        UigConfig().lake.path("events")


def test_salt_is_created_once_private_and_stable(tmp_path: Path):
    config = UigConfig.from_env({}, data_root=tmp_path)
    salt = config.resolved_user_salt()
    path = tmp_path / ".secrets" / "user_salt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert UigConfig.from_env({}, data_root=tmp_path).resolved_user_salt() == salt
    assert UigConfig.from_env({"UIG_USER_SALT": "from-secret"}, data_root=tmp_path).resolved_user_salt() == "from-secret"


def test_config_is_frozen():
    with pytest.raises(Exception):
        UigConfig().half_life_days = 3  # type: ignore[misc]


def test_spark_verbose_is_a_boolean_from_env_or_flag(tmp_path: Path):
    assert UigConfig.from_env({}, data_root=tmp_path).spark.verbose is False
    assert UigConfig.from_env({"UIG_SPARK_VERBOSE": "true"}, data_root=tmp_path).spark.verbose is True
    assert UigConfig.from_env({"UIG_SPARK_VERBOSE": "0"}, data_root=tmp_path, spark_verbose=True).spark.verbose is True
    with pytest.raises(ConfigError, match="not a valid bool"):
        UigConfig.from_env({"UIG_SPARK_VERBOSE": "loud"})
