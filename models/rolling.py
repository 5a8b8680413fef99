"""The rolling, refresh-by-refresh protocol: does a model follow the user as the user changes?

Over a window ``[start, end)`` cut into steps of ``step`` seconds, at each step start ``t``:

* **targets** — each user's distinct items in ``[t, t + step)`` that are not already in their
  history before ``t``; only users with an event before ``t`` count (a user-step);
* **input** — every event before ``t``; the models were fitted before ``start`` and are never
  refitted inside the window;
* **ranking** — the full catalog, each user's earlier items masked (the same mask, from the
  history up to ``t``, for every model and every variant), NDCG@10 / Recall@20 per user-step and
  coverage@10 (the share of the catalog in any top-10 list), pooled over user-steps.

Each model is scored in **variants** that differ only in how old its input is: ``fresh`` sees
every event before ``t`` (a graph refreshed at every step), ``stale`` sees only the events before
``start`` (a graph frozen at the window start), and ``every <interval>`` sees the events before
the last refresh at ``start + k · interval ≤ t``. All variants of all models are scored on the
same user-steps, so differences are paired: :func:`paired_bootstrap` gives their 95 % intervals
by resampling user-steps.

Models are :class:`RollingScorer` objects: ``score_at(users, inputs, as_of)`` with ``inputs``
holding every event strictly before ``as_of`` (checked here, the leakage guard of this protocol).
Run it on the validation window to choose settings and on the test window to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from uig_common.errors import InputError
from uig_common.names import ROLLING_STEPS

from models.evaluation import rank_items, ranking_metrics
from models.interactions import History, Interactions

__all__ = [
    "FRESH",
    "STALE",
    "STEPS",
    "RollingResult",
    "RollingScorer",
    "UserStepScores",
    "paired_bootstrap",
    "parse_step",
    "refresh_variants",
    "rolling_protocol",
]

#: Step names of ``uig evaluate --rolling --step`` in seconds.
STEPS: dict[str, float] = dict(ROLLING_STEPS)
#: Variant refresh intervals: ``FRESH`` refreshes at every step, ``STALE`` never.
FRESH, STALE = 0.0, math.inf


class RollingInputError(InputError):
    """The window, step, variants or a model's scores do not fit the protocol."""


class RollingScorer(Protocol):
    """A model as the rolling protocol calls it.

    ``score_at(users, inputs, as_of)`` returns float scores ``[len(users), n_items]`` for the user
    indices ``users`` from ``inputs`` — every event strictly before ``as_of``, over the index the
    model was fitted on. It must not mask: the protocol does.
    """

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor: ...


def parse_step(step: str | float) -> float:
    """``"1h" | "6h" | "1d" | "7d"`` (or seconds) → seconds."""
    if isinstance(step, str):
        if step not in STEPS:
            raise RollingInputError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
        return STEPS[step]
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise RollingInputError(f"step must be a positive number of seconds, got {step!r}")
    return float(step)


@dataclass(frozen=True)
class UserStepScores:
    """Per user-step metrics of one (model, variant), in the order of :attr:`RollingResult.user_steps`."""

    ndcg10: np.ndarray
    recall20: np.ndarray
    top10: np.ndarray  # [user-steps, 10] ranked item indices

    def summary(self, n_items: int) -> dict[str, float]:
        shown = np.unique(self.top10[self.top10 >= 0]) if self.top10.size else np.empty(0)
        return {"ndcg@10": float(self.ndcg10.mean()) if self.ndcg10.size else float("nan"),
                "recall@20": float(self.recall20.mean()) if self.recall20.size else float("nan"),
                "coverage@10": shown.size / n_items, "user_steps": float(self.ndcg10.size)}


