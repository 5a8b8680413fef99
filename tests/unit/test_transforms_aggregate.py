"""Aggregation transforms on hand-written frames: decay arithmetic checked by hand."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from uig_common import names as C
from spark_jobs.schemas import SILVER_EVENTS, SILVER_ITEMS
from spark_jobs.transforms.aggregate import (
    HAS_NEW_EVENTS, USER_ITEMS_PER_TOPIC_TASK, decay_to, dirty_users, item_topics, topic_tasks, user_item_affinity,
    user_topic_affinity,
)

AS_OF = datetime(1998, 1, 31, tzinfo=timezone.utc)
WEIGHTS = {"view": 0.1, "rate": 1.0, "search": 0.0}


def event(user, item, etype, ts, rating=None, seq=1, query=None):
    row = {f: None for f in SILVER_EVENTS.fieldNames()}
    row.update({C.EVENT_ID: f"{user}-{item}-{ts}", C.USER_KEY: user, C.ITEM_ID: item, C.EVENT_TYPE: etype,
                C.TS: ts, C.RATING: rating, C.BATCH_SEQ: seq, C.QUERY: query})
    return row


@pytest.fixture
def events(spark):
    rows = [
        event("u1", "1", "rate", AS_OF - timedelta(days=30), rating=5.0),  # 1.0 * 0.5
        event("u1", "1", "view", AS_OF, seq=2),  # 0.1
        event("u1", "2", "rate", AS_OF - timedelta(days=60), rating=2.5),  # 0.5 * 0.25
        event("u2", "2", "view", AS_OF + timedelta(hours=1), seq=3),  # after as_of: ignored
        event("u2", None, "search", AS_OF - timedelta(days=1), query="noir"),
    ]
    return spark.createDataFrame(rows, SILVER_EVENTS)


def test_user_item_weights_decay_by_half_life(events):
    out = {(r[C.USER_KEY], r[C.ITEM_ID]): r for r in user_item_affinity(events, as_of=AS_OF, half_life_days=30, weights=WEIGHTS).collect()}
    assert set(out) == {("u1", "1"), ("u1", "2")}
    assert out[("u1", "1")][C.WEIGHT] == pytest.approx(0.5 + 0.1)
    assert out[("u1", "2")][C.WEIGHT] == pytest.approx(0.125)
    assert out[("u1", "1")]["n_rate"] == 1 and out[("u1", "1")]["n_view"] == 1 and out[("u1", "1")][C.N_EVENTS] == 2
    assert out[("u1", "1")][C.RATING_MEAN] == 5.0


def test_decay_to_matches_recomputing_later(events):
    later = AS_OF + timedelta(days=15)
    stored = user_item_affinity(events.where(f"{C.USER_KEY} = 'u1'"), as_of=AS_OF, half_life_days=30, weights=WEIGHTS)
    moved = {r[C.ITEM_ID]: r[C.WEIGHT] for r in decay_to(stored, as_of=later, half_life_days=30).collect()}
    fresh = {r[C.ITEM_ID]: r[C.WEIGHT] for r in user_item_affinity(events.where(f"{C.USER_KEY} = 'u1'"), as_of=later, half_life_days=30, weights=WEIGHTS).collect()}
    assert moved == pytest.approx(fresh)
    assert moved["1"] == pytest.approx(0.6 * 2 ** -0.5)


def test_item_topics_keep_shared_entities_only(spark):
    items = spark.createDataFrame(
        [
            {C.ITEM_ID: "1", C.TITLE: "A", C.GENRES: ["Drama", "Crime"], C.ENTITIES: [{"relation": "film.film.directed_by", "entity_id": "m.d"}, {"relation": "film.film.actor", "entity_id": "m.solo"}]},
            {C.ITEM_ID: "2", C.TITLE: "B", C.GENRES: ["Drama"], C.ENTITIES: [{"relation": "film.film.directed_by", "entity_id": "m.d"}]},
        ],
        SILVER_ITEMS,
    )
    topics = {(r[C.ITEM_ID], r[C.TOPIC_ID], r[C.TOPIC_TYPE]) for r in item_topics(items, kg_min_items=2).collect()}
    assert topics == {
        ("1", "genre:Drama", "genre"), ("1", "genre:Crime", "genre"), ("2", "genre:Drama", "genre"),
        ("1", "kg:m.d", "kg:directed_by"), ("2", "kg:m.d", "kg:directed_by"),
    }


def test_item_topics_name_entities_by_relation_and_titles(spark):
    """Genres keep their name; an entity reads "<relation> shared by" its first three titles,
    alphabetically with the article aside, numbered when two entities would read alike."""
    def item(item_id, title, genres, *entities):
        return {C.ITEM_ID: item_id, C.TITLE: title, C.GENRES: genres,
                C.ENTITIES: [{"relation": f"film.film.{r}", "entity_id": e} for r, e in entities]}

    both_actors = [("actor", "m.a"), ("actor", "m.a2")]
    items = spark.createDataFrame([
        item("1", "Titanic", ["Drama"], ("directed_by", "m.d"), *both_actors),
        item("2", "Kolya", ["Comedy"], ("directed_by", "m.d"), *both_actors),
        item("3", "Sneakers", [], ("directed_by", "m.d"), ("language", "m.en"), *both_actors),
        item("4", "Big Sleep, The", [], ("directed_by", "m.d"), ("language", "m.en")),
    ], SILVER_ITEMS)
    rows = item_topics(items, kg_min_items=2).collect()
    names = {(r[C.TOPIC_ID], r[C.TOPIC_TYPE]): r[C.TOPIC_NAME] for r in rows}
    assert names == {
        ("genre:Drama", "genre"): "Drama",
        ("genre:Comedy", "genre"): "Comedy",
        ("kg:m.d", "kg:directed_by"): "director shared by The Big Sleep, Kolya, Sneakers",
        ("kg:m.a", "kg:actor"): "actor shared by Kolya, Sneakers, Titanic",
        ("kg:m.a2", "kg:actor"): "actor shared by Kolya, Sneakers, Titanic (2)",
        ("kg:m.en", "kg:language"): "language shared by The Big Sleep, Sneakers",
    }
    assert len(rows) == 2 + 4 + 3 + 3 + 2  # one row per item and topic, the name repeated
    assert all(r[C.WEIGHT] == 1.0 for r in rows)


def test_user_topic_sums_item_weights(spark, events):
    user_items = user_item_affinity(events, as_of=AS_OF, half_life_days=30, weights=WEIGHTS)
    topics = spark.createDataFrame([("1", "genre:Drama", "genre", 1.0), ("2", "genre:Drama", "genre", 1.0), ("2", "genre:Crime", "genre", 1.0)],
                                   f"{C.ITEM_ID} string, {C.TOPIC_ID} string, {C.TOPIC_TYPE} string, {C.WEIGHT} double")
    out = {r[C.TOPIC_ID]: r for r in user_topic_affinity(user_items, topics).collect()}
    assert out["genre:Drama"][C.WEIGHT] == pytest.approx(0.725) and out["genre:Drama"][C.N_ITEMS] == 2
    assert out["genre:Crime"][C.WEIGHT] == pytest.approx(0.125)


def test_user_items_are_shuffled_once_in_ranges_of_users(spark, events):
    """One shuffle, in ranges of user keys alone: the aggregation reuses it, and a whole-table write
    puts one range of users in each file."""
    plan = user_item_affinity(events, as_of=AS_OF, half_life_days=30.0, weights=WEIGHTS)
    text = plan._jdf.queryExecution().executedPlan().toString()
    assert text.count("Exchange ") == 1, text
    assert re.search(rf"Exchange rangepartitioning\({C.USER_KEY}#\d+ ASC NULLS FIRST, \d+\)", text), text


def test_user_topic_shuffles_only_the_user_rows(spark):
    """One shuffle, of the user rows by user: the aggregation of the joined rows reuses it."""
    user_items = spark.createDataFrame([("u1", "1", 0.5, AS_OF, AS_OF)],
                                       f"{C.USER_KEY} string, {C.ITEM_ID} string, {C.WEIGHT} double, {C.LAST_TS} timestamp, {C.AS_OF} timestamp")
    topics = spark.createDataFrame([("1", "genre:Drama", "genre", 1.0)],
                                   f"{C.ITEM_ID} string, {C.TOPIC_ID} string, {C.TOPIC_TYPE} string, {C.WEIGHT} double")
    plan = user_topic_affinity(user_items, topics)._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    assert re.search(rf"Exchange hashpartitioning\({C.USER_KEY}#\d+, \d+\)", plan), plan  # by user alone
    # told how many user rows there are, one task per USER_ITEMS_PER_TOPIC_TASK of them
    rows = 2 * USER_ITEMS_PER_TOPIC_TASK + 1
    plan = user_topic_affinity(user_items, topics, user_item_rows=rows)._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    assert re.search(rf"Exchange hashpartitioning\({C.USER_KEY}#\d+, 3\)", plan), plan


def test_topic_tasks_one_per_share_of_user_item_rows():
    assert [topic_tasks(n) for n in (0, 1, USER_ITEMS_PER_TOPIC_TASK, USER_ITEMS_PER_TOPIC_TASK + 1)] == [1, 1, 1, 2]
    assert topic_tasks(1_282_606) == 65


def test_dirty_users_new_batches_and_events_entering_the_window(events):
    def dirty(**kwargs) -> dict[str, bool]:
        return {r[C.USER_KEY]: r[HAS_NEW_EVENTS] for r in dirty_users(events, **kwargs).collect()}

    assert dirty(after_batch_seq=1, previous_as_of=None, as_of=AS_OF) == {"u1": True, "u2": True}
    # u2's event of batch 3 entered the window: dirty, with no new events
    assert dirty(after_batch_seq=3, previous_as_of=AS_OF, as_of=AS_OF + timedelta(days=1)) == {"u2": False}
    assert dirty(after_batch_seq=2, previous_as_of=AS_OF, as_of=AS_OF + timedelta(days=1)) == {"u2": True}
    assert dirty(after_batch_seq=3, previous_as_of=AS_OF, as_of=AS_OF) == {}
