"""The offline protocol: metrics computed by hand, masking, coverage, the temporal split and the leakage guard."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.evaluation import (
    EmptyEvaluationError,
    EvaluationInputError,
    History,
    Interactions,
    LeakageError,
    ScoreError,
    Scorer,
    ValidationSet,
    check_no_leakage,
    coverage,
    evaluate,
    evaluate_all_and_warm,
    hit_at_k,
    metric_names,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    rank_items,
    recall_at_k,
    temporal_split,
)

L2_3 = math.log2(3)

# One user, relevant = {1, 3}, ranking = [3, 0, 1, 2, 4]: hits at ranks 1 and 3.
RANKED = torch.tensor([[3, 0, 1, 2, 4]])
RELEVANT = [{1, 3}]


class FixedScorer:
    """Returns rows of a fixed score matrix (a copy, so masking in evaluate cannot touch it)."""

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores = scores
        self.calls: list[list[int]] = []

    def score(self, users: torch.Tensor, history: History) -> torch.Tensor:
        self.calls.append(users.tolist())
        return self.scores[users]


# ------------------------------------------------------------------------------- metrics by hand


def test_metrics_at_2_by_hand():
    # top-2 = [3, 0]: one hit (item 3, rank 1) of |relevant| = 2
    assert recall_at_k(RANKED, RELEVANT, 2).item() == pytest.approx(0.5)  # 1/2
    assert precision_at_k(RANKED, RELEVANT, 2).item() == pytest.approx(0.5)  # 1/2
    assert hit_at_k(RANKED, RELEVANT, 2).item() == 1.0
    assert mrr_at_k(RANKED, RELEVANT, 2).item() == 1.0  # first hit at rank 1
    # DCG = 1/log2(2) = 1; IDCG over min(2, 2) = 2 hits = 1 + 1/log2(3)
    assert ndcg_at_k(RANKED, RELEVANT, 2).item() == pytest.approx(1 / (1 + 1 / L2_3))


def test_metrics_at_1_and_3_by_hand():
    # @1: top-1 = [3] is relevant; IDCG over min(2, 1) = 1 hit, so NDCG = 1
    assert recall_at_k(RANKED, RELEVANT, 1).item() == pytest.approx(0.5)
    assert precision_at_k(RANKED, RELEVANT, 1).item() == 1.0
    assert ndcg_at_k(RANKED, RELEVANT, 1).item() == pytest.approx(1.0)
    # @3: hits at ranks 1 and 3 -> recall 1, precision 2/3,
    # DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3)
    assert recall_at_k(RANKED, RELEVANT, 3).item() == pytest.approx(1.0)
    assert precision_at_k(RANKED, RELEVANT, 3).item() == pytest.approx(2 / 3)
    assert ndcg_at_k(RANKED, RELEVANT, 3).item() == pytest.approx(1.5 / (1 + 1 / L2_3))


def test_late_and_missing_hits_by_hand():
    ranked = torch.tensor([[0, 1, 2, 3, 4], [0, 2, 1, 3, 4]])
    relevant = [{4}, {2}]
    # user 0: the only relevant item is at rank 5 -> nothing in the top 3
    assert recall_at_k(ranked, relevant, 3).tolist()[0] == 0.0
    assert ndcg_at_k(ranked, relevant, 3).tolist()[0] == 0.0
    assert mrr_at_k(ranked, relevant, 3).tolist()[0] == 0.0
    assert hit_at_k(ranked, relevant, 3).tolist()[0] == 0.0
    # @5: MRR = 1/5, NDCG = (1/log2(6)) / 1, precision = 1/5
    assert mrr_at_k(ranked, relevant, 5).tolist()[0] == pytest.approx(0.2)
    assert ndcg_at_k(ranked, relevant, 5).tolist()[0] == pytest.approx(1 / math.log2(6))
    assert precision_at_k(ranked, relevant, 5).tolist()[0] == pytest.approx(0.2)
    # user 1: relevant item at rank 2 -> MRR 1/2, NDCG = 1/log2(3)
    assert mrr_at_k(ranked, relevant, 10).tolist()[1] == pytest.approx(0.5)
    assert ndcg_at_k(ranked, relevant, 10).tolist()[1] == pytest.approx(1 / L2_3)


def test_metric_input_forms_agree():
    as_bool = torch.zeros(1, 5, dtype=torch.bool)
    as_bool[0, [1, 3]] = True
    scores = torch.tensor([[0.8, 0.6, 0.1, 0.9, 0.0]])  # ranks to [3, 0, 1, 2, 4] = RANKED
    for fn in (recall_at_k, precision_at_k, hit_at_k, mrr_at_k, ndcg_at_k):
        expected = fn(RANKED, RELEVANT, 2)
        assert torch.allclose(fn(RANKED, as_bool, 2), expected)
        assert torch.allclose(fn(scores, RELEVANT, 2), expected)


def test_user_without_relevant_items_scores_zero_and_padding_never_hits():
    ranked = torch.tensor([[0, 1], [2, -1]])
    relevant = [set(), {1}]
    assert recall_at_k(ranked, relevant, 2).tolist() == [0.0, 0.0]
    assert ndcg_at_k(ranked, relevant, 2).tolist() == [0.0, 0.0]
    with pytest.raises(EvaluationInputError, match="k must be at least 1"):
        recall_at_k(ranked, relevant, 0)


def test_rank_items_breaks_ties_by_item_index_and_marks_masked():
    scores = torch.tensor([[1.0, 2.0, 2.0, float("-inf"), 1.0]])
    assert rank_items(scores, 5).tolist() == [[1, 2, 0, 4, -1]]


def test_coverage_counts_distinct_items_in_top_k():
    ranked = torch.tensor([[0, 1, 4], [1, 2, 4], [-1, -1, -1]])
    assert coverage(ranked, n_items=5, k=2) == pytest.approx(3 / 5)  # {0, 1, 2}
    assert coverage(ranked, n_items=5, k=1) == pytest.approx(2 / 5)  # {0, 1}
    assert coverage(ranked, n_items=10, k=3) == pytest.approx(4 / 10)  # {0, 1, 2, 4}


# ------------------------------------------------------------------------------- evaluate


SCORES = torch.tensor(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],  # user 0
        [0.1, 0.2, 0.3, 0.4, 0.5],  # user 1
        [0.5, 0.4, 0.3, 0.2, 0.1],  # user 2
    ]
)


def test_evaluate_masks_history_and_averages_users():
    scorer = FixedScorer(SCORES.clone())
    assert isinstance(scorer, Scorer)
    history = [[0], [], [0, 1]]
    targets = [[2], [], [3]]  # user 1 has no target: not evaluated
    out = evaluate(scorer, history, targets, n_items=5, ks=(1, 2))
    # user 0: item 0 masked -> ranking [1, 2, 3, 4]; target 2 at rank 2
    #   @1: recall 0, ndcg 0, mrr 0;  @2: recall 1, ndcg 1/log2(3), mrr 1/2, precision 1/2
    # user 2: items 0, 1 masked -> ranking [2, 3, 4]; target 3 at rank 2: same numbers
    assert out["n_users"] == 2
    assert out["recall@1"] == 0.0
    assert out["recall@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx(1 / L2_3)
    assert out["mrr@2"] == pytest.approx(0.5)
    assert out["precision@2"] == pytest.approx(0.5)
    assert out["hit@2"] == 1.0
    # top-2 lists: user 0 [1, 2], user 2 [2, 3] -> {1, 2, 3} of 5; top-1: {1, 2}
    assert out["coverage@2"] == pytest.approx(3 / 5)
    assert out["coverage@1"] == pytest.approx(2 / 5)
    assert set(out) == set(metric_names((1, 2))) | {"n_users"}
    assert torch.equal(scorer.scores, SCORES)  # the scorer's tensor was not masked in place
    assert all(1 not in call for call in scorer.calls)


def test_without_masking_history_items_would_win():
    # The same case with an empty history: item 0 (top score) would take rank 1 for both users.
    out = evaluate(FixedScorer(SCORES), [[], [], []], [[2], [], [3]], n_items=5, ks=(2,))
    # user 0 ranking [0, 1]: target 2 missing; user 2 ranking [0, 1]: target 3 missing
    assert out["recall@2"] == 0.0


def test_evaluate_is_batch_invariant_and_respects_users():
    history, targets = [[0], [], [0, 1]], [[2], [4], [3]]
    big = evaluate(FixedScorer(SCORES), history, targets, 5, ks=(2,), batch_size=512)
    small = evaluate(FixedScorer(SCORES), history, targets, 5, ks=(2,), batch_size=1)
    assert big == small
    only_1 = evaluate(FixedScorer(SCORES), history, targets, 5, ks=(2,), users=[1])
    # user 1: ranking [4, 3], target 4 at rank 1
    assert only_1["n_users"] == 1 and only_1["ndcg@2"] == pytest.approx(1.0)


def test_target_already_in_history_is_dropped():
    # user 0 re-interacts with item 0 (masked) and item 2: only item 2 is a reachable target
    out = evaluate(FixedScorer(SCORES), [[0], [], []], [[0, 2], [], []], 5, ks=(2,))
    assert out["recall@2"] == pytest.approx(1.0)
    with pytest.raises(EmptyEvaluationError, match="already in their history"):
        evaluate(FixedScorer(SCORES), [[0], [], []], [[0], [], []], 5, ks=(2,))


def test_evaluate_all_and_warm_splits_users():
    history, targets = [[0], [], [0, 1]], [[2], [4], [3]]
    out = evaluate_all_and_warm(FixedScorer(SCORES), history, targets, 5, warm_users=[1], ks=(2,))
    assert out["all"]["n_users"] == 3 and out["warm"]["n_users"] == 1
    assert out["warm"]["ndcg@2"] == pytest.approx(1.0)


def test_evaluate_rejects_bad_scores_and_empty_user_sets():
    with pytest.raises(ScoreError, match="expected a \\[3, 5\\]"):
        evaluate(FixedScorer(SCORES[:, :4]), [[], [], []], [[1], [1], [1]], 5)
    nan = SCORES.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ScoreError, match="NaN"):
        evaluate(FixedScorer(nan), [[], [], []], [[1], [], []], 5)
    with pytest.raises(EmptyEvaluationError, match="no user to evaluate"):
        evaluate(FixedScorer(SCORES), [[], [], []], [[1], [], []], 5, users=[2])


# ------------------------------------------------------------------------------- data structures


def test_history_dedupes_sorts_and_gives_pairs():
    h = History.from_pairs(np.array([1, 0, 1, 1]), np.array([3, 2, 0, 3]), n_users=3, n_items=4)
    assert h.to_lists() == [[2], [0, 3], []]
    rows, items = h.pairs(torch.tensor([2, 1]))
    assert rows.tolist() == [1, 1] and items.tolist() == [0, 3]
    assert h.dense(torch.tensor([1])).tolist() == [[1.0, 0.0, 0.0, 1.0]]
    with pytest.raises(EvaluationInputError, match="item indices"):
        History.from_lists([[5]], n_items=4)


def frame(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    order = rng.permutation(n)  # shuffled input order: the split must not depend on it
    return pd.DataFrame(
        {"user": [f"u{i % 3}" for i in order], "item": [f"i{i % 4}" for i in order], "ts": (1000 + order).astype(np.int64)}
    )


def test_interactions_share_one_index_across_windows():
    split = temporal_split(frame())
    data = split.encode()
    assert data.train.users == data.test.users == ("u0", "u1", "u2")
    assert data.train.items == data.valid.items == ("i0", "i1", "i2", "i3")
    assert data.train.user_index["u1"] == 1
    assert len(data.before_test) == len(data.train) + len(data.valid)
    with pytest.raises(EvaluationInputError, match="outside the given index"):
        Interactions.from_frame(frame(), users=["u0"], items=None)


# ------------------------------------------------------------------------------- split and leakage


def test_temporal_split_proportions_order_and_cuts():
    df = frame(20)
    before = df.copy()
    split = temporal_split(df)
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    # 20 distinct timestamps 1000..1019: train 16, valid 2, test 2
    assert (len(split.train), len(split.valid), len(split.test)) == (16, 2, 2)
    assert split.valid_start == 1016 and split.test_start == 1018
    assert split.train["ts"].tolist() == list(range(1000, 1016))  # sorted by time
    assert split.train["ts"].max() < split.valid_start <= split.valid["ts"].min()
    assert split.valid["ts"].max() < split.test_start <= split.test["ts"].min()


def test_temporal_split_keeps_ties_at_a_cut_in_one_window():
    df = pd.DataFrame({"user": list("abcdefghij"), "item": ["x"] * 10,
                       "ts": [1, 2, 3, 4, 5, 6, 7, 8, 8, 9]})
    split = temporal_split(df)
    # position 8 (0-based) is the first validation row by count; its ts 8 is shared with
    # position 7, which therefore moves to validation too: train 7, valid 2, test 1
    assert (len(split.train), len(split.valid), len(split.test)) == (7, 2, 1)
    assert split.valid["user"].tolist() == ["h", "i"]  # tie broken by user


def test_temporal_split_accepts_datetimes_and_rejects_bad_input():
    df = frame(10)
    df["ts"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    split = temporal_split(df)
    data = split.encode()
    assert data.valid_start == 1008.0 and data.test_start == 1009.0
    with pytest.raises(EvaluationInputError, match="sum to 1"):
        temporal_split(frame(), (0.8, 0.1, 0.2))
    with pytest.raises(EvaluationInputError, match="lacks columns"):
        temporal_split(frame().rename(columns={"ts": "timestamp"}))
    with pytest.raises(EmptyEvaluationError):
        temporal_split(frame(3))


def test_leakage_guard_raises_at_or_after_the_window_start():
    data = temporal_split(frame(20)).encode()
    check_no_leakage(data.train, data.valid_start, "train")  # strictly before: fine
    check_no_leakage(data.before_test, data.test_start, "train + valid")
    with pytest.raises(LeakageError, match="at or after the window start"):
        check_no_leakage(data.before_test, data.valid_start, "train + valid")  # valid rows are >= the start
    with pytest.raises(LeakageError, match="1 of 3 fit"):
        check_no_leakage(pd.DataFrame({"ts": [1, 2, 5]}), 5, "fit")  # equal to the start counts
    with pytest.raises(LeakageError):
        check_no_leakage(
            pd.DataFrame({"ts": pd.to_datetime(["1998-01-01T00:00:00Z"], utc=True)}),
            pd.Timestamp("1998-01-01", tz="UTC"),
        )


def test_validation_set_from_split_uses_train_as_input():
    data = temporal_split(frame(20)).encode()
    v = ValidationSet.from_split(data)
    assert v.history.n_pairs == data.train.history().n_pairs
    assert v.targets.n_pairs == data.valid.history().n_pairs
