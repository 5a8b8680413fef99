"""MovieLens-100k from the installed recbole package → landing files."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

from uig_tasks.movielens import event_file, items, movielens_dir, prepare, rating_events, timeline, users, zip_region


def test_all_100k_ratings_become_rate_events_with_real_timestamps():
    by_day = rating_events(movielens_dir())
    events = [e for day in by_day.values() for e in day]
    assert len(events) == 100_000
    assert len({e["event_id"] for e in events}) == 100_000
    first = min(events, key=lambda e: e["ts"])
    assert datetime.fromtimestamp(first["ts"], tz=timezone.utc).date() == date(1997, 9, 20)
    assert {e["event_type"] for e in events} == {"rate"}
    assert all(1 <= e["rating"] <= 5 for e in events)
    for day, day_events in by_day.items():
        assert all(datetime.fromtimestamp(e["ts"], tz=timezone.utc).date() == day for e in day_events)


def test_items_have_genres_year_and_named_kg_relations():
    catalog = {i["item_id"]: i for i in items(movielens_dir())}
    assert len(catalog) == 1682
    toy_story = catalog["1"]
    assert toy_story["title"] == "Toy Story" and toy_story["year"] == 1995
    assert "Animation" in toy_story["genres"]
    relations = {e["relation"] for e in toy_story["entities"]}
    assert "film.film.directed_by" in relations
    assert sum(1 for i in catalog.values() if i["entities"]) > 1500


def test_users_keep_no_zip_code():
    rows = users(movielens_dir())
    assert len(rows) == 943
    assert all("zip_code" not in r for r in rows)
    assert zip_region("85711") == "US-8" and zip_region("T8H1N") == "non-US"


def test_prepare_lands_days_selectively_and_idempotently(tmp_path: Path):
    first = prepare(tmp_path, until=date(1997, 9, 21))
    assert (first.first_day, first.last_day, first.days_written) == ("1997-09-20", "1997-09-21", 2)
    again = prepare(tmp_path, until=date(1997, 9, 21))
    assert (again.days_written, again.days_skipped) == (0, 2)
    one = prepare(tmp_path, day=date(1997, 9, 23))
    assert (one.first_day, one.last_day, one.days_written) == ("1997-09-23", "1997-09-23", 1)
    lines = event_file(tmp_path, date(1997, 9, 23)).read_text().splitlines()
    assert len(lines) == one.events and json.loads(lines[0])["source"] == "movielens-100k"
    assert len(timeline()) == 213
