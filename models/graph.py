"""The heterogeneous interest graph as a torch-geometric ``HeteroData``, cut at an explicit time.

Nodes: users, items, genres, KG entities. Edges: user–item (weighted by time-decayed affinity at
the cut), item–genre, item–entity; reverse edges are added so messages flow both ways. Nothing
at or after ``cut`` may enter: :func:`build_graph` raises :class:`LeakageError` if it would.

This graph is the one input of the UIG GCN: the training snapshot stores the train window's
graph (``train_graph.pt``, :meth:`InterestGraph.save`), and training, scoring
(:meth:`models.gcn.PropagationGraph.from_graph`) and the interest communities
(:func:`models.communities.graph_communities`) all read it — so what is inspected is what is
learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch_geometric.transforms as T
from torch_geometric.data import HeteroData
from uig_common import names as C
from uig_common.errors import InputError
from uig_common.timeutil import decay_factor

from models.interactions import Interactions, LeakageError, check_no_leakage

__all__ = [
    "ITEM_ENTITY",
    "ITEM_GENRE",
    "USER_ITEM",
    "GraphInputError",
    "InterestGraph",
    "LeakageError",
    "build_graph",
    "train_window_graph",
]

USER_ITEM = ("user", "interacts", "item")
ITEM_GENRE = ("item", "has_genre", "genre")
ITEM_ENTITY = ("item", "has_entity", "entity")
GRAPH_FORMAT = 1


class GraphInputError(InputError):
    """The rows given to build a graph (or a saved graph) are unusable."""


@dataclass(frozen=True)
class InterestGraph:
    """The graph and the ids of its nodes: node ``k`` of type ``user`` is ``user_ids[k]``, etc."""

    data: HeteroData
    user_ids: list[str]
    item_ids: list[str]
    genre_ids: list[str]
    entity_ids: list[str]
    cut: datetime

    @property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    @property
    def user_index(self) -> dict[str, int]:
        return {user: i for i, user in enumerate(self.user_ids)}

    @property
    def topic_ids(self) -> list[str]:
        """Genres then entities: the topic order of :func:`topic_edges` and of the model's topic nodes."""
        return self.genre_ids + self.entity_ids

    @property
    def cut_seconds(self) -> float:
        return self.cut.timestamp()

    def summary(self) -> dict[str, Any]:
        """Node and edge counts per type, and the cut (for logs and XCom)."""
        return {
            "cut": self.cut.isoformat(),
            "nodes": {t: int(self.data[t].num_nodes) for t in self.data.node_types},
            "edges": {"__".join(t): int(self.data[t].edge_index.size(1)) for t in self.data.edge_types},
        }

    def save(self, path: Path) -> Path:
        """Write the graph and its node ids as plain tensors and lists; :meth:`load` reads it back."""
        torch.save({"format": GRAPH_FORMAT, "data": self.data.to_dict(), "user_ids": self.user_ids,
                    "item_ids": self.item_ids, "genre_ids": self.genre_ids, "entity_ids": self.entity_ids,
                    "cut": self.cut.isoformat()}, path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> InterestGraph:
        """A graph written by :meth:`save` (loaded with ``weights_only=True``: no pickled code runs)."""
        saved = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(saved, dict) or saved.get("format") != GRAPH_FORMAT:
            raise GraphInputError(f"{path} is not an interest graph of format {GRAPH_FORMAT}; rebuild the snapshot (`uig train`)")
        return cls(HeteroData.from_dict(saved["data"]), list(saved["user_ids"]), list(saved["item_ids"]),
                   list(saved["genre_ids"]), list(saved["entity_ids"]), datetime.fromisoformat(saved["cut"]))


def _index(values: pd.Series) -> list[str]:
    return sorted(values.astype(str).unique().tolist())


def build_graph(
    interactions: pd.DataFrame,
    item_topics: pd.DataFrame,
    item_ids: list[str],
    cut: datetime,
    item_features: np.ndarray | None = None,
) -> InterestGraph:
    """Build the graph from ``interactions`` (user_key, item_id, weight, last_ts) strictly before ``cut``.

    ``item_topics`` has (item_id, topic_id, topic_type); rows of items outside ``item_ids`` are
    ignored. ``item_ids`` fixes the item order (and the rows of ``item_features``, e.g. text
    embeddings). Users come from the interactions. Ids are matched as strings.
    """
    missing = [c for c in (C.ITEM_ID, C.TOPIC_ID, C.TOPIC_TYPE) if c not in item_topics.columns]
    if missing:
        raise GraphInputError(f"item_topics lacks columns {missing}; expected item_id, topic_id, topic_type")
    cut_ts = pd.Timestamp(cut).tz_convert("UTC") if pd.Timestamp(cut).tzinfo else pd.Timestamp(cut, tz="UTC")
    last = pd.to_datetime(interactions[C.LAST_TS], utc=True)
    if len(interactions) and (last >= cut_ts).any():
        n = int((last >= cut_ts).sum())
        raise LeakageError(f"{n} interactions are at or after the cut {cut_ts.isoformat()}; filter them before building the graph")
    item_ids = [str(item) for item in item_ids]
    items = {item: i for i, item in enumerate(item_ids)}
    known = interactions[C.ITEM_ID].astype(str).isin(items)
    if not known.all():
        raise GraphInputError(f"{int((~known).sum())} interactions reference items outside item_ids")
    users = _index(interactions[C.USER_KEY])
    user_index = {u: i for i, u in enumerate(users)}
    topics = item_topics[item_topics[C.ITEM_ID].astype(str).isin(items)]
    is_genre = topics[C.TOPIC_TYPE] == "genre"
    genres_df = topics[is_genre].drop_duplicates([C.ITEM_ID, C.TOPIC_ID])
    entities_df = topics[~is_genre].drop_duplicates([C.ITEM_ID, C.TOPIC_ID])
    genres, entities = _index(genres_df[C.TOPIC_ID]), _index(entities_df[C.TOPIC_ID])

    data = HeteroData()
    data["user"].num_nodes = len(users)
    data["item"].num_nodes = len(item_ids)
    data["genre"].num_nodes = len(genres)
    data["entity"].num_nodes = len(entities)
    if item_features is not None:
        if np.ndim(item_features) != 2 or len(item_features) != len(item_ids):
            raise GraphInputError(f"item_features must be [n_items={len(item_ids)}, d] with row i the vector of "
                                  f"item_ids[i], got shape {np.shape(item_features)}")
        data["item"].x = torch.as_tensor(item_features, dtype=torch.float32)

    def edges(src: pd.Series, dst: pd.Series, src_map: dict, dst_map: dict) -> torch.Tensor:
        return torch.tensor(
            np.stack([src.astype(str).map(src_map).to_numpy(), dst.astype(str).map(dst_map).to_numpy()]), dtype=torch.long
        ).reshape(2, -1)

    data[USER_ITEM].edge_index = edges(interactions[C.USER_KEY], interactions[C.ITEM_ID], user_index, items)
    data[USER_ITEM].edge_weight = torch.tensor(interactions[C.WEIGHT].to_numpy(), dtype=torch.float32)
    data[ITEM_GENRE].edge_index = edges(genres_df[C.ITEM_ID], genres_df[C.TOPIC_ID], items, {g: i for i, g in enumerate(genres)})
    data[ITEM_ENTITY].edge_index = edges(
        entities_df[C.ITEM_ID], entities_df[C.TOPIC_ID], items, {e: i for i, e in enumerate(entities)}
    )
    data = T.ToUndirected()(data)
    return InterestGraph(data, users, item_ids, genres, entities, cut)


def train_window_graph(
    train: Interactions,
    item_topics: pd.DataFrame,
    item_text: np.ndarray,
    half_life_days: float,
    cut_seconds: float | None = None,
) -> InterestGraph:
    """The graph of a training window at its cut (default: the whole second after its last event).

    A user–item edge weighs ``Σ decay_factor(cut − ts, half_life_days)`` over the pair's events
    (the affinity of ``gold.user_item_affinity`` at the cut); item nodes carry ``item_text``
    (row ``i`` = ``train.items[i]``). Raises :class:`LeakageError` if an event is at or after the cut.
    """
    if len(train) == 0:
        raise GraphInputError("no training interactions to build the graph from")
    cut_seconds = float(np.floor(train.ts.max()) + 1) if cut_seconds is None else float(cut_seconds)
    check_no_leakage(train, cut_seconds, "graph")
    users, items = np.asarray(train.users, dtype=object), np.asarray(train.items, dtype=object)
    edges = (
        pd.DataFrame({C.USER_KEY: users[train.user_ids].astype(str), C.ITEM_ID: items[train.item_ids].astype(str),
                      C.WEIGHT: decay_factor(cut_seconds - train.ts, half_life_days), C.LAST_TS: train.ts})
        .groupby([C.USER_KEY, C.ITEM_ID], as_index=False)
        .agg(**{C.WEIGHT: (C.WEIGHT, "sum"), C.LAST_TS: (C.LAST_TS, "max")})
    )
    edges[C.LAST_TS] = pd.to_datetime(edges[C.LAST_TS], unit="s", utc=True)
    cut = datetime.fromtimestamp(cut_seconds, timezone.utc)
    return build_graph(edges, item_topics, list(train.items), cut, item_features=item_text)
