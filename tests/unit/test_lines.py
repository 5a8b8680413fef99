"""The line contract: every quarantine reason, on plain bytes (no Spark)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from spark_jobs.transforms.lines import (
    REASONS,
    Rejection,
    ValidEvent,
    pseudonymise_user_id,
    split_lines,
    validate_line,
)

BATCH_TIME = datetime(1997, 10, 16, tzinfo=timezone.utc)


def check(line: bytes | dict, **kw) -> ValidEvent | Rejection:
    raw = json.dumps(line).encode() if isinstance(line, dict) else line
    return validate_line(
        raw, max_line_bytes=kw.get("max_line_bytes", 4096), logical_time=BATCH_TIME, future_tolerance_seconds=86_400
    )


GOOD = {"event_id": "e1", "user_id": "7", "event_type": "view", "item_id": "50", "ts": "1997-10-01T10:00:00+02:00"}


def test_valid_view_is_typed_and_utc():
    event = check(GOOD)
    assert isinstance(event, ValidEvent)
    assert event.ts == datetime(1997, 10, 1, 8, 0, tzinfo=timezone.utc)
    assert (event.event_id, event.user_id, event.item_id, event.rating) == ("e1", "7", "50", None)


def test_integer_ids_and_epoch_seconds_are_accepted():
    event = check({**GOOD, "user_id": 7, "item_id": 50, "ts": 875_000_000})
    assert isinstance(event, ValidEvent)
    assert (event.user_id, event.item_id) == ("7", "50")
    assert event.ts == datetime.fromtimestamp(875_000_000, tz=timezone.utc)


def test_valid_rate_and_search():
    rate = check({**GOOD, "event_type": "rate", "rating": 4})
    search = check({"event_id": "s", "user_id": "7", "event_type": "search", "query": "film noir", "ts": 875_000_000})
    assert isinstance(rate, ValidEvent) and rate.rating == 4.0
    assert isinstance(search, ValidEvent) and search.item_id is None and search.query == "film noir"


@pytest.mark.parametrize(
    ("line", "reason", "detail"),
    [
        (b"x" * 5000, "line_too_long", "5000 bytes"),
        (b'{"event_id": "e\xff"}', "invalid_utf8", "byte"),
        (b"   ", "empty_line", ""),
        (b'{"event_id": "e1",', "invalid_json", ""),
        (b"[1, 2, 3]", "not_a_json_object", "list"),
        ({k: v for k, v in GOOD.items() if k != "user_id"}, "missing_field", "user_id"),
        ({**GOOD, "user_id": ""}, "missing_field", "user_id"),
        ({**GOOD, "item_id": None}, "missing_field", "item_id"),
        ({**GOOD, "user_id": {"id": 1}}, "wrong_type", "user_id"),
        ({**GOOD, "user_id": True}, "wrong_type", "user_id"),
        ({**GOOD, "event_type": 3}, "wrong_type", "event_type"),
        ({**GOOD, "event_type": "rate", "rating": "five"}, "wrong_type", "rating"),
        ({**GOOD, "ts": [1]}, "wrong_type", "ts"),
        ({**GOOD, "event_type": "teleport"}, "unknown_event_type", "teleport"),
        ({**GOOD, "ts": "yesterday"}, "bad_timestamp", "ISO"),
        ({**GOOD, "ts": "1997-10-01T10:00:00"}, "bad_timestamp", "zone"),
        ({**GOOD, "ts": 1e20}, "bad_timestamp", "range"),
        ({**GOOD, "ts": 500_000_000}, "timestamp_before_1990", "1985"),
        ({**GOOD, "ts": "1997-10-17T00:00:01Z"}, "timestamp_in_future", "after batch time"),
        ({**GOOD, "event_type": "rate"}, "rate_without_rating", ""),
        ({**GOOD, "event_type": "rate", "rating": 0}, "rating_out_of_range", "0.0"),
        ({**GOOD, "event_type": "rate", "rating": 5.5}, "rating_out_of_range", "5.5"),
        ({"event_id": "s", "user_id": "7", "event_type": "search", "ts": 875_000_000}, "search_without_query", ""),
        ({"event_id": "s", "user_id": "7", "event_type": "search", "query": " ", "ts": 875_000_000}, "search_without_query", ""),
    ],
)
def test_each_bad_line_gets_its_reason(line, reason, detail):
    result = check(line)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert result.reason in REASONS
    assert detail in result.detail


def test_future_tolerance_is_exactly_one_day():
    assert isinstance(check({**GOOD, "ts": "1997-10-17T00:00:00Z"}), ValidEvent)


def test_crlf_line_endings_are_tolerated():
    assert isinstance(check(json.dumps(GOOD).encode() + b"\r"), ValidEvent)


def test_pseudonymise_is_keyed_and_stable():
    a = pseudonymise_user_id("salt-a", "42")
    assert a == pseudonymise_user_id("salt-a", "42")
    assert a != pseudonymise_user_id("salt-b", "42")
    assert a != pseudonymise_user_id("salt-a", "43")
    assert len(a) == 32 and "42" not in a


def test_split_lines_keeps_numbering_and_blank_lines():
    assert split_lines(b"") == []
    assert split_lines(b"a\nb\n") == [b"a", b"b"]
    assert split_lines(b"a\n\nb") == [b"a", b"", b"b"]
