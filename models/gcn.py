"""InterestGCN: LightGCN-style propagation over the heterogeneous interest graph.

Method: LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020) — parameter-free propagation ``E^{k+1} = Â E^k`` with a
symmetric-normalised adjacency and the mean over layers as the final embedding — run over the
homogeneous view of the user–item–genre–entity graph. Differences that make it inductive:

* items start from their text embedding through a learned projection (plus a small learned id
  embedding), genres and entities from learned embeddings;
* users have **no free parameters**: a user's layer-0 vector is the weighted mean of the layer-0
  vectors of the items they touched, and the vector a user is *scored* with is the weighted
  mean of the final item embeddings of their history (the item-similarity form of FISM, Kabbur
  et al., KDD 2013), so a user never seen in training is scored from their history without
  retraining (fold-in), and an unseen item from its text and topics alone;
* a learned item bias, added to the dot product, carries the item's appeal that the embeddings
  do not; a non-learned popularity prior is added by the scorer (:mod:`models.training`).

Scoring is separate from encoding: :meth:`InterestGCN.forward` gives item embeddings,
:func:`fold_in_users` turns histories into user vectors, :func:`score` ranks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_undirected

__all__ = ["InterestGCN", "PropagationGraph", "fold_in_users", "interest_adjacency", "row_normalized", "score"]


def _sparse(index: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix (CPU CSR products are several times faster than COO ones)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        coo = torch.sparse_coo_tensor(index, values, shape, check_invariants=True).coalesce()
        return coo.to_sparse_csr()


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


@dataclass(frozen=True)
class PropagationGraph:
    """The constant sparse operators of :meth:`InterestGCN.forward`, built once per graph."""

    adjacency: Tensor  # [n_users + n_items + n_topics]², symmetric-normalised (interest_adjacency)
    user_pool: Tensor  # [n_users, n_items], row-normalised user–item weights (row_normalized)
    user_pool_t: Tensor  # its transpose

    @classmethod
    def build(
        cls,
        user_item: Tensor,
        user_weight: Tensor,
        n_users: int,
        n_items: int,
        item_topic: Tensor,
        n_topics: int,
        topic_weight: float = 1.0,
    ) -> PropagationGraph:
        adjacency = interest_adjacency(user_item, user_weight, n_users, n_items, item_topic, n_topics, topic_weight)
        pool = row_normalized(user_item, user_weight, n_users, n_items)
        pool_t = row_normalized(user_item, user_weight, n_users, n_items, transpose=True)
        return cls(adjacency, pool, pool_t)

    @property
    def n_users(self) -> int:
        return self.user_pool.size(0)


def interest_adjacency(
    user_item: Tensor,
    user_weight: Tensor,
    n_users: int,
    n_items: int,
    item_topic: Tensor,
    n_topics: int,
    topic_weight: float = 1.0,
) -> Tensor:
    """``D^{-1/2} A D^{-1/2}`` of the undirected user–item–topic graph (nodes: users, items, topics).

    ``user_item`` [2, E] (user, item) with weights ``user_weight`` [E]; ``item_topic`` [2, F]
    (item, topic) edges, each of weight ``topic_weight`` (how much topics count against
    interactions in a node's degree). No self-loops, as in LightGCN (eq. 7).
    """
    n_nodes = n_users + n_items + n_topics
    ui = torch.stack([user_item[0], user_item[1] + n_users])
    it = torch.stack([item_topic[0] + n_users, item_topic[1] + n_users + n_items])
    edge_index = torch.cat([ui, it], dim=1).long()
    weights = torch.cat(
        [user_weight.float(), torch.full((it.size(1),), float(topic_weight), dtype=torch.float32)]
    )
    keep = weights > 0
    edge_index, weights = to_undirected(edge_index[:, keep], weights[keep], num_nodes=n_nodes, reduce="mean")
    edge_index, norm = gcn_norm(edge_index, weights, n_nodes, add_self_loops=False)
    return _sparse(edge_index, norm, (n_nodes, n_nodes))


def row_normalized(pairs: Tensor, weight: Tensor, n_rows: int, n_cols: int, transpose: bool = False) -> Tensor:
    """Sparse [n_rows, n_cols] with row r = the weights of its (r, c) pairs divided by their sum
    (or its transpose, [n_cols, n_rows])."""
    totals = torch.zeros(n_rows).index_add_(0, pairs[0], weight.float())
    values = weight.float() / totals[pairs[0]].clamp_min(1e-12)
    if transpose:
        return _sparse(pairs.long().flip(0), values, (n_cols, n_rows))
    return _sparse(pairs.long(), values, (n_rows, n_cols))


class InterestGCN(nn.Module):
    """Encoder of item embeddings by propagation over the interest graph (see module docstring)."""

    def __init__(
        self,
        n_items: int,
        n_genres: int,
        n_entities: int,
        text_dim: int,
        dim: int = 64,
        num_layers: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if min(n_items, text_dim, dim) < 1 or min(n_genres, n_entities, num_layers) < 0:
            raise ValueError(
                f"InterestGCN needs n_items, text_dim, dim >= 1 and n_genres, n_entities, num_layers >= 0; "
                f"got {n_items}, {text_dim}, {dim} and {n_genres}, {n_entities}, {num_layers}"
            )
        self.n_items, self.n_genres, self.n_entities = n_items, n_genres, n_entities
        self.dim, self.num_layers = dim, num_layers
        self.text_proj = nn.Linear(text_dim, dim, bias=False)
        self.item_id = nn.Embedding(n_items, dim)
        self.topic = nn.Embedding(max(n_genres + n_entities, 1), dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.item_id.weight, std=0.01, generator=generator)
        nn.init.normal_(self.topic.weight, std=0.1, generator=generator)
        nn.init.xavier_uniform_(self.text_proj.weight, generator=generator)

    @property
    def n_topics(self) -> int:
        return self.n_genres + self.n_entities

    def item_layer0(self, item_text: Tensor) -> Tensor:
        """Layer-0 item vectors: projected text plus the learned id embedding."""
        return self.text_proj(item_text) + self.item_id.weight

    def forward(self, item_text: Tensor, graph: PropagationGraph) -> Tensor:
        """Final item embeddings [n_items, dim]: the mean over layers 0..K of the propagated vectors.

        Each graph user is the weighted mean of its items' layer-0 vectors (``graph.user_pool``).
        """
        return self.propagate(self.item_layer0(item_text), graph)

    def propagate(self, items0: Tensor, graph: PropagationGraph) -> Tensor:
        """:meth:`forward` from given layer-0 item vectors (training regularises those, so it computes them once)."""
        users0 = _SparseMatmul.apply(graph.user_pool, graph.user_pool_t, items0)
        x = torch.cat([users0, items0, self.topic.weight[: self.n_topics]], dim=0)
        if graph.adjacency.size(0) != x.size(0):
            raise ValueError(
                f"the graph has {graph.adjacency.size(0)} nodes, the model {x.size(0)} "
                f"({graph.n_users} users + {self.n_items} items + {self.n_topics} topics); build both from one graph"
            )
        out, h = x, x
        for _ in range(self.num_layers):
            h = _SparseMatmul.apply(graph.adjacency, graph.adjacency, h)  # symmetric: its own transpose
            out = out + h
        return (out / (self.num_layers + 1))[graph.n_users : graph.n_users + self.n_items]

    def encode(
        self, item_text: Tensor, user_item: Tensor, user_weight: Tensor, n_users: int, item_topic: Tensor
    ) -> Tensor:
        """Final item embeddings from raw edges (builds the graph; training builds it once).

        ``user_item`` [2, E] (user, item) with weights ``user_weight``; ``item_topic`` [2, F]
        (item, topic index in genres + entities).
        """
        graph = PropagationGraph.build(user_item, user_weight, n_users, self.n_items, item_topic, self.n_topics)
        return self(item_text, graph)

    @staticmethod
    def inputs_from_graph(data: HeteroData) -> dict[str, Tensor | int]:
        """The tensors :meth:`encode` needs, from a graph built by :func:`models.graph.build_graph`."""
        ui = data["user", "interacts", "item"]
        genre = data["item", "has_genre", "genre"].edge_index
        entity = data["item", "has_entity", "entity"].edge_index
        n_genres = data["genre"].num_nodes
        item_topic = torch.cat([genre, torch.stack([entity[0], entity[1] + n_genres])], dim=1)
        return {
            "item_text": data["item"].x,
            "user_item": ui.edge_index,
            "user_weight": ui.edge_weight,
            "n_users": data["user"].num_nodes,
            "item_topic": item_topic,
        }


def _weighted_mean_rows(pairs: Tensor, weight: Tensor, item_vectors: Tensor, n_rows: int) -> Tensor:
    """Row r = Σ w·item / Σ w over the (row, item) pairs; zero for a row without pairs."""
    sums = torch.zeros(n_rows, item_vectors.size(1), device=item_vectors.device)
    sums.index_add_(0, pairs[0], item_vectors[pairs[1]] * weight.unsqueeze(1))
    totals = torch.zeros(n_rows, device=item_vectors.device).index_add_(0, pairs[0], weight)
    return sums / totals.clamp_min(1e-12).unsqueeze(1)


def fold_in_users(history: Tensor, weight: Tensor, item_embeddings: Tensor, n_users: int) -> Tensor:
    """User vectors from their (weighted) history over final item embeddings: no retraining.

    ``history`` [2, E] (row, item) pairs with ``weight`` [E]; a row without pairs gets zeros.
    """
    return _weighted_mean_rows(history, weight, item_embeddings, n_users)


def score(users: Tensor, item_embeddings: Tensor, item_bias: Tensor) -> Tensor:
    """Scores [n_users, n_items]: dot product plus the item bias."""
    return users @ item_embeddings.T + item_bias
