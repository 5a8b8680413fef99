"""Pure-Python checks of one landing line, used inside Spark by :mod:`spark_jobs.transforms.ingest`.

Kept free of pyspark so the rules can be read and unit-tested on plain bytes. A line either
becomes a :class:`ValidEvent` or a :class:`Rejection` with a machine-readable ``reason``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone

EVENT_TYPES = frozenset({"view", "click", "search", "rate", "like", "purchase"})
MIN_EVENT_TIME = datetime(1990, 1, 1, tzinfo=timezone.utc)

# Every reason a line can be quarantined for (``unknown_item_id`` is decided later, in Spark,
# against the item catalog).
REASONS = (
    "line_too_long",
    "invalid_utf8",
    "empty_line",
    "invalid_json",
    "not_a_json_object",
    "missing_field",
    "wrong_type",
    "unknown_event_type",
    "bad_timestamp",
    "timestamp_before_1990",
    "timestamp_in_future",
    "rate_without_rating",
    "rating_out_of_range",
    "search_without_query",
    "unknown_item_id",
)


@dataclass(frozen=True)
class ValidEvent:
    event_id: str
    user_id: str
    event_type: str
    item_id: str | None
    query: str | None
    rating: float | None
    ts: datetime
    source: str | None


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def pseudonymise_user_id(salt: str, user_id: str) -> str:
    """Keyed hash (HMAC-SHA256, 128 bits hex) of a raw user id: stable per salt, not reversible."""
    return hmac.new(salt.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


def split_lines(content: bytes) -> list[bytes]:
    """Split a file into lines; a final newline does not start an extra line; CRLF is kept."""
    if not content:
        return []
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))  # type: ignore[arg-type]


def _id(obj: dict, name: str, required: bool) -> str | None | Rejection:
    value = obj.get(name)
    if value is None or value == "":
        return Rejection("missing_field", name) if required else None
    if isinstance(value, str):
        return value
    if _is_int(value):
        return str(value)
    return Rejection("wrong_type", f"{name} must be a string or integer, got {type(value).__name__}")


def parse_ts(value: object) -> datetime | Rejection:
    """ISO-8601 with a zone, or epoch seconds (int/float), as an aware UTC datetime."""
    if _is_number(value):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)  # type: ignore[arg-type]
        except (OverflowError, OSError, ValueError):
            return Rejection("bad_timestamp", f"epoch seconds out of range: {value!r}")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return Rejection("bad_timestamp", f"not ISO-8601: {value[:40]!r}")
        if parsed.tzinfo is None:
            return Rejection("bad_timestamp", f"ISO-8601 without a time zone: {value[:40]!r}")
        return parsed.astimezone(timezone.utc)
    return Rejection("wrong_type", f"ts must be an ISO-8601 string or epoch seconds, got {type(value).__name__}")


def validate_line(
    raw: bytes, *, max_line_bytes: int, logical_time: datetime, future_tolerance_seconds: int
) -> ValidEvent | Rejection:
    """Check one raw landing line against the event contract (DESIGN.md, "Events")."""
    if len(raw) > max_line_bytes:
        return Rejection("line_too_long", f"{len(raw)} bytes > limit {max_line_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"byte {exc.start}: {exc.reason}")
    text = text.rstrip("\r")
    if not text.strip():
        return Rejection("empty_line", "blank line")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_a_json_object", f"top-level JSON {type(obj).__name__}")

    for name in ("event_id", "user_id", "event_type", "ts"):
        if obj.get(name) is None or obj.get(name) == "":
            return Rejection("missing_field", name)
    event_id = _id(obj, "event_id", True)
    user_id = _id(obj, "user_id", True)
    for value in (event_id, user_id):
        if isinstance(value, Rejection):
            return value
    event_type = obj["event_type"]
    if not isinstance(event_type, str):
        return Rejection("wrong_type", f"event_type must be a string, got {type(event_type).__name__}")
    if event_type not in EVENT_TYPES:
        return Rejection("unknown_event_type", event_type[:40])
    source = obj.get("source")
    if source is not None and not isinstance(source, str):
        return Rejection("wrong_type", f"source must be a string, got {type(source).__name__}")

    item_id = _id(obj, "item_id", required=event_type != "search")
    if isinstance(item_id, Rejection):
        return item_id

    ts = parse_ts(obj["ts"])
    if isinstance(ts, Rejection):
        return ts
    if ts < MIN_EVENT_TIME:
        return Rejection("timestamp_before_1990", ts.isoformat())
    horizon = logical_time.timestamp() + future_tolerance_seconds
    if ts.timestamp() > horizon:
        return Rejection("timestamp_in_future", f"{ts.isoformat()} is after batch time + {future_tolerance_seconds}s")

    rating: float | None = None
    query: str | None = None
    if event_type == "rate":
        value = obj.get("rating")
        if value is None:
            return Rejection("rate_without_rating", "rate event has no rating")
        if not _is_number(value):
            return Rejection("wrong_type", f"rating must be a number, got {type(value).__name__}")
        rating = float(value)
        if not 1.0 <= rating <= 5.0:
            return Rejection("rating_out_of_range", f"{rating} not in [1, 5]")
    if event_type == "search":
        value = obj.get("query")
        if value is None or (isinstance(value, str) and not value.strip()):
            return Rejection("search_without_query", "search event has no query")
        if not isinstance(value, str):
            return Rejection("wrong_type", f"query must be a string, got {type(value).__name__}")
        query = value
    return ValidEvent(
        event_id=str(event_id),
        user_id=str(user_id),
        event_type=event_type,
        item_id=item_id,  # type: ignore[arg-type]
        query=query,
        rating=rating,
        ts=ts,
        source=source,
    )
