"""Interest communities: groups of items that the same users take up together.

Method: the item co-interaction graph (items ``i``, ``j`` joined with cosine weight
``c_ij / sqrt(n_i · n_j)``, ``c_ij`` users who took both, ``n_i`` users who took ``i``) is pruned
— edges under ``min_weight`` go, and each item keeps its ``max_neighbours`` strongest — and
partitioned by Louvain modularity maximisation (Blondel et al., J. Stat. Mech. 2008; networkx's
seeded implementation). A community is named by the genres over-represented in it (lift over the
catalog) and its most taken titles. Communities smaller than ``min_size`` are dropped: their
items belong to none.

Communities are computed from the training window's interest graph (:func:`graph_communities`,
the same graph the model is trained on) and travel in the model's state, so a model version
fixes its communities (a rollback restores them too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.graph import ITEM_GENRE, USER_ITEM, InterestGraph

__all__ = ["Community", "CommunitySettings", "find_communities", "graph_communities"]


@dataclass(frozen=True)
class CommunitySettings:
    min_weight: float = 0.1
    max_neighbours: int = 20
    min_size: int = 5
    resolution: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Community:
    community_id: str  # "c01", "c02", … by size, largest first
    name: str
    members: tuple[str, ...]  # most taken first
    top_genres: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"community_id": self.community_id, "name": self.name, "members": list(self.members),
                "top_genres": list(self.top_genres)}

    @classmethod
    def from_dict(cls, value: Mapping[str, object]) -> Community:
        return cls(str(value["community_id"]), str(value["name"]), tuple(value["members"]),  # type: ignore[arg-type]
                   tuple(value["top_genres"]))  # type: ignore[arg-type]


def co_interaction_edges(pairs: pd.DataFrame, settings: CommunitySettings = CommunitySettings()) -> pd.DataFrame:
    """Pruned item–item edges ``(a, b, weight)`` with ``a < b`` from distinct ``(user, item)`` pairs."""
    pairs = pairs[["user", "item"]].drop_duplicates()
    users = {u: k for k, u in enumerate(sorted(pairs["user"].unique()))}
    items = sorted(pairs["item"].astype(str).unique())
    index = {i: k for k, i in enumerate(items)}
    from scipy.sparse import csr_matrix

    m = csr_matrix((np.ones(len(pairs)), (pairs["user"].map(users), pairs["item"].astype(str).map(index))),
                   shape=(len(users), len(items)))
    counts = np.asarray(m.sum(0)).ravel()
    co = (m.T @ m).tocoo()
    keep = co.row < co.col
    a, b, c = co.row[keep], co.col[keep], co.data[keep]
    w = c / np.sqrt(counts[a] * counts[b])
    edges = pd.DataFrame({"a": a, "b": b, "weight": w})
    edges = edges[edges["weight"] >= settings.min_weight]
    # each item keeps its strongest neighbours; an edge stays if either end keeps it
    both = pd.concat([edges.rename(columns={"a": "x", "b": "y"}), edges.rename(columns={"b": "x", "a": "y"})])
    both = both.sort_values(["x", "weight", "y"], ascending=[True, False, True])
    kept = both.groupby("x").head(settings.max_neighbours)
    kept = kept.assign(a=np.minimum(kept["x"], kept["y"]), b=np.maximum(kept["x"], kept["y"]))
    kept = kept.drop_duplicates(["a", "b"])[["a", "b", "weight"]]
    names = np.array(items)
    return pd.DataFrame({"a": names[kept["a"]], "b": names[kept["b"]], "weight": kept["weight"].to_numpy()})


def find_communities(
    pairs: pd.DataFrame,
    item_genres: Mapping[str, Sequence[str]],
    titles: Mapping[str, str],
    settings: CommunitySettings = CommunitySettings(),
) -> list[Community]:
    """Communities of the items in ``pairs`` (columns user, item), largest first; deterministic for a seed."""
    import networkx as nx

    edges = co_interaction_edges(pairs, settings)
    graph = nx.Graph()
    graph.add_weighted_edges_from(edges.itertuples(index=False, name=None))
    groups = nx.community.louvain_communities(graph, weight="weight", resolution=settings.resolution, seed=settings.seed)
    taken = Counter(pairs.drop_duplicates(["user", "item"])["item"].astype(str))
    catalog = Counter(g for genres in item_genres.values() for g in genres)
    n_catalog = max(len(item_genres), 1)
    found = []
    for group in groups:
        if len(group) < settings.min_size:
            continue
        members = tuple(sorted(group, key=lambda i: (-taken[i], i)))
        inside = Counter(g for i in members for g in item_genres.get(i, ()))
        lift = {g: (n / len(members)) / (catalog[g] / n_catalog) for g, n in inside.items() if n / len(members) >= 0.25}
        top_genres = tuple(sorted(lift, key=lambda g: (-lift[g], g))[:2])
        label = " / ".join(top_genres) or "mixed"
        found.append((members, top_genres, f"{label}: {', '.join(titles.get(i, i) for i in members[:2])}"))
    found.sort(key=lambda f: (-len(f[0]), f[0][0]))
    return [Community(f"c{k:02d}", name, members, genres) for k, (members, genres, name) in enumerate(found, start=1)]


def graph_communities(
    graph: InterestGraph, titles: Mapping[str, str], settings: CommunitySettings = CommunitySettings()
) -> list[Community]:
    """:func:`find_communities` of an interest graph (:mod:`models.graph`): its user–item edges are
    the pairs, its item–genre edges name the communities (``genre:Drama`` → ``Drama``)."""
    users, items = graph.data[USER_ITEM].edge_index.numpy()
    pairs = pd.DataFrame({"user": np.asarray(graph.user_ids)[users], "item": np.asarray(graph.item_ids)[items]})
    genre_items, genres = graph.data[ITEM_GENRE].edge_index.numpy()
    item_genres: dict[str, list[str]] = {}
    for item, genre in sorted(zip(genre_items.tolist(), genres.tolist())):
        item_genres.setdefault(graph.item_ids[item], []).append(graph.genre_ids[genre].split(":", 1)[-1])
    return find_communities(pairs, item_genres, titles, settings)


def community_topics(communities: Sequence[Community]) -> pd.DataFrame:
    """Membership as item–topic rows (item_id, topic_id ``community:cNN``, topic_type ``community``)."""
    rows = [(item, f"community:{c.community_id}", "community") for c in communities for item in c.members]
    return pd.DataFrame(rows, columns=["item_id", "topic_id", "topic_type"])
