"""BPR training machinery shared by the UIG GCN (:mod:`models.training`) and the trained baselines
(:mod:`models.baselines`): one sampler, one loss, one early-stopping loop.

Method: Bayesian Personalized Ranking (Rendle et al., "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009) — for a training pair ``(u, i)`` and a sampled negative ``j``,
minimise ``-ln σ(ŷ_ui − ŷ_uj)`` plus an L2 penalty on the parameters the batch touched, with
uniform negatives. Everything random draws from the ``torch.Generator`` passed in, so a fit is
reproducible on the same machine and thread count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from uig_common.errors import InputError

from models.evaluation import METRICS, History, Scorer, ValidationSet

__all__ = ["BPRSampler", "FitReport", "bpr_loss", "check_training_args", "fit_epochs", "metric_k", "validator"]


@dataclass
class FitReport:
    """What a fit did: epochs run, the epoch kept, validation scores, and time spent training."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_score: float | None = None
    train_seconds: float = 0.0
    validation_seconds: float = 0.0
    validation_scores: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        """Training time per epoch, validation excluded."""
        return self.train_seconds / self.epochs_run if self.epochs_run else 0.0


class BPRSampler:
    """(user, positive, negative) triples: every training pair once per epoch, in a seeded random
    order, each with one negative drawn uniformly from all items and redrawn (up to 20 times)
    while it is one of the user's training items."""

    #: Up to this many users × items, positives are looked up in a dense table (one byte each)
    #: instead of by binary search over the sorted pair keys: the same answers, several times faster.
    DENSE_LOOKUP_MAX = 1 << 26

    def __init__(self, history: History, generator: torch.Generator) -> None:
        self.users, self.items = history.pairs()
        self.n_items = history.n_items
        self.keys = torch.sort(self.users * self.n_items + self.items).values
        self.generator = generator
        size = history.n_users * history.n_items
        self.positive: Tensor | None = None
        if size <= self.DENSE_LOOKUP_MAX:
            self.positive = torch.zeros(size, dtype=torch.bool)
            self.positive[self.keys] = True

    def __len__(self) -> int:
        return self.users.numel()

    def _is_positive(self, keys: Tensor) -> Tensor:
        if self.positive is not None:
            return self.positive[keys]
        at = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return self.keys[at] == keys

    def epoch(self, batch_size: int, device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The epoch's triples in batches of ``batch_size``, moved to ``device`` (drawn on the CPU:
        the same draws on every device)."""
        n = len(self)
        perm = torch.randperm(n, generator=self.generator)
        users, pos = self.users[perm], self.items[perm]
        neg = torch.randint(0, self.n_items, (n,), generator=self.generator)
        for _ in range(20):  # resample negatives that are in fact positives; a few rounds suffice
            clash = self._is_positive(users * self.n_items + neg)
            if not clash.any():
                break
            neg[clash] = torch.randint(0, self.n_items, (int(clash.sum()),), generator=self.generator)
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            yield users[sl].to(device), pos[sl].to(device), neg[sl].to(device)


def bpr_loss(pos: Tensor, neg: Tensor, touched: Iterable[Tensor] = (), reg: float = 0.0) -> Tensor:
    """``-mean ln σ(pos − neg) + reg · Σ‖θ‖² / batch`` over the ``touched`` parameter rows."""
    penalty = sum((t.pow(2).sum() for t in touched), pos.new_zeros(()))
    return -F.logsigmoid(pos - neg).mean() + reg * penalty / pos.numel()


def fit_epochs(
    module: nn.Module,
    run_epoch: Callable[[], float],
    validate: Callable[[], float] | None,
    epochs: int,
    patience: int,
    on_change: Callable[[], None],
) -> FitReport:
    """Epoch loop with early stopping on a validation score (higher is better); restores the best
    epoch's parameters. Without ``validate`` it runs all ``epochs`` and keeps the last.
    ``on_change`` is called whenever the parameters changed (to drop cached embeddings)."""
    report = FitReport()
    best_state: dict[str, Tensor] | None = None
    bad = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        module.train()
        report.losses.append(run_epoch())
        report.train_seconds += time.perf_counter() - t0
        report.epochs_run = epoch
        on_change()
        if validate is None:
            report.best_epoch = epoch
            continue
        t0 = time.perf_counter()
        module.eval()
        value = validate()
        report.validation_seconds += time.perf_counter() - t0
        report.validation_scores.append(value)
        if report.best_score is None or value > report.best_score:
            report.best_score, report.best_epoch, bad = value, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
        on_change()
    module.eval()
    return report


def metric_k(metric: str, error: type[Exception] = InputError) -> int:
    """``K`` of an early-stopping metric like ``"ndcg@10"``; ``error`` names what a bad one raises."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise error(f"early-stopping metric must look like 'ndcg@10' (one of {METRICS} @ K), got {metric!r}")
    return int(k)


def validator(scorer: Scorer, validation: ValidationSet | None, metric: str) -> Callable[[], float] | None:
    """The validation score ``metric`` of ``scorer`` as a callable for :func:`fit_epochs` (``None`` without validation)."""
    if validation is None:
        return None
    k = metric_k(metric)
    return lambda: validation.evaluate(scorer, ks=(k,))[metric]


def check_training_args(
    epochs: int, batch_size: int, patience: int, dim: int, metric: str, error: type[Exception] = InputError
) -> None:
    """Raise ``error`` (the calling model's named input error) for settings no fit can run with."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience), ("dim", dim)):
        if value < 1:
            raise error(f"{name} must be at least 1, got {value}")
    metric_k(metric, error)
