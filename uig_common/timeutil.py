"""Time helpers shared by every layer: parsing the times users pass in and the one time decay.

``parse_time`` reads ``--as-of`` / ``--logical-time`` / Airflow's logical date; ``naive_utc`` is
how Delta tables store a time;
``decay_factor`` is the exponential half-life decay used by aggregation (Spark columns), the
popularity prior (numpy) and training (torch) alike.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import TypeVar

from uig_common.errors import InputError

SECONDS_PER_DAY = 86_400.0

T = TypeVar("T")


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
            raise InputError(f"not an ISO-8601 date or time: {value!r} (try 1998-03-01 or 1998-03-01T12:00:00Z)") from exc
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    start = datetime.combine(value, time(0, 0), tzinfo=timezone.utc)
    return start + timedelta(days=1, seconds=-1) if end_of_day else start


def decay_factor(age_seconds: T, half_life_days: float) -> T:
    """``2 ** (-age / half_life)``: the weight left after ``age_seconds`` with a half-life in days.

    Written with operators only, so one definition serves a float, a numpy array, a torch tensor
    and a Spark ``Column``. Multiplicative in age: a weight decayed to ``t1`` reaches ``t2`` by
    one more factor ``decay_factor(t2 - t1, h)``.
    """
    if half_life_days <= 0:
        raise InputError(f"half_life_days must be > 0, got {half_life_days}")
    return 0.5 ** (age_seconds / (half_life_days * SECONDS_PER_DAY))  # type: ignore[operator, return-value]


def naive_utc(moment: datetime) -> datetime:
    """How the Delta tables store a time: UTC without a zone (a naive time is UTC already: the
    jobs run with ``TZ=UTC``)."""
    return moment if moment.tzinfo is None else moment.astimezone(timezone.utc).replace(tzinfo=None)
