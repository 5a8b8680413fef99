"""The SYNTHETIC drift simulator: known answers on a hand-made catalog, and the landed files."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.drift import (
    DriftInputError, DriftSettings, DriftWorld, interest_recall, recovery_table, simulate_drift,
)
from uig_common.errors import InputError

START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
DAY = 86_400.0
GENRES = ("A", "B", "C", "D", "E", "F")
# Six genres of 30 single-genre items, plus a tiny genre "tiny" (5 items) that is too small to be an interest.
ITEMS = [f"{g}{n}" for g in GENRES for n in range(30)] + [f"tiny{n}" for n in range(5)]
ITEM_GENRES = [[g] for g in GENRES for _ in range(30)] + [["tiny"]] * 5
GENRE_OF = {item: genres[0] for item, genres in zip(ITEMS, ITEM_GENRES)}
SMALL = DriftSettings(n_users=600, n_days=30, seed=3)


@pytest.fixture(scope="module")
def world() -> DriftWorld:
    return simulate_drift(ITEMS, ITEM_GENRES, SMALL, START)


def with_genre(world: DriftWorld) -> pd.DataFrame:
    ev = world.events.merge(world.truth, on="user_id")
    ev["genre"] = ev["item_id"].map(GENRE_OF)
    ev["in_before"] = [g in gs for g, gs in zip(ev["genre"], ev["interests_before"])]
    ev["in_after"] = [g in gs for g, gs in zip(ev["genre"], ev["interests_after"])]
    return ev


def test_same_seed_same_world_other_seed_other_world(world):
    again = simulate_drift(ITEMS, ITEM_GENRES, SMALL, START)
    pd.testing.assert_frame_equal(world.events, again.events)
    pd.testing.assert_frame_equal(world.truth, again.truth)
    other = simulate_drift(ITEMS, ITEM_GENRES, replace(SMALL, seed=4), START)
    assert not world.truth["interests_before"].equals(other.truth["interests_before"])


def test_frames_have_the_documented_shape(world):
    ev, truth = world.events, world.truth
    assert list(ev.columns) == ["user_id", "item_id", "ts", "event_type", "rating", "session_id"]
    assert list(truth.columns) == ["user_id", "shifted", "shift_ts", "interests_before", "interests_after", "n_events"]
    assert len(truth) == SMALL.n_users and truth["user_id"].is_unique
    assert ev["ts"].is_monotonic_increasing
    assert ev["ts"].min() >= START and ev["ts"].max() < START + SMALL.n_days * DAY
    assert (ev["ts"] == np.floor(ev["ts"])).all()  # whole seconds: landing files lose nothing
    assert set(ev["event_type"]) == {"rate", "view"}
    rated = ev["event_type"] == "rate"
    assert ev.loc[rated, "rating"].between(1, 5).all() and ev.loc[~rated, "rating"].isna().all()
    assert ev.groupby("user_id").size().reindex(truth["user_id"]).tolist() == truth["n_events"].tolist()
    assert set(ev["item_id"]) <= set(ITEMS)


def test_everything_is_labelled_synthetic(world):
    assert world.synthetic is True
    assert world.events["user_id"].str.startswith("syn-u").all()
    assert world.events["session_id"].str.startswith("syn-u").all()
    assert world.truth["user_id"].str.startswith("syn-u").all()


def test_shifted_users_follow_new_interests_after_the_shift(world):
    ev = with_genre(world)
    moved = ev[ev["shifted"]]
    after = moved[moved["ts"] >= moved["shift_ts"]]
    before = moved[moved["ts"] < moved["shift_ts"]]
    # on-interest draws (0.8) plus the catalog draws that happen to hit a current genre (0.2 · 2/6)
    expected = SMALL.on_interest + (1 - SMALL.on_interest) * 2 / 6
    assert after["in_after"].mean() == pytest.approx(expected, abs=0.04)
    assert before["in_before"].mean() == pytest.approx(expected, abs=0.04)
    assert after["in_before"].mean() < 0.12 and before["in_after"].mean() < 0.12
    per_user = moved.assign(late=moved["ts"] >= moved["shift_ts"]).groupby("user_id")["late"].agg(["sum", "size"])
    assert (per_user["sum"] >= SMALL.min_events_each_side).all()
    assert (per_user["size"] - per_user["sum"] >= SMALL.min_events_each_side).all()


def test_a_session_never_straddles_a_shift(world):
    ev = with_genre(world)
    moved = ev[ev["shifted"]].assign(late=lambda f: f["ts"] >= f["shift_ts"])
    assert (moved.groupby("session_id")["late"].nunique() == 1).all()
    sizes = ev.groupby("session_id").size()
    assert sizes.between(*SMALL.session_items).all()


def test_shift_times_and_interests_follow_the_settings(world):
    truth = world.truth
    shifted = truth[truth["shifted"]]
    assert len(shifted) == round(SMALL.shift_share * SMALL.n_users)
    span = SMALL.n_days * DAY
    frac = (shifted["shift_ts"] - START) / span
    assert frac.between(*SMALL.shift_window).all()
    for before, after in zip(shifted["interests_before"], shifted["interests_after"]):
        assert len(before) == len(after) == SMALL.interests_per_user and not set(before) & set(after)
    steady = truth[~truth["shifted"]]
    assert steady["shift_ts"].isna().all()
    assert (steady["interests_before"] == steady["interests_after"]).all()
    every = {g for gs in truth["interests_before"] for g in gs} | {g for gs in truth["interests_after"] for g in gs}
    assert every == set(GENRES)  # the tiny genre is never an interest


def test_unshifted_users_keep_their_taste_all_along(world):
    ev = with_genre(world)
    steady = ev[~ev["shifted"]]
    early = steady["ts"] < START + SMALL.n_days * DAY / 2
    expected = SMALL.on_interest + (1 - SMALL.on_interest) * 2 / 6
    assert steady.loc[early, "in_before"].mean() == pytest.approx(expected, abs=0.04)
    assert steady.loc[~early, "in_before"].mean() == pytest.approx(expected, abs=0.04)


def test_ratings_are_higher_for_items_of_current_interests(world):
    ev = with_genre(world)
    current = np.where(ev["shifted"] & (ev["ts"] >= ev["shift_ts"]), ev["in_after"], ev["in_before"])
    rated = ev["event_type"] == "rate"
    assert ev.loc[rated & current, "rating"].mean() > ev.loc[rated & ~current, "rating"].mean() + 0.7


def test_activity_is_heavy_tailed_and_few_users_act_on_a_day():
    world = simulate_drift(ITEMS, ITEM_GENRES, DriftSettings(n_users=2000, n_days=60, seed=1), START)
    per_user = np.sort(world.events_per_user().to_numpy())[::-1]
    assert 30 <= per_user.mean() <= 55
    assert per_user[: len(per_user) // 10].sum() / per_user.sum() > 0.35  # top 10 % of users
    assert np.median(per_user) < per_user.mean() * 0.7
    share = world.daily_active_share()
    assert len(share) == 60 and 0.01 < share.median() < 0.08


def test_popularity_is_skewed_within_a_genre(world):
    counts = with_genre(world).query("genre == 'A'")["item_id"].value_counts()
    assert counts.iloc[:3].sum() > 0.25 * counts.sum()  # 3 of 30 items: 10 % of the genre


def test_interest_recall_counts_the_new_interests_found():
    row = pd.Series({"interests_before": ("A", "B"), "interests_after": ("C", "D")})
    assert interest_recall(row, ["C", "X", "D"]) == 1.0
    assert interest_recall(row, ["genre:C", "A"]) == 0.5  # graph interest ids name genres with a prefix
    assert interest_recall(("A", "B"), []) == 0.0
    with pytest.raises(DriftInputError):
        interest_recall((), ["A"])


def test_recovery_table_on_hand_made_tops():
    truth = pd.DataFrame({
        "user_id": ["u1", "u2", "u3"],
        "shifted": [True, True, False],
        "interests_before": [("A", "B"), ("C", "D"), ("E", "F")],
        "interests_after": [("C", "D"), ("A", "E"), ("E", "F")],
    })
    tops = {
        0: {"u1": ["A", "B", "C"], "u2": ["C", "D"], "u3": ["E"]},  # before the shift: old taste
        1: {"u1": ["A", "C", "B", "X", "Y", "D"], "u2": ["A", "E", "C"]},  # u1's D is 6th: outside k=5
        2: {"u1": ["C", "D"], "u3": []},  # u2 not refreshed again; u3 never shifted
        3: {"u3": ["E"]},
    }
    table = recovery_table(truth, tops, k=5)
    assert table.index.tolist() == [0, 1, 2, 3] and table.index.name == "refresh"
    assert table["users"].tolist() == [2, 2, 1, 0]
    assert table.loc[0, "recall_new"] == pytest.approx((0.5 + 0.0) / 2)
    assert table.loc[0, "recall_old"] == pytest.approx(1.0)
    assert table.loc[0, "recovered_share"] == 0.0
    assert table.loc[1, "recall_new"] == pytest.approx((0.5 + 1.0) / 2)
    assert table.loc[1, "recovered_share"] == pytest.approx(0.5)
    assert table.loc[1, "recall_old"] == pytest.approx((1.0 + 0.5) / 2)
    assert table.loc[2, ["recall_new", "recovered_share", "recall_old"]].tolist() == [1.0, 1.0, 0.0]
    assert table.loc[3, ["recall_new", "recovered_share", "recall_old"]].isna().all()
    assert recovery_table(truth, tops, k=1).loc[1, "recall_new"] == pytest.approx((0.0 + 0.5) / 2)
    with pytest.raises(DriftInputError):
        recovery_table(truth, tops, k=0)
    with pytest.raises(DriftInputError):
        recovery_table(truth.drop(columns="shifted"), tops)


@pytest.mark.parametrize("change", [
    {"n_users": 0}, {"n_days": 0}, {"n_users": 2.5}, {"interests_per_user": 0}, {"shift_share": 1.5},
    {"shift_window": (0.0, 0.5)}, {"shift_window": (0.7, 0.4)}, {"shift_window": (0.4, 1.0)},
    {"on_interest": -0.1}, {"mean_events_per_user": 0.5}, {"activity_sigma": -1.0},
    {"session_items": (0, 5)}, {"session_items": (9, 3)}, {"rate_share": 2.0}, {"min_events_each_side": 0},
    {"sessions_per_visit": 0.5}, {"visit_hours": 30.0}, {"session_gap_s": 0.0},
])
def test_bad_settings_raise(change):
    settings = replace(DriftSettings(), **change)
    with pytest.raises(DriftInputError):
        settings.check()
    with pytest.raises(InputError):
        simulate_drift(ITEMS, ITEM_GENRES, settings, START)


def test_a_catalog_without_enough_large_genres_is_refused():
    with pytest.raises(DriftInputError, match="genres"):
        simulate_drift(ITEMS, ITEM_GENRES, replace(SMALL, interests_per_user=4), START)  # 8 disjoint needed, 6 exist
    simulate_drift(ITEMS, ITEM_GENRES, replace(SMALL, n_users=20, interests_per_user=4, shift_share=0.0), START)
    with pytest.raises(DriftInputError):
        simulate_drift(ITEMS, ITEM_GENRES[:-1], SMALL, START)
    with pytest.raises(DriftInputError):
        simulate_drift(ITEMS + ["A0"], ITEM_GENRES + [["A"]], SMALL, START)


def test_generate_drift_lands_labelled_events_and_keeps_the_truth_outside_landing(tmp_path):
    from uig_tasks.synthetic import drift_world, generate_drift

    landing = tmp_path / "landing"
    result = generate_drift(landing, n_users=40, n_days=5, seed=2)
    assert result["synthetic"] is True and result["users"] == 40 and result["shifted_users"] == 12
    truth_path = tmp_path / "synthetic" / "drift-ground-truth-2.json"
    assert result["ground_truth"] == str(truth_path)
    truth = json.loads(truth_path.read_text())
    assert truth["synthetic"] is True and truth["description"].startswith("SYNTHETIC")
    assert truth["settings"]["n_users"] == 40 and len(truth["users"]) == 40
    assert sum(u["shifted"] for u in truth["users"]) == 12

    files = sorted((landing / "events").rglob("*"))
    day_files = [f for f in files if f.is_file()]
    days = [f.parent.name.removeprefix("date=") for f in day_files]
    assert day_files and [f.name for f in day_files] == [f"synthetic-drift-{day}.jsonl" for day in days]
    assert not [f for f in files if "truth" in f.name]
    lines = [json.loads(line) for f in day_files for line in f.read_text().splitlines()]
    assert len(lines) == result["events"]
    assert all(e["source"] == "synthetic" and e["event_id"].startswith("syn-drift-2-") for e in lines)
    assert all(e["user_id"].startswith("syn-u") and isinstance(e["ts"], int) for e in lines)
    assert all(("rating" in e) == (e["event_type"] == "rate") for e in lines)
    for f, day in zip(day_files, days):  # each event lies in its day's file
        stamps = {json.loads(line)["ts"] for line in f.read_text().splitlines()}
        assert {pd.Timestamp(ts, unit="s").strftime("%Y-%m-%d") for ts in stamps} == {day}
    assert (landing / "catalog" / "items" / "items.jsonl").exists()

    in_memory = drift_world(40, 5, seed=2)  # the same world, without files
    assert len(in_memory.events) == result["events"]
    shifted = [u["user_id"] for u in truth["users"] if u["shifted"]]
    assert sorted(shifted) == sorted(in_memory.truth.loc[in_memory.truth["shifted"], "user_id"])
    assert math.isfinite(result["active_share_median_day"])


def test_generate_lands_a_day_as_sessions_of_few_users(tmp_path):
    """The scale generator's day touches about events / session_events users, not nearly all."""
    from uig_tasks.synthetic import generate

    landing = tmp_path / "landing"
    result = generate(landing, n_events=6_000, n_users=2_000, n_days=3, seed=4, session_events=20)
    assert result["synthetic"] is True and result["events"] == 6_000
    day_files = sorted(f for f in (landing / "events").rglob("*.jsonl"))
    assert len(day_files) == 3
    for f in day_files:
        events = [json.loads(line) for line in f.read_text().splitlines()]
        assert len(events) == 2_000 and all(e["source"] == "synthetic" for e in events)
        users = {e["user_id"] for e in events}
        assert 90 <= len(users) <= 100  # 100 active users, each with ~20 events (a few may draw none)
    with pytest.raises(InputError):
        generate(landing, n_events=10, n_users=5, n_days=1, session_events=0)
