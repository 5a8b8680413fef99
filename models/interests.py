"""A user's interests — the edges of the user interest graph — each with the path that explains it.

For user ``u`` with history ``H`` (items with time-decayed affinity ``a(u, i)``, from
``gold.user_item_affinity``) and the ``K`` items the champion GCN recommends by fold-in, ``R``
(best first, the user's own items excluded), the *attention* of ``u`` on item ``i`` is

    p(u, i) = (1 - β) · a(u, i) r(i) / Σ_H a r  +  β · d(rank_R(i)) / Σ_R d,      d(r) = 1 / log2(r + 1)

where ``r(i)`` is the model's own recency weight of the item (``decay_factor`` of the time since
the user last touched it, with the model's fold-in half-life, relative to the user's newest item;
1 when ages are not given) — so the history part of the graph follows the user as fast as the
model's user representation does.

— where the user's recent behaviour went, and where the model expects it to go next. An interest
``t`` (a genre, a KG entity) weighs the attention on its items, ``w(u, t) = Σ_{i ∈ items(t)} p(u, i)``,
so every edge is explained by the items on its paths ``user → item → interest``, with their
contributions. Recommended items are interests of their own (type ``item``), weighted by their
``β``-share, and explained by the history items closest to them in the GCN's embedding space.

Shares do not change when all of a user's affinities decay by the same factor, and the recency
weights are relative to the user's newest item, so neither moves while the user is idle; the
GCN's scores depend on the history and the model only. So a user's edges change only when the
user acts or the model changes — what lets the refresh touch dirty users alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["InterestSettings", "UserHistory", "interest_edges", "topic_name", "user_histories", "with_communities",
           "with_update_policy"]

INTEREST_TYPES = ("genre", "entity", "community", "item")


@dataclass(frozen=True)
class InterestSettings:
    """How many edges of each type a user keeps, and the smallest weight worth an edge."""

    beta: float = 0.5  # share of attention given to the model's recommendations
    candidates: int = 20  # K: recommended items that carry attention
    top_genres: int = 5
    top_entities: int = 10
    top_communities: int = 5
    top_items: int = 10
    min_weight: float = 0.01
    # KG entities on more than this share of the catalog (a language, a country) say nothing
    # about a taste; they are not offered as interests.
    max_entity_share: float = 0.1

    def check(self) -> None:
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must lie in [0, 1], got {self.beta}")
        if min(self.candidates, self.top_genres, self.top_entities, self.top_communities, self.top_items) < 1:
            raise ValueError("candidates and every top_* must be >= 1")
        if self.top_items > self.candidates:
            raise ValueError(f"top_items ({self.top_items}) cannot exceed candidates ({self.candidates})")
        if not 0 <= self.min_weight < 1:
            raise ValueError(f"min_weight must lie in [0, 1), got {self.min_weight}")
        if not 0 < self.max_entity_share <= 1:
            raise ValueError(f"max_entity_share must lie in (0, 1], got {self.max_entity_share}")


@dataclass(frozen=True)
class UserHistory:
    """One user's items with their decayed affinities; ``verb`` names what they did ("rated").

    ``ages_seconds`` (how long before the refresh each item was last touched) lets the model
    weigh the fold-in by recency, as it does when evaluated; ``None`` weighs every item alike."""

    user_key: str
    items: tuple[str, ...]
    affinity: tuple[float, ...]
    verb: str = "interacted with"
    ages_seconds: tuple[float, ...] | None = None
    #: The update policy's profile weight of each item (0 = dropped), its action and why
    #: (:func:`models.update_policy.refresh_decisions`); ``None``: the model's own recency.
    profile: tuple[float, ...] | None = None
    update_action: str | None = None
    update_reason: str | None = None


def user_histories(affinity: pd.DataFrame, as_of: pd.Timestamp | None = None) -> list[UserHistory]:
    """One :class:`UserHistory` per user of ``affinity`` (user_key, item_id, weight, n_events, n_rate
    and, with ``as_of``, last_ts rows), items by decreasing affinity (ties by item id); the verb is
    "rated" when every event was a rating; ``as_of`` gives each item its age at the refresh."""
    ordered = affinity.sort_values(["user_key", "weight", "item_id"], ascending=[True, False, True], kind="stable")
    out = []
    for user, group in ordered.groupby("user_key", sort=True):
        ages = None if as_of is None else tuple(float(a) for a in
                                                (_epoch_seconds(as_of) - _epoch_seconds(group["last_ts"])).clip(min=0))
        out.append(UserHistory(str(user), tuple(group["item_id"].astype(str)), tuple(group["weight"].astype(float)),
                               verb="rated" if (group["n_rate"] == group["n_events"]).all() else "interacted with",
                               ages_seconds=ages))
    return out


def _epoch_seconds(values: object) -> np.ndarray:
    """Timestamps (naive ones are UTC) or one timestamp as float epoch seconds."""
    stamps = pd.to_datetime(pd.Series(np.atleast_1d(np.asarray(values, dtype=object))), utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def with_update_policy(
    users: Sequence[UserHistory], scorer, policy, previous_refresh: float | None, refresh_ts: float
) -> list[UserHistory]:
    """``users`` with the profile, action and reason the update ``policy`` (``None``: the default
    rule) gives each at this refresh (:func:`models.update_policy.refresh_decisions`); needs ages."""
    import dataclasses

    from models.update_policy import refresh_decisions

    if not users:
        return []
    if any(u.ages_seconds is None for u in users):
        raise ValueError("the update policy needs each history item's age (user_histories(..., as_of))")
    index = {item: k for k, item in enumerate(scorer.item_ids)}
    last_touch = np.full((len(users), len(scorer.item_ids)), np.nan)
    for row, user in enumerate(users):
        for item, age in zip(user.items, user.ages_seconds or ()):
            if item in index:
                last_touch[row, index[item]] = refresh_ts - age
    embeddings = scorer.item_embeddings().detach().double().numpy()
    names, weights, reasons = refresh_decisions(policy, embeddings, last_touch, previous_refresh, refresh_ts,
                                                scorer.config.fold_in_half_life_days)
    out = []
    for row, user in enumerate(users):
        profile = tuple(float(weights[row, index[item]]) if item in index else 0.0 for item in user.items)
        out.append(dataclasses.replace(user, profile=profile, update_action=names[row], update_reason=reasons[row]))
    return out


def with_communities(item_topics: pd.DataFrame, communities: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """``item_topics`` plus the model's interest communities (``Community.to_dict`` rows) as topics
    ``community:<id>`` of their members, each named by its community's name."""
    from models.communities import Community, community_topics

    found = [Community.from_dict(c) for c in communities]
    members = community_topics(found)
    names = {f"community:{c.community_id}": c.name for c in found}
    return pd.concat([item_topics, members.assign(topic_name=members["topic_id"].map(names))], ignore_index=True)


