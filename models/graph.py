"""The heterogeneous interest graph as a torch-geometric ``HeteroData``, cut at an explicit time.

Nodes: users, items, genres, KG entities. Edges: user–item (weighted by time-decayed affinity at
the cut), item–genre, item–entity; reverse edges are added so messages flow both ways. Nothing
at or after ``cut`` may enter: :func:`build_graph` raises :class:`LeakageError` if it would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData
import torch_geometric.transforms as T

from models.evaluation import LeakageError

__all__ = ["InterestGraph", "LeakageError", "build_graph"]


@dataclass(frozen=True)
class InterestGraph:
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

    ``item_topics`` has (item_id, topic_id, topic_type); ``item_ids`` fixes the item order (and
    the rows of ``item_features``, e.g. text embeddings). Users come from the interactions.
    """
    cut_ts = pd.Timestamp(cut).tz_convert("UTC") if pd.Timestamp(cut).tzinfo else pd.Timestamp(cut, tz="UTC")
    last = pd.to_datetime(interactions["last_ts"], utc=True)
    if len(interactions) and (last >= cut_ts).any():
        n = int((last >= cut_ts).sum())
        raise LeakageError(f"{n} interactions are at or after the cut {cut_ts.isoformat()}; filter them before building the graph")
    items = {item: i for i, item in enumerate(item_ids)}
    known = interactions["item_id"].astype(str).isin(items)
    if not known.all():
        raise ValueError(f"{int((~known).sum())} interactions reference items outside item_ids")
    users = _index(interactions["user_key"])
    user_index = {u: i for i, u in enumerate(users)}
    genres_df = item_topics[item_topics["topic_type"] == "genre"]
    entities_df = item_topics[item_topics["topic_type"] != "genre"].drop_duplicates(["item_id", "topic_id"])
    genres, entities = _index(genres_df["topic_id"]), _index(entities_df["topic_id"])

    data = HeteroData()
    data["user"].num_nodes = len(users)
    data["item"].num_nodes = len(item_ids)
    data["genre"].num_nodes = len(genres)
    data["entity"].num_nodes = len(entities)
    if item_features is not None:
        data["item"].x = torch.as_tensor(item_features, dtype=torch.float32)

    def edges(src: pd.Series, dst: pd.Series, src_map: dict, dst_map: dict) -> torch.Tensor:
        return torch.tensor(
            np.stack([src.astype(str).map(src_map).to_numpy(), dst.astype(str).map(dst_map).to_numpy()]), dtype=torch.long
        ).reshape(2, -1)

    ui = edges(interactions["user_key"], interactions["item_id"], user_index, items)
    data["user", "interacts", "item"].edge_index = ui
    data["user", "interacts", "item"].edge_weight = torch.tensor(interactions["weight"].to_numpy(), dtype=torch.float32)
    data["item", "has_genre", "genre"].edge_index = edges(
        genres_df["item_id"], genres_df["topic_id"], items, {g: i for i, g in enumerate(genres)}
    )
    data["item", "has_entity", "entity"].edge_index = edges(
        entities_df["item_id"], entities_df["topic_id"], items, {e: i for i, e in enumerate(entities)}
    )
    data = T.ToUndirected()(data)
    return InterestGraph(data, users, list(item_ids), genres, entities, cut)
