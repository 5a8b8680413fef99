"""The landing folder's contract, and the scan that decides which bytes a batch ingests.

Contract (README, "Landing files"):

* Event files live under ``landing/events/`` as ``*.jsonl`` (UTF-8 JSON lines) or
  ``*.jsonl.gz`` (gzip, written whole: a compressed file is ingested once, when first seen).
* **Only complete lines count.** A plain file may grow by appending; each run ingests the new
  bytes up to the last newline, so a line that is still being written (no ``\\n`` yet) waits
  for the next run, and every line is ingested exactly once. Files may also be written under a
  temporary name (leading ``.`` or ``_``, or a ``.tmp`` / ``.part`` suffix) and renamed when
  done: temporary names are never read.
* Ingested bytes are immutable: a file whose already-ingested prefix changed (rewritten,
  truncated) is not read again and is reported, since which of its lines are new is unknowable.
* Nothing outside landing is read: symbolic links are not followed, and every other kind of
  entry (fifo, socket, device) is reported and left alone.

Every entry under ``landing/events`` ends up in :class:`LandingScan` as a new segment to
ingest, an up-to-date file, a pending tail, or a skip with a machine-readable reason — so
``ops.landing_files`` can list each one and nothing is skipped silently. Pure Python (no Spark):
the scan reads file bytes only to hash them and find line ends.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from spark_jobs.transforms.lines import split_lines
from uig_common.errors import UigError

EVENTS_SUBDIR = "events"
PLAIN = "none"
GZIP = "gzip"
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress")
_CHUNK = 1 << 20

# reasons a landing entry is not (or no longer) read
SKIP_SYMLINK = "symlink"
SKIP_NOT_A_FILE = "not_a_regular_file"
SKIP_TEMPORARY = "temporary_name"
SKIP_FORMAT = "unsupported_format"
SKIP_FILE_NAME = "undecodable_file_name"
SKIP_UNREADABLE = "unreadable"
SKIP_CORRUPT_GZIP = "corrupt_gzip"
SKIP_MODIFIED = "modified_after_ingest"
SKIP_TRUNCATED = "truncated_after_ingest"


STATUS_CURRENT = "ingested"  # every complete line ingested (by this scan's batch or earlier)
STATUS_SKIPPED = "skipped"


@dataclass(frozen=True)
class Segment:
    """A byte range ``[start_byte, end_byte)`` of one landing file, holding whole lines only.

    ``sha256`` hashes the file's bytes ``[0, end_byte)``, so the next scan can tell an append
    (prefix unchanged) from a rewrite.
    """

    source_file: str
    start_byte: int
    end_byte: int
    first_line_no: int
    last_line_no: int
    compression: str
    sha256: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class FileReport:
    """What the scan decided for one entry under landing/events (a row of ``ops.landing_files``)."""

    source_file: str
    status: str
    reason: str | None = None
    detail: str | None = None
    size: int | None = None
    ingested_bytes: int = 0
    pending_bytes: int = 0


@dataclass(frozen=True)
class LandingScan:
    segments: list[Segment] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)

    @property
    def skipped(self) -> list[FileReport]:
        return [f for f in self.files if f.status == STATUS_SKIPPED]


def compression_of(name: str) -> str | None:
    if name.endswith(".jsonl"):
        return PLAIN
    if name.endswith(".jsonl.gz"):
        return GZIP
    return None


def _is_temporary(name: str) -> bool:
    return name.startswith((".", "_")) or name.endswith(TEMPORARY_SUFFIXES)


def _hash_prefix(fh, end: int) -> "hashlib._Hash":
    """SHA-256 of the next ``end`` bytes of an open file (the file position moves past them)."""
    digest = hashlib.sha256()
    remaining = end
    while remaining > 0:
        chunk = fh.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest


class LandingChangedError(UigError, RuntimeError):
    """A planned segment's bytes are no longer in its file (truncated or rewritten since the scan)."""


def read_lines(path: str, segment: Segment) -> list[bytes]:
    """The lines of ``segment`` (without their ``\\n``); gzip files are decompressed whole.

    Raises :class:`LandingChangedError` rather than return fewer or other bytes than planned:
    the batch then fails before bronze holds it, and the next run abandons and re-plans it.
    """
    with open(path, "rb") as fh:
        if segment.compression == GZIP:
            raw = fh.read()
            if hashlib.sha256(raw).hexdigest() != segment.sha256:
                raise LandingChangedError(f"{segment.source_file} changed after it was planned")
            data = gzip.decompress(raw)
        else:
            fh.seek(segment.start_byte)
            data = fh.read(segment.end_byte - segment.start_byte)
            if len(data) != segment.end_byte - segment.start_byte:
                raise LandingChangedError(f"{segment.source_file} is shorter than planned ({segment.end_byte} bytes)")
    return split_lines(data)


def segment_is_intact(landing_dir: Path, segment: Segment) -> bool:
    """True while the file still holds the bytes the segment was planned on."""
    path = os.path.join(landing_dir, segment.source_file)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < segment.end_byte:
            return False
        with open(path, "rb") as fh:
            return _hash_prefix(fh, segment.end_byte).hexdigest() == segment.sha256
    except OSError:
        return False


