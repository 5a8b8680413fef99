"""Interactions, input histories and the global temporal split with its leakage guard.

The data side of the offline protocol (:mod:`models.evaluation` holds the scoring side:
scorers, metrics, ``evaluate``). Frames entering here have the protocol's columns
:data:`COLUMNS` (``user``, ``item``, ``ts``); the one mapping from the tables' names to these is
:func:`models.snapshot.protocol_frame`. Why a *global* time cut and the leakage guard: see
:mod:`models.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from uig_common.errors import InputError, UigError

__all__ = [
    "COLUMNS",
    "EmptyEvaluationError",
    "EncodedSplit",
    "EvaluationInputError",
    "History",
    "Interactions",
    "LeakageError",
    "Split",
    "check_no_leakage",
    "temporal_split",
]

#: The columns of an interaction frame: user id, item id, time (epoch seconds or datetimes).
COLUMNS = ("user", "item", "ts")


class EvaluationInputError(InputError):
    """An input to the protocol (frame, fractions, ids, users) is malformed."""


class LeakageError(UigError, ValueError):
    """A fit or input interaction lies at or after the start of the window being evaluated."""


class EmptyEvaluationError(InputError):
    """A window or user set to evaluate on is empty, so no metric can be computed."""



# --------------------------------------------------------------------------------------------
# Time


def _seconds(values: object) -> np.ndarray:
    """Timestamps as float64 epoch seconds: numbers pass through, datetimes are converted (naive = UTC)."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    try:
        stamps = pd.to_datetime(pd.Series(arr.ravel()), utc=True)
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(
            f"timestamps must be epoch seconds or datetimes, got dtype {arr.dtype}: {exc}"
        ) from exc
    if stamps.isna().any():
        raise EvaluationInputError("timestamps contain missing values; drop or fix those rows first")
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return (ns / 1e9).reshape(arr.shape)


def _scalar_seconds(value: object) -> float:
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return float(_seconds(np.asarray([value]))[0])


# --------------------------------------------------------------------------------------------
# Histories (CSR over the global user index)


