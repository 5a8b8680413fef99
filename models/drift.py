"""SYNTHETIC interest drift with a known answer: which users changed taste, when, and to what.

Real logs never say when a user's taste changed, so whether the refresh loop *follows* a change
cannot be measured on them. This simulator draws users whose latent interests (item genres) are
known; a share of them switches to new, disjoint interests at a known time. A pipeline that
reads the events can then be scored against the truth with :func:`recovery_table`.

The generative story, all of it seeded (same settings and catalog → identical frames):

* **Interests.** Each user holds ``interests_per_user`` genres, drawn uniformly among the genres
  with at least ``min_genre_items`` items (tiny genres such as MovieLens' ``unknown`` cannot
  carry a taste). A ``shift_share`` of the users switches, at a time drawn uniformly in
  ``shift_window`` (fractions of the timeline), to as many genres disjoint from the old ones.
* **Activity.** Events per user are lognormal (mean ``mean_events_per_user``, spread
  ``activity_sigma``; at least one): most users do little, a few do a lot. A shifted user gets at least
  ``min_events_each_side`` events before and after the shift, so the old taste is visible and
  the new one is there to find.
* **Sessions and visits.** A user's events come in sessions of ``session_items`` items, a few
  minutes apart (``session_gap_s``); sessions come in visits of about ``sessions_per_visit``
  sessions started within ``visit_hours``, each visit at a uniformly random time. So a user is
  active on a few days, not a little on every day: at the defaults about 4 % of the users act
  on a given day. A session and its visit lie wholly on one side of the user's shift.
* **Items.** With probability ``on_interest`` an event's item comes from one of the user's
  current genres, otherwise from the whole catalog. Popularity is Zipf-like (exponent
  ``popularity_exponent``) over a random permutation of the catalog, and the same weights rank
  the items inside a genre. A user may meet an item again (a re-watch).
* **Actions.** An event is a ``rate`` with probability ``rate_share``, else a ``view``; ratings
  (1-5) are higher when the item has one of the user's current genres.

Every id carries the ``syn-`` prefix and :class:`DriftWorld` says ``synthetic=True``: this data
is made up and must never be mistaken for behaviour of real people.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from uig_common.errors import InputError
from uig_common.timeutil import SECONDS_PER_DAY

__all__ = [
    "DriftInputError",
    "DriftSettings",
    "DriftWorld",
    "interest_recall",
    "recovery_table",
    "simulate_drift",
]

EVENT_COLUMNS = ("user_id", "item_id", "ts", "event_type", "rating", "session_id")
TRUTH_COLUMNS = ("user_id", "shifted", "shift_ts", "interests_before", "interests_after", "n_events")
RECOVERY_COLUMNS = ("users", "recall_new", "recovered_share", "recall_old")

# Rating distributions (P(1) .. P(5)): a user rates items of the genres they like higher.
_RATING_P_ON = np.array([0.02, 0.05, 0.18, 0.40, 0.35])
_RATING_P_OFF = np.array([0.10, 0.22, 0.36, 0.22, 0.10])


class DriftInputError(InputError):
    """A drift setting, catalog or ground-truth input is invalid."""


@dataclass(frozen=True)
class DriftSettings:
    """Knobs of the simulator; the defaults give ~2000 users over two months (see the module doc)."""

    n_users: int = 2000
    n_days: int = 60
    seed: int = 0
    interests_per_user: int = 2
    shift_share: float = 0.3
    shift_window: tuple[float, float] = (0.4, 0.7)  # shift times, as fractions of the timeline
    on_interest: float = 0.8
    mean_events_per_user: float = 40.0
    activity_sigma: float = 1.2  # lognormal sigma of events per user: the length of the tail
    session_items: tuple[int, int] = (1, 15)  # items per session, inclusive, uniform
    session_gap_s: float = 180.0  # mean seconds between two items of a session
    sessions_per_visit: float = 2.5  # a user's sessions come in visits of about this many
    visit_hours: float = 3.0  # sessions of one visit start within this many hours
    rate_share: float = 0.3
    popularity_exponent: float = 0.9
    min_genre_items: int = 20
    min_events_each_side: int = 3

    def check(self) -> None:
        """Raise :class:`DriftInputError` naming the first setting that cannot work."""
        for name in ("n_users", "n_days", "seed", "interests_per_user", "min_genre_items", "min_events_each_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise DriftInputError(f"{name} must be an integer, got {value!r}")
        for name in ("shift_window", "session_items"):
            if len(getattr(self, name)) != 2:
                raise DriftInputError(f"{name} must be a pair (start, end), got {getattr(self, name)!r}")
        if self.n_users < 1 or self.n_days < 1:
            raise DriftInputError(f"n_users and n_days must be >= 1, got {self.n_users} and {self.n_days}")
        if self.interests_per_user < 1:
            raise DriftInputError(f"interests_per_user must be >= 1, got {self.interests_per_user}")
        if not 0 <= self.shift_share <= 1:
            raise DriftInputError(f"shift_share must lie in [0, 1], got {self.shift_share}")
        lo, hi = self.shift_window
        if not 0 < lo <= hi < 1:
            raise DriftInputError(
                f"shift_window must satisfy 0 < start <= end < 1 (room before and after), got {self.shift_window}"
            )
        if not 0 <= self.on_interest <= 1:
            raise DriftInputError(f"on_interest must lie in [0, 1], got {self.on_interest}")
        if not (math.isfinite(self.mean_events_per_user) and self.mean_events_per_user >= 1):
            raise DriftInputError(f"mean_events_per_user must be >= 1, got {self.mean_events_per_user}")
        if not (math.isfinite(self.activity_sigma) and 0 <= self.activity_sigma <= 4):
            raise DriftInputError(f"activity_sigma must lie in [0, 4], got {self.activity_sigma}")
        smin, smax = self.session_items
        if not 1 <= smin <= smax <= 100:
            raise DriftInputError(f"session_items must satisfy 1 <= min <= max <= 100, got {self.session_items}")
        if not 1 <= self.session_gap_s <= 3600:
            raise DriftInputError(f"session_gap_s must lie in [1, 3600] seconds, got {self.session_gap_s}")
        if not 0 <= self.rate_share <= 1:
            raise DriftInputError(f"rate_share must lie in [0, 1], got {self.rate_share}")
        if not (math.isfinite(self.popularity_exponent) and self.popularity_exponent >= 0):
            raise DriftInputError(f"popularity_exponent must be >= 0, got {self.popularity_exponent}")
        if self.min_genre_items < 1 or self.min_events_each_side < 1:
            raise DriftInputError("min_genre_items and min_events_each_side must be >= 1")
        if not 1 <= self.sessions_per_visit <= 100 or not 0 < self.visit_hours <= 24:
            raise DriftInputError(
                f"sessions_per_visit must lie in [1, 100] and visit_hours in (0, 24], "
                f"got {self.sessions_per_visit} and {self.visit_hours}"
            )
        visit = self.visit_hours * 3600 + _longest_session(self)
        if visit >= min(lo, 1 - hi) * self.n_days * SECONDS_PER_DAY:
            raise DriftInputError("a visit would not fit before the earliest or after the latest shift; "
                                  "use more days, shorter visits or shorter sessions")

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able values (tuples as lists), e.g. for a ground-truth file."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True)
class DriftWorld:
    """What :func:`simulate_drift` made: the SYNTHETIC events and the truth behind them.

    ``events``: one row per event, ordered by time (ties: by user number), columns :data:`EVENT_COLUMNS`
    (``ts`` float epoch seconds, whole seconds; ``rating`` NaN unless ``event_type == 'rate'``).
    ``truth``: one row per user, columns :data:`TRUTH_COLUMNS` (``shift_ts`` NaN for users who do
    not shift; ``interests_after == interests_before`` for them).
    """

    events: pd.DataFrame
    truth: pd.DataFrame
    settings: DriftSettings
    start_ts: float
    synthetic: bool = True

    @property
    def end_ts(self) -> float:
        return self.start_ts + self.settings.n_days * SECONDS_PER_DAY

    def daily_active_share(self) -> pd.Series:
        """Share of all users with at least one event, per day of the timeline (index: day number)."""
        day = ((self.events["ts"].to_numpy() - self.start_ts) // SECONDS_PER_DAY).astype(np.int64)
        active = pd.Series(self.events["user_id"].to_numpy()).groupby(day).nunique()
        return active.reindex(range(self.settings.n_days), fill_value=0) / len(self.truth)

    def events_per_user(self) -> pd.Series:
        """Events of each user (index: user_id); every user has at least one."""
        return self.truth.set_index("user_id")["n_events"]


def _max_gap(mean_gap: float) -> float:
    """Gaps inside a session are capped (at five times their mean) so a session's length is bounded."""
    return 5.0 * mean_gap


