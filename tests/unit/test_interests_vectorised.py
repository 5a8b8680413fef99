"""The vectorised :func:`models.interests.interest_edges` against the previous per-user
implementation, kept here verbatim as a test oracle: same rows, order, floats and explanations."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pytest

import models.interests as interests
from models.evaluation import Interactions
from models.graph import train_window_graph
from models.interests import (
    InterestSettings, UserHistory, interest_edges, interest_id_of, interest_type_of, topic_links, topic_name,
    with_update_policy,
)
from models.training import GCNTrainConfig, fit_uig_gcn

DAY = 86_400.0


# --------------------------------------------------------------------------------------------
# The previous per-user implementation of interest_edges, kept as the test oracle.


def _discounts(n: int) -> list[float]:
    return [1.0 / math.log2(r + 2) for r in range(n)]


def _titles(items: Sequence[str], titles: Mapping[str, str], limit: int = 2) -> str:
    return ", ".join(titles.get(i, i) for i in items[:limit])


def _reference_interest_edges(scorer, users: Sequence[UserHistory], item_topics: pd.DataFrame, titles: Mapping[str, str],
                               settings: InterestSettings = InterestSettings(),
                               topic_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The previous per-user implementation of interest_edges (the oracle)."""
    settings.check()
    columns = ["user_key", "interest_type", "interest_id", "interest_name", "weight", "rank", "explanation",
               "update_action", "update_reason"]
    if not users:
        return pd.DataFrame(columns=columns)
    for user in users:
        if len(user.items) != len(user.affinity) or not user.items:
            raise ValueError(f"user {user.user_key}: items and affinity must be non-empty and of equal length")
        if any(not (a >= 0) or math.isinf(a) for a in user.affinity):
            raise ValueError(f"user {user.user_key}: affinities must be finite and >= 0")

    ages = None if any(u.ages_seconds is None for u in users) else [list(u.ages_seconds or ()) for u in users]
    by_recency: dict = {} if ages is None else {"ages_seconds": ages}
    if all(u.profile is not None for u in users):
        by_recency = {"weights": [list(u.profile or ()) for u in users]}
    recommended = scorer.recommend([list(u.items) for u in users], settings.candidates, **by_recency)
    index = {item: k for k, item in enumerate(scorer.item_ids)}
    embeddings = scorer.item_embeddings()
    links, names, too_common = topic_links(item_topics, topic_names, settings.max_entity_share)
    topics_of: dict[str, list[tuple[str, str]]] = {}
    for item, topic, kind in links.itertuples(index=False):
        if (topic, kind) not in too_common:
            topics_of.setdefault(item, []).append((topic, kind))

    rows: list[tuple] = []
    for user, recs in zip(users, recommended):
        attention = list(user.affinity)
        if user.profile is not None:
            attention = [a * w for a, w in zip(attention, user.profile)]
        elif user.ages_seconds is not None and hasattr(scorer, "recency_of"):
            attention = [a * w for a, w in zip(attention, scorer.recency_of(user.ages_seconds))]
        total = sum(attention)
        history_share = {
            item: (1 - settings.beta) * (a / total if total > 0 else 1 / len(user.items))
            for item, a in zip(user.items, attention)
        }
        d = _discounts(len(recs))
        d_total = sum(d) or 1.0
        rec_share = {item: settings.beta * d[r] / d_total for r, (item, _) in enumerate(recs)}

        # topics: attention on their items, history and recommendations
        by_topic: dict[tuple[str, str], tuple[float, list[tuple[float, str]], list[tuple[float, str]]]] = {}
        for source, shares in ((0, history_share), (1, rec_share)):
            for item, share in shares.items():
                for topic, kind in topics_of.get(item, ()):
                    weight, hist, rec = by_topic.get((topic, kind), (0.0, [], []))
                    (hist if source == 0 else rec).append((share, item))
                    by_topic[(topic, kind)] = (weight + share, hist, rec)
        for interest_type, top_n in (("genre", settings.top_genres), ("entity", settings.top_entities),
                                     ("community", settings.top_communities)):
            candidates = [
                (weight, topic, kind, hist, rec)
                for (topic, kind), (weight, hist, rec) in by_topic.items()
                if interest_type_of(kind) == interest_type and weight >= settings.min_weight
            ]
            candidates.sort(key=lambda c: (-c[0], c[1]))
            for rank, (weight, topic, kind, hist, rec) in enumerate(candidates[:top_n], start=1):
                hist_items = [i for _, i in sorted(hist, key=lambda x: (-x[0], x[1]))]
                rec_items = [i for _, i in sorted(rec, key=lambda x: (-x[0], x[1]))]
                parts = []
                if hist_items:
                    share = sum(s for s, _ in hist)
                    parts.append(f"{user.verb} {len(hist_items)} item{'s' * (len(hist_items) != 1)} "
                                 f"incl. {_titles(hist_items, titles)} ({share:.2f})")
                if rec_items:
                    share = sum(s for s, _ in rec)
                    parts.append(f"{len(rec_items)} recommended incl. {_titles(rec_items, titles)} ({share:.2f})")
                name = names.get((topic, kind)) or names.get(topic) or topic_name(topic, kind)
                rows.append((user.user_key, interest_type, interest_id_of(topic, kind), name, weight, rank,
                             f"{name}  {weight:.2f} ← " + "; ".join(parts), user.update_action, user.update_reason))

        # items: the model's recommendations, explained by the closest history items
        known_items = [i for i in user.items if i in index]
        known = [index[i] for i in known_items]
        for rank, (item, _) in enumerate(recs[: settings.top_items], start=1):
            weight = rec_share[item]
            if weight < settings.min_weight:
                break
            if known:
                sims = (embeddings[known] @ embeddings[index[item]]).tolist()
                order = sorted(range(len(known)), key=lambda k: (-sims[k], known_items[k]))
                because = f" ← close to {_titles([known_items[k] for k in order], titles)} in the GCN's embedding"
            else:
                because = " ← popular with the model (no folded-in history)"
            name = titles.get(item, item)
            rows.append((user.user_key, "item", item, name, weight, rank, f"{name}  {weight:.2f}{because}",
                         user.update_action, user.update_reason))
    edges = pd.DataFrame(rows, columns=columns)
    duplicated = edges.duplicated(["user_key", "interest_type", "interest_id"])
    if duplicated.any():  # an edge is keyed by these three: two rows would make the MERGE ambiguous
        raise ValueError(f"duplicate interest edges: {edges[duplicated].head(3).to_dict('records')}")
    return edges.astype({"weight": "float64", "rank": "int64"})



