"""The fixed offline evaluation protocol every UIG model and baseline is measured with.

Protocol (DESIGN.md "Models"): every interaction is an implicit, binary signal; one *global*
temporal split of all interactions (train = first 80 %, validation = next 10 %, test = last
10 %, by time); full ranking over the whole catalog with each user's earlier interactions
masked; Recall, NDCG, MRR, Hit and Precision at K plus item coverage, averaged over all target
users and over *warm* users (those with at least one training interaction).

Why these choices:

* a global time cut (not a per-user leave-last-out) is the only split where nothing a model
  fits on happened after something it is tested on — the situation the refresh pipeline is in;
* full ranking (no sampled negatives) because sampled metrics do not preserve model order
  (Krichene & Rendle, KDD 2020);
* the leakage guard :func:`check_no_leakage` makes "nothing at or after the window start went
  in" a checked fact rather than a convention.

A model is evaluated through the :class:`Scorer` protocol: it receives user indices *and* their
input history, so a user it never trained on can still be scored from their history (fold-in).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from uig_common.errors import InputError, UigError

__all__ = [
    "EmptyEvaluationError",
    "EvaluationInputError",
    "History",
    "Interactions",
    "LeakageError",
    "METRICS",
    "ScoreError",
    "Scorer",
    "Split",
    "EncodedSplit",
    "ValidationSet",
    "check_no_leakage",
    "metric_names",
    "coverage",
    "evaluate",
    "evaluate_all_and_warm",
    "hit_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "rank_items",
    "recall_at_k",
    "temporal_split",
]

COLUMNS = ("user", "item", "ts")
METRICS = ("recall", "ndcg", "mrr", "hit", "precision")


class EvaluationInputError(InputError):
    """An input to the protocol (frame, fractions, ids, users) is malformed."""


class LeakageError(UigError, ValueError):
    """A fit or input interaction lies at or after the start of the window being evaluated."""


class EmptyEvaluationError(InputError):
    """A window or user set to evaluate on is empty, so no metric can be computed."""


class ScoreError(UigError, ValueError):
    """A scorer returned scores of the wrong shape or with NaN values."""


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


def _as_history(value: History | Sequence[Collection[int]], n_items: int, what: str) -> History:
    if isinstance(value, History):
        if value.n_items != n_items:
            raise EvaluationInputError(f"{what} is over {value.n_items} items, the evaluation over {n_items}")
        return value
    return History.from_lists(value, n_items)


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


# --------------------------------------------------------------------------------------------
# Scorers


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores all items for a batch of users.

    ``score(users, history)`` gets global user indices [B] and the *input* history of every user
    (a :class:`History`: interactions strictly before the evaluated window) and returns float
    scores [B, n_items], higher is better. A user's scores may depend only on the model and on
    ``history.items_of(user)`` — so a user the model never trained on is scored from their
    history (fold-in) and results do not depend on batching. Must not modify its arguments;
    masking of history items is done by :func:`evaluate`.
    """

    def score(self, users: Tensor, history: History) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# Metrics


def rank_items(scores: Tensor, k: int) -> Tensor:
    """Top-``k`` item indices per row, best first; ties go to the lower item index.

    A stable descending sort rather than ``torch.topk``, whose order among equal scores is
    unspecified: popularity-like scorers have many ties, and the protocol must be deterministic.
    Entries whose score is ``-inf`` (masked) are returned as ``-1``.
    """
    if scores.dim() != 2:
        raise ScoreError(f"scores must be [n_users, n_items], got shape {tuple(scores.shape)}")
    k = min(k, scores.size(1))
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    ranked = order[:, :k].clone()
    ranked[values[:, :k] == float("-inf")] = -1
    return ranked


def _as_ranking(ranked_or_scores: Tensor, k: int) -> Tensor:
    if ranked_or_scores.is_floating_point():
        return rank_items(ranked_or_scores, k)
    if ranked_or_scores.dim() != 2:
        raise EvaluationInputError(f"ranked lists must be [n_users, K], got shape {tuple(ranked_or_scores.shape)}")
    return ranked_or_scores[:, :k].long()


