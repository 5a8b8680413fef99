"""Interest edges and their explanations, from a tiny trained GCN (two taste clusters)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.evaluation import Interactions
from models.graph import train_window_graph
from models.interests import (
    InterestSettings, UserHistory, interest_edges, topic_name, user_histories, with_communities,
)
from models.training import GCNTrainConfig, fit_uig_gcn

DAY = 86_400.0
ITEMS = [f"i{k}" for k in range(12)]  # i0-i5 cluster A (genre A), i6-i11 cluster B (genre B)
TITLES = {item: f"Film {item.upper()}" for item in ITEMS}


@pytest.fixture(scope="module")
def scorer():
    rows = [(f"u{u}", ITEMS[(u + k) % 6 + (0 if u < 6 else 6)], k * DAY + u) for u in range(12) for k in range(4)]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]), [f"u{u}" for u in range(12)], ITEMS)
    text = np.random.default_rng(3).normal(size=(len(ITEMS), 8)).astype(np.float32)
    config = GCNTrainConfig(dim=8, epochs=3, batch_size=16, lr=0.05, personal_weight=1.0, prior_weight=0.0)
    return fit_uig_gcn(train, train_window_graph(train, topics(), text, 30.0), None, config)[0]


def topics() -> pd.DataFrame:
    rows = [(item, "genre:A" if k < 6 else "genre:B", "genre") for k, item in enumerate(ITEMS)]
    rows += [(item, "kg:m.dir1", "kg:directed_by") for item in ("i0", "i1", "i6")]
    return pd.DataFrame(rows, columns=["item_id", "topic_id", "topic_type"])


def test_topic_weights_are_attention_shares_with_paths(scorer):
    user = UserHistory("alice", ("i0", "i1", "i2"), (2.0, 1.0, 1.0), verb="rated")
    edges = interest_edges(scorer, [user], topics(), TITLES, InterestSettings(beta=0.0, top_items=1, candidates=1, max_entity_share=0.5))
    genres = edges[edges.interest_type == "genre"].set_index("interest_id")
    assert genres.loc["genre:A", "weight"] == pytest.approx(1.0) and genres.loc["genre:A", "rank"] == 1
    assert "genre:B" not in genres.index  # β = 0: only behaviour counts
    director = edges[edges.interest_type == "entity"].iloc[0]
    assert director.interest_id == "kg:directed_by:m.dir1" and director.weight == pytest.approx(0.75)  # (2 + 1) / 4
    assert director.interest_name == "directed_by m.dir1"
    assert director.explanation == "directed_by m.dir1  0.75 ← rated 2 items incl. Film I0, Film I1 (0.75)"


def test_recommendations_carry_attention_and_are_explained_by_history(scorer):
    user = UserHistory("bob", ("i0", "i1"), (1.0, 1.0))
    settings = InterestSettings(beta=0.5, candidates=4, top_items=4, min_weight=0.0)
    edges = interest_edges(scorer, [user], topics(), TITLES, settings)
    assert edges.groupby("interest_type").weight.sum()["genre"] == pytest.approx(1.0)  # all items have one genre
    items = edges[edges.interest_type == "item"].sort_values("rank")
    assert len(items) == 4 and not set(items.interest_id) & {"i0", "i1"}
    assert items.weight.sum() == pytest.approx(0.5) and items.weight.is_monotonic_decreasing
    assert all("close to Film I" in e for e in items.explanation)
    assert list(items["rank"]) == [1, 2, 3, 4]


def test_users_are_independent_and_output_is_deterministic(scorer):
    a = UserHistory("a", ("i0", "i3"), (1.0, 0.5))
    b = UserHistory("b", ("i7",), (1.0,))
    together = interest_edges(scorer, [a, b], topics(), TITLES)
    alone = pd.concat([interest_edges(scorer, [a], topics(), TITLES), interest_edges(scorer, [b], topics(), TITLES)])
    pd.testing.assert_frame_equal(together.reset_index(drop=True), alone.reset_index(drop=True))


def test_decaying_every_affinity_by_one_factor_changes_nothing(scorer):
    user = UserHistory("c", ("i0", "i2", "i8"), (1.0, 0.5, 0.25))
    older = UserHistory("c", user.items, tuple(a * 0.125 for a in user.affinity))
    pd.testing.assert_frame_equal(interest_edges(scorer, [user], topics(), TITLES),
                                  interest_edges(scorer, [older], topics(), TITLES), check_exact=False, rtol=1e-12)


def test_cold_user_with_unknown_items_and_bad_input(scorer):
    cold = UserHistory("new", ("i99",), (1.0,))  # an item the model never saw: no fold-in, no topics
    edges = interest_edges(scorer, [cold], topics(), TITLES)
    items, topics_ = edges[edges.interest_type == "item"], edges[edges.interest_type != "item"]
    assert len(items) and all("no folded-in history" in e for e in items.explanation)
    assert all(" recommended incl. " in e and "interacted with" not in e for e in topics_.explanation)
    assert topics_[topics_.interest_type == "genre"].weight.sum() == pytest.approx(0.5)  # β of the attention
    assert interest_edges(scorer, [], topics(), TITLES).empty
    with pytest.raises(ValueError, match="equal length"):
        interest_edges(scorer, [UserHistory("x", ("i0",), ())], topics(), TITLES)
    with pytest.raises(ValueError, match="top_items"):
        InterestSettings(top_items=30, candidates=20).check()
    assert topic_name("genre:Film-Noir", "genre") == "Film-Noir"


def test_communities_are_interests_with_their_names(scorer):
    membership = pd.DataFrame([(i, "community:c01", "community") for i in ("i0", "i1", "i2")],
                              columns=["item_id", "topic_id", "topic_type"])
    user = UserHistory("d", ("i0", "i1"), (1.0, 1.0), verb="rated")
    edges = interest_edges(scorer, [user], pd.concat([topics(), membership]), TITLES,
                           topic_names={"community:c01": "A-films: Film I0, Film I1"})
    community = edges[edges.interest_type == "community"].iloc[0]
    assert community.interest_id == "community:c01" and community.interest_name == "A-films: Film I0, Film I1"
    assert community.explanation.startswith("A-films: Film I0, Film I1  ") and "rated 2 items" in community.explanation


def test_one_entity_under_two_relations_is_two_interests(scorer):
    both = pd.concat([topics(), pd.DataFrame([("i0", "kg:m.dir1", "kg:actor")], columns=["item_id", "topic_id", "topic_type"])])
    user = UserHistory("e", ("i0", "i1"), (1.0, 1.0))
    entities = interest_edges(scorer, [user], both, TITLES, InterestSettings(max_entity_share=0.5)).query(
        "interest_type == 'entity'")
    assert set(entities.interest_id) == {"kg:directed_by:m.dir1", "kg:actor:m.dir1"}
    assert set(entities.interest_name) == {"directed_by m.dir1", "actor m.dir1"}


def test_entities_on_most_of_the_catalog_are_not_interests(scorer):
    everywhere = pd.DataFrame([(i, "kg:m.english", "kg:language") for i in ITEMS], columns=["item_id", "topic_id", "topic_type"])
    user = UserHistory("f", ("i0", "i1"), (1.0, 1.0))
    ids = set(interest_edges(scorer, [user], pd.concat([topics(), everywhere]), TITLES,
                             InterestSettings(max_entity_share=0.5)).interest_id)  # m.dir1 is on 3 of 12 items
    assert "kg:directed_by:m.dir1" in ids and "kg:language:m.english" not in ids
    kept = interest_edges(scorer, [user], pd.concat([topics(), everywhere]), TITLES, InterestSettings(max_entity_share=1.0))
    assert "kg:language:m.english" in set(kept.interest_id)


class NoRecommendations:
    """A scorer that recommends nothing: topic weights come from the history alone."""

    item_ids = ITEMS

    def recommend(self, histories, k):
        return [[] for _ in histories]

    def item_embeddings(self):
        return np.zeros((len(ITEMS), 2), dtype=np.float32)


def test_stored_topic_names_are_what_people_read():
    named = topics().assign(topic_name=lambda t: t["topic_id"].map(
        {"genre:A": "A", "genre:B": "B", "kg:m.dir1": "director shared by Film I0, Film I1, Film I6"}))
    user = UserHistory("g", ("i0", "i1"), (1.0, 1.0), verb="rated")
    settings = InterestSettings(beta=0.0, max_entity_share=0.5)  # no recommendations: all attention on history
    edges = interest_edges(NoRecommendations(), [user], named, TITLES, settings)
    entity = edges[edges.interest_type == "entity"].iloc[0]
    assert entity.interest_id == "kg:directed_by:m.dir1"  # the id keeps the entity; the name is for people
    assert entity.interest_name == "director shared by Film I0, Film I1, Film I6"
    assert entity.explanation == "director shared by Film I0, Film I1, Film I6  1.00 ← rated 2 items incl. Film I0, Film I1 (1.00)"
    assert not any("m.dir1" in text for text in [*edges.interest_name, *edges.explanation])
    unnamed = named.assign(topic_name=None)  # a row without a name falls back to relation and id
    assert set(interest_edges(NoRecommendations(), [user], unnamed, TITLES, settings).interest_name) == {"A", "directed_by m.dir1"}


def test_with_communities_adds_named_community_topics():
    communities = [{"community_id": "c01", "name": "A-films: Film I0, Film I1", "members": ["i0", "i1"], "top_genres": ["A"]}]
    both = with_communities(topics().assign(topic_name="x"), communities)
    members = both[both.topic_type == "community"]
    assert set(members.item_id) == {"i0", "i1"} and set(members.topic_id) == {"community:c01"}
    assert set(members.topic_name) == {"A-films: Film I0, Film I1"} and len(both) == len(topics()) + 2
    edges = interest_edges(NoRecommendations(), [UserHistory("h", ("i0",), (1.0,))], both, TITLES)
    assert edges[edges.interest_type == "community"].interest_name.tolist() == ["A-films: Film I0, Film I1"]


def test_user_histories_order_items_by_affinity_and_name_the_verb():
    affinity = pd.DataFrame(
        [("b", "i1", 0.5, 1, 1), ("a", "i2", 0.2, 2, 2), ("a", "i1", 0.7, 1, 1), ("a", "i0", 0.2, 1, 1), ("b", "i3", 0.9, 2, 1)],
        columns=["user_key", "item_id", "weight", "n_events", "n_rate"])
    a, b = user_histories(affinity)
    assert (a.user_key, a.items, a.affinity, a.verb) == ("a", ("i1", "i0", "i2"), (0.7, 0.2, 0.2), "rated")
    assert (b.user_key, b.items, b.verb) == ("b", ("i3", "i1"), "interacted with")  # i3 was not only rated


def test_the_history_part_follows_the_models_recency(scorer):
    import dataclasses

    # an old taste for cluster A (three items a month ago), one item of cluster B an hour ago
    user = UserHistory("carol", ("i0", "i1", "i2", "i6"), (1.0, 1.0, 1.0, 1.0),
                       ages_seconds=(30 * DAY, 30 * DAY, 30 * DAY, 3600.0))
    settings = InterestSettings(beta=0.0, top_items=1, candidates=1, min_weight=0.0)
    scorer.config = dataclasses.replace(scorer.config, fold_in_half_life_days=1.0)
    recent = interest_edges(scorer, [user], topics(), TITLES, settings)
    scorer.config = dataclasses.replace(scorer.config, fold_in_half_life_days=float("inf"))
    flat = interest_edges(scorer, [user], topics(), TITLES, settings)
    by_type = lambda edges: edges[edges.interest_type == "genre"].set_index("interest_id")["weight"]  # noqa: E731
    assert by_type(recent)["genre:B"] > 0.99  # the model weighs the newest item: the graph moves at once
    assert by_type(flat)["genre:A"] == pytest.approx(0.75)  # without recency the old taste still leads
    assert scorer.recency_of([0.0, DAY]) == [1.0, 1.0]  # inf: every item alike


def test_edges_carry_the_update_policys_action_and_reason(scorer):
    import dataclasses

    from models.interests import with_update_policy

    scorer.config = dataclasses.replace(scorer.config, fold_in_half_life_days=1.0)
    user = UserHistory("dave", ("i0", "i1", "i7"), (1.0, 1.0, 1.0), ages_seconds=(9 * DAY, 9 * DAY, 3600.0))
    refresh = 100 * DAY
    [ready] = with_update_policy([user], scorer, None, refresh - DAY, refresh)
    assert ready.update_action == "rebuild" and "default rule" in ready.update_reason
    assert ready.profile[2] == 1.0 and ready.profile[0] < 0.01  # the default rule: the model's own recency
    edges = interest_edges(scorer, [ready], topics(), TITLES, InterestSettings(beta=0.0, min_weight=0.0))
    assert set(edges["update_action"]) == {"rebuild"} and edges["update_reason"].notna().all()
    genres = edges[edges.interest_type == "genre"].set_index("interest_id")["weight"]
    assert genres["genre:B"] > 0.95  # the profile, not the flat affinities, sets the attention
    with pytest.raises(ValueError, match="age"):
        with_update_policy([UserHistory("eve", ("i0",), (1.0,))], scorer, None, None, refresh)