@dataclass
class RollingResult:
    """Everything one run of the protocol measured, with the user-steps it measured on."""

    start: float
    end: float
    step: float
    n_items: int
    steps_with_targets: int = 0
    user_steps: list[tuple[float, int]] = field(default_factory=list)  # (step start, user)
    scores: dict[tuple[str, str], UserStepScores] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {variant: {"ndcg@10", "recall@20", "coverage@10", "user_steps"}}}``."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (model, variant), s in self.scores.items():
            out.setdefault(model, {})[variant] = s.summary(self.n_items)
        return out

    def compare(self, a: tuple[str, str], b: tuple[str, str], metric: str = "ndcg@10",
                n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
        """Paired bootstrap of ``a − b`` (and ``a / b``) on ``metric`` over the shared user-steps."""
        pick = (lambda s: s.ndcg10) if metric == "ndcg@10" else (lambda s: s.recall20)
        return paired_bootstrap(pick(self.scores[a]), pick(self.scores[b]), n_boot, seed)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a − b`` and ``a / b`` (ratio of means) with percentile 95 % intervals, resampling
    the paired units (user-steps) with replacement ``n_boot`` times from a seeded generator."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise RollingInputError("paired_bootstrap needs two equally long, non-empty 1-d arrays")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, a.size, size=(n_boot, a.size))
    mean_a, mean_b = a[draws].mean(1), b[draws].mean(1)
    diff = mean_a - mean_b
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean_b > 0, mean_a / mean_b, np.nan)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    r_lo, r_hi = np.nanpercentile(ratio, [2.5, 97.5]) if np.isfinite(ratio).any() else (math.nan, math.nan)
    return {"diff": float(a.mean() - b.mean()), "diff_lo": float(lo), "diff_hi": float(hi),
            "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else math.nan,
            "ratio_lo": float(r_lo), "ratio_hi": float(r_hi), "n": float(a.size)}


def _refresh_time(t: float, start: float, interval: float) -> float:
    """When the input of a variant refreshed every ``interval`` was last refreshed at step ``t``."""
    if interval == FRESH:
        return t
    if math.isinf(interval):
        return start
    return start + math.floor((t - start) / interval + 1e-9) * interval


