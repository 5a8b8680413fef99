"""Parsing of the times users pass in (``--as-of``, ``--logical-time``, Airflow's logical date)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone


def parse_time(value: str | datetime | date, *, end_of_day: bool = False) -> datetime:
    """An aware UTC datetime from ISO-8601 text, a datetime or a date.

    A bare date means its start (or, with ``end_of_day``, the last second of that day), in UTC.
    Naive datetimes are taken as UTC.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                value = date.fromisoformat(text)
            else:
                value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 date or time: {value!r} (try 1998-03-01 or 1998-03-01T12:00:00Z)") from exc
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    start = datetime.combine(value, time(0, 0), tzinfo=timezone.utc)
    return start + timedelta(days=1, seconds=-1) if end_of_day else start