def _hits(ranked: Tensor, relevant: Tensor | Sequence[Collection[int]]) -> tuple[Tensor, Tensor]:
    """hits [B, K] (float64, 1 where the ranked item is relevant) and |relevant| [B] (float64)."""
    valid = ranked >= 0
    if isinstance(relevant, Tensor):
        if relevant.dim() != 2 or relevant.size(0) != ranked.size(0):
            raise EvaluationInputError("relevant must be a [n_users, n_items] boolean matrix matching the ranking")
        rel = relevant.bool()
        hits = rel.gather(1, ranked.clamp_min(0)) & valid
        return hits.double(), rel.sum(1).double()
    if len(relevant) != ranked.size(0):
        raise EvaluationInputError(f"{len(relevant)} relevant sets for {ranked.size(0)} ranked lists")
    sets = [set(int(i) for i in r) for r in relevant]
    hits = torch.tensor([[int(i) in s for i in row] for row, s in zip(ranked.tolist(), sets)], dtype=torch.bool)
    hits = hits.reshape(ranked.shape) & valid
    return hits.double(), torch.tensor([len(s) for s in sets], dtype=torch.float64)


def _discounts(k: int) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))


def _metrics_from_hits(hits: Tensor, n_rel: Tensor, k: int) -> dict[str, Tensor]:
    """Per-user binary-relevance metrics at ``k`` from the first ``k`` columns of ``hits``; 0 where n_rel = 0."""
    h = hits[:, :k]
    found = h.sum(1)
    safe = n_rel.clamp_min(1)
    disc = _discounts(k)
    dcg = (h * disc[: h.size(1)]).sum(1)
    ideal_cum = torch.cat([torch.zeros(1, dtype=torch.float64), disc.cumsum(0)])
    idcg = ideal_cum[n_rel.clamp(max=k).long()]
    first = torch.where(h.any(1), h.argmax(1).double() + 1, torch.full_like(found, math.inf))
    has_rel = n_rel > 0
    zero = torch.zeros_like(found)
    return {
        "recall": torch.where(has_rel, found / safe, zero),
        "ndcg": torch.where(has_rel, dcg / idcg.clamp_min(1e-12), zero),
        "mrr": torch.where(has_rel, 1.0 / first, zero),
        "hit": (found > 0).double(),
        "precision": found / k,
    }


def recall_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user |top-k ∩ relevant| / |relevant| (0 for a user without relevant items).

    ``ranked_or_scores``: either ranked item indices [B, ≥k] (int; -1 = no item) or scores
    [B, n_items] (float; ranked with :func:`rank_items`). ``relevant``: bool [B, n_items] or one
    collection of item indices per user.
    """
    return _metric("recall", ranked_or_scores, relevant, k)


def precision_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user |top-k ∩ relevant| / k (same inputs as :func:`recall_at_k`)."""
    return _metric("precision", ranked_or_scores, relevant, k)


def hit_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user 1 if any relevant item is in the top k, else 0."""
    return _metric("hit", ranked_or_scores, relevant, k)


def mrr_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user 1 / rank of the first relevant item within the top k, 0 if there is none."""
    return _metric("mrr", ranked_or_scores, relevant, k)


