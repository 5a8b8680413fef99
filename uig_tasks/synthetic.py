"""SYNTHETIC behaviour events for scale and drift tests — clearly labelled, never mixed up with real data.

Every event carries ``"source": "synthetic"`` and ids prefixed ``syn-``. Items are the real
MovieLens-100k catalog (so events pass the unknown-item check); users, times and actions are
drawn from a seeded generator. :func:`generate` lands events for scale tests (item popularity
is Zipf-like, users' activity Pareto-skewed, each day's events in sessions of the users active
that day, so a day touches a realistic few percent of the users); :func:`generate_drift` lands the events of
:func:`models.drift.simulate_drift` — users whose interests change at known times — and writes
that ground truth beside the landing folder, where the ingest never looks.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from models.drift import DriftSettings, DriftWorld, simulate_drift
from uig_common.errors import InputError
from uig_tasks.movielens import items as movielens_items
from uig_tasks.movielens import movielens_dir, users as movielens_users, _write_jsonl

log = logging.getLogger(__name__)

SOURCE = "synthetic"
EVENT_MIX = {"view": 0.55, "click": 0.2, "rate": 0.12, "like": 0.06, "purchase": 0.03, "search": 0.04}
QUERIES = ("film noir", "space adventure", "romantic comedy", "crime thriller", "animated family", "war drama")
DEFAULT_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _read_catalog() -> list[dict[str, object]]:
    """The real MovieLens-100k items: synthetic events must name items the catalog knows."""
    return movielens_items(movielens_dir())


def _land_catalog(landing_dir: Path) -> list[dict[str, object]]:
    """Land the real item and user catalogs, as :mod:`uig_tasks.movielens` does; returns the items."""
    catalog = _read_catalog()
    _write_jsonl(landing_dir / "catalog" / "items" / "items.jsonl", catalog)
    _write_jsonl(landing_dir / "catalog" / "users" / "users.jsonl", movielens_users(movielens_dir()))
    return catalog


#: Mean events of one active user on one day: a day's events come from about events / this users.
SESSION_EVENTS = 20


def active_users(rng: np.random.Generator, user_p: np.ndarray, n_events: int, session_events: float) -> np.ndarray:
    """The distinct users active on a day of ``n_events`` events: about ``n_events / session_events``
    of them (at least one, at most all), drawn without replacement by activity ``user_p``."""
    n_active = min(len(user_p), max(1, round(n_events / session_events)))
    return rng.choice(len(user_p), size=n_active, replace=False, p=user_p)


def generate(
    landing_dir: Path,
    *,
    n_events: int,
    n_users: int,
    n_days: int,
    seed: int = 7,
    start: datetime | None = None,
    session_events: float = SESSION_EVENTS,
) -> dict[str, object]:
    """Land ``n_events`` synthetic events over ``n_days`` day files (plus the real catalog).

    Each day's events belong to that day's active users (:func:`active_users`), spread evenly
    among them, so about ``n_events / n_days / session_events`` users are touched a day — not
    nearly every user, as when each event's user is drawn on its own. The users' activity weights
    depend on ``seed`` and ``n_users`` only.
    """
    if n_events <= 0 or n_users <= 0 or n_days <= 0 or session_events <= 0:
        raise InputError("events, users, days and events per session must all be positive")
    start = start or DEFAULT_START
    catalog = _land_catalog(landing_dir)
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
        today = active_users(rng, user_p, int(count), session_events)
        users = today[rng.integers(0, len(today), size=count)]
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
    result = {"synthetic": True, "events": written, "users": n_users, "days": n_days, "first_day": f"{start:%Y-%m-%d}",
              "session_events": session_events}
    log.info("landed SYNTHETIC events: %s", result)
    return result


# --------------------------------------------------------------------------------------------
# Interest drift with ground truth


def _utc(start: datetime | None) -> datetime:
    start = start or DEFAULT_START
    return start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)


def _simulate(catalog: list[dict[str, object]], settings: DriftSettings, start: datetime) -> DriftWorld:
    ids = [str(item["item_id"]) for item in catalog]
    genres = [list(item.get("genres") or []) for item in catalog]
    return simulate_drift(ids, genres, settings, start.timestamp())


def drift_world(
    n_users: int, n_days: int, seed: int = 0, shift_share: float = 0.3, start: datetime | None = None
) -> DriftWorld:
    """The SYNTHETIC drift world over the real MovieLens catalog, in memory (no files written):
    the same events and truth :func:`generate_drift` lands for the same arguments."""
    settings = DriftSettings(n_users=n_users, n_days=n_days, seed=seed, shift_share=shift_share)
    return _simulate(_read_catalog(), settings, _utc(start))


def drift_truth_path(landing_dir: Path, seed: int) -> Path:
    """Where the ground truth goes: beside ``landing/``, never under it (the ingest scans landing)."""
    return landing_dir.parent / "synthetic" / f"drift-ground-truth-{seed}.json"


def _event_lines(world: DriftWorld, seed: int) -> dict[str, list[dict[str, object]]]:
    """The world's events as landing JSON, grouped by UTC day (``YYYY-MM-DD``)."""
    ev = world.events
    ts = ev["ts"].to_numpy().astype(np.int64)
    days = ts.astype("datetime64[s]").astype("datetime64[D]").astype(str)  # UTC days
    by_day: dict[str, list[dict[str, object]]] = {}
    columns = zip(ev["user_id"], ev["event_type"], ev["item_id"], ev["rating"], ts, days)
    for n, (user_id, kind, item_id, rating, seconds, day) in enumerate(columns):
        event: dict[str, object] = {
            "event_id": f"syn-drift-{seed}-{n}",
            "user_id": user_id,
            "event_type": kind,
            "ts": int(seconds),
            "source": SOURCE,
            "item_id": item_id,
        }
        if kind == "rate":
            event["rating"] = int(rating)
        by_day.setdefault(day, []).append(event)
    return by_day