def _walk(events_dir: Path, landing_dir: Path) -> tuple[list[tuple[str, str, os.stat_result]], list[FileReport]]:
    """(relative path, name, lstat) of every entry below ``events_dir``, and reports of what could
    not be entered: unreadable folders and temporary ones (e.g. a writer's ``_temporary/``).
    Symlinked folders are not entered (they are entries, reported as links)."""
    entries: list[tuple[str, str, os.stat_result]] = []
    problems: list[FileReport] = []

    def rel(path: str) -> str:
        return os.path.relpath(path, landing_dir)

    def unreadable(err: OSError) -> None:
        problems.append(FileReport(rel(err.filename), STATUS_SKIPPED, SKIP_UNREADABLE,
                                   f"{type(err).__name__}: {err.strerror or err}"))

    for folder, dirnames, filenames in os.walk(events_dir, followlinks=False, onerror=unreadable):
        for name in [d for d in dirnames if _is_temporary(d)]:
            dirnames.remove(name)
            problems.append(FileReport(rel(os.path.join(folder, name)), STATUS_SKIPPED, SKIP_TEMPORARY,
                                       "temporary folder: move its files out when they are complete"))
        for name in sorted(dirnames + filenames):
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # removed while scanning; the next scan sees whatever replaced it
            if stat.S_ISDIR(st.st_mode):
                continue  # os.walk enters it
            entries.append((rel(full), name, st))
    return sorted(entries), problems


def scan_landing(landing_dir: Path, ingested: Mapping[str, Segment]) -> LandingScan:
    """Plan the next batch: new complete lines of every landing file, and a report for every entry.

    ``ingested`` maps each source file to its latest segment in earlier batches.
    """
    events_dir = Path(landing_dir) / EVENTS_SUBDIR
    scan = LandingScan()
    if events_dir.is_symlink():
        scan.files.append(FileReport(EVENTS_SUBDIR, STATUS_SKIPPED, SKIP_SYMLINK, "landing/events itself is a link"))
        return scan
    if not events_dir.is_dir():
        return scan
    entries, problems = _walk(events_dir, Path(landing_dir))
    scan.files.extend(problems)
    for rel, name, st in entries:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            safe = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            scan.files.append(FileReport(safe, STATUS_SKIPPED, SKIP_FILE_NAME, "file name is not valid UTF-8"))
            continue
        report, segment = _plan_file(str(landing_dir), rel, name, st, ingested.get(rel))
        scan.files.append(report)
        if segment is not None:
            scan.segments.append(segment)
    return scan


def _plan_file(
    landing_dir: str, rel: str, name: str, st: os.stat_result, previous: Segment | None
) -> tuple[FileReport, Segment | None]:
    def skip(reason: str, detail: str) -> tuple[FileReport, None]:
        return FileReport(rel, STATUS_SKIPPED, reason, detail, st.st_size,
                          previous.end_byte if previous else 0), None

    if stat.S_ISLNK(st.st_mode):
        return skip(SKIP_SYMLINK, "symbolic links are not followed (nothing outside landing is read)")
    if not stat.S_ISREG(st.st_mode):
        return skip(SKIP_NOT_A_FILE, "not a regular file")
    if _is_temporary(name):
        return skip(SKIP_TEMPORARY, "temporary name: rename the file when it is complete")
    compression = compression_of(name)
    if compression is None:
        return skip(SKIP_FORMAT, "only *.jsonl and *.jsonl.gz are ingested")
    path = os.path.join(landing_dir, rel)
    try:
        if compression == GZIP:
            return _plan_gzip(path, rel, st.st_size, previous, skip)
        return _plan_plain(path, rel, st.st_size, previous, skip)
    except OSError as exc:
        return skip(SKIP_UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}")


def _plan_plain(path: str, rel: str, size: int, previous: Segment | None, skip) -> tuple[FileReport, Segment | None]:
    start = previous.end_byte if previous else 0
    first_line = previous.last_line_no + 1 if previous else 1
    if size < start:
        return skip(SKIP_TRUNCATED, f"{size} bytes now, {start} already ingested")
    with open(path, "rb") as fh:
        digest = _hash_prefix(fh, start)
        if previous and digest.hexdigest() != previous.sha256:
            return skip(SKIP_MODIFIED, "bytes already ingested have changed; land new data as a new file")
        new = fh.read(size - start)
    cut = new.rfind(b"\n") + 1  # only complete lines
    pending = len(new) - cut
    if cut == 0:
        return FileReport(rel, STATUS_CURRENT, None, None, size, start, pending), None
    digest.update(new[:cut])
    n_lines = new.count(b"\n", 0, cut)
    segment = Segment(rel, start, start + cut, first_line, first_line + n_lines - 1, PLAIN, digest.hexdigest())
    return FileReport(rel, STATUS_CURRENT, None, None, size, start + cut, pending), segment


def _plan_gzip(path: str, rel: str, size: int, previous: Segment | None, skip) -> tuple[FileReport, Segment | None]:
    with open(path, "rb") as fh:
        data = fh.read()
    digest = hashlib.sha256(data).hexdigest()
    if previous is not None:
        if digest == previous.sha256:
            return FileReport(rel, STATUS_CURRENT, None, None, size, size, 0), None
        return skip(SKIP_MODIFIED, "a compressed file is ingested once; land new data as a new file")
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        return skip(SKIP_CORRUPT_GZIP, f"{type(exc).__name__}: {str(exc)[:120]}")
    n_lines = len(split_lines(text))
    if n_lines == 0:
        return FileReport(rel, STATUS_CURRENT, None, None, size, size, 0), None
    return FileReport(rel, STATUS_CURRENT, None, None, size, size, 0), Segment(rel, 0, size, 1, n_lines, GZIP, digest)


def catalog_files(folder: Path) -> list[tuple[str, Path]]:
    """(name, path) of the catalog's ``*.jsonl`` files in ``folder``: regular files only, no links."""
    if not Path(folder).is_dir():
        return []
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.endswith(".jsonl") and not _is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
            found.append((entry.name, Path(entry.path)))
    return found