# --------------------------------------------------------------------------------------------
# A small real scorer: three taste clusters of ten items, two items nobody touched.

ITEMS = [f"i{k:02d}" for k in range(32)]
TITLES = {item: f"Film {item.upper()}" for item in ITEMS[:28]}  # i28-i31 have no title: their id is shown


@pytest.fixture(scope="module")
def scorer():
    rows = [(f"u{u}", ITEMS[10 * (u % 3) + (u + k) % 10], k * DAY + u) for u in range(24) for k in range(5)]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "ts"]), [f"u{u}" for u in range(24)], ITEMS)
    text = np.random.default_rng(5).normal(size=(len(ITEMS), 8)).astype(np.float32)
    config = GCNTrainConfig(dim=8, epochs=3, batch_size=16, lr=0.05, personal_weight=1.0, prior_weight=0.0)
    return fit_uig_gcn(train, train_window_graph(train, genre_topics(), text, 30.0), None, config)[0]


def genre_topics() -> pd.DataFrame:
    """Genres of the first 26 items (some with two); i26-i31 have no topic."""
    rows = [(item, f"genre:{'ABC'[k // 10]}", "genre") for k, item in enumerate(ITEMS[:26])]
    rows += [(item, "genre:Z", "genre") for item in ITEMS[2:26:4]]
    return pd.DataFrame(rows, columns=["item_id", "topic_id", "topic_type"])