def _truth_document(world: DriftWorld, start: datetime) -> dict[str, object]:
    users = [
        {
            "user_id": row.user_id,
            "shifted": bool(row.shifted),
            "shift_ts": int(row.shift_ts) if row.shifted else None,
            "interests_before": list(row.interests_before),
            "interests_after": list(row.interests_after),
            "n_events": int(row.n_events),
        }
        for row in world.truth.itertuples(index=False)
    ]
    return {
        "synthetic": True,
        "description": (
            "SYNTHETIC ground truth of models.drift.simulate_drift: made-up users whose latent "
            "interests (MovieLens genres) are known; shifted users switch to disjoint genres at "
            "shift_ts (epoch seconds). Not behaviour of real people."
        ),
        "source": SOURCE,
        "start": start.isoformat(),
        "settings": world.settings.as_dict(),
        "users": users,
    }


def generate_drift(
    landing_dir: Path,
    *,
    n_users: int,
    n_days: int,
    seed: int = 0,
    shift_share: float = 0.3,
    start: datetime | None = None,
) -> dict[str, object]:
    """Land SYNTHETIC events of users whose interests drift, plus the catalog, and the ground truth.

    Events go to ``landing/events/date=YYYY-MM-DD/synthetic-drift-YYYY-MM-DD.jsonl`` (days
    without events get no file); the truth (which users shift, when, from which genres to
    which) to :func:`drift_truth_path`, outside ``landing/``. ``start`` should be a UTC
    midnight (default 2024-01-01; naive means UTC) so simulated days are calendar days.
    """
    start = _utc(start)
    settings = DriftSettings(n_users=n_users, n_days=n_days, seed=seed, shift_share=shift_share)
    settings.check()  # before anything is written
    world = _simulate(_land_catalog(landing_dir), settings, start)
    for day, events in sorted(_event_lines(world, seed).items()):
        _write_jsonl(landing_dir / "events" / f"date={day}" / f"{SOURCE}-drift-{day}.jsonl", events)
    truth_path = drift_truth_path(landing_dir, seed)
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = truth_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_truth_document(world, start), indent=1) + "\n", encoding="utf-8")
    tmp.replace(truth_path)
    per_user = world.events_per_user()
    result: dict[str, object] = {
        "synthetic": True,
        "events": len(world.events),
        "users": n_users,
        "shifted_users": int(world.truth["shifted"].sum()),
        "days": n_days,
        "first_day": f"{start:%Y-%m-%d}",
        "active_share_median_day": float(world.daily_active_share().median()),
        "events_per_user_mean": float(per_user.mean()),
        "events_per_user_median": float(per_user.median()),
        "ground_truth": str(truth_path),
    }
    log.info("landed SYNTHETIC drift events (ground truth in %s): %s", truth_path, result)
    return result
