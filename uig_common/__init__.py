"""The bottom layer every other package may import: names, errors and time helpers.

It imports nothing from the project and no heavy library, so ``dags/``, ``uig_tasks/``,
``spark_jobs/`` and ``models/`` can all share one vocabulary without reaching up a layer.
"""