@dataclass(frozen=True)
class History:
    """Each user's distinct items, as CSR rows over the global user and item index.

    Row ``u`` holds the sorted, de-duplicated item indices of user ``u`` (binary relevance: a
    repeated interaction counts once). Used both for the *input* history a scorer sees and for
    the *targets* of a window.
    """

    indptr: np.ndarray
    indices: np.ndarray
    n_items: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indptr", np.asarray(self.indptr))
        object.__setattr__(self, "indices", np.asarray(self.indices))
        if self.indptr.ndim != 1 or self.indptr.size == 0 or self.indptr[0] != 0 or self.indptr[-1] != self.indices.size:
            raise EvaluationInputError("History.indptr must start at 0 and end at len(indices)")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.n_items):
            raise EvaluationInputError(f"History item indices must lie in [0, {self.n_items})")
        for name in ("indptr", "indices"):  # own, read-only copies: callers' arrays stay theirs
            arr = np.array(getattr(self, name), dtype=np.int64, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> History:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise EvaluationInputError("users and items must have the same length")
        if users.size and (users.min() < 0 or users.max() >= n_users):
            raise EvaluationInputError(f"user indices must lie in [0, {n_users})")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise EvaluationInputError(f"History item indices must lie in [0, {n_items})")
        keys = np.unique(users * n_items + items)  # de-duplicates and sorts by (user, item)
        rows, cols = keys // n_items, keys % n_items
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        return cls(indptr, cols.astype(np.int64), n_items)

    @classmethod
    def from_lists(cls, lists: Sequence[Collection[int]], n_items: int) -> History:
        users = np.repeat(np.arange(len(lists), dtype=np.int64), [len(x) for x in lists])
        items = np.fromiter((int(i) for x in lists for i in x), dtype=np.int64, count=int(users.size))
        return cls.from_pairs(users, items, len(lists), n_items)

    @classmethod
    def empty(cls, n_users: int, n_items: int) -> History:
        return cls(np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), n_items)

    @property
    def n_users(self) -> int:
        return self.indptr.size - 1

    @property
    def n_pairs(self) -> int:
        return int(self.indices.size)

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def users_with_items(self) -> np.ndarray:
        return np.flatnonzero(self.lengths() > 0)

    def to_lists(self) -> list[list[int]]:
        return [self.items_of(u).tolist() for u in range(self.n_users)]

    def pairs(self, users: Tensor | np.ndarray | None = None) -> tuple[Tensor, Tensor]:
        """(row, item) LongTensors of the given users' histories; ``row`` is the position in ``users``."""
        if users is None:
            rows = np.repeat(np.arange(self.n_users), self.lengths())
            return torch.from_numpy(rows), torch.from_numpy(self.indices.copy())
        u = np.asarray(users.cpu() if isinstance(users, Tensor) else users, dtype=np.int64)
        if u.size and (u.min() < 0 or u.max() >= self.n_users):
            raise EvaluationInputError(f"user indices must lie in [0, {self.n_users}) of this history")
        starts, ends = self.indptr[u], self.indptr[u + 1]
        counts = ends - starts
        rows = np.repeat(np.arange(u.size), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        items = self.indices[np.repeat(starts, counts) + offsets]
        return torch.from_numpy(rows), torch.from_numpy(items.astype(np.int64))

    def dense(self, users: Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        """Binary [len(users), n_items] matrix of the users' items."""
        rows, items = self.pairs(users)
        out = torch.zeros(len(users), self.n_items, dtype=dtype)
        out[rows, items] = 1
        return out


# --------------------------------------------------------------------------------------------
# Interactions and the temporal split


@dataclass(frozen=True)
class Interactions:
    """Interactions as integer indices over a fixed user and item index, with timestamps.

    ``user_ids`` / ``item_ids`` are *indices* (int64) into ``users`` / ``items`` (the raw ids,
    index → id); ``ts`` is float64 epoch seconds. Every frame of one split shares the same
    ``users`` and ``items`` tuples, so indices mean the same thing in train, valid and test.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ts: np.ndarray
    users: tuple[Hashable, ...]
    items: tuple[Hashable, ...]

    def __post_init__(self) -> None:
        if not (np.shape(self.user_ids) == np.shape(self.item_ids) == np.shape(self.ts)):
            raise EvaluationInputError("user_ids, item_ids and ts must have the same length")
        for name, dtype in (("user_ids", np.int64), ("item_ids", np.int64), ("ts", np.float64)):
            arr = np.array(getattr(self, name), dtype=dtype, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name, idx, size in (("user", self.user_ids, len(self.users)), ("item", self.item_ids, len(self.items))):
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise EvaluationInputError(f"{name} indices must lie in [0, {size}) (the length of the {name} index)")

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        users: Sequence[Hashable] | None = None,
        items: Sequence[Hashable] | None = None,
    ) -> Interactions:
        """Index a (user, item, ts) frame; ``users`` / ``items`` fix the index (default: sorted ids in ``df``)."""
        _check_frame(df, allow_empty=True)
        users_t = tuple(sorted(df["user"].unique().tolist())) if users is None else tuple(users)
        items_t = tuple(sorted(df["item"].unique().tolist())) if items is None else tuple(items)
        u = pd.Index(users_t).get_indexer(df["user"])
        i = pd.Index(items_t).get_indexer(df["item"])
        for name, idx, col in (("user", u, "user"), ("item", i, "item")):
            if (idx < 0).any():
                missing = df.loc[idx < 0, col].unique()[:5].tolist()
                raise EvaluationInputError(
                    f"{int((idx < 0).sum())} rows have a {name} outside the given index (e.g. {missing}); "
                    f"build the index from the full data set (Split.encode does)"
                )
        return cls(u.astype(np.int64), i.astype(np.int64), _seconds(df["ts"]), users_t, items_t)

    def __len__(self) -> int:
        return int(self.ts.size)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def user_index(self) -> dict[Hashable, int]:
        return {u: k for k, u in enumerate(self.users)}

    @cached_property
    def item_index(self) -> dict[Hashable, int]:
        return {i: k for k, i in enumerate(self.items)}

    def history(self) -> History:
        return History.from_pairs(self.user_ids, self.item_ids, self.n_users, self.n_items)

    def last_events(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each (user, item) pair of ``users`` once, with the time of its latest event:
        ``(rows, items, last_ts)`` where ``rows`` is the position in ``users``, sorted by row."""
        users = np.asarray(users, dtype=np.int64)
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        pos = np.searchsorted(sorted_users, self.user_ids)
        pos = np.minimum(pos, max(users.size - 1, 0))
        hit = (sorted_users[pos] == self.user_ids) if users.size else np.zeros(self.user_ids.size, dtype=bool)
        rows = order[pos[hit]]
        items, ts = self.item_ids[hit], self.ts[hit]
        keys = rows * self.n_items + items
        by_key = np.lexsort((-ts, keys))  # per key, the latest event first
        first = np.r_[True, keys[by_key][1:] != keys[by_key][:-1]] if keys.size else np.zeros(0, dtype=bool)
        pick = by_key[first]
        return rows[pick], items[pick], ts[pick]

    def active_users(self) -> np.ndarray:
        """Sorted indices of users with at least one interaction here."""
        return np.unique(self.user_ids)

    def concat(self, other: Interactions) -> Interactions:
        """Both sets of interactions (same index required), e.g. train + validation as test-time input."""
        if self.users != other.users or self.items != other.items:
            raise EvaluationInputError("interactions over different user/item indices cannot be concatenated")
        return Interactions(
            np.concatenate([self.user_ids, other.user_ids]),
            np.concatenate([self.item_ids, other.item_ids]),
            np.concatenate([self.ts, other.ts]),
            self.users,
            self.items,
        )


def _check_frame(df: pd.DataFrame, allow_empty: bool = False) -> None:
    if not isinstance(df, pd.DataFrame):
        raise EvaluationInputError(f"expected a pandas DataFrame with columns {COLUMNS}, got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise EvaluationInputError(f"frame lacks columns {missing}; rename to (user, item, ts) first")
    if not allow_empty and df.empty:
        raise EmptyEvaluationError("no interactions to split")
    if df[list(COLUMNS)].isna().any().any():
        raise EvaluationInputError("user, item or ts has missing values; drop or fix those rows first")


@dataclass(frozen=True)
class EncodedSplit:
    """A :class:`Split` as :class:`Interactions` over one shared index; cuts in epoch seconds."""

    train: Interactions
    valid: Interactions
    test: Interactions
    valid_start: float
    test_start: float

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @cached_property
    def before_test(self) -> Interactions:
        """Everything before the test window (train + validation): the allowed test-time *input*."""
        return self.train.concat(self.valid)


@dataclass(frozen=True)
class Split:
    """Train / validation / test frames of one global temporal split and the two cut times.

    ``valid_start`` and ``test_start`` are timestamps (in the frames' ``ts`` type):
    train is ``ts < valid_start``, validation ``valid_start <= ts < test_start``, test
    ``ts >= test_start``.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_start: object
    test_start: object
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def encode(
        self, users: Sequence[Hashable] | None = None, items: Sequence[Hashable] | None = None
    ) -> EncodedSplit:
        """Index all three windows over one index (default: every user / item seen in any window).

        Pass ``items`` (e.g. the whole catalog) to rank over items nobody interacted with too.
        """
        everything = pd.concat([self.train, self.valid, self.test], ignore_index=True)
        users_t = tuple(sorted(everything["user"].unique().tolist())) if users is None else tuple(users)
        items_t = tuple(sorted(everything["item"].unique().tolist())) if items is None else tuple(items)
        return EncodedSplit(
            Interactions.from_frame(self.train, users_t, items_t),
            Interactions.from_frame(self.valid, users_t, items_t),
            Interactions.from_frame(self.test, users_t, items_t),
            _scalar_seconds(self.valid_start),
            _scalar_seconds(self.test_start),
        )


def temporal_split(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Global temporal split of all interactions into train / validation / test.

    Interactions are ordered by (ts, user, item) — the (user, item) tie-break makes the order,
    and so the frames' row order, independent of the input order. The cuts sit at the
    timestamps of the interactions at positions ``round(f_train·n)`` and
    ``round((f_train+f_valid)·n)``; every interaction *at* a cut timestamp goes to the later
    window, so one second never straddles two windows (otherwise ``ts < window start`` could not
    hold for the inputs and the leakage guard would rightly fail). Proportions are therefore
    exact up to the ties at the two cut timestamps.
    """
    _check_frame(df)
    if len(fractions) != 3 or any((not math.isfinite(f)) or f <= 0 for f in fractions):
        raise EvaluationInputError(f"fractions must be three positive numbers, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise EvaluationInputError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
    ordered = df.loc[:, list(COLUMNS)].sort_values(["ts", "user", "item"], kind="mergesort").reset_index(drop=True)
    n = len(ordered)
    ts = ordered["ts"]
    cut1 = int(round(fractions[0] * n))
    cut2 = int(round((fractions[0] + fractions[1]) * n))
    if not 0 < cut1 < cut2 < n:
        raise EmptyEvaluationError(f"{n} interactions are too few to split by {fractions}; every window would need one")
    valid_start, test_start = ts.iloc[cut1], ts.iloc[cut2]
    train = ordered[ts < valid_start]
    valid = ordered[(ts >= valid_start) & (ts < test_start)]
    test = ordered[ts >= test_start]
    for name, frame in (("train", train), ("validation", valid), ("test", test)):
        if frame.empty:
            raise EmptyEvaluationError(
                f"the {name} window is empty: too many interactions share the cut timestamps "
                f"({valid_start!r}, {test_start!r}); use more data or different fractions"
            )
    check_no_leakage(train, valid_start, "train")  # holds by construction; checked, not assumed
    check_no_leakage(valid, test_start, "validation")
    return Split(train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True),
                 valid_start, test_start, tuple(fractions))


def check_no_leakage(
    inputs: Interactions | pd.DataFrame | np.ndarray | Sequence[float], window_start: object, what: str = "input"
) -> None:
    """Raise :class:`LeakageError` if any fit/input interaction has ``ts >= window_start``.

    Call it on whatever a model is fitted on or given as input before it is evaluated on the
    window that starts at ``window_start`` (train before validation; train + validation before
    test).
    """
    if isinstance(inputs, Interactions):
        ts = inputs.ts
    elif isinstance(inputs, pd.DataFrame):
        if "ts" not in inputs.columns:
            raise EvaluationInputError("the frame given to check_no_leakage has no 'ts' column")
        ts = _seconds(inputs["ts"])
    else:
        ts = _seconds(np.asarray(inputs))
    start = _scalar_seconds(window_start)
    late = ts >= start
    if late.any():
        raise LeakageError(
            f"{int(late.sum())} of {ts.size} {what} interactions are at or after the window start "
            f"{window_start!r} (latest {float(ts.max())}); fit and input data must end strictly before "
            f"the window being evaluated"
        )

