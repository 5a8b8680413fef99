"""Graph operators shared by the UIG GCN and the LightGCN baseline: the normalised adjacency,
row-normalised pooling and fold-in, each written once.

* :func:`normalized_adjacency` — ``D^{-1/2} A D^{-1/2}`` of an undirected weighted graph without
  self-loops, LightGCN's propagation matrix (He et al., SIGIR 2020, eq. 7);
* :func:`row_normalized` — each row's weights divided by their sum (a user's layer-0 vector as
  the weighted mean of their items');
* :func:`fold_in` — a user vector as the weighted mean of the item vectors of their history
  (the item-similarity form of FISM, Kabbur et al., KDD 2013), so a user never trained on is
  scored from their history alone.

Sparse matrices are CSR: on CPU, CSR products are several times faster than COO ones.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_undirected
from uig_common.timeutil import decay_factor

__all__ = [
    "cosine_neighbours",
    "fold_in",
    "normalized_adjacency",
    "recency_weights",
    "row_normalized",
    "csr_from_parts",
    "sparse_csr",
    "sparse_matmul",
]


def sparse_csr(index: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix from COO ``index`` [2, E] and ``values`` [E] (duplicates summed)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        coo = torch.sparse_coo_tensor(index, values, shape, check_invariants=True).coalesce()
        return coo.to_sparse_csr()


def csr_from_parts(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix from its row pointers, column indices and values, as given (no checks,
    no copy): for operators rebuilt every batch from index arrays already in CSR order."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse_csr_tensor(crow, col, values, shape)


class _SparseMatmul(torch.autograd.Function):
    """``a @ h`` for a constant sparse ``a`` whose transpose ``a_t`` is given (CSR too), so the
    backward pass is one more CSR product instead of a transpose per step."""

    @staticmethod
    def forward(ctx, a: Tensor, a_t: Tensor, h: Tensor) -> Tensor:  # type: ignore[override]
        ctx.a_t = a_t
        return a @ h

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        return None, None, ctx.a_t @ grad


def sparse_matmul(a: Tensor, a_t: Tensor, h: Tensor) -> Tensor:
    """``a @ h``, differentiable in ``h`` only, for a sparse CSR ``a`` and its transpose ``a_t``
    (a symmetric ``a`` passes itself): autograd through a CSR product would transpose ``a`` on
    every backward pass."""
    return _SparseMatmul.apply(a, a_t, h)


def normalized_adjacency(edge_index: Tensor, weight: Tensor | None, n_nodes: int) -> Tensor:
    """``D^{-1/2} A D^{-1/2}`` [n_nodes, n_nodes] (CSR) of the undirected graph of ``edge_index``.

    ``edge_index`` [2, E] lists each edge in one or both directions; ``weight`` [E] (``None``:
    all 1) — an edge listed both ways, or twice, keeps the mean of its weights. Edges of weight
    0 are dropped. No self-loops.
    """
    weight = torch.ones(edge_index.size(1)) if weight is None else weight.float()
    keep = weight > 0
    edge_index, weight = to_undirected(edge_index[:, keep].long(), weight[keep], num_nodes=n_nodes, reduce="mean")
    edge_index, norm = gcn_norm(edge_index, weight, n_nodes, add_self_loops=False)
    return sparse_csr(edge_index, norm, (n_nodes, n_nodes))


def row_normalized(pairs: Tensor, weight: Tensor, n_rows: int, n_cols: int, transpose: bool = False) -> Tensor:
    """Sparse [n_rows, n_cols] with row r = the weights of its (r, c) pairs divided by their sum
    (or its transpose, [n_cols, n_rows])."""
    totals = torch.zeros(n_rows).index_add_(0, pairs[0], weight.float())
    values = weight.float() / totals[pairs[0]].clamp_min(1e-12)
    if transpose:
        return sparse_csr(pairs.long().flip(0), values, (n_cols, n_rows))
    return sparse_csr(pairs.long(), values, (n_rows, n_cols))


def fold_in(pairs: Tensor, weight: Tensor | None, item_vectors: Tensor, n_rows: int) -> Tensor:
    """Row vectors [n_rows, dim] from (row, item) ``pairs`` [2, E]: row r is Σ w·item / Σ w over its
    pairs (``weight`` ``None``: the plain mean), zeros for a row without pairs. Differentiable in
    ``item_vectors`` (one ``embedding_bag``: several times faster than scatter-adds on CPU)."""
    rows, items = pairs[0], pairs[1]
    if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):  # bags must be contiguous
        order = torch.argsort(rows, stable=True)
        rows, items = rows[order], items[order]
        weight = None if weight is None else weight[order]
    counts = torch.bincount(rows, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    if weight is None:
        return F.embedding_bag(items, item_vectors, offsets, mode="mean")
    weight = weight.to(item_vectors)
    sums = F.embedding_bag(items, item_vectors, offsets, mode="sum", per_sample_weights=weight)
    totals = torch.zeros(n_rows, dtype=weight.dtype, device=weight.device).index_add_(0, rows, weight)
    return sums / totals.clamp_min(1e-12).unsqueeze(1)


def recency_weights(rows: np.ndarray, ages_seconds: np.ndarray, half_life_days: float) -> Tensor:
    """Fold-in weights ``decay_factor(age, half-life)`` of history items (``rows``: the user of
    each), taken relative to each user's most recent item — the same shares, but a user back
    from a long pause never underflows to all-zero weights. ``inf`` gives all ones."""
    rows, ages = np.asarray(rows, dtype=np.int64), np.asarray(ages_seconds, dtype=np.float64)
    if ages.size == 0:
        return torch.zeros(0)
    newest = np.full(int(rows.max()) + 1, np.inf)
    np.minimum.at(newest, rows, ages)
    return torch.from_numpy(np.asarray(decay_factor(ages - newest[rows], half_life_days), dtype=np.float32))


def cosine_neighbours(rows: Tensor, items: Tensor, n_rows: int, n_items: int, k: int) -> Tensor:
    """Item–item cosine similarity of the binary (row, item) matrix, each item keeping its ``k``
    most similar items (ties → lower index, negatives dropped): dense [n_items, n_items], row
    ``i`` = the neighbours of ``i``, diagonal 0. The two-hop item → user → item paths of a
    user–item graph, normalised (Deshpande & Karypis, TOIS 2004). Dense: for catalogs up to a few
    ten thousand items."""
    x = torch.sparse_coo_tensor(torch.stack([rows.long(), items.long()]), torch.ones(rows.numel()),
                                (n_rows, n_items), check_invariants=True).coalesce()
    x = torch.sparse_coo_tensor(x.indices(), torch.ones_like(x.values()), x.shape,
                                check_invariants=True)  # binary: a repeat counts once
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        co = torch.sparse.mm(x.t().coalesce(), x).to_dense()  # co-occurrence counts [I, I]
    norms = co.diagonal().sqrt()
    sim = co / (norms.unsqueeze(1) * norms.unsqueeze(0)).clamp_min(1e-12)
    sim.fill_diagonal_(0.0)
    k = min(k, n_items - 1) if n_items > 1 else 0
    values, order = torch.sort(sim, dim=1, descending=True, stable=True)
    kept = torch.zeros_like(sim)
    kept.scatter_(1, order[:, :k], values[:, :k].clamp_min(0.0))
    return kept