def topic_name(topic_id: str, topic_type: str) -> str:
    """The fallback name of a topic whose row carries none: ``genre:Film-Noir`` → ``Film-Noir``;
    ``kg:m.0abc`` typed ``kg:directed_by`` → ``directed_by m.0abc``. ``gold.item_topics`` names every
    topic (``spark_jobs.transforms.aggregate.item_topics``), so people never read this form."""
    value = topic_id.split(":", 1)[-1]
    if topic_type in ("genre", "community"):
        return value
    return f"{topic_type.split(':', 1)[-1]} {value}"


def interest_id_of(topic_id: str, topic_type: str) -> str:
    """The edge id of a topic: the topic id, except that a KG entity is qualified by its relation
    (``kg:m.0abc`` typed ``kg:directed_by`` → ``kg:directed_by:m.0abc``): directing and acting in a
    film are different interests, even in the same person."""
    if topic_type in ("genre", "community"):
        return topic_id
    return f"{topic_type}:{topic_id.split(':', 1)[-1]}"


def interest_type_of(topic_type: str) -> str:
    """The interest type of an item–topic edge type: genre, community, or entity (every ``kg:*`` relation)."""
    return topic_type if topic_type in ("genre", "community") else "entity"


def _discounts(n: int) -> list[float]:
    return [1.0 / math.log2(r + 2) for r in range(n)]


def _titles(items: Sequence[str], titles: Mapping[str, str], limit: int = 2) -> str:
    return ", ".join(titles.get(i, i) for i in items[:limit])


def interest_edges(
    scorer,  # models.training.UigGCNScorer (or anything with recommend / item_ids / item_embeddings)
    users: Sequence[UserHistory],
    item_topics: pd.DataFrame,
    titles: Mapping[str, str],
    settings: InterestSettings = InterestSettings(),
    topic_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Interest edges of ``users``: user_key, interest_type, interest_id, interest_name, weight, rank, explanation.

    ``item_topics`` has item_id, topic_id, topic_type (``genre``, ``community`` or ``kg:<relation>``)
    and optionally topic_name, the display name (``actor shared by Aliens, Braveheart, Exotica``);
    ``topic_names`` names topic ids that carry none (else :func:`topic_name`); history
    items unknown to the model still count for topics (they are in the user's behaviour) but
    cannot be folded in. KG entities on more than ``settings.max_entity_share`` of the catalog and
    edges below ``settings.min_weight`` are left out; ranks start at 1 per
    (user, type), ties broken by id so the result is deterministic.
    """
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
    links = item_topics[["item_id", "topic_id", "topic_type"]].astype(str).drop_duplicates()
    names: dict = dict(topic_names or {})  # by topic id, then (topic id, type) from the stored names
    if "topic_name" in item_topics.columns:
        named = item_topics.dropna(subset=["topic_name"])[["topic_id", "topic_type", "topic_name"]].astype(str)
        names.update({(t, k): n for t, k, n in named.drop_duplicates(["topic_id", "topic_type"]).itertuples(index=False)})
    n_catalog = max(links["item_id"].nunique(), 1)
    support = links.groupby(["topic_id", "topic_type"])["item_id"].nunique() / n_catalog
    too_common = {key for key, share in support.items()
                  if interest_type_of(key[1]) == "entity" and share > settings.max_entity_share}
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

