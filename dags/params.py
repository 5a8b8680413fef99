"""Airflow params shared by every UIG DAG, declared once (imported by the DAG files; not a DAG)."""

from __future__ import annotations

from airflow.sdk import Param


def data_root_param() -> Param:
    """The ``data_root`` param: where landing/ and delta/ live for this run (a fresh Param per DAG)."""
    return Param(None, type=["null", "string"], title="Data root",
                 description="Folder holding landing/ and delta/; empty means UIG_DATA_ROOT or ./data.")