def ndcg_at_k(ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    """Per-user binary NDCG: Σ_{rank r ≤ k, relevant} 1/log2(r+1) over the ideal DCG of min(|relevant|, k) hits."""
    return _metric("ndcg", ranked_or_scores, relevant, k)


def _metric(name: str, ranked_or_scores: Tensor, relevant: Tensor | Sequence[Collection[int]], k: int) -> Tensor:
    if k < 1:
        raise EvaluationInputError(f"k must be at least 1, got {k}")
    hits, n_rel = _hits(_as_ranking(ranked_or_scores, k), relevant)
    return _metrics_from_hits(hits, n_rel, k)[name]


def coverage(ranked_or_scores: Tensor, n_items: int, k: int) -> float:
    """Fraction of the ``n_items`` catalog that appears in at least one user's top k."""
    ranked = _as_ranking(ranked_or_scores, k)
    shown = ranked[ranked >= 0].unique()
    return float(shown.numel()) / n_items


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    scorer: Scorer,
    history: History | Sequence[Collection[int]],
    targets: History | Sequence[Collection[int]],
    n_items: int,
    ks: Sequence[int] = (10, 20),
    users: Sequence[int] | np.ndarray | Tensor | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Full-ranking metrics of ``scorer`` on ``targets``, averaged over users.

    For each evaluated user all ``n_items`` items are scored, the user's ``history`` items are
    masked with ``-inf`` and the top ``max(ks)`` are ranked (:func:`rank_items`). A target item
    that is also in the history cannot be recommended and is dropped; users are evaluated if
    they have at least one remaining target (``users`` restricts them further). Returns
    ``"{metric}@{k}"`` means for every metric in :data:`METRICS`, ``"coverage@{k}"`` over the
    evaluated users' lists, and ``"n_users"``.
    """
    hist = _as_history(history, n_items, "history")
    tgt = _as_history(targets, n_items, "targets")
    if hist.n_users != tgt.n_users:
        raise EvaluationInputError(f"history has {hist.n_users} users, targets {tgt.n_users}; use one user index")
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise EvaluationInputError(f"ks must be positive integers, got {ks}")
    candidates = tgt.users_with_items()
    if users is not None:
        wanted = np.asarray(users.cpu() if isinstance(users, Tensor) else users, dtype=np.int64)
        candidates = np.intersect1d(candidates, wanted)
    if candidates.size == 0:
        raise EmptyEvaluationError("no user to evaluate: none of the requested users has a target item")
    k_max = max(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in METRICS}
    shown = {k: torch.zeros(n_items, dtype=torch.bool) for k in ks}
    n_eval = 0
    with torch.no_grad():
        for start in range(0, candidates.size, batch_size):
            batch = torch.from_numpy(candidates[start : start + batch_size])
            scores = _checked_scores(scorer.score(batch, hist), len(batch), n_items)
            rows, items = hist.pairs(batch)
            scores[rows, items] = float("-inf")
            relevant = tgt.dense(batch, dtype=torch.bool)
            relevant[rows, items] = False  # a target already in the history cannot be recommended
            n_rel = relevant.sum(1)
            keep = n_rel > 0
            if not keep.any():
                continue
            ranked = rank_items(scores[keep], k_max)
            hits, n_rel_k = _hits(ranked, relevant[keep])
            n_eval += int(keep.sum())
            for k in ks:
                for m, values in _metrics_from_hits(hits, n_rel_k, k).items():
                    sums[f"{m}@{k}"] += float(values.sum())
                top = ranked[:, :k]
                shown[k][top[top >= 0]] = True
    if n_eval == 0:
        raise EmptyEvaluationError("every target of the requested users is already in their history")
    out = {name: total / n_eval for name, total in sums.items()}
    for k in ks:
        out[f"coverage@{k}"] = float(shown[k].sum()) / n_items
    out["n_users"] = float(n_eval)
    return out


def _checked_scores(scores: Tensor, n_users: int, n_items: int) -> Tensor:
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (n_users, n_items):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ScoreError(f"scorer returned {shape}, expected a [{n_users}, {n_items}] tensor")
    out = scores.detach().to(device="cpu", dtype=torch.float32).clone()  # never mask the scorer's own tensor
    if torch.isnan(out).any():
        raise ScoreError("scorer returned NaN scores; check the model for divergence or empty-history users")
    return out


def evaluate_all_and_warm(
    scorer: Scorer,
    history: History | Sequence[Collection[int]],
    targets: History | Sequence[Collection[int]],
    n_items: int,
    warm_users: Sequence[int] | np.ndarray | Tensor,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 512,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` over all target users and over the warm ones (``warm_users``: those with a training interaction)."""
    return {
        "all": evaluate(scorer, history, targets, n_items, ks, None, batch_size),
        "warm": evaluate(scorer, history, targets, n_items, ks, warm_users, batch_size),
    }


@dataclass(frozen=True)
class ValidationSet:
    """What early stopping evaluates on: input history (train), targets (validation) and users."""

    history: History
    targets: History
    users: np.ndarray | None = None

    @classmethod
    def from_split(cls, split: EncodedSplit) -> ValidationSet:
        """Train as input, the validation window as targets; checks the train side of the leakage guard."""
        check_no_leakage(split.train, split.valid_start, "train")
        return cls(split.train.history(), split.valid.history())

    def evaluate(self, scorer: Scorer, ks: Sequence[int] = (10,)) -> dict[str, float]:
        return evaluate(scorer, self.history, self.targets, self.history.n_items, ks, self.users)


def metric_names(ks: Sequence[int] = (10, 20)) -> list[str]:
    """The keys :func:`evaluate` returns, in a stable order."""
    return [f"{m}@{k}" for k in ks for m in METRICS] + [f"coverage@{k}" for k in ks]

