"""SYNTHETIC behaviour events for scale tests — clearly labelled, never mixed up with real data.

Every event carries ``"source": "synthetic"`` and ids prefixed ``syn-``. Items are the real
MovieLens-100k catalog (so events pass the unknown-item check); users, times and actions are
drawn from a seeded generator: item popularity is Zipf-like, users' activity is skewed.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from uig_common.errors import InputError
from uig_tasks.movielens import items as movielens_items
from uig_tasks.movielens import movielens_dir, users as movielens_users, _write_jsonl

log = logging.getLogger(__name__)

SOURCE = "synthetic"
EVENT_MIX = {"view": 0.55, "click": 0.2, "rate": 0.12, "like": 0.06, "purchase": 0.03, "search": 0.04}
QUERIES = ("film noir", "space adventure", "romantic comedy", "crime thriller", "animated family", "war drama")


def generate(
    landing_dir: Path, *, n_events: int, n_users: int, n_days: int, seed: int = 7, start: datetime | None = None
) -> dict[str, object]:
    """Land ``n_events`` synthetic events over ``n_days`` day files (plus the real catalog)."""
    if n_events <= 0 or n_users <= 0 or n_days <= 0:
        raise InputError("events, users and days must all be positive")
    start = start or datetime(2024, 1, 1, tzinfo=timezone.utc)
    ml = movielens_dir()
    catalog = movielens_items(ml)
    _write_jsonl(landing_dir / "catalog" / "items" / "items.jsonl", catalog)
    _write_jsonl(landing_dir / "catalog" / "users" / "users.jsonl", movielens_users(ml))
    item_ids = np.array([str(i["item_id"]) for i in catalog])
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, len(item_ids) + 1) ** 0.9
    item_p /= item_p.sum()
    user_p = rng.pareto(1.5, n_users) + 1
    user_p /= user_p.sum()
    types = np.array(list(EVENT_MIX))
    type_p = np.array(list(EVENT_MIX.values()))
    per_day = np.full(n_days, n_events // n_days)
    per_day[: n_events % n_days] += 1
    written = 0
    for day_index, count in enumerate(per_day):
        day = start + timedelta(days=day_index)
        users = rng.choice(n_users, size=count, p=user_p)
        items = rng.choice(len(item_ids), size=count, p=item_p)
        kinds = rng.choice(len(types), size=count, p=type_p)
        seconds = np.sort(rng.integers(0, 86_400, size=count))
        ratings = rng.integers(1, 6, size=count)
        base = int(day.timestamp())
        path = landing_dir / "events" / f"date={day:%Y-%m-%d}" / f"{SOURCE}-{day:%Y-%m-%d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for n in range(count):
                kind = types[kinds[n]]
                event: dict[str, object] = {
                    "event_id": f"syn-{seed}-{day_index}-{n}",
                    "user_id": f"syn-u{users[n]}",
                    "event_type": kind,
                    "ts": base + int(seconds[n]),
                    "source": SOURCE,
                }
                if kind == "search":
                    event["query"] = QUERIES[items[n] % len(QUERIES)]
                else:
                    event["item_id"] = item_ids[items[n]]
                if kind == "rate":
                    event["rating"] = int(ratings[n])
                fh.write(json.dumps(event) + "\n")
        written += int(count)
    result = {"synthetic": True, "events": written, "users": n_users, "days": n_days, "first_day": f"{start:%Y-%m-%d}"}
    log.info("landed SYNTHETIC events: %s", result)
    return result
