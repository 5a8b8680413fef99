"""The update-policy environment and its learners on hand-made clustered users (models/update_policy.py).

Items come in clusters; the fake scorer ranks by the profile's weight mass per cluster, so
which profile update is right is known by construction: a *drifter* moves to a new cluster every
two steps (only the newest events predict the next step), a *stable* user keeps one home cluster
and each step adds a burst of noise from another one (the old profile predicts best).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from models.interactions import Interactions
from models.update_policy import (
    ACTIONS,
    FEATURE_NAMES,
    DQNConfig,
    PolicyEnvironment,
    PolicyInputError,
    Profiles,
    QPolicy,
    check_disjoint,
    choose_reward_prior_weight,
    compare_to_best_fixed,
    double_dqn_targets,
    evaluate_policies,
    profile_churn,
    split_users,
    train_bandit,
    train_dqn,
    update_profiles,
)

torch.set_num_threads(1)

DAY = 86_400.0
HOUR = 3_600.0
CLUSTERS, PER_CLUSTER = 6, 16
N_ITEMS = CLUSTERS * PER_CLUSTER
START, N_STEPS = 10 * DAY, 8
END = START + N_STEPS * DAY
N_STABLE, N_DRIFT = 12, 12
ACTION = {a.name: k for k, a in enumerate(ACTIONS)}
SHORT = {ACTION[n] for n in ("rebuild", "decay_1h_top3", "decay_1h_all", "decay_1d_top3", "decay_1d_all")}
LONG = {ACTION[n] for n in ("keep", "decay_7d_top3", "decay_7d_all", "decay_inf_top3", "decay_inf_all")}


@dataclass(frozen=True)
class FakeConfig:
    fold_in_half_life_days: float = 1.0
    prior_half_life_days: float = 14.0


class ClusterScorer:
    """Score = the profile's normalised weight on the item's cluster (+ a tiny popularity tie-break)."""

    def __init__(self) -> None:
        self.config = FakeConfig()
        self.n_items = N_ITEMS
        cluster = np.arange(N_ITEMS) // PER_CLUSTER
        self.cluster_matrix = torch.from_numpy((cluster[:, None] == cluster[None, :]).astype(np.float32))
        self.calls = 0

    def item_embeddings(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.arange(N_ITEMS) // PER_CLUSTER, CLUSTERS).float()

    def score_profiles(self, rows, items, weights, n_users, prior) -> torch.Tensor:
        self.calls += 1
        profile = torch.zeros(n_users, N_ITEMS)
        profile.index_put_((torch.as_tensor(rows), torch.as_tensor(items)), torch.as_tensor(weights), accumulate=True)
        profile = profile / profile.sum(1, keepdim=True).clamp_min(1e-12)
        return profile @ self.cluster_matrix + 1e-3 * prior


def item(cluster: int, k: int) -> int:
    return (cluster % CLUSTERS) * PER_CLUSTER + k


def clustered_events(seed: int = 0) -> Interactions:
    """Stable users 0..11 (home cluster u % 6), drifters 12..23 (a new cluster every two steps)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, float]] = []
    for u in range(N_STABLE):
        home = u % CLUSTERS
        rows += [(u, item(home, k), START - 2 * DAY + k * HOUR) for k in range(6)]
        for step in range(N_STEPS):
            t = START + step * DAY + 2 * HOUR
            noise = home + 1 + int(rng.integers(CLUSTERS - 1))
            picks = rng.choice(PER_CLUSTER, 2, replace=False)
            rows += [(u, item(home, 6 + step), t), (u, item(noise, int(picks[0])), t + HOUR),
                     (u, item(noise, int(picks[1])), t + 2 * HOUR)]
    for d in range(N_DRIFT):
        u, offset = N_STABLE + d, d % CLUSTERS
        rows += [(u, item(offset, k), START - DAY + k * HOUR) for k in range(4)]
        for step in range(N_STEPS):
            t = START + step * DAY + 3 * HOUR
            cluster = offset + 1 + step // 2
            rows += [(u, item(cluster, (step % 2) * 3 + j), t + j * HOUR) for j in range(3)]
    users, items, ts = (np.array(c) for c in zip(*rows))
    return Interactions(users, items, ts, tuple(range(N_STABLE + N_DRIFT)), tuple(range(N_ITEMS)))


