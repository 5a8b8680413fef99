"""The Airflow pools UIG tasks run in, declared once (``infra/airflow-standalone.sh`` creates them).

A task has one pool. Model tasks (torch: encode, train, evaluate, refresh) run in ``gpu``; the
other tasks that write Delta tables (ingest, aggregate) in ``uig_writer``, one slot, so two DAGs
never run them at once. Across the two pools (and against the CLI) the writer lock that every
table-writing task function takes on the data root (``uig_tasks.locking``) serialises them.
"""

from __future__ import annotations

GPU_POOL = "gpu"
WRITER_POOL = "uig_writer"

#: A line for the doc_md of every DAG with table-writing tasks.
WRITERS_DOC = (
    f"* **One writer at a time**: tasks that write tables run in the `{WRITER_POOL}` pool (one slot), "
    f"model tasks in `{GPU_POOL}`; each also holds the data root's writer lock while it writes, so "
    "writers never overlap, across pools and DAGs and with the `uig` CLI."
)