def all_topics() -> pd.DataFrame:
    """Genres, entities (one entity under two relations, one on most of the catalog), named communities."""
    rows = [(item, "kg:m.d1", "kg:directed_by") for item in ("i00", "i01", "i11", "i99")]
    rows += [(item, "kg:m.d1", "kg:actor") for item in ("i00", "i12")]
    rows += [(item, f"kg:m.a{k % 4}", "kg:actor") for k, item in enumerate(ITEMS[:24])]
    rows += [(item, "kg:m.en", "kg:language") for item in ITEMS[:30]]
    rows += [(item, f"community:c{k % 3}", "community") for k, item in enumerate(ITEMS[::2])]
    topics = pd.concat([genre_topics(), pd.DataFrame(rows, columns=["item_id", "topic_id", "topic_type"])],
                       ignore_index=True)
    names = {"genre:A": "Adventure", "community:c0": "evens", "kg:m.a1": "actor shared by Film I01, Film I05"}
    return pd.concat([topics.assign(topic_name=topics["topic_id"].map(names)), topics.head(3)], ignore_index=True)


def histories(n: int, seed: int, ages: bool) -> list[UserHistory]:
    """Users with overlapping items, items without topics or unknown to the model, tied affinities."""
    rng = np.random.default_rng(seed)
    users = [UserHistory("cold", ("i99", "x1"), (1.0, 1.0), verb="rated", ages_seconds=(DAY, 0.0) if ages else None),
             UserHistory("ties", ("i00", "i01", "i11", "i21"), (1.0,) * 4, ages_seconds=(0.0,) * 4 if ages else None),
             UserHistory("zero", ("i03", "i27"), (0.0, 0.0), ages_seconds=(DAY, 2 * DAY) if ages else None)]
    for u in range(n):
        picked = [ITEMS[int(k)] for k in rng.choice(len(ITEMS), int(rng.integers(1, 12)), replace=False)]
        picked += ["i99"] if u % 4 == 0 else []
        affinity = tuple(float(a) for a in rng.choice([0.25, 0.5, 1.0, 0.3], len(picked)))
        age = tuple(float(a) for a in rng.integers(0, 20, len(picked)) * DAY * 0.5) if ages else None
        users.append(UserHistory(f"user{u:02d}", tuple(picked), affinity, verb="rated" if u % 3 else "interacted with",
                                 ages_seconds=age))
    return users


SETTINGS = [InterestSettings(max_entity_share=0.5),
            InterestSettings(beta=0.3, candidates=6, top_genres=2, top_entities=3, top_communities=1, top_items=4,
                             min_weight=0.0, max_entity_share=1.0),
            InterestSettings(beta=0.0, min_weight=0.05),
            InterestSettings(beta=1.0, candidates=5, top_items=5, min_weight=0.1)]


def assert_same_as_reference(scorer, users: list[UserHistory], topics: pd.DataFrame, settings: InterestSettings,
                             topic_names: Mapping[str, str] | None = None) -> pd.DataFrame:
    expected = _reference_interest_edges(scorer, users, topics, TITLES, settings, topic_names)
    found = interest_edges(scorer, users, topics, TITLES, settings, topic_names)
    pd.testing.assert_frame_equal(found, expected, check_exact=False, rtol=1e-9)
    return found


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("ages", [False, True])
def test_edges_equal_the_per_user_reference(scorer, settings, ages):
    edges = assert_same_as_reference(scorer, histories(30, 7, ages), all_topics(), settings, {"genre:B": "Bravo"})
    assert "genre" in set(edges["interest_type"]) and len(edges["user_key"].unique()) > 20


