from datetime import date, datetime, timezone

import pytest

from uig_common.timeutil import parse_time


def test_dates_times_and_zones():
    assert parse_time("1998-03-01") == datetime(1998, 3, 1, tzinfo=timezone.utc)
    assert parse_time("1998-03-01", end_of_day=True) == datetime(1998, 3, 1, 23, 59, 59, tzinfo=timezone.utc)
    assert parse_time("1998-03-01T12:00:00+02:00") == datetime(1998, 3, 1, 10, tzinfo=timezone.utc)
    assert parse_time(datetime(1998, 3, 1, 12)) == datetime(1998, 3, 1, 12, tzinfo=timezone.utc)
    assert parse_time(date(1998, 3, 1)).tzinfo is timezone.utc
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("March 1st")