@pytest.fixture(scope="module")
def events() -> Interactions:
    return clustered_events()


@pytest.fixture(scope="module")
def env(events: Interactions) -> PolicyEnvironment:
    return PolicyEnvironment(events, ClusterScorer(), START, END, DAY, np.arange(N_STABLE + N_DRIFT))


SMALL = DQNConfig(hidden=32, batch_size=64, episodes=12, updates_per_step=12, epsilon_decay_updates=600,
                  target_sync=50, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def dqn(env: PolicyEnvironment) -> tuple[QPolicy, list[dict[str, float]]]:
    return train_dqn(env, SMALL)


# ---- actions ---------------------------------------------------------------------------------


def one_profile(weights: list[float], touched: float, updated_at: float) -> Profiles:
    w = np.zeros((1, 4))
    w[0, : len(weights)] = weights
    return Profiles(w, np.where(w > 0, touched, np.nan), np.array([updated_at]))


def test_action_set_covers_keep_rebuild_and_decay_grid():
    assert len(ACTIONS) == 10 and len({a.name for a in ACTIONS}) == 10
    assert ACTIONS[0].kind == "keep" and ACTIONS[1].kind == "rebuild"
    assert {a.half_life_days for a in ACTIONS[2:]} == {1 / 24, 1.0, 7.0, None}
    assert {a.admit for a in ACTIONS[2:]} == {3, None}


def test_keep_leaves_the_profile_and_its_update_time_unchanged():
    before = one_profile([1.0, 0.5], 0.0, 0.0)
    step = np.array([[np.nan, np.nan, 5.0, 6.0]])
    after = update_profiles(ACTIONS[ACTION["keep"]], before, step, step, DAY, 1.0)
    np.testing.assert_array_equal(after.weights, before.weights)
    assert after.updated_at[0] == 0.0


def test_decay_adds_newest_items_refreshes_present_ones_and_prunes_small_weights():
    before = one_profile([1.0, 0.08], 0.0, 0.0)
    step = np.array([[np.nan, 3.0, 5.0, 6.0]])  # item 1 is present already, item 3 is the newest
    top2 = dataclass_replace(ACTIONS[ACTION["decay_1d_all"]], admit=2)
    after = update_profiles(top2, before, step, step, DAY, 1.0)
    np.testing.assert_allclose(after.weights, [[0.5, 0.0, 1.0, 1.0]])  # 0.08 halves to 0.04 < 0.05: pruned
    assert after.touched[0, 3] == 6.0 and np.isnan(after.touched[0, 1]) and after.updated_at[0] == DAY
    everything = update_profiles(ACTIONS[ACTION["decay_inf_all"]], before, step, step, DAY, 1.0)
    np.testing.assert_allclose(everything.weights, [[1.0, 1.0, 1.0, 1.0]])


def dataclass_replace(action, **changes):
    import dataclasses

    return dataclasses.replace(action, **changes)


def test_rebuild_is_the_full_history_profile_weighted_like_the_fold_in():
    last_touch = np.array([[0.0, DAY, np.nan, 2 * DAY]])
    after = update_profiles(ACTIONS[ACTION["rebuild"]], one_profile([1.0], 0.0, 0.0), last_touch, last_touch,
                            2 * DAY, 1.0)
    np.testing.assert_allclose(after.weights, [[0.25, 0.5, 0.0, 1.0]])


def test_the_environment_starts_from_the_rebuild_profile_and_keep_carries_it(env: PolicyEnvironment):
    initial = env.initial_profiles()
    stable = initial.weights[0]
    assert set(np.flatnonzero(stable)) == {item(0, k) for k in range(6)}
    for _ in env.replay(ACTION["keep"], counterfactual=False):
        pass
    np.testing.assert_array_equal(env.profiles.weights, initial.weights)


def test_the_next_state_depends_on_the_action_and_matches_the_carried_over_state(env: PolicyEnvironment):
    rng = np.random.default_rng(3)
    reps = list(env.replay(lambda s: rng.integers(0, len(ACTIONS), s.shape[0]), counterfactual=True))
    first, second = reps[0], reps[1]
    assert not np.allclose(first.next_states[:, ACTION["keep"]], first.next_states[:, ACTION["decay_1h_all"]])
    for row, user in enumerate(first.users):  # every user acts again at the next step here
        later = int(np.flatnonzero(second.users == user)[0])
        np.testing.assert_allclose(first.next_states[row, first.actions[row]], second.states[later], atol=1e-6)
    assert first.states.shape == (N_STABLE + N_DRIFT, len(FEATURE_NAMES))
    assert reps[-1].terminal.all() and not first.terminal.any()


# ---- known answer ----------------------------------------------------------------------------


def test_counterfactual_rewards_favour_short_memory_for_drifters_and_long_for_stable(env: PolicyEnvironment):
    keys, _, rewards = env.all_action_rewards(ACTION["keep"])
    users = np.array([u for _, u in keys])
    steps = np.array([round((t - START) / DAY) - 1 for t, _ in keys])
    stable, drift_same = users < N_STABLE, (users >= N_STABLE) & (steps % 2 == 0)
    mean = {name: (rewards[stable, k].mean(), rewards[drift_same, k].mean()) for name, k in ACTION.items()}
    assert mean["keep"][0] > mean["decay_1h_all"][0] + 0.2
    assert mean["decay_inf_all"][0] > mean["decay_1h_all"][0] + 0.2
    assert mean["decay_1h_all"][1] > mean["keep"][1] + 0.5
    assert mean["decay_1h_all"][1] > mean["decay_inf_all"][1] + 0.5
    assert np.nanmax(rewards) <= 1.0 and np.nanmin(rewards) >= 0.0


def test_dqn_picks_the_right_memory_for_most_users(env: PolicyEnvironment, dqn):
    policy, history = dqn
    assert len(history) == SMALL.episodes and history[-1]["epsilon"] < 0.1
    right, total = np.zeros(2), np.zeros(2)
    for rep in env.replay(policy, counterfactual=True):
        for row in np.flatnonzero(rep.scored):
            best = rep.rewards[row].max()
            if rep.rewards[row].min() == best:  # every action ties: nothing to get right
                continue
            group = int(rep.users[row] >= N_STABLE)
            right[group] += rep.rewards[row, rep.actions[row]] >= best - 1e-6
            total[group] += 1
    assert total.min() > 10
    assert (right / total >= 0.7).all(), (right, total)
    results = evaluate_policies(env, {"dqn": policy})
    comparison = compare_to_best_fixed(results, n_boot=200)
    assert comparison["comparisons"]["dqn"]["diff_lo"] > 0  # no single fixed action serves both kinds


def test_same_seed_same_q_values_and_bandit_is_gamma_zero(env: PolicyEnvironment, dqn):
    quick = DQNConfig(hidden=16, batch_size=32, episodes=1, updates_per_step=3, seed=7)
    states = env.all_action_rewards(ACTION["keep"])[1]
    a, _ = train_dqn(env, quick)
    b, _ = train_dqn(env, quick)
    np.testing.assert_array_equal(a.q_values(states), b.q_values(states))
    bandit, _ = train_bandit(env, quick)
    zero, _ = train_dqn(env, dataclass_replace(quick, gamma=0.0))
    np.testing.assert_array_equal(bandit.q_values(states), zero.q_values(states))
    assert not np.array_equal(bandit.q_values(states), a.q_values(states))


def test_double_dqn_target_on_a_hand_made_batch():
    rewards = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    online = torch.tensor([[[0.0, 9.0], [5.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [batch, action, next action]
    target = torch.tensor([[[2.0, 3.0], [4.0, 8.0]], [[6.0, 7.0], [1.0, 2.0]]])
    terminal = torch.tensor([[False], [True]])
    y = double_dqn_targets(rewards, online, target, terminal, gamma=0.5)
    # row 0: online picks next actions (1, 0) → target values (3, 4); row 1 is terminal
    torch.testing.assert_close(y, torch.tensor([[1.0 + 1.5, 0.0 + 2.0], [0.5, 0.5]]))
    plain = double_dqn_targets(rewards, online, target, terminal, gamma=0.5, double=False)
    torch.testing.assert_close(plain, torch.tensor([[1.0 + 1.5, 0.0 + 4.0], [0.5, 0.5]]))
    torch.testing.assert_close(double_dqn_targets(rewards, online, target, terminal, gamma=0.0), rewards)


# ---- evaluation, users, persistence ----------------------------------------------------------


def test_held_out_users_must_be_disjoint_and_policies_share_user_steps(events: Interactions):
    train, held = split_users(np.arange(N_STABLE + N_DRIFT), 0.25, seed=1)
    assert train.size == 18 and held.size == 6 and not np.intersect1d(train, held).size
    check_disjoint(train, held)
    with pytest.raises(PolicyInputError, match="both"):
        check_disjoint(train, np.r_[held, train[:1]])
    with pytest.raises(PolicyInputError):
        split_users([1, 2], 0.1)
    later = PolicyEnvironment(events, ClusterScorer(), START + 3 * DAY, END, DAY, held)
    rng = np.random.default_rng(0)
    results = evaluate_policies(later, {"random": lambda s: rng.integers(0, len(ACTIONS), s.shape[0])})
    lengths = {name: r.size for name, r in results["rewards"].items()}
    assert set(lengths.values()) == {len(results["user_steps"])} and len(lengths) == 1 + len(ACTIONS)
    assert {u for _, u in results["user_steps"]} <= set(held.tolist())
    assert min(t for t, _ in results["user_steps"]) >= START + 4 * DAY


def test_policy_state_round_trip_and_explanation(env: PolicyEnvironment, dqn):
    policy, _ = dqn
    buffer = io.BytesIO()
    torch.save(policy.to_state(), buffer)
    buffer.seek(0)
    loaded = QPolicy.from_state(torch.load(buffer, weights_only=True))
    states = env.all_action_rewards(ACTION["keep"])[1]
    np.testing.assert_array_equal(loaded.act(states), policy.act(states))
    assert loaded.action_names == tuple(a.name for a in ACTIONS) and loaded.feature_names == FEATURE_NAMES
    why = loaded.feature_importance(states[0])
    assert why["action"] in loaded.action_names and len(why["features"]) == 3
    assert all(name in FEATURE_NAMES for name, _ in why["features"])
    with pytest.raises(PolicyInputError):
        QPolicy.from_state({"format": 99})


def test_environment_rejects_bad_inputs(events: Interactions):
    with pytest.raises(PolicyInputError):
        PolicyEnvironment(events, ClusterScorer(), START, START + DAY, DAY, [0])  # one step: nothing to score
    with pytest.raises(PolicyInputError):
        PolicyEnvironment(events, ClusterScorer(), START, END, DAY, [99])
    env = PolicyEnvironment(events, ClusterScorer(), START, END, DAY, [0, 1])
    with pytest.raises(PolicyInputError):
        next(env.replay(len(ACTIONS)))
    with pytest.raises(PolicyInputError):
        next(env.replay(lambda s: np.zeros(1, dtype=np.int64)))


def test_profile_churn_is_the_share_of_the_profile_that_moved():
    before = np.array([[1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0] * 4, [1.0, 0, 0, 0]])
    after = np.array([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0] * 4, [1.0, 1.0, 0, 0]])
    # same shares at another scale: 0; disjoint: 1; empty -> something: 1; empty -> empty: 0; half moved: 0.5
    assert profile_churn(before, after).tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0, 0.5])


def test_the_churn_cost_lowers_each_reward_by_the_cost_times_the_actions_churn(events: Interactions):
    plain = PolicyEnvironment(events, ClusterScorer(), START, END, DAY, np.arange(N_STABLE + N_DRIFT))
    costly = PolicyEnvironment(events, ClusterScorer(), START, END, DAY, np.arange(N_STABLE + N_DRIFT),
                               churn_cost=0.25)
    steps = 0
    for a, b in zip(plain.replay(ACTION["rebuild"]), costly.replay(ACTION["rebuild"])):
        rows = np.flatnonzero(a.scored)
        np.testing.assert_allclose(b.rewards[rows], a.rewards[rows] - 0.25 * a.churn[rows], atol=1e-6)
        assert (a.churn[:, ACTION["keep"]] == 0).all()  # keep moves nothing
        steps += 1
    assert steps > 0
    result = evaluate_policies(costly, {}, include_fixed=True)
    plain_result = evaluate_policies(plain, {}, include_fixed=True)
    for name in result["fixed"]:
        assert result["churn"][name].shape == result["rewards"][name].shape
        # the ranking term alone is the same under any churn cost
        np.testing.assert_allclose(result["ndcg"][name], plain_result["rewards"][name], atol=1e-6)
    assert result["mean"]["fixed:keep"] == pytest.approx(plain_result["mean"]["fixed:keep"])
    with pytest.raises(PolicyInputError):
        PolicyEnvironment(events, ClusterScorer(), START, END, DAY, [0], churn_cost=-0.1)


class PriorHeavyScorer(ClusterScorer):
    """The cluster scorer plus ``prior_weight`` times a prior scaled to swamp the profile."""

    def __init__(self, prior_weight: float) -> None:
        super().__init__()
        self.prior_weight = prior_weight

    def score_profiles(self, rows, items, weights, n_users, prior) -> torch.Tensor:
        return super().score_profiles(rows, items, weights, n_users, prior) + self.prior_weight * 100.0 * prior


def test_the_reward_prior_weight_is_the_one_todays_rule_earns_most_with(events: Interactions):
    def make_env(weight: float) -> PolicyEnvironment:
        return PolicyEnvironment(events, PriorHeavyScorer(weight), START, END, DAY, np.arange(N_STABLE))

    weight, means = choose_reward_prior_weight(make_env, 1.0, (0.1, 0.0))
    assert list(means) == [1.0, 0.1, 0.0]
    assert weight == 0.0 and means[0.0] > means[1.0]  # a prior that swamps the profile ranks worse here
    rule = list(make_env(0.0).replay(ACTION["rebuild"], counterfactual=False))
    assert means[0.0] == pytest.approx(float(np.concatenate([r.chosen_rewards for r in rule]).mean()))
    same, _ = choose_reward_prior_weight(lambda w: make_env(0.0), 1.0, (0.0,))
    assert same == 1.0  # a tie keeps the earlier (the trained) weight
    with pytest.raises(PolicyInputError):
        choose_reward_prior_weight(make_env, -1.0, ())
    quiet = lambda w: PolicyEnvironment(events, PriorHeavyScorer(w), END, END + 2 * DAY, DAY, [0])  # noqa: E731
    kept, nothing = choose_reward_prior_weight(quiet, 1.0, (0.0,))  # after the last event: nothing scored
    assert kept == 1.0 and all(np.isnan(m) for m in nothing.values())


def test_with_the_real_scorer_the_rebuild_profile_scores_as_the_model_folds_in(events: Interactions):
    import pandas as pd

    from models.graph import train_window_graph
    from models.interactions import temporal_split
    from models.scoring import popularity_prior
    from models.training import GCNTrainConfig, fit_uig_gcn
    from models.update_policy import rebuild_profiles

    frame = pd.DataFrame({"user": events.user_ids, "item": events.item_ids, "ts": events.ts})
    data = temporal_split(frame, (0.6, 0.2, 0.2)).encode(users=events.users, items=events.items)
    text = np.random.default_rng(0).normal(size=(N_ITEMS, 6)).astype(np.float32)
    topics = pd.DataFrame([(i, f"genre:{i // PER_CLUSTER}", "genre") for i in range(N_ITEMS)],
                          columns=["item_id", "topic_id", "topic_type"])
    graph = train_window_graph(data.train, topics, text, 30.0, data.valid_start)
    scorer = fit_uig_gcn(data.train, graph, None, GCNTrainConfig(dim=8, epochs=1, batch_size=64))[0]
    env = PolicyEnvironment(events, scorer, START, END, DAY, np.arange(N_STABLE + N_DRIFT))
    t = START + 3 * DAY
    before = Interactions(*(x[events.ts < t] for x in (events.user_ids, events.item_ids, events.ts)),
                          events.users, events.items)
    last_touch = np.full((N_STABLE + N_DRIFT, N_ITEMS), np.nan)
    rows, items, last = before.last_events(np.arange(N_STABLE + N_DRIFT))
    last_touch[rows, items] = last
    profile = rebuild_profiles(last_touch, t, scorer.config.fold_in_half_life_days)
    r, i = np.nonzero(profile.weights > 0)
    prior = popularity_prior(before, t, scorer.config.prior_half_life_days)
    from_profile = scorer.score_profiles(r, i, torch.from_numpy(profile.weights[r, i]), N_STABLE + N_DRIFT, prior)
    torch.testing.assert_close(from_profile, scorer.score_at(np.arange(N_STABLE + N_DRIFT), before, t))
    without_prior = scorer.with_prior_weight(0.0)
    no_prior = without_prior.score_profiles(r, i, torch.from_numpy(profile.weights[r, i]), N_STABLE + N_DRIFT, prior)
    torch.testing.assert_close(from_profile - no_prior, (scorer.config.prior_weight * prior).expand_as(no_prior))
    assert scorer.config.prior_weight == GCNTrainConfig().prior_weight and without_prior.config.prior_weight == 0.0
    reps = list(env.replay(ACTION["rebuild"], counterfactual=False))
    assert reps and all(np.isfinite(rep.chosen_rewards).all() for rep in reps)


def test_refresh_decisions_apply_the_policy_or_the_default_rule(dqn):
    from models.update_policy import DEFAULT_ACTION, refresh_decisions

    policy, _ = dqn
    embeddings = ClusterScorer().item_embeddings().double().numpy()
    last_touch = np.full((2, N_ITEMS), np.nan)
    last_touch[:, [item(0, k) for k in range(4)]] = START - 5 * DAY  # home cluster, long ago
    last_touch[:, [item(3, k) for k in range(3)]] = START + HOUR  # a new cluster since the last refresh
    refresh = START + DAY
    names, weights, reasons = refresh_decisions(None, embeddings, last_touch, START, refresh, 1.0)
    assert names == [DEFAULT_ACTION] * 2 and "default rule" in reasons[0]
    assert (weights[:, item(3, 0)] == 1).all() and (weights[:, item(0, 0)] < 0.1).all()  # rebuilt, by recency
    names, weights, reasons = refresh_decisions(policy, embeddings, last_touch, START, refresh, 1.0)
    assert set(names) <= {a.name for a in ACTIONS} and all(r.count("(") == 3 for r in reasons)  # top-3 features
    by_name = {a.name: a for a in ACTIONS}
    for row, name in enumerate(names):
        if by_name[name].kind == "keep":
            assert np.isnan(last_touch[row]).sum() and weights[row, item(3, 0)] == 0  # the step is not admitted
        else:
            assert weights[row, item(3, 0)] > 0
    first, _, why = refresh_decisions(policy, embeddings, last_touch, None, refresh, 1.0)
    assert first == [DEFAULT_ACTION] * 2 and "first refresh" in why[0]
