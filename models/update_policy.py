"""A learned update policy for each user's interest profile: the replay environment and its learners.

At every refresh (the end of a step of ``step`` seconds) each *dirty* user — one with events in
the step just ended — gets one :class:`UpdateAction` that edits their profile (the user's part
of the interest graph: weighted items). The reward of an action is NDCG@10 of the ranking the
updated profile gives (the fitted scorer's :meth:`score_profiles`, the popularity prior at the
refresh, the full catalog with the user's earlier items masked) against the user's new items the
*next time they act* (the first later step with their events, up to the window's end: the profile
does not change until then, so that is when this refresh's graph is judged), minus ``churn_cost``
times the share of the profile the action moved (:func:`profile_churn`: 0 for ``keep``, about 1
for a profile replaced by the step's items). That stability term is the product's: a graph that
is rewritten at every refresh makes recommendations flicker and costs writes, so a rewrite must
buy at least ``churn_cost`` NDCG@10; with ``churn_cost = 0`` the reward is NDCG@10 alone. The scorer's weight
of the prior is the caller's: :func:`choose_reward_prior_weight` picks it on a training window,
since at the weight trained for ranking every user the prior can drown the profile and every
update would earn the same. A fixed rule (always rebuild, never forget, …) is wrong for someone whose taste
just moved or for someone whose step was a burst of noise; a policy that reads the step can
choose per user.

Actions (:data:`ACTIONS`, ten in all; the add / delete / modify of a profile):

* ``keep`` — the profile stays as it was; the step's events are ignored;
* ``rebuild`` — the profile is rebuilt from the user's whole history before the refresh, each
  item weighted ``decay_factor(age, fold_in_half_life_days)`` relative to the newest item, the
  way the scorer folds a user in;
* ``decay_<h>_<admit>`` for half-life ``h`` in 1 h, 1 d, 7 d, ∞ and admit in ``top3`` (the
  step's three most recent distinct items) or ``all`` (every item of the step): every existing
  weight is multiplied by ``decay_factor(time since the profile was last updated, h)`` (∞: kept
  as is), each admitted item is set to weight 1 (added, or refreshed when already present), and
  weights below ``prune`` (0.05) times the row's largest weight are deleted.

State (:data:`FEATURE_NAMES`, float32, each a share, a cosine distance or ``log1p`` of a count
or duration divided by a fixed scale so that it lies in about [0, 1]):

``step_events`` events in the step, ``hours_since_prev_event`` from the user's last event before
the step to the step's start (1 when there is none), ``new_taste_share`` share of the step's
distinct items whose embedding has cosine below ``new_taste_cosine`` to the profile's mean
embedding (1 for an empty profile), ``revisit_share`` share of the step's items already in the profile, ``taste_drift``
1 − cosine between the step's and the profile's mean embeddings, ``profile_entropy`` entropy of
the normalised weights over log(n_items), ``profile_size``, ``profile_age_days`` weight-averaged
age of the profile's entries, ``hours_since_update`` since the profile was last rewritten, and
``user_steps`` the user's dirty steps so far in the window. Ratings are not in
:class:`~models.interactions.Interactions`, so no rating features.

The environment is a *replay* of logged events with a known, fixed model, so the reward of every
action is computable, not only of the one taken: at each step the environment scores the profile
each action would give (one ``score_profiles`` call per action per step for all dirty users) and
also computes the state each action would lead to at the user's next dirty step (the profile does
not change between a user's dirty steps). Training is therefore **off-policy from replayed
transitions with the counterfactual rewards and next states of every action**, while the profile
that is carried over to the next step follows the *behaviour* policy's action (ε-greedy during
training). Only user-steps whose user acts again inside the window with new items are scored
(give a transition); every
dirty user's profile is still updated, so the carry-over is complete. Which user-steps are scored
depends on events only, never on actions, so every policy is measured on the same user-steps.

A policy trained on earlier steps and users should be evaluated on later steps (the caller's
``start`` / ``end``) and on held-out users (:func:`split_users`, :func:`check_disjoint`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from uig_common.errors import InputError
from uig_common.timeutil import SECONDS_PER_DAY, decay_factor

from models.evaluation import rank_items, ranking_metrics
from models.interactions import Interactions
from models.rolling import paired_bootstrap
from models.scoring import popularity_prior

__all__ = [
    "ACTIONS",
    "DEFAULT_ACTION",
    "FEATURE_NAMES",
    "DQNConfig",
    "PolicyEnvironment",
    "PolicyInputError",
    "Profiles",
    "QPolicy",
    "REWARD_PRIOR_WEIGHTS",
    "StepReplay",
    "UpdateAction",
    "check_disjoint",
    "choose_reward_prior_weight",
    "compare_to_best_fixed",
    "double_dqn_targets",
    "evaluate_policies",
    "profile_churn",
    "rebuild_profiles",
    "refresh_decisions",
    "split_users",
    "state_features",
    "train_bandit",
    "train_dqn",
    "update_profiles",
]

HOUR = 3_600.0
POLICY_STATE_FORMAT = 1


class PolicyInputError(InputError):
    """The events, window, users, actions or a policy's choices do not fit the update-policy setup."""


# --------------------------------------------------------------------------------------------
# Actions and profiles


@dataclass(frozen=True)
class UpdateAction:
    """One way to update a profile at a refresh (module docstring).

    ``kind`` is ``"keep"``, ``"rebuild"`` or ``"decay"``; ``half_life_days`` (``None`` = no decay)
    and ``admit`` (``None`` = every item of the step) apply to ``"decay"``; ``prune`` deletes
    weights below that share of the row's largest weight.
    """

    name: str
    half_life_days: float | None = None
    admit: int | None = None
    prune: float = 0.0
    kind: str = "decay"


def _decay_actions() -> tuple[UpdateAction, ...]:
    out = []
    for label, half_life in (("1h", 1 / 24), ("1d", 1.0), ("7d", 7.0), ("inf", None)):
        for admit_label, admit in (("top3", 3), ("all", None)):
            out.append(UpdateAction(f"decay_{label}_{admit_label}", half_life, admit, 0.05))
    return tuple(out)


