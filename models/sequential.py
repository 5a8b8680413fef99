"""SASRec-style sequential baseline (Kang & McAuley, "Self-Attentive Sequential Recommendation",
ICDM 2018): the next item from the order of a user's items, not just their set.

Differences from the paper, and why:

* pre-LN blocks and a final LayerNorm (stable training without warm-up);
* full-softmax cross-entropy over the whole catalog instead of one sampled negative: the catalog
  is small (a few thousand items), and the full loss ranks better than the sampled one;
* a learned start token ``BOS`` before each user's first item. Its output predicts the first
  item, so every training interaction is a target exactly once, and a user with no events is
  scored from the sequence ``[BOS]``: a learned "empty sequence" output, not an undefined one.

Tokens: ``0`` = padding, ``1..n_items`` = items shifted by one, ``n_items + 1`` = ``BOS``.
Sequences are left-padded, so the last position always holds the most recent item. Order within
a user is by ``ts``, ties by the input order (stable sort).

Everything random runs under ``torch.manual_seed(seed)`` inside a forked RNG (the caller's global
RNG state is restored afterwards), so two fits with the same seed on the same machine and thread
count give identical scores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.interactions import Interactions
from uig_common.errors import InputError, UigError

__all__ = ["NotFittedError", "SASRec", "SASRecConfig", "SequentialInputError"]

#: Users scored per forward pass in :meth:`SASRec.score_at`.
SCORE_BATCH = 512


class SequentialInputError(InputError):
    """A sequential model got unusable settings or data (wrong index, leaking inputs, empty fit)."""


class NotFittedError(UigError, RuntimeError):
    """``score_at`` was called before ``fit``."""


@dataclass(frozen=True)
class SASRecConfig:
    """Hyper-parameters of :class:`SASRec`; ``patience`` counts epochs without a better metric."""

    dim: int = 64
    heads: int = 2
    blocks: int = 2
    max_len: int = 50
    dropout: float = 0.2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 0

    def check(self) -> SASRecConfig:
        ints = {k: getattr(self, k) for k in ("dim", "heads", "blocks", "max_len", "epochs", "batch_size", "patience")}
        for name, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SequentialInputError(f"SASRecConfig.{name} must be an integer >= 1, got {value!r}")
        if self.dim % self.heads:
            raise SequentialInputError(f"SASRecConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise SequentialInputError(f"SASRecConfig.dropout must lie in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SequentialInputError(f"SASRecConfig.lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise SequentialInputError(f"SASRecConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise SequentialInputError(f"SASRecConfig.seed must be an integer, got {self.seed!r}")
        return self

    def to_params(self) -> dict[str, int | float]:
        return asdict(self)


class _Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + ffn(LN(x))`` (the paper's ReLU FFN)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn, self.ln_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, blocked: Tensor) -> Tensor:
        h = self.ln_attn(x)
        x = x + self.drop(self.attn(h, h, h, attn_mask=blocked, need_weights=False)[0])
        return x + self.drop(self.ffn(self.ln_ffn(x)))


class _Network(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.n_items, self.heads = n_items, cfg.heads
        self.token = nn.Embedding(n_items + 2, cfg.dim, padding_idx=0)
        self.position = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.token.weight[0].zero_()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        self.ln = nn.LayerNorm(cfg.dim)
        causal = torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Hidden states [B, max_len, dim] of left-padded token rows [B, max_len]."""
        pad = tokens == 0
        x = self.drop(self.token(tokens) + self.position.weight.unsqueeze(0))
        # no query sees a later position or a padding key; every position sees itself, so the
        # rows of padding positions (ignored downstream) stay finite instead of softmax(-inf) = NaN
        eye = torch.eye(tokens.size(1), dtype=torch.bool, device=tokens.device)
        blocked = (self.causal.unsqueeze(0) | pad.unsqueeze(1)) & ~eye
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, blocked)
        return self.ln(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """Scores over items ``0..n_items-1``: tied to the token embeddings, padding and BOS excluded."""
        return hidden @ self.token.weight[1 : self.n_items + 1].T


def _by_user_then_time(users: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Order by (user, ts); ties keep the input order (``lexsort`` is stable)."""
    return np.lexsort((ts, users))


class SASRec:
    """SASRec baseline scored through :meth:`score_at` by the rolling protocol.

    ``fit`` trains on each user's train sequence; ``score_at`` reads each user's last
    ``max_len`` input items (``[BOS] + items`` while shorter), so scores depend on nothing else.
    """

    def __init__(self, config: SASRecConfig | None = None, device: str | torch.device | None = None) -> None:
        self.config = (config or SASRecConfig()).check()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net: _Network | None = None
        self.items: tuple = ()
        self.history: list[dict[str, float | int | None]] = []
        self.best_epoch = 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    def to_params(self) -> dict[str, int | float]:
        return self.config.to_params()

    def _windows(self, train: Interactions) -> Tensor:
        """Training windows [W, max_len + 1] of ``[BOS] + items`` per user, cut with stride max_len.

        Consecutive windows overlap by one token (the last input of one is the first of the
        next), so every interaction is a target exactly once; short windows are left-padded.
        """
        span, bos = self.config.max_len, self.n_items + 1
        order = _by_user_then_time(train.user_ids, train.ts)
        users, tokens = train.user_ids[order], train.item_ids[order] + 1
        bounds = np.flatnonzero(np.diff(users)) + 1
        rows = []
        for seq in np.split(tokens, bounds):
            seq = np.concatenate(([bos], seq))
            for start in range(0, seq.size - 1, span):
                piece = seq[start : start + span + 1]
                row = np.zeros(span + 1, dtype=np.int64)
                row[span + 1 - piece.size :] = piece
                rows.append(row)
        return torch.from_numpy(np.stack(rows))

    def fit(self, train: Interactions, on_epoch: Callable[[SASRec], float] | None = None) -> SASRec:
        """Train on ``train``; with ``on_epoch`` (called in eval mode after every epoch, higher is
        better) stop after ``patience`` epochs without improvement and keep the best epoch;
        without it, run every epoch and keep the last."""
        if not isinstance(train, Interactions):
            raise SequentialInputError(f"SASRec.fit expects Interactions, got {type(train).__name__}")
        if len(train) == 0 or train.n_items == 0:
            raise SequentialInputError("SASRec.fit got no interactions to fit on")
        cfg, device = self.config, self.device
        self.items, self.history, self.best_epoch = train.items, [], 0
        windows = self._windows(train).to(device)
        forked = []  # the CUDA RNG (dropout on the GPU) is forked and seeded too
        if device.type == "cuda":
            forked = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(cfg.seed)
            self.net = net = _Network(self.n_items, cfg).to(device)  # init on the CPU RNG, then moved
            shuffle = torch.Generator().manual_seed(cfg.seed)
            optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            best_metric, best_state, stale = -math.inf, None, 0
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                net.train()
                total, count = 0.0, 0
                for batch in torch.randperm(windows.size(0), generator=shuffle).split(cfg.batch_size):
                    rows = windows[batch.to(device)]
                    targets = rows[:, 1:]
                    keep = (rows[:, :-1] > 0) & (targets > 0)  # a padded input, or the BOS as target, is no step
                    hidden = net(rows[:, :-1])
                    loss = F.cross_entropy(net.logits(hidden[keep]), targets[keep] - 1)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    n = int(keep.sum())
                    total, count = total + float(loss.detach()) * n, count + n
                metric = None
                if on_epoch is not None:
                    net.eval()
                    with torch.no_grad():
                        metric = float(on_epoch(self))
                self.history.append({"epoch": epoch, "loss": total / count, "metric": metric,
                                     "seconds": time.perf_counter() - t0})
                if metric is None or metric > best_metric:  # NaN never improves
                    best_metric, stale, self.best_epoch = (metric if metric is not None else -math.inf), 0, epoch
                    if on_epoch is not None:
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
        net.eval()
        return self

    def _last_tokens(self, users: np.ndarray, inputs: Interactions) -> np.ndarray:
        """Left-padded rows [len(users), max_len] (``users`` sorted, unique) of each user's last
        ``max_len`` tokens of ``[BOS] + items``."""
        span = self.config.max_len
        sel = np.flatnonzero(np.isin(inputs.user_ids, users))
        order = sel[_by_user_then_time(inputs.user_ids[sel], inputs.ts[sel])]
        row = np.searchsorted(users, inputs.user_ids[order])
        counts = np.bincount(row, minlength=users.size)
        from_end = np.cumsum(counts)[row] - 1 - np.arange(order.size)  # 0 = the user's latest event
        recent = from_end < span
        out = np.zeros((users.size, span), dtype=np.int64)
        out[row[recent], span - 1 - from_end[recent]] = inputs.item_ids[order[recent]] + 1
        short = np.flatnonzero(counts < span)
        out[short, span - 1 - counts[short]] = self.n_items + 1
        return out

    def score_at(self, users: np.ndarray, inputs: Interactions, as_of: float) -> Tensor:
        """Scores [len(users), n_items] (float32, CPU) for the given user indices, from `inputs`
        (every event strictly before `as_of`, over the same user/item index the model was fitted on).

        Reads each user's last ``max_len`` events of ``inputs`` (ties in ``ts`` by input order);
        a user without events gets the learned empty-sequence output (``[BOS]``). Seen items are
        not masked: the protocol does that.
        """
        if self.net is None:
            raise NotFittedError("SASRec.score_at called before fit")
        if not isinstance(inputs, Interactions):
            raise SequentialInputError(f"SASRec.score_at expects Interactions, got {type(inputs).__name__}")
        if inputs.items != self.items:
            raise SequentialInputError(
                f"SASRec was fitted over {self.n_items} items but the inputs are over {inputs.n_items} "
                "(or another order); fit and score with the same item index (one EncodedSplit)"
            )
        as_of = float(as_of)
        if math.isnan(as_of):
            raise SequentialInputError("as_of must be a time in epoch seconds, got NaN")
        late = inputs.ts >= as_of
        if late.any():
            raise SequentialInputError(
                f"{int(late.sum())} input events are at or after as_of={as_of} (latest {float(inputs.ts.max())}); "
                "inputs must end strictly before the time being scored"
            )
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if users.size and (users.min() < 0 or users.max() >= inputs.n_users):
            raise SequentialInputError(f"user indices must lie in [0, {inputs.n_users}) of the inputs' user index")
        if users.size == 0:
            return torch.zeros(0, self.n_items)
        unique, inverse = np.unique(users, return_inverse=True)
        tokens = torch.from_numpy(self._last_tokens(unique, inputs))
        net = self.net
        was_training = net.training
        net.eval()
        parts = []
        with torch.no_grad():
            for chunk in tokens.split(SCORE_BATCH):
                hidden = net(chunk.to(self.device))[:, -1]
                parts.append(net.logits(hidden).float().cpu())
        net.train(was_training)
        return torch.cat(parts)[torch.from_numpy(inverse.reshape(-1))]
