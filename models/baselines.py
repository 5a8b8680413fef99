"""Reference recommenders measured with the same protocol as the UIG GCN (:mod:`models.evaluation`).

* :class:`MostPopular` — interaction counts; the floor every personalised model must beat.
* :class:`ItemKNN` — item-based top-N with cosine similarity (Deshpande & Karypis, TOIS 2004).
* :class:`BPRMF` — matrix factorisation trained with BPR (Rendle et al., UAI 2009).
* :class:`LightGCNBaseline` — plain LightGCN (He et al., SIGIR 2020) from torch-geometric on the
  user–item graph only: no text, no topics, no item bias.

All implement the :class:`~models.evaluation.Scorer` protocol. The trained ones fit on the train
window only and handle users they never trained on by **fold-in**: the user vector is the mean
of the (final) item vectors of the user's input history; a user with no history at all gets the
mean of the trained user vectors ("the average training user"), which is the model's own
non-personalised ranking. Users seen in training keep their trained vector.

Everything random draws from one ``torch.Generator`` seeded by ``seed`` (the global RNG is not
touched), so a fit is reproducible on the same machine and thread count.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn.models import LightGCN

from models.bpr import BPRSampler, FitReport, bpr_loss, check_training_args, fit_epochs, validator
from models.evaluation import History, Interactions, ValidationSet
from models.propagation import cosine_neighbours, fold_in, normalized_adjacency
from uig_common.errors import InputError, UigError

__all__ = [
    "BPRMF",
    "BaselineInputError",
    "ItemKNN",
    "LightGCNBaseline",
    "MatrixFactorization",
    "MostPopular",
    "NotFittedError",
]


class BaselineInputError(InputError):
    """A baseline was asked to fit on unusable data or with unusable settings."""


class NotFittedError(UigError, RuntimeError):
    """``score`` was called before ``fit``."""


def _require(inputs: Interactions, what: str) -> None:
    if not isinstance(inputs, Interactions):
        raise BaselineInputError(f"{what} expects models.evaluation.Interactions, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise BaselineInputError(f"{what} got no interactions to fit on")


def _check_history(history: History, n_items: int, what: str) -> None:
    if history.n_items != n_items:
        raise BaselineInputError(
            f"{what} was fitted over {n_items} items but the history is over {history.n_items}; "
            "fit and score with the same item index (one EncodedSplit)"
        )


# --------------------------------------------------------------------------------------------
# Non-learned baselines


class MostPopular:
    """Scores every item by its number of input interactions (same list for every user).

    Fit it on everything before the evaluated window (train for validation, train + validation
    for test): counts are input, not labels.
    """

    def __init__(self) -> None:
        self.counts: Tensor | None = None
        self.report = FitReport()

    def fit(self, inputs: Interactions) -> MostPopular:
        _require(inputs, "MostPopular.fit")
        t0 = time.perf_counter()
        self.counts = torch.from_numpy(np.bincount(inputs.item_ids, minlength=inputs.n_items).astype(np.float32))
        self.report = FitReport(epochs_run=1, best_epoch=1, train_seconds=time.perf_counter() - t0)
        return self

    def score(self, users: Tensor, history: History) -> Tensor:
        if self.counts is None:
            raise NotFittedError("MostPopular.score called before fit")
        _check_history(history, self.counts.numel(), "MostPopular")
        return self.counts.unsqueeze(0).repeat(len(users), 1)


class ItemKNN:
    """Item-based top-N recommendation (Deshpande & Karypis, "Item-based top-N recommendation
    algorithms", ACM TOIS 2004) with cosine similarity on the binary user–item matrix.

    Each item keeps its ``k`` most similar items (ties → lower item index); a user's score for
    item ``j`` is the sum of ``sim(i, j)`` over history items ``i`` that have ``j`` among their
    neighbours. A user with no history at all cannot be scored by neighbours and gets the input
    popularity instead (as the trained baselines get their "average user"). The item–item matrix
    is dense (``n_items²`` floats): fine for catalogs up to a few ten thousand items. Fit on all
    input interactions before the evaluated window.
    """

    def __init__(self, k: int = 100) -> None:
        if k < 1:
            raise BaselineInputError(f"ItemKNN needs k >= 1 neighbours, got {k}")
        self.k = k
        self.similarity: Tensor | None = None
        self.popularity: Tensor | None = None
        self.report = FitReport()

    def fit(self, inputs: Interactions) -> ItemKNN:
        _require(inputs, "ItemKNN.fit")
        t0 = time.perf_counter()
        rows, items = inputs.history().pairs()
        kept = cosine_neighbours(rows, items, inputs.n_users, inputs.n_items, self.k)
        self.similarity = kept  # row i: the neighbours of item i
        self.popularity = torch.from_numpy(np.bincount(inputs.item_ids, minlength=inputs.n_items).astype(np.float32))
        self.report = FitReport(epochs_run=1, best_epoch=1, train_seconds=time.perf_counter() - t0)
        return self

    def score(self, users: Tensor, history: History) -> Tensor:
        if self.similarity is None:
            raise NotFittedError("ItemKNN.score called before fit")
        _check_history(history, self.similarity.size(0), "ItemKNN")
        scores = history.dense(users) @ self.similarity
        empty = torch.from_numpy(history.lengths()[users.cpu().numpy()] == 0)
        if empty.any():
            scores[empty] = self.popularity
        return scores


# --------------------------------------------------------------------------------------------
# Fold-in of the trained baselines


def _fold_in(
    users: Tensor, history: History, user_vectors: Tensor, item_vectors: Tensor, known: Tensor
) -> Tensor:
    """User vectors for ``users``: trained ones where ``known``, else the mean item vector of the
    user's history (:func:`models.propagation.fold_in`), else (empty history) the mean trained
    user vector."""
    if users.numel() and (int(users.min()) < 0 or int(users.max()) >= user_vectors.size(0)):
        raise BaselineInputError(
            f"user indices must lie in [0, {user_vectors.size(0)}): score users of the index the model was fitted on"
        )
    out = user_vectors[users].clone()
    unknown = ~known[users]
    if unknown.any():
        positions = torch.nonzero(unknown).flatten()
        rows, items = history.pairs(users[positions])
        folded = fold_in(torch.stack([rows, items]), None, item_vectors, positions.numel())
        counts = torch.bincount(rows, minlength=positions.numel()).unsqueeze(1)
        out[positions] = torch.where(counts > 0, folded, user_vectors[known].mean(0))
    return out


# --------------------------------------------------------------------------------------------
# BPR-MF


class MatrixFactorization(nn.Module):
    """``ŷ_ui = ⟨p_u, q_i⟩``: the MF model of BPR-MF (Rendle et al., "BPR: Bayesian Personalized
    Ranking from Implicit Feedback", UAI 2009), without biases as in the paper."""

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator, std: float = 0.1) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=std, generator=generator)
        nn.init.normal_(self.item.weight, std=std, generator=generator)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return (self.user(users) * self.item(items)).sum(-1)