#: The discrete action set (module docstring); a policy returns indices into it.
ACTIONS: tuple[UpdateAction, ...] = (
    UpdateAction("keep", kind="keep"),
    UpdateAction("rebuild", kind="rebuild"),
    *_decay_actions(),
)

#: Names of the state features, in the order of the state vector (module docstring).
FEATURE_NAMES: tuple[str, ...] = (
    "step_events",
    "hours_since_prev_event",
    "new_taste_share",
    "revisit_share",
    "taste_drift",
    "profile_entropy",
    "profile_size",
    "profile_age_days",
    "hours_since_update",
    "user_steps",
)


@dataclass(frozen=True)
class Profiles:
    """Dense profiles of some users: ``weights`` [n, n_items] (0 = not in the profile),
    ``touched`` [n, n_items] when each entry was last set (event time; NaN where absent) and
    ``updated_at`` [n] the time the weights are expressed at (the last rewrite)."""

    weights: np.ndarray
    touched: np.ndarray
    updated_at: np.ndarray

    def rows(self, index: np.ndarray) -> Profiles:
        return Profiles(self.weights[index], self.touched[index], self.updated_at[index])


def rebuild_profiles(last_touch: np.ndarray, refresh_ts: float, half_life_days: float) -> Profiles:
    """Full-history profiles: each item ever touched, weighted by recency relative to the user's
    newest item (``last_touch`` [n, n_items], NaN = never), as the scorer's fold-in weighs them."""
    present = ~np.isnan(last_touch)
    newest = np.where(present, last_touch, -np.inf).max(axis=1, keepdims=True)
    age = np.where(present, newest - np.where(present, last_touch, 0.0), 0.0)
    weights = np.where(present, decay_factor(age, half_life_days), 0.0)
    return Profiles(weights, np.where(present, last_touch, np.nan), np.full(last_touch.shape[0], refresh_ts))


def update_profiles(
    action: UpdateAction,
    profiles: Profiles,
    step_last_ts: np.ndarray,
    last_touch: np.ndarray,
    refresh_ts: float,
    fold_in_half_life_days: float,
) -> Profiles:
    """The profiles after ``action`` at ``refresh_ts``.

    ``step_last_ts`` [n, n_items] is each item's latest event time in the step (NaN = not in the
    step); ``last_touch`` the same over the whole history before the refresh (for ``rebuild``).
    """
    if action.kind == "keep":
        return profiles
    if action.kind == "rebuild":
        rebuilt = rebuild_profiles(last_touch, refresh_ts, fold_in_half_life_days)
        return _prune(rebuilt, action.prune)
    if action.kind != "decay":
        raise PolicyInputError(f"unknown action kind {action.kind!r}; use keep, rebuild or decay")
    weights = profiles.weights.copy()
    if action.half_life_days is not None:
        elapsed = np.maximum(refresh_ts - profiles.updated_at, 0.0)
        weights *= decay_factor(elapsed, action.half_life_days)[:, None]
    in_step = ~np.isnan(step_last_ts)
    admitted = in_step
    if action.admit is not None:
        admitted = in_step & (_recency_rank(step_last_ts) < action.admit)
    weights[admitted] = 1.0
    touched = np.where(admitted, step_last_ts, profiles.touched)
    return _prune(Profiles(weights, touched, np.full(weights.shape[0], refresh_ts)), action.prune)


def profile_churn(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Share of each row's profile that an update moved: the total variation distance between
    the normalised weights before and after (0 = unchanged up to scale, 1 = nothing in common;
    an empty profile against a non-empty one is 1, two empty ones 0)."""
    def shares(w: np.ndarray) -> np.ndarray:
        total = w.sum(1, keepdims=True)
        return np.divide(w, total, out=np.zeros_like(w, dtype=np.float64), where=total > 0)

    moved = 0.5 * np.abs(shares(before) - shares(after)).sum(1)
    empty_b, empty_a = before.sum(1) <= 0, after.sum(1) <= 0
    return np.where(empty_b & empty_a, 0.0, np.where(empty_b ^ empty_a, 1.0, moved))


def _recency_rank(last_ts: np.ndarray) -> np.ndarray:
    """Rank of each item by its latest time within its row (0 = newest; ties → lower item index)."""
    key = np.where(np.isnan(last_ts), np.inf, -last_ts)
    order = np.argsort(key, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(last_ts.shape[1])[None, :].repeat(last_ts.shape[0], 0), axis=1)
    return rank


def _prune(profiles: Profiles, prune: float) -> Profiles:
    weights = profiles.weights
    if prune > 0:
        floor = prune * weights.max(axis=1, keepdims=True)
        weights = np.where(weights < floor, 0.0, weights)
    touched = np.where(weights > 0, profiles.touched, np.nan)
    return Profiles(weights, touched, profiles.updated_at)


# --------------------------------------------------------------------------------------------
# The replay environment


class ProfileScorer(Protocol):
    """What the environment needs of a fitted model (:class:`models.scoring.UigGCNScorer` is one)."""

    n_items: int
    config: Any  # .fold_in_half_life_days, .prior_half_life_days

    def score_profiles(self, rows: np.ndarray, items: np.ndarray, weights: Tensor, n_users: int,
                       prior: Tensor) -> Tensor: ...

    def item_embeddings(self) -> Tensor: ...


#: A policy: states [n, n_features] → action indices [n]; or one fixed action index.
Policy = Callable[[np.ndarray], np.ndarray] | int


@dataclass(frozen=True)
class StepReplay:
    """One refresh of a replay: the dirty users, their states, the actions taken and what they gave.

    ``rewards`` [n, n_actions] holds the reward of every action on scored rows (NaN elsewhere, and
    for actions not taken when the replay ran without counterfactuals); ``churn`` [n, n_actions]
    the share of each row's profile that every action would move (:func:`profile_churn`, every
    row and action); ``next_states``
    [n, n_actions, n_features] the user's state at their next dirty step had each action been
    taken (``None`` without counterfactuals); ``terminal`` marks users with no later dirty step.
    """

    step: int
    refresh_ts: float
    users: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    scored: np.ndarray
    rewards: np.ndarray
    churn: np.ndarray
    next_states: np.ndarray | None
    terminal: np.ndarray

    @property
    def chosen_rewards(self) -> np.ndarray:
        """The reward of the action taken, on the scored rows."""
        rows = np.flatnonzero(self.scored)
        return self.rewards[rows, self.actions[rows]]


@dataclass(frozen=True)
class _StepEvents:
    """The environment users' events in one step, as unique (user, item) pairs."""

    start: float
    end: float
    users: np.ndarray  # local user positions, sorted
    n_events: np.ndarray  # per user in ``users``
    last_ts: np.ndarray  # per user: latest event time in the step
    pair_row: np.ndarray  # position in ``users``
    pair_item: np.ndarray
    pair_last_ts: np.ndarray

    def dense_last_ts(self, local_users: np.ndarray, n_items: int) -> np.ndarray:
        """[len(local_users), n_items] latest time of each item in the step (NaN = not in it)."""
        out = np.full((local_users.size, n_items), np.nan)
        pos = np.searchsorted(self.users, local_users)
        present = pos < self.users.size
        present[present] = self.users[pos[present]] == local_users[present]  # users without events here: no row
        lookup = np.full(self.users.size, -1, dtype=np.int64)
        lookup[pos[present]] = np.flatnonzero(present)
        target = lookup[self.pair_row]
        keep = target >= 0
        out[target[keep], self.pair_item[keep]] = self.pair_last_ts[keep]
        return out

    def position(self, local_users: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.users, local_users)