class _Timeline:
    """The events sorted by time, so 'everything before t' is a prefix (no copy of the data per step)."""

    def __init__(self, events: Interactions) -> None:
        order = np.lexsort((events.item_ids, events.user_ids, events.ts))
        self.events = events
        self.user_ids, self.item_ids, self.ts = events.user_ids[order], events.item_ids[order], events.ts[order]
        self._cache: dict[float, Interactions] = {}

    def before(self, t: float) -> Interactions:
        if t not in self._cache:
            n = int(np.searchsorted(self.ts, t, side="left"))
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[t] = Interactions(self.user_ids[:n], self.item_ids[:n], self.ts[:n],
                                          self.events.users, self.events.items)
        return self._cache[t]

    def between(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.searchsorted(self.ts, [t0, t1], side="left")
        return self.user_ids[lo:hi], self.item_ids[lo:hi]


def _metrics(scores: Tensor, mask_rows: Tensor, mask_items: Tensor, relevant: Tensor) -> tuple[np.ndarray, ...]:
    """NDCG@10, Recall@20 and the top-10 of each row, the masked items ranked last."""
    scores = scores.detach().to("cpu", torch.float32).clone()
    if not torch.isfinite(scores).all():
        raise RollingInputError("a model returned non-finite scores")
    scores[mask_rows, mask_items] = float("-inf")
    ranked = rank_items(scores, 20)
    ndcg = ranking_metrics(ranked, relevant, 10)["ndcg"].numpy()
    recall = ranking_metrics(ranked, relevant, 20)["recall"].numpy()  # over all the step's new items
    top10 = torch.full((ranked.size(0), 10), -1, dtype=torch.long)
    top10[:, : min(10, ranked.size(1))] = ranked[:, :10]
    return ndcg, recall, top10.numpy()


def rolling_protocol(
    events: Interactions,
    start: float,
    end: float,
    step: float | str,
    models: Mapping[str, RollingScorer],
    variants: Mapping[str, float] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    batch_size: int = 1024,
) -> RollingResult:
    """Score every model in every variant on the user-steps of ``[start, end)`` (module docstring).

    ``events`` are all events of the data set (before and inside the window; later ones are
    ignored); ``variants`` maps a name to its refresh interval in seconds (:data:`FRESH`,
    :data:`STALE` or a number) — default ``{"fresh": FRESH, "stale": STALE}``.
    """
    step_s = parse_step(step)
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise RollingInputError(f"the window must satisfy start < end, got [{start}, {end})")
    variants = dict(variants or {"fresh": FRESH, "stale": STALE})
    if not models or not variants:
        raise RollingInputError("give at least one model and one variant")
    for name, interval in variants.items():
        if not (interval == FRESH or interval > 0):
            raise RollingInputError(f"variant {name!r}: refresh interval must be 0 (fresh), > 0 or inf, got {interval}")
    timeline = _Timeline(events)
    n_users, n_items = events.n_users, events.n_items
    result = RollingResult(start, end, step_s, n_items)
    parts: dict[tuple[str, str], list[tuple[np.ndarray, ...]]] = {(m, v): [] for m in models for v in variants}
    n_steps = math.ceil((end - start) / step_s)
    for k in range(n_steps):
        t = start + k * step_s
        t_end = min(t + step_s, end)
        target_users, target_items = timeline.between(t, t_end)
        if target_users.size == 0:
            continue
        before = timeline.before(t)
        history = History.from_pairs(before.user_ids, before.item_ids, n_users, n_items)
        targets = History.from_pairs(target_users, target_items, n_users, n_items)
        users = np.intersect1d(targets.users_with_items(), history.users_with_items())
        if users.size == 0:
            continue
        relevant = targets.dense(users, dtype=torch.bool)
        mask_rows, mask_items = history.pairs(users)
        relevant[mask_rows, mask_items] = False  # an item seen before t cannot be a target
        keep = relevant.any(1).numpy()
        users, relevant = users[keep], relevant[torch.from_numpy(keep)]
        if users.size == 0:
            continue
        mask_rows, mask_items = history.pairs(users)
        result.steps_with_targets += 1
        result.user_steps.extend((t, int(u)) for u in users)
        for variant, interval in variants.items():
            as_of = _refresh_time(t, start, interval)
            inputs = timeline.before(as_of)
            if inputs.ts.size and float(inputs.ts.max()) >= as_of:  # the protocol's own leakage guard
                raise RollingInputError(f"an input event at {inputs.ts.max()} is not before {as_of}")
            for name, model in models.items():
                for b in range(0, users.size, batch_size):
                    sl = slice(b, b + batch_size)
                    rows = (mask_rows >= b) & (mask_rows < b + batch_size)
                    scores = model.score_at(users[sl], inputs, as_of)
                    if tuple(scores.shape) != (users[sl].size, n_items):
                        raise RollingInputError(f"{name} returned scores of shape {tuple(scores.shape)}, "
                                                f"expected ({users[sl].size}, {n_items})")
                    parts[(name, variant)].append(_metrics(scores, mask_rows[rows] - b, mask_items[rows],
                                                           relevant[sl]))
        if k % max(1, n_steps // 20) == 0:
            progress(f"step {k + 1}/{n_steps}: {users.size} users, {len(result.user_steps)} user-steps so far")
    if not result.user_steps:
        raise RollingInputError("no user-step in the window: no user with an earlier event acted in it")
    for key, chunks in parts.items():
        result.scores[key] = UserStepScores(np.concatenate([c[0] for c in chunks]),
                                            np.concatenate([c[1] for c in chunks]),
                                            np.concatenate([c[2] for c in chunks]))
    return result


def refresh_variants(intervals: Sequence[str]) -> dict[str, float]:
    """``["never", "7d", "1d", ...]`` → variant name → refresh interval (seconds; never = :data:`STALE`)."""
    return {name: (STALE if name == "never" else parse_step(name)) for name in intervals}
