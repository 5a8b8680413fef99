"""The Airflow Assets UIG tasks publish, declared once here and imported by every DAG.

Why a private ``x-uig://`` URI instead of a ``file://`` path under the data root: the data root
is a run-time parameter (``data_root`` param, ``UIG_DATA_ROOT``), so a path fixed when the DAG
file is parsed would name the wrong place for any run that overrides it, and consumer DAGs would
be scheduled on an identity that changes with the environment. Airflow 3 passes ``x-`` schemes
through unchanged (no provider normaliser, no warning), so these URIs stay stable everywhere.

Importing this module is cheap on purpose: only ``airflow.sdk`` and the table-name constants.
"""

from __future__ import annotations

from airflow.sdk import Asset

from uig_common import names as C

URI_SCHEME = "x-uig"


def table_asset(table: str) -> Asset:
    """The Asset of a Delta table named ``layer.name``: name = table, uri = x-uig://delta/layer/name."""
    layer, _, name = table.partition(".")
    if not layer or not name:
        raise ValueError(f"table name must look like 'layer.name', got {table!r}")
    return Asset(name=table, uri=f"{URI_SCHEME}://delta/{layer}/{name}")


SILVER_EVENTS = table_asset(C.SILVER_EVENTS)
SILVER_QUARANTINE = table_asset(C.SILVER_QUARANTINE)
SILVER_ITEMS = table_asset(C.SILVER_ITEMS)
SILVER_USERS = table_asset(C.SILVER_USERS)
GOLD_USER_ITEM_AFFINITY = table_asset(C.GOLD_USER_ITEM_AFFINITY)
GOLD_USER_TOPIC_AFFINITY = table_asset(C.GOLD_USER_TOPIC_AFFINITY)
GOLD_INTEREST_EDGES = table_asset(C.GOLD_INTEREST_EDGES)

#: What the ingest task updates (outlets); a refresh DAG can schedule on these.
INGEST_OUTLETS: tuple[Asset, ...] = (SILVER_EVENTS, SILVER_QUARANTINE, SILVER_ITEMS, SILVER_USERS)
#: What the aggregate task updates (outlets).
AGGREGATE_OUTLETS: tuple[Asset, ...] = (GOLD_USER_ITEM_AFFINITY, GOLD_USER_TOPIC_AFFINITY)
#: What the refresh task updates (outlets).
REFRESH_OUTLETS: tuple[Asset, ...] = (GOLD_INTEREST_EDGES,)
