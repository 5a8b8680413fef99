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


def test_decay_factor_is_one_function_for_floats_numpy_and_torch():
    import numpy as np
    import torch

    from uig_common.timeutil import SECONDS_PER_DAY, decay_factor

    assert decay_factor(0.0, 30) == 1.0
    assert decay_factor(30 * SECONDS_PER_DAY, 30) == pytest.approx(0.5)
    ages = np.array([0.0, 10.0, 60.0]) * SECONDS_PER_DAY
    expected = np.array([1.0, 2 ** (-1 / 3), 0.25])
    np.testing.assert_allclose(decay_factor(ages, 30), expected)
    np.testing.assert_allclose(decay_factor(torch.tensor(ages), 30).numpy(), expected)
    # multiplicative: decaying 10 days then 20 days equals decaying 30 days
    assert decay_factor(10 * SECONDS_PER_DAY, 7) * decay_factor(20 * SECONDS_PER_DAY, 7) == pytest.approx(
        decay_factor(30 * SECONDS_PER_DAY, 7)
    )


def test_decay_factor_refuses_a_non_positive_half_life():
    from uig_common.errors import InputError
    from uig_common.timeutil import decay_factor

    with pytest.raises(InputError, match="half_life_days"):
        decay_factor(1.0, 0)
