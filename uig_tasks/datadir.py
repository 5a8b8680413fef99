"""Files a stranger cannot read: the modes of the data root, its secrets and the MLflow database.

The data root holds pseudonymised behaviour, the salt that pseudonymises it and the model
registry, so nothing under it is readable by other users of the machine:

* the data root is created ``0750`` (owner and group, so an Airflow worker in the same group can
  share it), ``.secrets/`` ``0700``, the salt and the MLflow SQLite database ``0600``;
* every process that writes there runs with a umask of at least ``027`` (:func:`restrict_umask`),
  so whatever Python, Spark or Delta write later is not world-readable either. Spark's JVM
  inherits the umask, but Hadoop's file systems apply their own (``fs.permissions.umask-mode``,
  default ``022``) when they create files; the task layer hands :data:`UMASK` to Spark
  through ``SparkSettings.file_umask`` for that.

Existing folders and files keep the bits they have inside the wanted mode and lose the ones
outside it (an old ``0755`` data root becomes ``0750``); only things this user owns are changed,
anything else is reported, not touched.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uig_tasks.config import UigConfig

log = logging.getLogger(__name__)

#: Bits never granted to files and folders UIG creates: group write, and anything for others.
UMASK = 0o027
DATA_ROOT_MODE = 0o750
SECRETS_MODE = 0o700
SECRET_FILE_MODE = 0o600


def restrict_umask() -> int:
    """Add :data:`UMASK` to this process's umask (a stricter one stays); returns the previous one.

    The umask is process-wide, so only code that owns its process calls this: the ``uig`` CLI's
    ``main`` (every command, ``data prepare`` included) and :func:`prepare_data_root`, which every
    task that writes tables runs first (through its writer lock), so an Airflow task process gets
    it too, before it starts Spark's JVM (which inherits it).
    """
    previous = os.umask(UMASK)
    os.umask(previous | UMASK)
    return previous


def _at_most(path: Path, mode: int) -> None:
    """Remove the permission bits of ``path`` that ``mode`` does not grant (only if we own it)."""
    st = path.stat()
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode == 0:
        return
    if st.st_uid != os.geteuid():
        log.warning("%s has mode %03o (wanted at most %03o) and belongs to another user: left as it is",
                    path, current, mode)
        return
    path.chmod(current & mode)
    log.info("%s: mode %03o -> %03o", path, current, current & mode)


def ensure_private_dir(path: Path, mode: int = DATA_ROOT_MODE) -> Path:
    """``path`` as a folder with at most ``mode``: created with exactly ``mode``, tightened if wider.

    Missing parents are created as the umask says; only ``path`` itself gets ``mode``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=mode)
        path.chmod(mode)  # mkdir's mode goes through the umask; the wanted mode is exact
    except FileExistsError:
        _at_most(path, mode)
    return path


def ensure_private_file(path: Path, mode: int = SECRET_FILE_MODE) -> Path:
    """``path`` as a file with at most ``mode``: an empty one created with exactly ``mode`` if missing.

    For files another library fills in later (e.g. the MLflow SQLite database: SQLite takes an
    empty file as an empty database, and gives its journal files the database file's mode).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        _at_most(path, mode)
    else:
        os.fchmod(fd, mode)
        os.close(fd)
    return path


def secrets_dir(data_root: Path) -> Path:
    """``<data_root>/.secrets``, mode 0700, inside a data root of mode 0750."""
    return ensure_private_dir(ensure_private_dir(data_root, DATA_ROOT_MODE) / ".secrets", SECRETS_MODE)


def prepare_data_root(config: "UigConfig") -> Path:
    """Make the data root private (see the module doc) before anything writes to it; returns it."""
    restrict_umask()
    return ensure_private_dir(config.data_root, DATA_ROOT_MODE)
