"""Imports point down: dags → uig_tasks → spark_jobs / models → uig_common (README, Layout).

Read from the source with ``ast`` (nothing is imported), so a lazy import inside a function body
counts the same as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> project packages it must never import
FORBIDDEN = {
    "uig_common": {"uig_tasks", "spark_jobs", "models", "dags"},
    "spark_jobs": {"uig_tasks", "models", "dags"},
    "models": {"uig_tasks", "spark_jobs", "dags"},
    "uig_tasks": {"dags", "airflow"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_packages_sees_lazy_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from uig_tasks.config import UigConfig\n    import models.gcn\n")
    assert imported_packages(source) == {"os", "uig_tasks", "models"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_downward_only(package: str):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files under {package}/"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package])
        for f in files
        if imported_packages(f) & FORBIDDEN[package]
    }
    assert not offenders, f"{package}/ reaches up a layer: {offenders}"
