"""Interest communities on a hand-made co-interaction pattern: two groups of items, two crowds."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from models.communities import (
    Community,
    CommunitySettings,
    co_interaction_edges,
    community_topics,
    find_communities,
    graph_communities,
)
from models.graph import build_graph

# users a0-a9 take items x0-x5, users b0-b9 take y0-y5; one user bridges with a single item each
PAIRS = pd.DataFrame(
    [(f"a{u}", f"x{i}") for u in range(10) for i in range(6) if (u + i) % 5]
    + [(f"b{u}", f"y{i}") for u in range(10) for i in range(6) if (u + i) % 5]
    + [("bridge", "x0"), ("bridge", "y0")],
    columns=["user", "item"],
)
GENRES = {**{f"x{i}": ["Noir", "Drama"] for i in range(6)}, **{f"y{i}": ["Comedy"] for i in range(6)}}
TITLES = {f"x{i}": f"Shadow {i}" for i in range(6)} | {f"y{i}": f"Laugh {i}" for i in range(6)}


def test_co_interaction_edges_are_cosine_weighted_and_pruned():
    edges = co_interaction_edges(PAIRS, CommunitySettings(min_weight=0.0, max_neighbours=50))
    assert (edges["a"] < edges["b"]).all()
    bridge = edges[(edges["a"] == "x0") & (edges["b"] == "y0")]["weight"].iloc[0]
    inside = edges[(edges["a"] == "x1") & (edges["b"] == "x2")]["weight"].iloc[0]
    assert 0 < bridge < inside <= 1
    assert co_interaction_edges(PAIRS, CommunitySettings(min_weight=0.2)).query("a == 'x0' and b == 'y0'").empty


def test_two_crowds_give_two_named_communities():
    found = find_communities(PAIRS, GENRES, TITLES, CommunitySettings(min_size=3))
    assert [set(c.members) for c in found] in ([{f"x{i}" for i in range(6)}, {f"y{i}" for i in range(6)}],
                                               [{f"y{i}" for i in range(6)}, {f"x{i}" for i in range(6)}])
    noir = next(c for c in found if "x1" in c.members)
    assert noir.top_genres == ("Drama", "Noir") and noir.name.startswith("Drama / Noir: Shadow")
    assert [c.community_id for c in found] == ["c01", "c02"]
    assert find_communities(PAIRS, GENRES, TITLES, CommunitySettings(min_size=3)) == found  # seeded
    assert find_communities(PAIRS, GENRES, TITLES, CommunitySettings(min_size=7)) == []


def test_round_trip_and_topics():
    found = find_communities(PAIRS, GENRES, TITLES, CommunitySettings(min_size=3))
    assert [Community.from_dict(c.to_dict()) for c in found] == found
    topics = community_topics(found)
    assert set(topics["topic_type"]) == {"community"} and len(topics) == 12
    assert set(topics["topic_id"]) == {"community:c01", "community:c02"}


def test_communities_of_the_interest_graph_are_those_of_its_edges():
    """Training finds communities on the stored graph: its user–item edges, its genres."""
    edges = PAIRS.rename(columns={"user": "user_key", "item": "item_id"}).assign(
        weight=1.0, last_ts=pd.Timestamp("1998-01-01", tz="UTC"))
    topics = pd.DataFrame([(item, f"genre:{g}", "genre") for item, genres in GENRES.items() for g in genres],
                          columns=["item_id", "topic_id", "topic_type"])
    graph = build_graph(edges, topics, sorted(GENRES), datetime(1999, 1, 1, tzinfo=timezone.utc))
    settings = CommunitySettings(min_size=3)
    assert graph_communities(graph, TITLES, settings) == find_communities(PAIRS, GENRES, TITLES, settings)
