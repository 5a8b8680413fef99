"""MovieLens-100k (the copy shipped inside the ``recbole`` package) → UIG landing files.

Ratings become ``rate`` events with their real timestamps, one JSONL file per UTC day; items get
title, genres, year and their Freebase entities (with relation names); users keep age, gender
and occupation, and the zip code is generalised to a region. Nothing is invented.
recbole's code is never imported: its files are located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from uig_common.errors import UigError

log = logging.getLogger(__name__)

SOURCE = "movielens-100k"


class DatasetNotFoundError(UigError, FileNotFoundError):
    """The recbole package (and so the MovieLens files) is not installed."""


def movielens_dir() -> Path:
    spec = importlib.util.find_spec("recbole")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "package 'recbole' is not installed; run `bash infra/bootstrap.sh` "
            "(it installs recbole==1.2.1 --no-deps for its MovieLens-100k files)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise DatasetNotFoundError(f"MovieLens-100k files not found in {path}")
    return path


def _read(path: Path) -> list[dict[str, str]]:
    """Read a recbole atomic file: tab separated, header cells ``name:type``."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [cell.split(":")[0] for cell in next(reader)]
        return [dict(zip(header, row)) for row in reader]


def zip_region(zip_code: str) -> str:
    """US zip codes → their first digit's national area (e.g. ``US-9``); others → ``non-US``."""
    return f"US-{zip_code[0]}" if len(zip_code) == 5 and zip_code.isdigit() else "non-US"


@dataclass(frozen=True)
class PrepareResult:
    days_written: int
    days_skipped: int
    events: int
    items: int
    users: int
    first_day: str | None
    last_day: str | None


def rating_events(ml_dir: Path) -> dict[date, list[dict[str, object]]]:
    """All ratings as ``rate`` events, grouped by UTC day, ordered by (ts, user, item)."""
    by_day: dict[date, list[dict[str, object]]] = defaultdict(list)
    rows = _read(ml_dir / "ml-100k.inter")
    rows.sort(key=lambda r: (int(float(r["timestamp"])), int(r["user_id"]), int(r["item_id"])))
    for r in rows:
        ts = int(float(r["timestamp"]))
        by_day[datetime.fromtimestamp(ts, tz=timezone.utc).date()].append(
            {
                "event_id": f"ml100k-u{r['user_id']}-i{r['item_id']}",
                "user_id": r["user_id"],
                "event_type": "rate",
                "item_id": r["item_id"],
                "rating": float(r["rating"]),
                "ts": ts,
                "source": SOURCE,
            }
        )
    return by_day


def items(ml_dir: Path) -> list[dict[str, object]]:
    link = {r["item_id"]: r["entity_id"] for r in _read(ml_dir / "ml-100k.link")}
    by_head: dict[str, list[dict[str, str]]] = defaultdict(list)
    for t in _read(ml_dir / "ml-100k.kg"):
        if t["relation_id"].startswith("film.film."):  # forward relations: film → entity
            by_head[t["head_id"]].append({"relation": t["relation_id"], "entity_id": t["tail_id"]})
    out = []
    for r in _read(ml_dir / "ml-100k.item"):
        entity = link.get(r["item_id"])
        year = r.get("release_year", "")
        out.append(
            {
                "item_id": r["item_id"],
                "title": r["movie_title"],
                "genres": r["class"].split() if r.get("class") else [],
                "year": int(year) if year.isdigit() else None,
                "freebase_id": entity,
                "entities": sorted(by_head.get(entity, []), key=lambda e: (e["relation"], e["entity_id"]))
                if entity
                else [],
            }
        )
    return out


def users(ml_dir: Path) -> list[dict[str, object]]:
    return [
        {
            "user_id": r["user_id"],
            "age": int(r["age"]),
            "gender": r["gender"],
            "occupation": r["occupation"],
            "region": zip_region(r["zip_code"]),
        }
        for r in _read(ml_dir / "ml-100k.user")
    ]


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> bool:
    """Write rows; returns False (and leaves the file alone) when it already holds exactly them."""
    content = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    if path.exists() and path.read_text(encoding="utf-8") == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)  # atomic: an ingest never sees half a file
    return True


def event_file(landing_dir: Path, day: date) -> Path:
    return landing_dir / "events" / f"date={day.isoformat()}" / f"{SOURCE}-{day.isoformat()}.jsonl"


def prepare(
    landing_dir: Path, *, until: date | None = None, day: date | None = None, ml_dir: Path | None = None
) -> PrepareResult:
    """Land the catalog and the event days selected (all, ``<= until``, or exactly ``day``)."""
    ml_dir = ml_dir or movielens_dir()
    item_rows, user_rows = items(ml_dir), users(ml_dir)
    _write_jsonl(landing_dir / "catalog" / "items" / "items.jsonl", item_rows)
    _write_jsonl(landing_dir / "catalog" / "users" / "users.jsonl", user_rows)
    written = skipped = n_events = 0
    chosen: list[date] = []
    for d, events in sorted(rating_events(ml_dir).items()):
        if (day is not None and d != day) or (until is not None and d > until):
            continue
        chosen.append(d)
        n_events += len(events)
        if _write_jsonl(event_file(landing_dir, d), events):
            written += 1
        else:
            skipped += 1
    result = PrepareResult(
        days_written=written,
        days_skipped=skipped,
        events=n_events,
        items=len(item_rows),
        users=len(user_rows),
        first_day=chosen[0].isoformat() if chosen else None,
        last_day=chosen[-1].isoformat() if chosen else None,
    )
    log.info("landed MovieLens-100k: %s", result)
    return result


def timeline(ml_dir: Path | None = None) -> list[date]:
    """Every UTC day that has at least one rating."""
    return sorted(rating_events(ml_dir or movielens_dir()))


def next_day(landing_dir: Path, ml_dir: Path | None = None) -> date | None:
    """The first MovieLens day after the newest one already landed (the first day if none is); None at the end."""
    landed = [p.name.removeprefix("date=") for p in (landing_dir / "events").glob("date=*") if p.is_dir()]
    newest = max((date.fromisoformat(d) for d in landed), default=None)
    for d in timeline(ml_dir):
        if newest is None or d > newest:
            return d
    return None


def land_next_day(landing_dir: Path, ml_dir: Path | None = None) -> dict[str, object]:
    """Replay: land the next MovieLens day; ``{"day": ISO date or None, "events": n}`` (None: timeline done)."""
    day = next_day(landing_dir, ml_dir)
    if day is None:
        log.info("replay: every MovieLens day is landed already")
        return {"day": None, "events": 0}
    result = prepare(landing_dir, day=day, ml_dir=ml_dir)
    return {"day": day.isoformat(), "events": result.events}


def end_of_replayed_day(landed: dict[str, object]) -> datetime:
    """The "as of" time of a replay step: the end (UTC) of the day :func:`land_next_day` landed,
    or of the last MovieLens day once the replay is complete."""
    from uig_common.timeutil import parse_time

    day = landed.get("day") or timeline()[-1].isoformat()
    return parse_time(str(day), end_of_day=True)