def test_users_with_and_without_ages_or_profiles_mix(scorer):
    scorer.config = dataclasses.replace(scorer.config, fold_in_half_life_days=1.0)
    users = histories(12, 11, ages=True)
    refresh = 30 * DAY
    with_profiles = with_update_policy(users, scorer, None, refresh - DAY, refresh)
    assert_same_as_reference(scorer, with_profiles, all_topics(), SETTINGS[1])
    flat = [dataclasses.replace(u, user_key=f"flat-{u.user_key}") for u in histories(6, 12, ages=False)]
    mixed = with_profiles[:5] + flat + users[5:]  # recommend gets neither ages nor weights
    assert_same_as_reference(scorer, mixed, all_topics(), SETTINGS[0])


def test_chunked_scoring_equals_one_batch(scorer, monkeypatch):
    users = histories(25, 3, ages=True)
    expected = _reference_interest_edges(scorer, users, all_topics(), TITLES, SETTINGS[1])
    monkeypatch.setattr(interests, "CHUNK_USERS", 4)
    monkeypatch.setattr(interests, "CHUNK_PAIRS", 7)
    pd.testing.assert_frame_equal(interest_edges(scorer, users, all_topics(), TITLES, SETTINGS[1]), expected,
                                  check_exact=False, rtol=1e-9)


class NothingRecommended:
    """A scorer that recommends nothing and folds nothing in."""

    item_ids = tuple(ITEMS)

    def recommend(self, histories, k):
        return [[] for _ in histories]

    def item_embeddings(self):
        return np.zeros((len(ITEMS), 2), dtype=np.float32)


def test_without_recommendations_and_edge_cases(scorer):
    assert_same_as_reference(NothingRecommended(), histories(10, 5, ages=False), all_topics(), SETTINGS[0])
    assert_same_as_reference(scorer, histories(0, 1, ages=False)[:1], genre_topics(), SETTINGS[2])  # no edge at all
    empty = interest_edges(scorer, [], all_topics(), TITLES)
    assert empty.empty and list(empty.columns) == list(_reference_interest_edges(scorer, [], all_topics(), TITLES).columns)
    for bad in ([UserHistory("x", ("i0",), ())], [UserHistory("y", (), ())],
                [UserHistory("ok", ("i0",), (1.0,)), UserHistory("nan", ("i0",), (float("nan"),))]):
        with pytest.raises(ValueError) as found:
            interest_edges(scorer, bad, all_topics(), TITLES)
        with pytest.raises(ValueError) as expected:
            _reference_interest_edges(scorer, bad, all_topics(), TITLES)
        assert str(found.value) == str(expected.value)


def test_update_decisions_over_chunks_equal_one_batch(scorer, monkeypatch):
    """Each user's update decision is its own: deciding in chunks of 3 users changes nothing."""
    users = histories(20, 5, ages=True)
    refresh = 30 * DAY
    whole = with_update_policy(users, scorer, None, refresh - DAY, refresh)
    monkeypatch.setattr(interests, "POLICY_CHUNK_USERS", 3)
    assert with_update_policy(users, scorer, None, refresh - DAY, refresh) == whole
    assert all(len(u.profile) == len(u.items) for u in whole) and any(0 < w for u in whole for w in u.profile)


def test_user_histories_split_the_frame_by_user():
    affinity = pd.DataFrame({
        "user_key": ["b", "a", "b", "a", "c"], "item_id": ["i1", "i2", "i2", "i1", "i9"],
        "weight": [0.5, 1.0, 0.5, 2.0, 1.0], "n_events": [1, 2, 1, 1, 3], "n_rate": [1, 2, 1, 0, 3],
        "last_ts": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-03", "2024-01-03", "2024-01-04"]),
    })
    users = interests.user_histories(affinity, pd.Timestamp("2024-01-05", tz="UTC"))
    assert [(u.user_key, u.items, u.affinity, u.verb) for u in users] == [
        ("a", ("i1", "i2"), (2.0, 1.0), "interacted with"), ("b", ("i1", "i2"), (0.5, 0.5), "rated"),
        ("c", ("i9",), (1.0,), "rated")]
    assert users[0].ages_seconds == (2 * DAY, 4 * DAY) and users[2].ages_seconds == (DAY,)
    assert interests.user_histories(affinity.iloc[:0]) == []
