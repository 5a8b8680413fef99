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

Scoring is separate from encoding: :meth:`InterestGCN.forward` gives item embeddings over a
:class:`PropagationGraph` (built from the stored interest graph by
:meth:`PropagationGraph.from_graph`), :func:`models.propagation.fold_in` turns histories into
user vectors, :func:`score` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from uig_common.errors import InputError

from models.graph import ITEM_ENTITY, ITEM_GENRE, USER_ITEM
from models.propagation import csr_from_parts, normalized_adjacency, row_normalized, sparse_matmul

__all__ = ["EDGE_WEIGHTS", "InterestGCN", "PropagationGraph", "interest_adjacency", "score", "topic_edges"]

#: How user–item edges weigh in propagation: the graph's time-decayed affinity, or 1 each.
EDGE_WEIGHTS = ("affinity", "unit")


@dataclass(frozen=True)
class PropagationGraph:
    """The constant sparse operators of :meth:`InterestGCN.forward`, built once per graph."""

    adjacency: Tensor  # [n_users + n_items + n_topics]², symmetric-normalised (interest_adjacency)
    user_pool: Tensor  # [n_users, n_items], row-normalised user–item weights (row_normalized)
    user_pool_t: Tensor  # its transpose
    item_rows: Tensor  # the adjacency's item rows [n_items, n_nodes]: the last layer needs no others
    item_rows_t: Tensor  # their transpose

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
        item_rows = _csr_rows(adjacency, n_users, n_users + n_items)
        return cls(adjacency, pool, pool_t, item_rows, item_rows.t().to_sparse_csr())

    def to(self, device: torch.device | str) -> PropagationGraph:
        """The same operators on ``device``."""
        return PropagationGraph(*(getattr(self, f.name).to(device) for f in fields(self)))

    @classmethod
    def from_graph(cls, data: HeteroData, topic_weight: float = 1.0, edge_weights: str = "affinity") -> PropagationGraph:
        """The operators of an interest graph (:func:`models.graph.build_graph`): the one way the
        model reads the graph. ``edge_weights`` (:data:`EDGE_WEIGHTS`): user–item edges weigh their
        affinity (``edge_weight``) or 1 each; item–topic edges weigh ``topic_weight``."""
        if edge_weights not in EDGE_WEIGHTS:
            raise InputError(f"edge_weights must be one of {EDGE_WEIGHTS}, got {edge_weights!r}")
        ui = data[USER_ITEM]
        weight = ui.edge_weight if edge_weights == "affinity" else torch.ones(ui.edge_index.size(1))
        n_topics = data["genre"].num_nodes + data["entity"].num_nodes
        return cls.build(ui.edge_index, weight, data["user"].num_nodes, data["item"].num_nodes, topic_edges(data),
                         n_topics, topic_weight)

    @property
    def n_users(self) -> int:
        return self.user_pool.size(0)


def _csr_rows(matrix: Tensor, start: int, end: int) -> Tensor:
    """Rows ``start:end`` of a CSR matrix, as CSR (the same values, in the same order)."""
    crow, col, values = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    first, last = int(crow[start]), int(crow[end])
    return csr_from_parts(crow[start : end + 1] - first, col[first:last], values[first:last], (end - start, matrix.size(1)))


def topic_edges(data: HeteroData) -> Tensor:
    """(item, topic) pairs [2, F] of an interest graph; topics are its genres, then its entities."""
    genre, entity = data[ITEM_GENRE].edge_index, data[ITEM_ENTITY].edge_index
    return torch.cat([genre, torch.stack([entity[0], entity[1] + data["genre"].num_nodes])], dim=1)


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
    ui = torch.stack([user_item[0], user_item[1] + n_users])
    it = torch.stack([item_topic[0] + n_users, item_topic[1] + n_users + n_items])
    weights = torch.cat(
        [user_weight.float(), torch.full((it.size(1),), float(topic_weight), dtype=torch.float32)]
    )
    return normalized_adjacency(torch.cat([ui, it], dim=1), weights, n_users + n_items + n_topics)


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
        users0 = sparse_matmul(graph.user_pool, graph.user_pool_t, items0)
        topics = self.topic.weight if self.topic.num_embeddings == self.n_topics else self.topic.weight[: self.n_topics]
        x = torch.cat([users0, items0, topics], dim=0)
        if graph.adjacency.size(0) != x.size(0):
            raise ValueError(
                f"the graph has {graph.adjacency.size(0)} nodes, the model {x.size(0)} "
                f"({graph.n_users} users + {self.n_items} items + {self.n_topics} topics); build both from one graph"
            )
        out, h = items0, x
        for layer in range(1, self.num_layers + 1):
            if layer < self.num_layers:
                h = sparse_matmul(graph.adjacency, graph.adjacency, h)  # symmetric: its own transpose
                out = out + h[graph.n_users : graph.n_users + self.n_items]
            else:  # only the item rows are returned: the last layer computes no others
                out = out + sparse_matmul(graph.item_rows, graph.item_rows_t, h)
        return out / (self.num_layers + 1)


def score(users: Tensor, item_embeddings: Tensor, item_bias: Tensor) -> Tensor:
    """Scores [n_users, n_items]: dot product plus the item bias."""
    return users @ item_embeddings.T + item_bias
