"""The landing scan on a real folder (no Spark): what is new, what waits, what is skipped and why."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from spark_jobs.landing import LandingChangedError, Segment, catalog_files, read_lines, scan_landing, segment_is_intact


def landing(tmp_path: Path) -> Path:
    (tmp_path / "landing" / "events").mkdir(parents=True)
    return tmp_path / "landing"


def by_file(scan) -> dict[str, tuple[str, str | None]]:
    return {f.source_file: (f.status, f.reason) for f in scan.files}


def test_appends_are_planned_once_and_unfinished_lines_wait(tmp_path):
    root = landing(tmp_path)
    path = root / "events" / "a.jsonl"
    path.write_bytes(b"one\ntwo\nthr")
    first = scan_landing(root, {})
    [seg] = first.segments
    assert (seg.start_byte, seg.end_byte, seg.first_line_no, seg.last_line_no) == (0, 8, 1, 2)
    assert read_lines(str(path), seg) == [b"one", b"two"]
    assert first.files[0].pending_bytes == 3

    assert scan_landing(root, {"events/a.jsonl": seg}).segments == []  # nothing complete is new
    with path.open("ab") as fh:
        fh.write(b"ee\nfour\n")
    [nxt] = scan_landing(root, {"events/a.jsonl": seg}).segments
    assert (nxt.start_byte, nxt.first_line_no, nxt.last_line_no) == (8, 3, 4)
    assert read_lines(str(path), nxt) == [b"three", b"four"]
    assert segment_is_intact(root, seg) and segment_is_intact(root, nxt)


def test_rewritten_or_truncated_files_are_reported_not_reread(tmp_path):
    root = landing(tmp_path)
    path = root / "events" / "a.jsonl"
    path.write_bytes(b"one\ntwo\n")
    [seg] = scan_landing(root, {}).segments
    path.write_bytes(b"ONE\ntwo\nthree\n")
    assert by_file(scan_landing(root, {"events/a.jsonl": seg})) == {"events/a.jsonl": ("skipped", "modified_after_ingest")}
    assert not segment_is_intact(root, seg)
    path.write_bytes(b"o\n")
    assert by_file(scan_landing(root, {"events/a.jsonl": seg})) == {"events/a.jsonl": ("skipped", "truncated_after_ingest")}


def test_every_entry_is_ingested_or_skipped_with_a_reason(tmp_path):
    root = landing(tmp_path)
    events = root / "events"
    (events / "z.jsonl.gz").write_bytes(gzip.compress(b"g1\ng2"))
    (events / "bad.jsonl.gz").write_bytes(b"\x1f\x8b nope")
    (events / "notes.txt").write_bytes(b"hello\n")
    (events / ".partial.jsonl").write_bytes(b"x\n")
    (events / "b.jsonl.tmp").write_bytes(b"x\n")
    (tmp_path / "secret").write_bytes(b"root:x:0:0\n")
    (events / "link.jsonl").symlink_to(tmp_path / "secret")
    (events / "dir-link").symlink_to(tmp_path)
    os.mkfifo(events / "pipe.jsonl")
    (events / "sub dir").mkdir()
    (events / "sub dir" / "at 12:00.jsonl").write_bytes(b"c\n")
    scan = scan_landing(root, {})
    assert by_file(scan) == {
        "events/z.jsonl.gz": ("ingested", None),
        "events/bad.jsonl.gz": ("skipped", "corrupt_gzip"),
        "events/notes.txt": ("skipped", "unsupported_format"),
        "events/.partial.jsonl": ("skipped", "temporary_name"),
        "events/b.jsonl.tmp": ("skipped", "temporary_name"),
        "events/link.jsonl": ("skipped", "symlink"),
        "events/dir-link": ("skipped", "symlink"),
        "events/pipe.jsonl": ("skipped", "not_a_regular_file"),
        "events/sub dir/at 12:00.jsonl": ("ingested", None),
    }
    gz = next(s for s in scan.segments if s.source_file.endswith(".gz"))
    assert (gz.first_line_no, gz.last_line_no) == (1, 2)  # a gzip file's last line needs no newline
    assert read_lines(str(events / "z.jsonl.gz"), gz) == [b"g1", b"g2"]
    # a compressed file is read once; a changed one is reported
    assert scan_landing(root, {gz.source_file: gz}).segments == [s for s in scan.segments if s is not gz]
    (events / "z.jsonl.gz").write_bytes(gzip.compress(b"g1\ng2\ng3\n"))
    assert by_file(scan_landing(root, {gz.source_file: gz}))["events/z.jsonl.gz"] == ("skipped", "modified_after_ingest")


def test_catalog_files_are_regular_jsonl_files_only(tmp_path):
    (tmp_path / "items.jsonl").write_bytes(b"{}\n")
    (tmp_path / "outside.jsonl").symlink_to(tmp_path / "items.jsonl")
    (tmp_path / ".items.jsonl.tmp").write_bytes(b"{}\n")
    assert [name for name, _ in catalog_files(tmp_path)] == ["items.jsonl"]
    assert catalog_files(tmp_path / "missing") == []


def test_segments_round_trip_through_their_dict():
    seg = Segment("events/a.jsonl", 0, 8, 1, 2, "none", "abc")
    assert Segment(**seg.as_dict()) == seg


def test_temporary_and_unreadable_folders_are_reported_not_entered(tmp_path):
    root = landing(tmp_path)
    (root / "events" / "_temporary" / "0").mkdir(parents=True)
    (root / "events" / "_temporary" / "0" / "part-0.jsonl").write_bytes(b"x\n")
    locked = root / "events" / "locked"
    locked.mkdir()
    (locked / "a.jsonl").write_bytes(b"x\n")
    locked.chmod(0)
    try:
        reports = by_file(scan_landing(root, {}))
    finally:
        locked.chmod(0o750)
    assert reports["events/_temporary"] == ("skipped", "temporary_name")
    assert not any(f.startswith("events/_temporary/") for f in reports)
    if os.geteuid() != 0:  # root reads a 0-mode folder anyway
        assert reports["events/locked"] == ("skipped", "unreadable")


def test_a_linked_events_folder_is_not_followed(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.jsonl").write_bytes(b"x\n")
    (root / "events").symlink_to(tmp_path / "elsewhere")
    scan = scan_landing(root, {})
    assert scan.segments == [] and by_file(scan) == {"events": ("skipped", "symlink")}


def test_reading_a_segment_whose_file_shrank_fails_loudly(tmp_path):
    root = landing(tmp_path)
    path = root / "events" / "a.jsonl"
    path.write_bytes(b"one\ntwo\n")
    [seg] = scan_landing(root, {}).segments
    path.write_bytes(b"one\n")
    with pytest.raises(LandingChangedError, match="shorter"):
        read_lines(str(path), seg)
