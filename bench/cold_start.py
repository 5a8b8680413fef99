"""Cold users on MovieLens-100k: does a demographic group's popularity beat plain decayed popularity?

A user with no input history gets the UIG GCN's item terms alone — the learned bias and the
decayed popularity prior. Before adding demographics (`silver.users`: age, gender, occupation)
to that ranking, this measures it on the **validation window** (train as input, users of the
validation window without any training event): the score of an item is
``log(1 + decayed popularity) + δ · log(1 + 1000 · share of the item in the user's group's
decayed events)`` for groups by gender, age band (decade), occupation and their combinations.
Rule: demographics are adopted only if some setting beats plain decayed popularity by ≥ 0.005
NDCG@10 on the validation window. The test window is not read.

    .venv/bin/python bench/cold_start.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, stamp, write_section  # noqa: E402
from bench.quality import load_ratings  # noqa: E402
from models.evaluation import evaluate, temporal_split  # noqa: E402
from models.interactions import Interactions  # noqa: E402
from models.scoring import decayed_popularity  # noqa: E402
from uig_common.timeutil import decay_factor  # noqa: E402
from uig_tasks.movielens import movielens_dir, users as movielens_users  # noqa: E402

HALF_LIFE_DAYS = 14.0  # the UIG GCN's prior half-life
GROUPINGS = {
    "gender": lambda r: r["gender"],
    "age band": lambda r: str(min(int(r["age"]) // 10, 6)),
    "occupation": lambda r: r["occupation"],
    "gender × age band": lambda r: f"{r['gender']}{min(int(r['age']) // 10, 6)}",
    "gender × age band × occupation": lambda r: f"{r['gender']}{min(int(r['age']) // 10, 6)}{r['occupation']}",
}


class GroupPopularity:
    """Decayed popularity plus δ × the log share of each item among the user's group's decayed events."""

    def __init__(self, inputs: Interactions, as_of: float, group_of_user: np.ndarray | None, delta: float) -> None:
        self.base = np.log1p(decayed_popularity(inputs.item_ids, inputs.ts, inputs.n_items, as_of, HALF_LIFE_DAYS))
        self.group_of_user, self.delta = group_of_user, delta
        if group_of_user is not None:
            weights = decay_factor(as_of - inputs.ts, HALF_LIFE_DAYS)
            share = np.zeros((int(group_of_user.max()) + 1, inputs.n_items))
            np.add.at(share, (group_of_user[inputs.user_ids], inputs.item_ids), weights)
            self.share = share / share.sum(1, keepdims=True).clip(1e-12)

    def score(self, users: torch.Tensor, history) -> torch.Tensor:
        scores = np.tile(self.base, (len(users), 1))
        if self.group_of_user is not None:
            scores = scores + self.delta * np.log1p(1000 * self.share[self.group_of_user[users.numpy()]])
        return torch.from_numpy(scores.astype(np.float32))


def main() -> int:
    ml = movielens_dir()
    data = temporal_split(load_ratings(ml)).encode()
    people = {str(r["user_id"]): r for r in movielens_users(ml)}
    inputs, as_of = data.train, data.valid_start
    cold = np.setdiff1d(data.valid.active_users(), inputs.active_users())
    history, targets = inputs.history(), data.valid.history()
    plain = evaluate(GroupPopularity(inputs, as_of, None, 0.0), history, targets, inputs.n_items, ks=(10,), users=cold)
    lines = ["| ranking for cold users | δ | valid NDCG@10 | vs decayed popularity |", "|---|---|---|---|",
             f"| decayed popularity (half-life {HALF_LIFE_DAYS:g} d) | – | {plain['ndcg@10']:.4f} | – |"]
    best = (0.0, "none")
    for name, key in GROUPINGS.items():
        ids: dict[str, int] = {}
        group_of_user = np.array([ids.setdefault(key(people[str(u)]), len(ids)) for u in inputs.users])
        for delta in (0.25, 0.5, 1.0):
            r = evaluate(GroupPopularity(inputs, as_of, group_of_user, delta), history, targets, inputs.n_items,
                         ks=(10,), users=cold)
            gain = r["ndcg@10"] - plain["ndcg@10"]
            best = max(best, (gain, f"{name}, δ={delta:g}"))
            lines.append(f"| + {name} ({len(ids)} groups) | {delta:g} | {r['ndcg@10']:.4f} | {gain:+.4f} |")
    verdict = (f"Best: {best[1]} ({best[0]:+.4f}) — " +
               ("adopted." if best[0] >= 0.005 else "under the 0.005 bar: cold users keep decayed popularity "
                "(plus the GCN's learned item bias); demographics are not used."))
    text = "\n".join([
        "## Cold users: demographics measured on the validation window", "",
        f"{stamp()} · {machine()} · `.venv/bin/python bench/cold_start.py`", "",
        f"{cold.size} validation users without any training event; train window as input; full ranking. "
        "Rule: adopt demographics only with a gain ≥ 0.005 NDCG@10.", "", *lines, "", verdict,
    ])
    print(text)
    write_section("cold-start", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