def _longest_session(s: DriftSettings) -> float:
    """Seconds from the first to the last event of the longest possible session."""
    return (s.session_items[1] - 1) * _max_gap(s.session_gap_s)


def _eligible_genres(item_genres: Sequence[Sequence[str]], min_items: int) -> list[str]:
    counts: dict[str, int] = {}
    for genres in item_genres:
        for g in set(genres):
            counts[g] = counts.get(g, 0) + 1
    return sorted(g for g, n in counts.items() if n >= min_items)


def _session_sizes(rng: np.random.Generator, counts: np.ndarray, smin: int, smax: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each segment's ``counts[j] >= 1`` events into sessions of ``smin..smax`` events (the last
    one cut short). Returns (segment of each session, its size), segment by segment."""
    draws = -(-counts // smin)  # enough sessions to cover every segment even at the smallest size
    seg = np.repeat(np.arange(counts.size), draws)
    size = rng.integers(smin, smax + 1, size=seg.size)
    first = np.cumsum(draws) - draws
    ends = np.cumsum(size)
    ends -= np.repeat(ends[first] - size[first], draws)  # running total within each segment
    keep = ends - size < counts[seg]  # the session starts before the segment's events run out
    seg, size, ends = seg[keep], size[keep], ends[keep]
    size = size - np.maximum(0, ends - counts[seg])
    return seg, size


def simulate_drift(
    item_ids: Sequence[str], item_genres: Sequence[Sequence[str]], settings: DriftSettings, start_ts: float
) -> DriftWorld:
    """Draw a SYNTHETIC world of users, sessions and events over the given catalog (module doc).

    The timeline is ``[start_ts, start_ts + n_days days)``. Raises :class:`DriftInputError` for
    bad settings, a malformed catalog, or too few genres with ``min_genre_items`` items to give
    every user ``interests_per_user`` of them (twice that when anybody shifts: new interests are
    disjoint from old ones).
    """
    s = settings
    s.check()
    item_ids = [str(i) for i in item_ids]
    if len(item_ids) != len(item_genres):
        raise DriftInputError(f"{len(item_ids)} item ids but {len(item_genres)} genre lists")
    if len(set(item_ids)) != len(item_ids):
        raise DriftInputError("item ids must be unique")
    if not math.isfinite(start_ts):
        raise DriftInputError(f"start_ts must be finite epoch seconds, got {start_ts}")
    genres = _eligible_genres(item_genres, s.min_genre_items)
    needed = s.interests_per_user * (2 if s.shift_share > 0 else 1)
    if len(genres) < needed:
        raise DriftInputError(
            f"only {len(genres)} genres have >= {s.min_genre_items} items ({genres}); "
            f"{needed} are needed for interests_per_user={s.interests_per_user}"
        )
    rng = np.random.default_rng(s.seed)
    n_items, n_users, k = len(item_ids), s.n_users, s.interests_per_user
    span = s.n_days * SECONDS_PER_DAY
    start_ts = float(math.floor(start_ts))

    # Popularity: Zipf weights over a random permutation; a genre ranks its items by the same weights.
    weight = np.empty(n_items)
    weight[rng.permutation(n_items)] = 1.0 / np.arange(1, n_items + 1) ** s.popularity_exponent
    global_p = weight / weight.sum()
    genre_index = {g: n for n, g in enumerate(genres)}
    item_genre = np.zeros((n_items, len(genres)), dtype=bool)
    for i, gs in enumerate(item_genres):
        for g in gs:
            if g in genre_index:
                item_genre[i, genre_index[g]] = True
    members = [np.flatnonzero(item_genre[:, j]) for j in range(len(genres))]
    member_cdf = [np.cumsum(weight[m]) / weight[m].sum() for m in members]

    # Interests: the first k genres of a random permutation per user; a shifted user moves to the
    # next k, so old and new interests are disjoint.
    genre_order = np.argsort(rng.uniform(size=(n_users, len(genres))), axis=1)
    before = genre_order[:, :k]
    n_shifted = int(round(s.shift_share * n_users))
    shifted = np.zeros(n_users, dtype=bool)
    shifted[rng.choice(n_users, size=n_shifted, replace=False)] = True
    after = before.copy()
    if n_shifted:
        after[shifted] = genre_order[shifted, k : 2 * k]
    lo, hi = s.shift_window
    shift_ts = np.full(n_users, np.nan)
    shift_ts[shifted] = start_ts + np.floor(rng.uniform(lo, hi, size=n_shifted) * span)

    # Activity: lognormal events per user with the requested mean.
    mu = math.log(s.mean_events_per_user) - s.activity_sigma**2 / 2
    n_events = np.maximum(1, np.rint(rng.lognormal(mu, s.activity_sigma, size=n_users))).astype(np.int64)
    n_events[shifted] = np.maximum(n_events[shifted], 2 * s.min_events_each_side)

    # Segments: one per unshifted user (the whole timeline); two per shifted user, split at the
    # shift, with events shared in proportion to the time on each side (at least the minimum).
    end_ts = start_ts + span
    users = np.flatnonzero(~shifted)
    moved = np.flatnonzero(shifted)
    frac = (shift_ts[moved] - start_ts) / span
    n_before = np.clip(rng.binomial(n_events[moved], frac), s.min_events_each_side,
                       n_events[moved] - s.min_events_each_side)
    seg_user = np.concatenate([users, moved, moved])
    seg_phase = np.concatenate([np.zeros(users.size + moved.size, np.int64), np.ones(moved.size, np.int64)])
    seg_lo = np.concatenate([np.full(users.size + moved.size, start_ts), shift_ts[moved]])
    seg_hi = np.concatenate([np.full(users.size, end_ts), shift_ts[moved], np.full(moved.size, end_ts)])
    seg_count = np.concatenate([n_events[users], n_before, n_events[moved] - n_before])

    # Sessions inside segments, then events inside sessions.
    smin, smax = s.session_items
    sess_seg, sess_size = _session_sizes(rng, seg_count, smin, smax)
    n_total = int(sess_size.sum())
    ev_sess = np.repeat(np.arange(sess_size.size), sess_size)
    first = np.cumsum(sess_size) - sess_size  # index of each session's first event
    gaps = np.clip(np.rint(rng.exponential(s.session_gap_s, size=n_total)), 10, _max_gap(s.session_gap_s))
    gaps[first] = 0
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], sess_size)  # seconds since the session's first event

    # Visits: a segment's sessions are grouped into visits (a few hours of one day), so an active
    # user comes back on some days rather than a little every day.
    seg_sessions = np.bincount(sess_seg, minlength=seg_count.size)
    seg_visits = np.maximum(1, np.rint(seg_sessions / s.sessions_per_visit)).astype(np.int64)
    visit_seg = np.repeat(np.arange(seg_count.size), seg_visits)
    visit_span = s.visit_hours * 3600.0
    room = seg_hi[visit_seg] - seg_lo[visit_seg] - visit_span - _longest_session(s)
    visit_start = seg_lo[visit_seg] + np.floor(rng.uniform(size=visit_seg.size) * room)
    first_visit = np.cumsum(seg_visits) - seg_visits
    nth_visit = np.floor(rng.uniform(size=sess_size.size) * seg_visits[sess_seg]).astype(np.int64)
    sess_visit = first_visit[sess_seg] + nth_visit
    sess_start = visit_start[sess_visit] + np.floor(rng.uniform(size=sess_size.size) * visit_span)
    ts = sess_start[ev_sess] + offset

    ev_seg = sess_seg[ev_sess]
    ev_user = seg_user[ev_seg]
    ev_phase = seg_phase[ev_seg]
    current = np.where(ev_phase[:, None] == 1, after[ev_user], before[ev_user])  # [events, k] genre indices

    # Items: from a current interest genre with probability on_interest, else from the whole catalog.
    on = rng.uniform(size=n_total) < s.on_interest
    slot = rng.integers(0, k, size=n_total)
    chosen_genre = current[np.arange(n_total), slot]
    u01 = rng.uniform(size=n_total)
    item = rng.choice(n_items, size=n_total, p=global_p)
    for j in range(len(genres)):
        pick = on & (chosen_genre == j)
        if pick.any():
            pos = np.minimum(np.searchsorted(member_cdf[j], u01[pick], side="right"), members[j].size - 1)
            item[pick] = members[j][pos]
    matches = item_genre[item[:, None], current].any(axis=1)  # the item has a current interest genre

    # Actions and ratings.
    is_rate = rng.uniform(size=n_total) < s.rate_share
    on_stars = rng.choice(5, size=n_total, p=_RATING_P_ON) + 1
    off_stars = rng.choice(5, size=n_total, p=_RATING_P_OFF) + 1
    rating = np.where(is_rate, np.where(matches, on_stars, off_stars), np.nan).astype(np.float64)

    # Session ids count each user's sessions in time order.
    sess_user = seg_user[sess_seg]
    order = np.lexsort((sess_start, sess_user))
    nth = np.empty(sess_size.size, dtype=np.int64)
    user_first = np.searchsorted(sess_user[order], sess_user[order], side="left")
    nth[order] = np.arange(sess_size.size) - user_first

    user_names = np.array([f"syn-u{u}" for u in range(n_users)], dtype=object)
    sess_names = np.array([f"syn-u{u}-s{n}" for u, n in zip(sess_user, nth)], dtype=object)
    events = pd.DataFrame({
        "user_id": user_names[ev_user],
        "item_id": np.asarray(item_ids, dtype=object)[item],
        "ts": ts.astype(np.float64),
        "event_type": np.where(is_rate, "rate", "view").astype(object),
        "rating": rating,
        "session_id": sess_names[ev_sess],
    })
    events = events.iloc[np.lexsort((ev_user, ts))].reset_index(drop=True)

    names = np.asarray(genres, dtype=object)
    truth = pd.DataFrame({
        "user_id": user_names,
        "shifted": shifted,
        "shift_ts": shift_ts,
        "interests_before": [tuple(names[g]) for g in before],
        "interests_after": [tuple(names[g]) for g in after],
        "n_events": n_events,
    })
    return DriftWorld(events=events, truth=truth, settings=s, start_ts=start_ts)


# --------------------------------------------------------------------------------------------
# Scoring a pipeline against the truth


def _genre_name(name: str) -> str:
    """``genre:Drama`` (an interest id of the graph) and ``Drama`` (a genre name) mean the same."""
    return name.removeprefix("genre:")


def interest_recall(truth_row_or_genres: pd.Series | Mapping[str, object] | Sequence[str],
                    top_interests: Sequence[str]) -> float:
    """Share of the target genres found in ``top_interests``.

    The target is a truth row's ``interests_after`` (the user's interests at the end of the
    timeline), or the genres given directly. Cut ``top_interests`` to the top-k before calling.
    Names compare exactly, except that a ``genre:`` prefix is ignored on either side.
    """
    if isinstance(truth_row_or_genres, (pd.Series, Mapping)):
        target = truth_row_or_genres["interests_after"]
    else:
        target = truth_row_or_genres
    if isinstance(target, str) or isinstance(top_interests, str):
        raise DriftInputError("genres must be given as a sequence of names, not as one string")
    wanted = {_genre_name(g) for g in target}
    if not wanted:
        raise DriftInputError("no target interests to recall")
    found = wanted & {_genre_name(g) for g in top_interests}
    return len(found) / len(wanted)


def recovery_table(
    truth: pd.DataFrame, top_by_refresh: Mapping[int, Mapping[str, Sequence[str]]], k: int = 5
) -> pd.DataFrame:
    """How fast a pipeline's top interests follow the SYNTHETIC shifts, refresh by refresh.

    ``top_by_refresh[r][user_id]`` lists a user's interest names, best first, at the ``r``-th
    refresh after that user's shift (``r = 0``: the last refresh before it, ``r = 1``: the first
    refresh after it, ...). Only shifted users of ``truth`` count; other users are ignored. A
    listed user with an empty list counts as measured with nothing recovered. Per ``r`` (index):

    * ``users`` — shifted users measured at that refresh;
    * ``recall_new`` — mean over them of :func:`interest_recall` of ``interests_after`` in the
      top ``k``;
    * ``recovered_share`` — share of them with *all* of ``interests_after`` in the top ``k``;
    * ``recall_old`` — mean recall of ``interests_before`` in the top ``k`` (how much of the old
      taste is still shown).

    Rows without measured users hold NaN.
    """
    if k < 1:
        raise DriftInputError(f"k must be >= 1, got {k}")
    missing = [c for c in ("user_id", "shifted", "interests_before", "interests_after") if c not in truth.columns]
    if missing:
        raise DriftInputError(f"truth lacks columns {missing}; pass DriftWorld.truth")
    moved = truth[truth["shifted"].astype(bool)].set_index("user_id")
    rows = []
    for r in sorted(top_by_refresh):
        tops = top_by_refresh[r]
        new, old = [], []
        for user_id in moved.index.intersection(pd.Index(list(tops), dtype=object)):
            top = list(tops[user_id])[:k]
            new.append(interest_recall(moved.at[user_id, "interests_after"], top))
            old.append(interest_recall(moved.at[user_id, "interests_before"], top))
        rows.append({
            "users": len(new),
            "recall_new": float(np.mean(new)) if new else math.nan,
            "recovered_share": float(np.mean(np.asarray(new) == 1.0)) if new else math.nan,
            "recall_old": float(np.mean(old)) if old else math.nan,
        })
    table = pd.DataFrame(rows, columns=list(RECOVERY_COLUMNS), index=pd.Index(sorted(top_by_refresh), name="refresh"))
    return table.astype({"users": np.int64})