class BPRMF:
    """BPR-MF baseline: :class:`MatrixFactorization` trained with the BPR loss
    ``-ln σ(ŷ_ui − ŷ_uj) + λ(‖p_u‖² + ‖q_i‖² + ‖q_j‖²)`` (mean over the batch) and Adam.

    Fit on the train window; optional early stopping on ``validation`` (train as input, the
    validation window as targets). Users absent from training are folded in (module docstring).
    """

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 40,
        batch_size: int = 1024,
        lr: float = 5e-3,
        reg: float = 1e-4,
        patience: int = 3,
        metric: str = "ndcg@10",
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        check_training_args(epochs, batch_size, patience, dim, metric, BaselineInputError)
        self.dim, self.epochs, self.batch_size, self.lr, self.reg = dim, epochs, batch_size, lr, reg
        self.patience, self.metric, self.seed, self.device = patience, metric, seed, torch.device(device)
        self.model: MatrixFactorization | None = None
        self.known: Tensor | None = None
        self.report = FitReport()

    def fit(self, train: Interactions, validation: ValidationSet | None = None) -> BPRMF:
        _require(train, "BPRMF.fit")
        generator = torch.Generator().manual_seed(self.seed)
        history = train.history()
        self.known = torch.from_numpy(history.lengths() > 0)
        self.model = MatrixFactorization(train.n_users, train.n_items, self.dim, generator).to(self.device)
        sampler = BPRSampler(history, generator)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        model = self.model

        def run_epoch() -> float:
            total = 0.0
            for u, i, j in sampler.epoch(self.batch_size, self.device):
                pu, qi, qj = model.user(u), model.item(i), model.item(j)
                loss = bpr_loss((pu * qi).sum(-1), (pu * qj).sum(-1), (pu, qi, qj), self.reg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * u.numel()
            return total / len(sampler)

        self.report = fit_epochs(model, run_epoch, validator(self, validation, self.metric), self.epochs,
                                 self.patience, lambda: None)
        return self

    def score(self, users: Tensor, history: History) -> Tensor:
        if self.model is None or self.known is None:
            raise NotFittedError("BPRMF.score called before fit")
        _check_history(history, self.model.item.num_embeddings, "BPRMF")
        with torch.no_grad():
            items = self.model.item.weight.cpu()
            vectors = _fold_in(users, history, self.model.user.weight.cpu(), items, self.known)
            return vectors @ items.T


# --------------------------------------------------------------------------------------------
# LightGCN


def user_item_adjacency(history: History) -> Tensor:
    """LightGCN's propagation matrix of the bipartite user–item graph (users first, then items):
    :func:`models.propagation.normalized_adjacency` with unit weights."""
    rows, items = history.pairs()
    return normalized_adjacency(torch.stack([rows, items + history.n_users]), None, history.n_users + history.n_items)


class LightGCNBaseline:
    """Plain LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network
    for Recommendation", SIGIR 2020) via :class:`torch_geometric.nn.models.LightGCN` on the
    train user–item graph, trained with :func:`models.bpr.bpr_loss` (the loss of PyG's
    ``recommendation_loss``: BPR plus L2 on the batch's layer-0 embeddings) and Adam.

    The symmetric normalisation is computed once (:func:`user_item_adjacency`) and the layers
    run with ``normalize=False`` on that sparse matrix — the same propagation as the default, a
    few times faster on CPU. Scores are dot products of final (layer-averaged) embeddings; users
    absent from training are folded in from final item embeddings (module docstring).
    """

    def __init__(
        self,
        dim: int = 64,
        num_layers: int = 3,
        epochs: int = 40,
        batch_size: int = 2048,
        lr: float = 5e-3,
        reg: float = 1e-4,
        patience: int = 3,
        metric: str = "ndcg@10",
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        check_training_args(epochs, batch_size, patience, dim, metric, BaselineInputError)
        if num_layers < 0:
            raise BaselineInputError(f"num_layers must be >= 0, got {num_layers}")
        self.dim, self.num_layers, self.epochs, self.batch_size = dim, num_layers, epochs, batch_size
        self.lr, self.reg, self.patience, self.metric, self.seed = lr, reg, patience, metric, seed
        self.device = torch.device(device)
        self.model: LightGCN | None = None
        self.adjacency: Tensor | None = None
        self.known: Tensor | None = None
        self.n_users = 0
        self._final: tuple[Tensor, Tensor] | None = None
        self.report = FitReport()

    def fit(self, train: Interactions, validation: ValidationSet | None = None) -> LightGCNBaseline:
        _require(train, "LightGCNBaseline.fit")
        generator = torch.Generator().manual_seed(self.seed)
        history = train.history()
        self.n_users = train.n_users
        self.known = torch.from_numpy(history.lengths() > 0)
        self.adjacency = adjacency = user_item_adjacency(history).to(self.device)
        with torch.random.fork_rng(devices=[]):  # LightGCN's own init draws from the global RNG
            self.model = model = LightGCN(train.n_users + train.n_items, self.dim, self.num_layers, normalize=False)
        nn.init.xavier_uniform_(model.embedding.weight, generator=generator)  # PyG's init, seeded
        model.to(self.device)
        sampler = BPRSampler(history, generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        offset = train.n_users

        def run_epoch() -> float:
            total = 0.0
            for u, i, j in sampler.epoch(self.batch_size, self.device):
                label_index = torch.cat([torch.stack([u, i + offset]), torch.stack([u, j + offset])], dim=1)
                pos, neg = model(adjacency, label_index).chunk(2)
                loss = bpr_loss(pos, neg, (model.embedding.weight[label_index.unique()],), self.reg)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * u.numel()
            return total / len(sampler)

        self.report = fit_epochs(model, run_epoch, validator(self, validation, self.metric), self.epochs,
                                 self.patience, self._forget_embeddings)
        return self

    def _forget_embeddings(self) -> None:
        self._final = None

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """(users [n_users, dim], items [n_items, dim]) after propagation over the train graph."""
        if self.model is None or self.adjacency is None:
            raise NotFittedError("LightGCNBaseline used before fit")
        if self._final is None:
            with torch.no_grad():
                out = self.model.get_embedding(self.adjacency).cpu()
            self._final = (out[: self.n_users], out[self.n_users :])
        return self._final

    def score(self, users: Tensor, history: History) -> Tensor:
        user_final, item_final = self.final_embeddings()
        assert self.known is not None
        _check_history(history, item_final.size(0), "LightGCNBaseline")
        with torch.no_grad():
            return _fold_in(users, history, user_final, item_final, self.known) @ item_final.T
