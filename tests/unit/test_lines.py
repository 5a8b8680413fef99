"""The line contract: every quarantine reason, on plain bytes (no Spark)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_jobs.transforms.lines import (
    EVENT_TYPES,
    REASONS,
    Rejection,
    ValidEvent,
    _load_json,
    _no_duplicate_keys,
    pseudonymise_user_id,
    redacted_preview,
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


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "e", "user_id": "7", "event_type": "view", "item_id": "1", "ts": "9999-12-31T23:59:59-14:00"}',
         "value_out_of_range"),
        (b'{"event_id": "e", "user_id": "\\ud800", "event_type": "view", "item_id": "1", "ts": 875000000}',
         "invalid_unicode"),
        (b'{"event_id": "e", "user_id": "7", "event_type": "search", "query": "a\\udfff", "ts": 875000000}',
         "invalid_unicode"),
        (b'{"event_id": "e", "user_id": "7", "event_type": "rate", "item_id": "1", "rating": 1' + b"0" * 400
         + b', "ts": 875000000}', "value_out_of_range"),
        (b'{"event_id": "e", "user_id": "7", "event_type": "view", "item_id": "1", "ts": 1' + b"0" * 400 + b"}",
         "value_out_of_range"),
        (b'{"event_id": "e", "user_id": "7", "event_type": "view", "item_id": "1", "ts": 1' + b"0" * 5000 + b"}",
         "invalid_json"),  # Python refuses to parse integers of more than 4300 digits
        (b'{"event_id": 1' + b"0" * 30 + b', "user_id": "7", "event_type": "view", "item_id": "1", "ts": 875000000}',
         "value_out_of_range"),
        (b'{"event_id": "e", "user_id": "7", "user_id": "8", "event_type": "view", "item_id": "1", "ts": 875000000}',
         "duplicate_key"),
        (b'{"event_id": "e", "user_id": "7", "event_type": "rate", "item_id": "1", "rating": NaN, "ts": 875000000}',
         "value_out_of_range"),
    ],
)
def test_hostile_lines_get_a_reason_instead_of_an_exception(raw, reason):
    result = validate_line(raw, max_line_bytes=100_000, logical_time=BATCH_TIME, future_tolerance_seconds=86_400)
    assert isinstance(result, Rejection) and result.reason == reason, result
    assert result.reason in REASONS
    result.detail.encode("utf-8")  # details are stored: they must be valid text


def test_an_oversized_line_is_judged_by_its_true_length():
    prefix = json.dumps(GOOD).encode()
    result = validate_line(prefix, max_line_bytes=4096, logical_time=BATCH_TIME, future_tolerance_seconds=0,
                           byte_length=50_000_000)
    assert isinstance(result, Rejection) and result.reason == "line_too_long" and "50000000" in result.detail


def test_redacted_preview_hides_the_user_id_and_is_bounded():
    assert "196" not in redacted_preview(b'{"event_id": "e", "user_id": "196", "ts": 1}')
    assert "196" not in redacted_preview(b'{"user_id":196,"x":1}')
    assert "196" not in redacted_preview(b'{"user_id": "19\\"6 unterminated')
    assert redacted_preview(b'{"user_id": "7"}') == '{"user_id": "<redacted>"}'
    assert len(redacted_preview(b"x" * 10_000)) == 201  # 200 characters and an ellipsis
    redacted_preview(b"\xff\xfe").encode("utf-8")


def test_content_hash_ignores_formatting_but_not_meaning():
    a = check(GOOD)
    b = check(b'{"ts":"1997-10-01T08:00:00Z","item_id":50,"event_type":"view","user_id":"7","event_id":"e1"}')
    c = check({**GOOD, "item_id": "51"})
    assert isinstance(a, ValidEvent) and isinstance(b, ValidEvent) and isinstance(c, ValidEvent)
    assert a.content_hash("k") == b.content_hash("k") != c.content_hash("k")


# --- property-based: no input makes the validator raise -----------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_fields = {
    "event_id": st.one_of(st.text(max_size=12), st.integers(), _json_values),
    "user_id": st.one_of(st.text(max_size=12), st.integers(), _json_values),
    "event_type": st.one_of(st.sampled_from(sorted(EVENT_TYPES)), st.text(max_size=8), _json_values),
    "item_id": st.one_of(st.text(max_size=8), st.integers(), _json_values),
    "rating": st.one_of(st.floats(), st.integers(), _json_values),
    "query": st.one_of(st.text(max_size=20), _json_values),
    "ts": st.one_of(st.integers(), st.floats(), st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                    st.text(max_size=30), _json_values),
    "source": st.one_of(st.none(), st.text(max_size=8), _json_values),
}
_events = st.fixed_dictionaries({}, optional=_fields)


def _outcome(raw: bytes) -> ValidEvent | Rejection:
    result = validate_line(raw, max_line_bytes=4096, logical_time=BATCH_TIME, future_tolerance_seconds=86_400)
    assert isinstance(result, (ValidEvent, Rejection))
    if isinstance(result, Rejection):
        assert result.reason in REASONS and result.reason != "validator_error", result
        result.detail.encode("utf-8")
    else:  # a clean event must be storable: valid text everywhere, a finite rating
        for text in (result.event_id, result.user_id, result.item_id, result.query, result.source):
            if text is not None:
                text.encode("utf-8")
        assert result.rating is None or 1 <= result.rating <= 5
        result.content_hash("k")
    return result


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_get_clean_or_a_reason(raw):
    _outcome(raw)


@settings(max_examples=600, deadline=None)
@given(_events)
def test_arbitrary_json_events_get_clean_or_a_reason(event):
    _outcome(json.dumps(event, allow_nan=True).encode("utf-8", errors="surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_arbitrary_json_documents_get_clean_or_a_reason(value):
    _outcome(json.dumps(value, allow_nan=True).encode("utf-8", errors="surrogatepass"))


def _decoded(load, text: str) -> tuple[str, object]:
    try:
        return "value", load(text)
    except Exception as exc:  # noqa: BLE001 — the kind and message are what is compared
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), _json_values.map(json.dumps), _events.map(json.dumps),
                 _events.map(lambda e: "\ufeff" + json.dumps(e))))
def test_the_shared_decoder_reads_as_json_loads_does(text):
    assert _decoded(_load_json, text) == _decoded(lambda t: json.loads(t, object_pairs_hook=_no_duplicate_keys), text)