def _next_true(flags: np.ndarray, last: int) -> np.ndarray:
    """[steps, users]: the first step ``k' > k`` (``k' <= last``) whose flag is set, -1 when none."""
    out = np.full(flags.shape, -1, dtype=np.int64)
    upcoming = np.full(flags.shape[1], -1, dtype=np.int64)
    for k in range(last, -1, -1):
        out[k] = upcoming
        upcoming = np.where(flags[k], k, upcoming)
    return out


def state_features(
    embeddings: np.ndarray,
    profiles: Profiles,
    step_last_ts: np.ndarray,
    n_events: np.ndarray,
    refresh_ts: np.ndarray,
    step_start_ts: np.ndarray,
    prev_event_ts: np.ndarray,
    prev_steps: np.ndarray,
    new_taste_cosine: float = 0.3,
) -> np.ndarray:
    """State vectors [n, n_features] (module docstring) of profiles seen at their refresh — one
    definition for the replay and for ``uig refresh``. ``embeddings`` are the scorer's item
    embeddings [n_items, dim] (float64)."""
    emb_unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    w = profiles.weights
    n = w.shape[0]
    out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float64)
    in_step = ~np.isnan(step_last_ts)
    n_step_items = np.maximum(in_step.sum(1), 1)
    in_profile = w > 0
    size = in_profile.sum(1)
    total = w.sum(1)
    shares = w / np.maximum(total, 1e-300)[:, None]
    prof_mean = shares @ embeddings
    step_mean = (in_step / n_step_items[:, None]) @ embeddings
    prof_norm = np.linalg.norm(prof_mean, axis=1)
    prof_unit = prof_mean / np.maximum(prof_norm, 1e-12)[:, None]
    step_unit = step_mean / np.maximum(np.linalg.norm(step_mean, axis=1), 1e-12)[:, None]
    item_cos = prof_unit @ emb_unit.T  # [n, n_items]
    far = (item_cos < new_taste_cosine) | (size == 0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(1)
        age_days = np.where(in_profile, (refresh_ts[:, None] - profiles.touched) / SECONDS_PER_DAY, 0.0)
    mean_age = (shares * np.maximum(age_days, 0.0)).sum(1)
    hours_prev = np.where(np.isnan(prev_event_ts), np.inf, (step_start_ts - prev_event_ts) / HOUR)
    out[:, 0] = np.log1p(n_events) / 5.0
    out[:, 1] = np.where(np.isinf(hours_prev), 1.0, np.log1p(np.maximum(hours_prev, 0.0)) / 10.0)
    out[:, 2] = (far & in_step).sum(1) / n_step_items
    out[:, 3] = (in_profile & in_step).sum(1) / n_step_items
    out[:, 4] = np.where(size > 0, 1.0 - (prof_unit * step_unit).sum(1), 1.0)
    out[:, 5] = entropy / math.log(max(embeddings.shape[0], 2))
    out[:, 6] = np.log1p(size) / 8.0
    out[:, 7] = np.log1p(mean_age) / 5.0
    out[:, 8] = np.log1p(np.maximum(refresh_ts - profiles.updated_at, 0.0) / HOUR) / 10.0
    out[:, 9] = np.log1p(prev_steps) / 5.0
    return out.astype(np.float32)


class PolicyEnvironment:
    """Replays ``[start, end)`` step by step for ``users`` (module docstring).

    ``events`` are all events of the data set over one index (before, inside and after the
    window; those at or after ``end`` are ignored). The decisions happen at the refreshes that
    end steps ``0 .. n_steps - 2``; the last step only supplies targets, so no reward looks past
    ``end``. A user's profile at ``start`` is the ``rebuild`` profile of their events before it.
    """

    def __init__(
        self,
        events: Interactions,
        scorer: ProfileScorer,
        start: float,
        end: float,
        step: float,
        users: Sequence[int] | np.ndarray,
        actions: Sequence[UpdateAction] = ACTIONS,
        new_taste_cosine: float = 0.3,
        churn_cost: float = 0.0,
    ) -> None:
        if not (math.isfinite(churn_cost) and churn_cost >= 0):
            raise PolicyInputError(f"churn_cost must be a number >= 0, got {churn_cost}")
        if not (math.isfinite(start) and math.isfinite(end) and start < end):
            raise PolicyInputError(f"the window must satisfy start < end, got [{start}, {end})")
        if not (math.isfinite(step) and step > 0):
            raise PolicyInputError(f"step must be a positive number of seconds, got {step}")
        if int(scorer.n_items) != events.n_items:
            raise PolicyInputError(f"the scorer ranks {scorer.n_items} items but the events are over {events.n_items}")
        if not actions:
            raise PolicyInputError("give at least one action")
        self.users = np.unique(np.asarray(users, dtype=np.int64))
        if self.users.size == 0:
            raise PolicyInputError("give at least one user")
        if self.users.min() < 0 or self.users.max() >= events.n_users:
            raise PolicyInputError(f"user indices must lie in [0, {events.n_users})")
        self.scorer = scorer
        self.actions = tuple(actions)
        self.start, self.end, self.step = float(start), float(end), float(step)
        self.n_steps = math.ceil((self.end - self.start) / self.step)
        if self.n_steps < 2:
            raise PolicyInputError("the window needs at least two steps: one to act on, one to score against")
        self.n_items = events.n_items
        self.new_taste_cosine = float(new_taste_cosine)
        self.churn_cost = float(churn_cost)
        self.fold_in_half_life_days = float(scorer.config.fold_in_half_life_days)
        self.prior_half_life_days = float(scorer.config.prior_half_life_days)

        order = np.lexsort((events.item_ids, events.user_ids, events.ts))
        keep = events.ts[order] < self.end
        self._ts = events.ts[order][keep]
        self._user_ids = events.user_ids[order][keep]
        self._item_ids = events.item_ids[order][keep]
        self._users_index, self._items_index = events.users, events.items
        local = np.searchsorted(self.users, self._user_ids)
        local = np.minimum(local, self.users.size - 1)
        self._local = np.where(self.users[local] == self._user_ids, local, -1)

        self._steps = [self._step_events(k) for k in range(self.n_steps)]
        dirty = np.zeros((self.n_steps, self.users.size), dtype=bool)
        for k, s in enumerate(self._steps):
            dirty[k, s.users] = True
        self._dirty = dirty
        # next decision step (<= n_steps - 2) at which each user is dirty again, and the next step
        # (<= n_steps - 1) in which they act at all — where rewards come from; -1 = none
        self._next_dirty = _next_true(dirty, self.n_steps - 2)
        self._next_active = _next_true(dirty, self.n_steps - 1)
        self._priors: dict[int, Tensor] = {}
        emb = scorer.item_embeddings().detach().to("cpu", torch.float64).numpy()
        self._emb = emb
        self._emb_unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        #: The carried profiles of the replay in progress (or the last one), rows = ``self.users``.
        self.profiles = self.initial_profiles()

    # ---- data ------------------------------------------------------------------------------

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    def step_start(self, k: int) -> float:
        return self.start + k * self.step

    def step_end(self, k: int) -> float:
        return min(self.start + (k + 1) * self.step, self.end)

    def _span(self, t0: float, t1: float) -> slice:
        lo, hi = np.searchsorted(self._ts, [t0, t1], side="left")
        return slice(int(lo), int(hi))

    def _step_events(self, k: int) -> _StepEvents:
        t0, t1 = self.step_start(k), self.step_end(k)
        span = self._span(t0, t1)
        local, items, ts = self._local[span], self._item_ids[span], self._ts[span]
        mine = local >= 0
        local, items, ts = local[mine], items[mine], ts[mine]
        users, row, n_events = np.unique(local, return_inverse=True, return_counts=True)
        last_ts = np.full(users.size, -np.inf)
        np.maximum.at(last_ts, row, ts)
        keys = row * self.n_items + items
        by_key = np.lexsort((-ts, keys))
        first = np.r_[True, keys[by_key][1:] != keys[by_key][:-1]] if keys.size else np.zeros(0, dtype=bool)
        pick = by_key[first]
        return _StepEvents(t0, t1, users, n_events, last_ts, row[pick], items[pick], ts[pick])

    def _before(self, t: float) -> Interactions:
        n = int(np.searchsorted(self._ts, t, side="left"))
        return Interactions(self._user_ids[:n], self._item_ids[:n], self._ts[:n], self._users_index, self._items_index)

    def _prior(self, k: int) -> Tensor:
        """The popularity prior at the refresh that ends step ``k`` (cached: reused by every replay)."""
        if k not in self._priors:
            t = self.step_end(k)
            self._priors[k] = popularity_prior(self._before(t), t, self.prior_half_life_days)
        return self._priors[k]

    def _history_before(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``last_touch`` [n_users_local, n_items] (NaN = never) and each user's last event time before ``t``."""
        n = int(np.searchsorted(self._ts, t, side="left"))
        local, items, ts = self._local[:n], self._item_ids[:n], self._ts[:n]
        mine = local >= 0
        last_touch = np.full((self.users.size, self.n_items), -np.inf)
        np.maximum.at(last_touch, (local[mine], items[mine]), ts[mine])
        last_event = last_touch.max(axis=1)
        last_touch[np.isinf(last_touch)] = np.nan
        return last_touch, np.where(np.isinf(last_event), np.nan, last_event)

    def initial_profiles(self) -> Profiles:
        """Every user's ``rebuild`` profile from their events before ``start``."""
        last_touch, _ = self._history_before(self.start)
        return rebuild_profiles(last_touch, self.start, self.fold_in_half_life_days)

    # ---- features --------------------------------------------------------------------------

    def _features(self, *arrays: Any) -> np.ndarray:
        """:func:`state_features` with this environment's embeddings and threshold."""
        return state_features(self._emb, *arrays, new_taste_cosine=self.new_taste_cosine)

    # ---- rewards ---------------------------------------------------------------------------

    def _ndcg(self, profiles: Profiles, prior: Tensor, seen: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """NDCG@10 per row of the profiles' ranking (``seen`` masked) against ``targets`` (bool)."""
        rows, items = np.nonzero(profiles.weights > 0)
        weights = torch.from_numpy(profiles.weights[rows, items].astype(np.float32))
        scores = self.scorer.score_profiles(rows, items, weights, profiles.weights.shape[0], prior)
        scores = scores.detach().to("cpu", torch.float32).clone()
        scores[torch.from_numpy(seen)] = float("-inf")
        ranked = rank_items(scores, 10)
        return ranking_metrics(ranked, torch.from_numpy(targets), 10)["ndcg"].numpy()

    # ---- replay ----------------------------------------------------------------------------

    def replay(self, policy: Policy, counterfactual: bool = True) -> Iterator[StepReplay]:
        """Run ``policy`` through the window, yielding one :class:`StepReplay` per refresh with dirty users.

        ``policy`` is called once per refresh with the dirty users' states (so a learner may
        update itself between calls); its actions are applied and carried over. With
        ``counterfactual`` every action is scored and its next state computed; without, only the
        chosen ones are scored (cheaper, for evaluation).
        """
        choose = _as_policy(policy, self.n_actions)
        last_touch, last_event = self._history_before(self.start)
        self.profiles = rebuild_profiles(last_touch, self.start, self.fold_in_half_life_days)
        steps_seen = np.zeros(self.users.size, dtype=np.int64)
        for k in range(self.n_steps - 1):
            ev = self._steps[k]
            if ev.users.size == 0:
                continue
            local = ev.users
            refresh = self.step_end(k)
            step_ts = ev.dense_last_ts(local, self.n_items)
            # the history before the refresh now includes this step
            last_touch[ev.users[ev.pair_row], ev.pair_item] = np.fmax(
                last_touch[ev.users[ev.pair_row], ev.pair_item], ev.pair_last_ts)
            current = self.profiles.rows(local)
            states = self._features(current, step_ts, ev.n_events.astype(np.float64), np.full(local.size, refresh),
                                    np.full(local.size, ev.start), last_event[local],
                                    steps_seen[local].astype(np.float64))
            actions = np.asarray(choose(states), dtype=np.int64).reshape(-1)
            if actions.shape != (local.size,) or (actions.size and (actions.min() < 0 or actions.max() >= self.n_actions)):
                raise PolicyInputError(f"a policy must return {local.size} action indices in [0, {self.n_actions})")
            candidates = [update_profiles(a, current, step_ts, last_touch[local], refresh, self.fold_in_half_life_days)
                          for a in self.actions]

            # targets: the user's new items the next time they act (the profile does not change
            # until then, so that is when this refresh's graph is judged)
            coming = self._next_active[k, local]
            targets = np.zeros((local.size, self.n_items), dtype=bool)
            for k2 in np.unique(coming[coming >= 0]):
                group = np.flatnonzero(coming == k2)
                later = ~np.isnan(self._steps[int(k2)].dense_last_ts(local[group], self.n_items))
                targets[group] = later & np.isnan(last_touch[local[group]])
            scored = targets.any(1)
            churn = np.stack([profile_churn(current.weights, c.weights) for c in candidates], 1).astype(np.float32)
            rewards = np.full((local.size, self.n_actions), np.nan, dtype=np.float32)
            rows = np.flatnonzero(scored)
            if rows.size:
                prior = self._prior(k)
                seen = ~np.isnan(last_touch[local[rows]])
                for a in range(self.n_actions):
                    pick = rows if counterfactual else rows[actions[rows] == a]
                    if pick.size == 0:
                        continue
                    sub_seen = seen if counterfactual else seen[np.searchsorted(rows, pick)]
                    rewards[pick, a] = (self._ndcg(candidates[a].rows(pick), prior, sub_seen, targets[pick])
                                        - self.churn_cost * churn[pick, a])

            next_k = self._next_dirty[k, local]
            terminal = next_k < 0
            next_states = None
            if counterfactual:
                next_states = np.zeros((local.size, self.n_actions, self.n_features), dtype=np.float32)
                for k2 in np.unique(next_k[~terminal]):
                    group = np.flatnonzero(next_k == k2)
                    ev2 = self._steps[k2]
                    ts2 = ev2.dense_last_ts(local[group], self.n_items)
                    pos2 = ev2.position(local[group])
                    for a in range(self.n_actions):
                        next_states[group, a] = self._features(
                            candidates[a].rows(group), ts2, ev2.n_events[pos2].astype(np.float64),
                            np.full(group.size, self.step_end(int(k2))), np.full(group.size, ev2.start),
                            ev.last_ts[ev.position(local[group])],
                            (steps_seen[local[group]] + 1).astype(np.float64))

            # carry over the behaviour's choice
            w, t, u = (self.profiles.weights.copy(), self.profiles.touched.copy(), self.profiles.updated_at.copy())
            for a in np.unique(actions):
                sel = np.flatnonzero(actions == a)
                w[local[sel]] = candidates[a].weights[sel]
                t[local[sel]] = candidates[a].touched[sel]
                u[local[sel]] = candidates[a].updated_at[sel]
            self.profiles = Profiles(w, t, u)
            last_event[local] = ev.last_ts
            steps_seen[local] += 1
            yield StepReplay(k, refresh, self.users[local], states, actions, scored, rewards, churn, next_states,
                             terminal)

    def all_action_rewards(self, policy: Policy = 0) -> tuple[list[tuple[float, int]], np.ndarray, np.ndarray]:
        """``(user_steps, states, rewards)`` of the scored user-steps of one replay under ``policy``
        (default: ``keep``): ``user_steps`` are (refresh time, user), ``rewards`` [n, n_actions] the
        reward of every action given the profile the behaviour carried to that step."""
        keys: list[tuple[float, int]] = []
        states, rewards = [], []
        for rep in self.replay(policy, counterfactual=True):
            rows = np.flatnonzero(rep.scored)
            keys.extend((rep.refresh_ts, int(u)) for u in rep.users[rows])
            states.append(rep.states[rows])
            rewards.append(rep.rewards[rows])
        if not keys:
            raise PolicyInputError("no scored user-step in the window: no user acted in two consecutive steps")
        return keys, np.concatenate(states), np.concatenate(rewards)


def _as_policy(policy: Policy, n_actions: int) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(policy, (int, np.integer)):
        index = int(policy)
        if not 0 <= index < n_actions:
            raise PolicyInputError(f"a fixed action must be an index in [0, {n_actions}), got {index}")
        return lambda states: np.full(states.shape[0], index, dtype=np.int64)
    if not callable(policy):
        raise PolicyInputError(f"a policy is an action index or a callable states -> actions, got {type(policy).__name__}")
    return policy


# --------------------------------------------------------------------------------------------
# Q-learning


@dataclass(frozen=True)
class DQNConfig:
    """Settings of :func:`train_dqn` (and :func:`train_bandit`, which forces ``gamma = 0``).

    ``gamma`` is small by default: a profile update mostly pays off at the next step, and a
    long horizon over sparse dirty steps mostly adds variance. ε decays linearly from
    ``epsilon_start`` to ``epsilon_end`` over ``epsilon_decay_updates`` gradient updates.
    """

    hidden: int = 64
    layers: int = 2
    lr: float = 1e-3
    gamma: float = 0.5
    batch_size: int = 256
    replay_size: int = 50_000
    target_sync: int = 200
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_updates: int = 2_000
    double_dqn: bool = True
    episodes: int = 10
    updates_per_step: int = 4
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU

    def check(self) -> None:
        if self.hidden < 1 or self.layers < 1:
            raise PolicyInputError(f"hidden and layers must be >= 1, got {self.hidden}, {self.layers}")
        if not (self.lr > 0 and 0 <= self.gamma < 1):
            raise PolicyInputError(f"need lr > 0 and 0 <= gamma < 1, got {self.lr}, {self.gamma}")
        if min(self.batch_size, self.replay_size, self.target_sync, self.episodes, self.updates_per_step) < 1:
            raise PolicyInputError("batch_size, replay_size, target_sync, episodes and updates_per_step must be >= 1")
        if not (0 <= self.epsilon_end <= self.epsilon_start <= 1) or self.epsilon_decay_updates < 1:
            raise PolicyInputError("need 0 <= epsilon_end <= epsilon_start <= 1 and epsilon_decay_updates >= 1")


def q_network(n_features: int, n_actions: int, hidden: int, layers: int) -> nn.Sequential:
    """The MLP behind every Q-value here: ``layers`` hidden ReLU layers of ``hidden`` units, one output per action."""
    mods: list[nn.Module] = []
    width = n_features
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_actions))
    return nn.Sequential(*mods)


def double_dqn_targets(
    rewards: Tensor, next_q_online: Tensor, next_q_target: Tensor, terminal: Tensor, gamma: float, double: bool = True
) -> Tensor:
    """``r + γ · Q_target(s', argmax_a' Q_online(s', a'))`` (``double``) or ``r + γ · max Q_target(s', ·)``.

    ``next_q_*`` have one more trailing dimension (the actions at s') than ``rewards``;
    ``terminal`` broadcasts against ``rewards`` and zeroes the bootstrap where true.
    """
    if double:
        best = next_q_online.argmax(dim=-1, keepdim=True)
        bootstrap = next_q_target.gather(-1, best).squeeze(-1)
    else:
        bootstrap = next_q_target.max(dim=-1).values
    return rewards + gamma * (1.0 - terminal.to(rewards.dtype)) * bootstrap


class QPolicy:
    """A greedy policy over a Q-network: state → Q per action → the best action."""

    def __init__(self, network: nn.Module, action_names: Sequence[str], feature_names: Sequence[str],
                 hidden: int, layers: int) -> None:
        self.network = network.to("cpu").eval()
        self.action_names = tuple(action_names)
        self.feature_names = tuple(feature_names)
        self.hidden, self.layers = int(hidden), int(layers)

    def q_values(self, states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.network(torch.as_tensor(np.asarray(states, dtype=np.float32))).numpy()

    def act(self, states: np.ndarray) -> np.ndarray:
        """Greedy action indices [n] (ties → the lower index)."""
        states = np.asarray(states, dtype=np.float32)
        if states.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        return self.q_values(states).argmax(axis=1).astype(np.int64)

    __call__ = act

    def feature_importance(self, state: np.ndarray, top: int = 3) -> dict[str, Any]:
        """Why this action: gradient × input of the chosen action's Q, the ``top`` features by size.

        A local, first-order reading (how much Q would move if the feature went to 0), not a proof.
        """
        x = torch.as_tensor(np.asarray(state, dtype=np.float32).reshape(1, -1)).requires_grad_(True)
        q = self.network(x)[0]
        action = int(q.argmax())
        q[action].backward()
        contribution = (x.grad * x).detach()[0].numpy()
        order = np.argsort(-np.abs(contribution), kind="stable")[:top]
        return {"action": self.action_names[action], "q": float(q[action].detach()),
                "features": [(self.feature_names[i], float(contribution[i])) for i in order]}

    def to_state(self) -> dict[str, Any]:
        """Plain values and tensors (``torch.save``-able, loadable with ``weights_only=True``)."""
        return {"format": POLICY_STATE_FORMAT, "hidden": self.hidden, "layers": self.layers,
                "action_names": list(self.action_names), "feature_names": list(self.feature_names),
                "state_dict": {k: v.detach().clone() for k, v in self.network.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QPolicy:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        if found != POLICY_STATE_FORMAT:
            raise PolicyInputError(f"not an update-policy state of format {POLICY_STATE_FORMAT} (found {found!r})")
        net = q_network(len(state["feature_names"]), len(state["action_names"]), int(state["hidden"]),
                         int(state["layers"]))
        net.load_state_dict(state["state_dict"])
        return cls(net, state["action_names"], state["feature_names"], state["hidden"], state["layers"])


class _Replay:
    """A ring buffer of scored transitions with every action's reward and next state."""

    def __init__(self, capacity: int, n_actions: int, n_features: int) -> None:
        self.states = np.zeros((capacity, n_features), dtype=np.float32)
        self.rewards = np.zeros((capacity, n_actions), dtype=np.float32)
        self.next_states = np.zeros((capacity, n_actions, n_features), dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=bool)
        self.capacity, self.size, self.cursor = capacity, 0, 0

    def add(self, rep: StepReplay) -> None:
        for r in np.flatnonzero(rep.scored):
            i = self.cursor
            self.states[i], self.rewards[i], self.terminal[i] = rep.states[r], rep.rewards[r], rep.terminal[r]
            self.next_states[i] = rep.next_states[r] if rep.next_states is not None else 0.0
            self.cursor = (self.cursor + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)


def train_dqn(env: PolicyEnvironment, config: DQNConfig = DQNConfig()) -> tuple[QPolicy, list[dict[str, float]]]:
    """Double DQN over replayed episodes of ``env`` (module docstring); returns the greedy policy
    and one history row per episode (ε at its end, mean loss, the behaviour's mean reward).

    Each episode replays the window with an ε-greedy behaviour whose actions are carried over;
    after every refresh the scored transitions go into the replay memory and
    ``updates_per_step`` minibatch updates follow. Every action of a transition is a target —
    ``r_a + γ · Q_target(s'_a, argmax Q_online(s'_a))`` with ``s'_a`` the user's state at their
    next dirty step had ``a`` been taken (terminal when there is none). Seeded: the same config
    on the CPU gives the same Q-values.
    """
    config.check()
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        online = q_network(env.n_features, env.n_actions, config.hidden, config.layers)
    online = online.to(device)
    target = q_network(env.n_features, env.n_actions, config.hidden, config.layers).to(device)
    target.load_state_dict(online.state_dict())
    target.eval()
    optimiser = torch.optim.Adam(online.parameters(), lr=config.lr)
    memory = _Replay(config.replay_size, env.n_actions, env.n_features)
    updates = 0

    def epsilon() -> float:
        frac = min(updates / config.epsilon_decay_updates, 1.0)
        return config.epsilon_start + frac * (config.epsilon_end - config.epsilon_start)

    def behaviour(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            greedy = online(torch.from_numpy(states).to(device)).argmax(1).cpu().numpy()
        explore = rng.random(states.shape[0]) < epsilon()
        return np.where(explore, rng.integers(0, env.n_actions, states.shape[0]), greedy).astype(np.int64)

    def update() -> float:
        idx = rng.integers(0, memory.size, min(config.batch_size, memory.size))
        s = torch.from_numpy(memory.states[idx]).to(device)
        r = torch.from_numpy(memory.rewards[idx]).to(device)
        with torch.no_grad():
            if config.gamma > 0:
                s2 = torch.from_numpy(memory.next_states[idx]).to(device)
                flat = s2.reshape(-1, env.n_features)
                q2_online = online(flat).reshape(idx.size, env.n_actions, env.n_actions)
                q2_target = target(flat).reshape(idx.size, env.n_actions, env.n_actions)
                done = torch.from_numpy(memory.terminal[idx]).to(device).unsqueeze(1)
                y = double_dqn_targets(r, q2_online, q2_target, done, config.gamma, config.double_dqn)
            else:
                y = r
        loss = nn.functional.mse_loss(online(s), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    history: list[dict[str, float]] = []
    for episode in range(config.episodes):
        losses, rewards = [], []
        for rep in env.replay(behaviour, counterfactual=True):
            memory.add(rep)
            rewards.extend(rep.chosen_rewards.tolist())
            if memory.size == 0:
                continue
            for _ in range(config.updates_per_step):
                losses.append(update())
                updates += 1
                if updates % config.target_sync == 0:
                    target.load_state_dict(online.state_dict())
        history.append({"episode": float(episode), "epsilon": epsilon(), "updates": float(updates),
                        "loss": float(np.mean(losses)) if losses else math.nan,
                        "behaviour_reward": float(np.mean(rewards)) if rewards else math.nan})
    policy = QPolicy(online, [a.name for a in env.actions], FEATURE_NAMES, config.hidden, config.layers)
    return policy, history


def train_bandit(env: PolicyEnvironment, config: DQNConfig = DQNConfig()) -> tuple[QPolicy, list[dict[str, float]]]:
    """The contextual-bandit baseline: the same network and loop on one-step rewards (γ = 0)."""
    return train_dqn(env, dataclasses.replace(config, gamma=0.0))


# --------------------------------------------------------------------------------------------
# Evaluation and user splits


def evaluate_policies(
    env: PolicyEnvironment, policies: Mapping[str, Policy], include_fixed: bool = True
) -> dict[str, Any]:
    """Run each policy through the window with its own carry-over; rewards per scored user-step.

    With ``include_fixed`` every action of ``env`` is also run as a fixed policy
    (``"fixed:<name>"``), exactly. Returns ``{"user_steps": [(refresh time, user)], "rewards":
    {name: array}, "churn": {name: array}, "ndcg": {name: array}, "mean": {name: float}, "fixed":
    [names], "actions": {name: counts per action}}``, every array aligned on the same user-steps;
    ``ndcg`` is the ranking term of the reward alone (reward + ``env.churn_cost`` × churn).
    """
    runs: dict[str, Policy] = dict(policies)
    fixed = []
    if include_fixed:
        for index, action in enumerate(env.actions):
            name = f"fixed:{action.name}"
            runs[name] = index
            fixed.append(name)
    if not runs:
        raise PolicyInputError("give at least one policy")
    keys_of: dict[str, list[tuple[float, int]]] = {}
    rewards: dict[str, np.ndarray] = {}
    churns: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name, policy in runs.items():
        keys: list[tuple[float, int]] = []
        got: list[np.ndarray] = []
        moved: list[np.ndarray] = []
        count = np.zeros(env.n_actions, dtype=np.int64)
        for rep in env.replay(policy, counterfactual=False):
            rows = np.flatnonzero(rep.scored)
            keys.extend((rep.refresh_ts, int(u)) for u in rep.users[rows])
            got.append(rep.rewards[rows, rep.actions[rows]])
            moved.append(rep.churn[rows, rep.actions[rows]])
            count += np.bincount(rep.actions, minlength=env.n_actions)
        keys_of[name], counts[name] = keys, count
        rewards[name] = np.concatenate(got) if got else np.zeros(0, dtype=np.float32)
        churns[name] = np.concatenate(moved) if moved else np.zeros(0, dtype=np.float32)
    reference = next(iter(keys_of.values()))
    for name, keys in keys_of.items():
        if keys != reference:  # holds by construction (dirtiness depends on events only); checked
            raise PolicyInputError(f"policy {name!r} was scored on different user-steps than the others")
    if not reference:
        raise PolicyInputError("no scored user-step in the window")
    ndcg = {name: rewards[name] + env.churn_cost * churns[name] for name in rewards}
    return {"user_steps": reference, "rewards": rewards, "churn": churns, "ndcg": ndcg, "fixed": fixed,
            "actions": counts, "mean": {name: float(r.mean()) for name, r in rewards.items()}}


def compare_to_best_fixed(results: Mapping[str, Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of each non-fixed policy minus the best fixed action (highest mean reward).

    The best fixed action is picked on the same user-steps it is compared on, which favours the
    baseline: a policy that beats it beats every fixed action.
    """
    fixed = list(results["fixed"])
    if not fixed:
        raise PolicyInputError("the results hold no fixed action; evaluate with include_fixed=True")
    best = max(fixed, key=lambda name: results["mean"][name])
    out = {name: paired_bootstrap(r, results["rewards"][best], n_boot, seed)
           for name, r in results["rewards"].items() if name not in fixed}
    return {"best_fixed": best, "best_fixed_mean": results["mean"][best], "comparisons": out}


#: Weights of the popularity prior a reward may score with besides the model's trained one.
REWARD_PRIOR_WEIGHTS: tuple[float, ...] = (0.3, 0.1, 0.0)


def choose_reward_prior_weight(
    make_env: Callable[[float], PolicyEnvironment], trained: float,
    alternatives: Sequence[float] = REWARD_PRIOR_WEIGHTS,
) -> tuple[float, dict[float, float]]:
    """The prior weight the reward ranks with, among the model's ``trained`` weight and the
    ``alternatives``: the one under which today's rule (``rebuild``) earns the highest mean reward
    in ``make_env(weight)`` — a training window with training users only; ties → the earlier
    weight (the trained one first); a window that scores no user-step keeps the trained weight
    (the mean rewards are then NaN). Returns ``(weight, {weight: mean reward})``.

    Why: the prior adds the same scores whatever the action, and at the weight chosen for
    ranking every user (cold ones included) it can rank nearly alone, so that every profile update
    earns about the same and there is nothing to learn. Choosing it by the fixed rule, on data the
    evaluation never reads, favours no policy.
    """
    weights = list(dict.fromkeys(float(w) for w in (trained, *alternatives)))
    if any(not w >= 0 for w in weights):
        raise PolicyInputError(f"prior weights must be >= 0, got {weights}")
    means: dict[float, float] = {}
    for weight in weights:
        env = make_env(float(weight))
        rule = [a.name for a in env.actions].index(DEFAULT_ACTION)
        got = np.concatenate([rep.chosen_rewards for rep in env.replay(rule, counterfactual=False)] or [np.zeros(0)])
        means[float(weight)] = float(got.mean()) if got.size else math.nan
    if all(math.isnan(m) for m in means.values()):
        return weights[0], means
    best = max(means, key=lambda w: (means[w] if not math.isnan(means[w]) else -math.inf, -list(means).index(w)))
    return best, means


def split_users(users: Sequence[int] | np.ndarray, held_out_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_users, held_out_users)``, sorted, a seeded random ``held_out_share`` held out."""
    pool = np.unique(np.asarray(users, dtype=np.int64))
    if not 0 < held_out_share < 1:
        raise PolicyInputError(f"held_out_share must lie in (0, 1), got {held_out_share}")
    n_held = int(round(held_out_share * pool.size))
    if not 0 < n_held < pool.size:
        raise PolicyInputError(f"{pool.size} users are too few to hold out a share of {held_out_share}")
    perm = np.random.default_rng(seed).permutation(pool.size)
    return np.sort(pool[perm[n_held:]]), np.sort(pool[perm[:n_held]])


def check_disjoint(train_users: Sequence[int] | np.ndarray, eval_users: Sequence[int] | np.ndarray) -> None:
    """Raise :class:`PolicyInputError` if a user is in both sets: held-out users must be unseen."""
    both = np.intersect1d(np.asarray(train_users, dtype=np.int64), np.asarray(eval_users, dtype=np.int64))
    if both.size:
        raise PolicyInputError(f"{both.size} users are in both the training and the evaluation users "
                               f"(e.g. {both[:5].tolist()}); split them with split_users")


# --------------------------------------------------------------------------------------------
# At refresh time


#: What ``uig refresh`` does when no policy is registered (``fixed-shares-v1``).
DEFAULT_ACTION = "rebuild"


def refresh_decisions(
    policy: QPolicy | None,
    embeddings: np.ndarray,
    last_touch: np.ndarray,
    previous_refresh: float | None,
    refresh_ts: float,
    fold_in_half_life_days: float,
) -> tuple[list[str], np.ndarray, list[str]]:
    """``(action names, profile weights [n, n_items], reasons)`` for dirty users at a refresh.

    ``last_touch`` [n, n_items] is each item's last event time before ``refresh_ts`` (NaN =
    never). Profiles are not stored between refreshes, so the profile before this refresh is the
    ``rebuild`` profile of the items last touched before ``previous_refresh`` — exact while the
    previous refresh rebuilt the user (the default rule), an approximation after other actions.
    The step is every item touched since ``previous_refresh`` (one event per item: the tables keep
    each item's last event). Without a policy, or before any refresh, every user gets
    :data:`DEFAULT_ACTION`.
    """
    n = last_touch.shape[0]
    since = -np.inf if previous_refresh is None else float(previous_refresh)
    before = np.where(last_touch < since, last_touch, np.nan)
    step_last_ts = np.where(last_touch >= since, last_touch, np.nan)
    previous = rebuild_profiles(before, since if np.isfinite(since) else refresh_ts, fold_in_half_life_days)
    by_name = {a.name: a for a in ACTIONS}
    if policy is None or previous_refresh is None:
        names = [DEFAULT_ACTION] * n
        reasons = [("first refresh: every user is built from their whole history" if policy is not None else
                    "no update policy registered: the default rule rebuilds every dirty user")] * n
    else:
        prev_event = np.where(np.isnan(before), -np.inf, before).max(axis=1)
        states = state_features(embeddings, previous, step_last_ts, (~np.isnan(step_last_ts)).sum(1).astype(float),
                                np.full(n, refresh_ts), np.full(n, since if np.isfinite(since) else refresh_ts),
                                np.where(np.isfinite(prev_event), prev_event, np.nan), np.zeros(n))
        names = [policy.action_names[int(a)] for a in policy.act(states)]
        reasons = []
        for row in range(n):
            why = policy.feature_importance(states[row])
            reasons.append(", ".join(f"{name} {states[row][FEATURE_NAMES.index(name)]:.2f} ({effect:+.3f})"
                                     for name, effect in why["features"]))
    weights = np.zeros_like(last_touch, dtype=np.float64)
    for name in sorted(set(names)):
        rows = np.flatnonzero(np.array(names) == name)
        if name not in by_name:
            raise PolicyInputError(f"the policy chose {name!r}, which this version of UIG cannot apply")
        updated = update_profiles(by_name[name], previous.rows(rows), step_last_ts[rows], last_touch[rows],
                                  refresh_ts, fold_in_half_life_days)
        weights[rows] = updated.weights
    return names, weights, reasons
