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
from itertools import chain

import numpy as np
import pandas as pd
import torch

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
    "rated" when every event was a rating; ``as_of`` gives each item its age at the refresh.
    Columns are converted once for all users (a refresh may hold tens of thousands)."""
    ordered = affinity.sort_values(["user_key", "weight", "item_id"], ascending=[True, False, True], kind="stable")
    ordered = ordered[ordered["user_key"].notna()]
    if ordered.empty:
        return []
    keys = ordered["user_key"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    items = ordered["item_id"].astype(str).tolist()
    weights = ordered["weight"].astype(float).tolist()
    all_rated = np.logical_and.reduceat((ordered["n_rate"] == ordered["n_events"]).to_numpy(), starts)
    ages = None if as_of is None else (_epoch_seconds(as_of) - _epoch_seconds(ordered["last_ts"])).clip(min=0).tolist()
    return [UserHistory(str(keys[start]), tuple(items[start:end]), tuple(weights[start:end]),
                        verb="rated" if rated else "interacted with",
                        ages_seconds=None if ages is None else tuple(ages[start:end]))
            for start, end, rated in zip(starts.tolist(), ends.tolist(), all_rated.tolist())]


def _epoch_seconds(values: object) -> np.ndarray:
    """Timestamps (naive ones are UTC) or one timestamp as float epoch seconds."""
    stamps = pd.to_datetime(pd.Series(np.atleast_1d(np.asarray(values, dtype=object))), utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


#: Users whose update decisions are made at once: the decisions hold dense [users, n_items] arrays.
POLICY_CHUNK_USERS = 5_000


def with_update_policy(
    users: Sequence[UserHistory], scorer, policy, previous_refresh: float | None, refresh_ts: float
) -> list[UserHistory]:
    """``users`` with the profile, action and reason the update ``policy`` (``None``: the default
    rule) gives each at this refresh (:func:`models.update_policy.refresh_decisions`); needs ages.
    Decided over chunks of :data:`POLICY_CHUNK_USERS` users (each user's decision is its own)."""
    if not users:
        return []
    if any(u.ages_seconds is None for u in users):
        raise ValueError("the update policy needs each history item's age (user_histories(..., as_of))")
    index = pd.Index(list(scorer.item_ids))
    embeddings = scorer.item_embeddings().detach().double().numpy()
    out: list[UserHistory] = []
    for start in range(0, len(users), POLICY_CHUNK_USERS):
        out += _decided(users[start:start + POLICY_CHUNK_USERS], index, embeddings, policy, previous_refresh,
                        refresh_ts, scorer.config.fold_in_half_life_days)
    return out


def _decided(users: Sequence[UserHistory], index: pd.Index, embeddings: np.ndarray, policy,
             previous_refresh: float | None, refresh_ts: float, half_life_days: float) -> list[UserHistory]:
    """:func:`with_update_policy` for one chunk of users."""
    import dataclasses

    from models.update_policy import refresh_decisions

    lengths = np.array([len(u.items) for u in users], dtype=np.int64)
    rows = np.repeat(np.arange(len(users)), lengths)
    columns = index.get_indexer([item for u in users for item in u.items])  # -1: unknown to the model
    known = columns >= 0
    ages = np.array([age for u in users for age in (u.ages_seconds or ())], dtype=np.float64)
    last_touch = np.full((len(users), len(index)), np.nan)
    last_touch[rows[known], columns[known]] = refresh_ts - ages[known]
    names, weights, reasons = refresh_decisions(policy, embeddings, last_touch, previous_refresh, refresh_ts,
                                                half_life_days)
    profiles = np.zeros(len(columns))
    profiles[known] = weights[rows[known], columns[known]]
    ends = np.cumsum(lengths).tolist()
    return [dataclasses.replace(user, profile=tuple(profiles[end - n:end].tolist()), update_action=names[row],
                                update_reason=reasons[row])
            for row, (user, n, end) in enumerate(zip(users, lengths.tolist(), ends))]


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


#: Users scored at once: bounds the dense [users, n_items] score matrix of one ``recommend`` call.
CHUNK_USERS = 5000
#: (recommended item, history item) pairs whose similarity is computed at once.
CHUNK_PAIRS = 1 << 18
_TYPE_ORDER = {"genre": 0, "entity": 1, "community": 2}


def _discounts(n: int) -> list[float]:
    return [1.0 / math.log2(r + 2) for r in range(n)]


def _objects(values: Sequence[object]) -> np.ndarray:
    """A 1-d object array of ``values`` (tuples stay elements)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _two_decimals(values: np.ndarray) -> np.ndarray:
    return pd.Series(values, dtype="float64").map("{:.2f}".format).to_numpy(dtype=object)


def _positions(owner: np.ndarray) -> np.ndarray:
    """Each row's position within its run of equal, contiguous ``owner`` values."""
    if owner.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.arange(owner.size) - np.repeat(starts, np.diff(np.r_[starts, owner.size]))


def _sort_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uniques, codes)``: the distinct values in Python's order and each value's rank among them."""
    uniques = sorted(set(values.tolist()))
    codes = pd.Index(_objects(uniques)).get_indexer(values) if values.size else np.zeros(0, dtype=np.int64)
    return _objects(uniques), codes.astype(np.int64)


def _top_two_titles(group: np.ndarray, item_code: np.ndarray, value: np.ndarray, title_of_code: np.ndarray,
                    n_groups: int) -> np.ndarray:
    """Per group, the titles of its two rows of highest ``value`` (ties: lower ``item_code``) joined
    by ", " — what the per-item explanation lists."""
    order = np.lexsort((item_code, -value, group))
    group, item_code = group[order], item_code[order]
    position = _positions(group)
    first, second = np.full(n_groups, "", dtype=object), np.full(n_groups, "", dtype=object)
    first[group[position == 0]] = title_of_code[item_code[position == 0]]
    second[group[position == 1]] = ", " + title_of_code[item_code[position == 1]]
    return first + second


def _with_topics(frame: pd.DataFrame, item_uniques: np.ndarray, link_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, link)``: every (row of ``frame``, item–topic link of its item), rows in order and
    each row's links in link order — the join of the rows' item ``code`` with the links."""
    link_code = pd.Index(item_uniques).get_indexer(link_items) if len(item_uniques) else np.full(len(link_items), -1)
    links = np.flatnonzero(link_code >= 0)
    links = links[np.argsort(link_code[links], kind="stable")]
    counts = np.bincount(link_code[links], minlength=len(item_uniques))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    codes = frame["code"].to_numpy()
    per_row = counts[codes]
    row = np.repeat(np.arange(len(frame)), per_row)
    return row, links[np.repeat(starts[codes], per_row) + _positions(row)]


def _check_histories(users: Sequence[UserHistory], lengths: np.ndarray, affinity: np.ndarray,
                     affinity_lengths: np.ndarray) -> None:
    bad_length = (lengths != affinity_lengths) | (lengths == 0)
    owner = np.repeat(np.arange(len(users)), affinity_lengths)
    bad_value = np.bincount(owner[~(affinity >= 0) | np.isinf(affinity)], minlength=len(users)) > 0
    if (bad_length | bad_value).any():
        first = int(np.argmax(bad_length | bad_value))
        user = users[first].user_key
        if bad_length[first]:
            raise ValueError(f"user {user}: items and affinity must be non-empty and of equal length")
        raise ValueError(f"user {user}: affinities must be finite and >= 0")


def _recommend_in_chunks(scorer, users: Sequence[UserHistory], k: int) -> list[list[tuple[object, float]]]:
    """``scorer.recommend`` over chunks of :data:`CHUNK_USERS` users, folding in the profiles when
    every user has one, else the ages when every user has them."""
    recommended: list[list[tuple[object, float]]] = []
    for start in range(0, len(users), CHUNK_USERS):
        chunk = users[start:start + CHUNK_USERS]
        by_recency: dict = {}
        if all(u.profile is not None for u in users):
            by_recency = {"weights": [list(u.profile or ()) for u in chunk]}
        elif all(u.ages_seconds is not None for u in users):
            by_recency = {"ages_seconds": [list(u.ages_seconds or ()) for u in chunk]}
        recommended.extend(scorer.recommend([list(u.items) for u in chunk], k, **by_recency))
    return recommended


def _attention(scorer, users: Sequence[UserHistory], owner: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    """Each history item's affinity times its profile weight, else the model's recency weight."""
    has_profile = np.fromiter((u.profile is not None for u in users), dtype=bool, count=len(users))
    has_ages = np.fromiter((u.ages_seconds is not None for u in users), dtype=bool, count=len(users))
    attention = affinity.copy()
    if has_profile.any():
        rows = has_profile[owner]
        attention[rows] *= np.fromiter(chain.from_iterable(u.profile or () for u in users), dtype=np.float64,
                                       count=int(rows.sum()))
    by_age = has_ages & ~has_profile if hasattr(scorer, "recency_of") else np.zeros(len(users), dtype=bool)
    if by_age.any():
        rows = by_age[owner]
        ages = np.fromiter(chain.from_iterable(u.ages_seconds or () for u in users if u.profile is None),
                           dtype=np.float64, count=int(rows.sum()))
        newest = np.full(len(users), np.inf)
        np.minimum.at(newest, owner[rows], ages)
        # recency_of weighs one user's ages relative to their newest item: ages already taken
        # relative to each user's newest item give every user's weights in one call.
        attention[rows] *= np.asarray(scorer.recency_of(ages - newest[owner[rows]]), dtype=np.float64)
    return attention


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

    Computed over long (user, item) frames rather than user by user, so a refresh of tens of
    thousands of users costs array operations; sums run in each user's item order, as a
    per-user sum would, so weights do not depend on how many users are refreshed together.
    """
    settings.check()
    columns = ["user_key", "interest_type", "interest_id", "interest_name", "weight", "rank", "explanation",
               "update_action", "update_reason"]
    if not users:
        return pd.DataFrame(columns=columns)
    n_users = len(users)
    lengths = np.fromiter((len(u.items) for u in users), dtype=np.int64, count=n_users)
    affinity_lengths = np.fromiter((len(u.affinity) for u in users), dtype=np.int64, count=n_users)
    affinity = np.fromiter(chain.from_iterable(u.affinity for u in users), dtype=np.float64,
                           count=int(affinity_lengths.sum()))
    _check_histories(users, lengths, affinity, affinity_lengths)

    # history: one row per (user, item), in the user's order
    owner = np.repeat(np.arange(n_users), lengths)
    items = _objects(list(chain.from_iterable(u.items for u in users)))
    attention = _attention(scorer, users, owner, affinity)
    total = np.bincount(owner, weights=attention, minlength=n_users)[owner]  # sequential, as sum() is
    with np.errstate(divide="ignore", invalid="ignore"):
        history_share = (1 - settings.beta) * np.where(total > 0, attention / total, 1 / lengths[owner])
    item_uniques, item_codes = _sort_codes(items)
    history = pd.DataFrame({"owner": owner, "code": item_codes, "share": history_share})
    if history.duplicated(["owner", "code"]).any():  # an item listed twice: its first place, its last share
        history["share"] = history.groupby(["owner", "code"], sort=False)["share"].transform("last")
        history = history[~history.duplicated(["owner", "code"])]

    # recommendations: one row per (user, rank), sharing β by rank discount
    recommended = _recommend_in_chunks(scorer, users, settings.candidates)
    rec_lengths = np.fromiter((len(r) for r in recommended), dtype=np.int64, count=n_users)
    rec_owner = np.repeat(np.arange(n_users), rec_lengths)
    rec_rank = _positions(rec_owner)
    longest = int(rec_lengths.max(initial=0))
    discounts = np.array(_discounts(longest), dtype=np.float64)
    discount_totals = np.array([sum(_discounts(n)) or 1.0 for n in range(longest + 1)], dtype=np.float64)
    rec_share = settings.beta * discounts[rec_rank] / discount_totals[rec_lengths[rec_owner]]
    rec_uniques, rec_codes = _sort_codes(_objects([i for r in recommended for i, _ in r]))
    recs = pd.DataFrame({"owner": rec_owner, "code": rec_codes, "share": rec_share})

    sources = ((history, item_uniques), (recs, rec_uniques))
    topic_edges = _topic_edges(users, sources, item_topics, titles, settings, topic_names)
    item_edges = _item_edges(scorer, users, (owner, item_codes, item_uniques), (recs.assign(rank=rec_rank), rec_uniques),
                             titles, settings)
    edges = pd.concat([topic_edges, item_edges], ignore_index=True)
    order = np.lexsort((edges["rank"].to_numpy(), edges["type_order"].to_numpy(), edges["owner"].to_numpy()))
    edges = edges.iloc[order]
    policy = {"update_action": _objects([u.update_action for u in users]),
              "update_reason": _objects([u.update_reason for u in users])}
    owners = edges["owner"].to_numpy()
    edges = pd.DataFrame({
        "user_key": _objects([u.user_key for u in users])[owners],
        **{c: edges[c].to_numpy(dtype=object) for c in ("interest_type", "interest_id", "interest_name")},
        "weight": edges["weight"].to_numpy(dtype=np.float64),
        "rank": edges["rank"].to_numpy(dtype=np.int64),
        "explanation": edges["explanation"].to_numpy(dtype=object),
        **{c: values[owners] for c, values in policy.items()},
    }, columns=columns)
    duplicated = edges.duplicated(["user_key", "interest_type", "interest_id"])
    if duplicated.any():  # an edge is keyed by these three: two rows would make the MERGE ambiguous
        raise ValueError(f"duplicate interest edges: {edges[duplicated].head(3).to_dict('records')}")
    return edges.astype({"weight": "float64", "rank": "int64"})


def topic_links(item_topics: pd.DataFrame, topic_names: Mapping[str, str] | None, max_entity_share: float
                ) -> tuple[pd.DataFrame, dict, set[tuple[str, str]]]:
    """``(links, names, too_common)``: the distinct item–topic links as strings, topic names by
    (topic id, type) and by topic id, and the (topic id, type) of KG entities on more than
    ``max_entity_share`` of the catalog."""
    links = item_topics[["item_id", "topic_id", "topic_type"]].astype(str).drop_duplicates()
    names: dict = dict(topic_names or {})  # by topic id, then (topic id, type) from the stored names
    if "topic_name" in item_topics.columns:
        named = item_topics.dropna(subset=["topic_name"])[["topic_id", "topic_type", "topic_name"]].astype(str)
        names.update({(t, k): n for t, k, n in named.drop_duplicates(["topic_id", "topic_type"]).itertuples(index=False)})
    n_catalog = max(links["item_id"].nunique(), 1)
    support = links.groupby(["topic_id", "topic_type"])["item_id"].nunique() / n_catalog
    too_common = {key for key, share in support.items()
                  if interest_type_of(key[1]) == "entity" and share > max_entity_share}
    return links, names, too_common


def _topic_edges(users: Sequence[UserHistory], sources: tuple[tuple[pd.DataFrame, np.ndarray], ...],
                 item_topics: pd.DataFrame,
                 titles: Mapping[str, str], settings: InterestSettings,
                 topic_names: Mapping[str, str] | None) -> pd.DataFrame:
    """Genre, entity and community edges: attention shares summed over each topic's items."""
    links, names, too_common = topic_links(item_topics, topic_names, settings.max_entity_share)
    keys = pd.MultiIndex.from_frame(links[["topic_id", "topic_type"]])
    links = links[~keys.isin(too_common)] if too_common else links
    topic_keys = links[["topic_id", "topic_type"]].drop_duplicates()
    topics = pd.DataFrame({"topic_id": topic_keys["topic_id"].to_numpy(), "kind": topic_keys["topic_type"].to_numpy()})
    topics["type_order"] = [_TYPE_ORDER[interest_type_of(k)] for k in topics["kind"]]
    topics["interest_id"] = [interest_id_of(t, k) for t, k in zip(topics["topic_id"], topics["kind"])]
    topics["interest_name"] = [names.get((t, k)) or names.get(t) or topic_name(t, k)
                               for t, k in zip(topics["topic_id"], topics["kind"])]
    topics["id_code"] = _sort_codes(topics["topic_id"].to_numpy(dtype=object))[1]
    code_of = pd.MultiIndex.from_frame(topic_keys).get_indexer(pd.MultiIndex.from_frame(links[["topic_id", "topic_type"]]))
    link_items = links["item_id"].to_numpy(dtype=object)

    # (user, item, share, source) → (user, item, topic): per user, history rows in its order and
    # then recommendations by rank, each item's topics in link order — the order the user meets them
    parts = []
    for source, (frame, uniques) in enumerate(sources):
        row, link = _with_topics(frame, uniques, link_items)
        parts.append({"owner": frame["owner"].to_numpy()[row], "source": np.full(row.size, source),
                      "topic": code_of[link], "share": frame["share"].to_numpy()[row],
                      "code": frame["code"].to_numpy()[row]})
    cols = {c: np.concatenate([part[c] for part in parts]) for c in parts[0]}
    order = np.argsort(cols["owner"], kind="stable")
    cols = {c: v[order] for c, v in cols.items()}
    n_topics = max(len(topics), 1)
    keys_, first_seen, group = np.unique(cols["owner"] * n_topics + cols["topic"], return_index=True,
                                         return_inverse=True)
    n_groups = keys_.size
    weight = np.bincount(group, weights=cols["share"], minlength=n_groups)  # in the user's order, as the loop added
    per_source = {}
    for source in (0, 1):
        rows = cols["source"] == source
        per_source[source] = (np.bincount(group[rows], minlength=n_groups),
                              np.bincount(group[rows], weights=cols["share"][rows], minlength=n_groups))
    g_owner, g_topic = keys_ // n_topics, keys_ % n_topics
    g_type = topics["type_order"].to_numpy()[g_topic]

    # rank within (user, type) by weight, then topic id, then first met; keep the top-N
    kept = weight >= settings.min_weight
    order = np.lexsort((first_seen[kept], topics["id_code"].to_numpy()[g_topic[kept]], -weight[kept], g_type[kept],
                        g_owner[kept]))
    chosen = np.flatnonzero(kept)[order]
    rank = _positions(g_owner[chosen] * 3 + g_type[chosen]) + 1
    top_n = np.array([settings.top_genres, settings.top_entities, settings.top_communities])
    within = rank <= top_n[g_type[chosen]]
    chosen, rank = chosen[within], rank[within]

    # explanations: the two items with the highest share of each source, by title
    selected = np.zeros(n_groups, dtype=bool)
    selected[chosen] = True
    parts = []
    verbs = _objects([u.verb for u in users])
    for source, (_, uniques) in enumerate(sources):
        rows = (cols["source"] == source) & selected[group]
        named_items = _objects([titles.get(i, i) for i in uniques])
        listed = _top_two_titles(group[rows], cols["code"][rows], cols["share"][rows], named_items, n_groups)[chosen]
        count, share = per_source[source][0][chosen], per_source[source][1][chosen]
        counted = count.astype(str).astype(object)
        if source == 0:
            text = (verbs[g_owner[chosen]] + " " + counted + " item" + np.where(count != 1, "s", "").astype(object)
                    + " incl. " + listed + " (" + _two_decimals(share) + ")")
        else:
            text = counted + " recommended incl. " + listed + " (" + _two_decimals(share) + ")"
        parts.append(np.where(count > 0, text, "").astype(object))
    both = np.where((per_source[0][0][chosen] > 0) & (per_source[1][0][chosen] > 0), "; ", "").astype(object)
    name = topics["interest_name"].to_numpy(dtype=object)[g_topic[chosen]]
    return pd.DataFrame({
        "owner": g_owner[chosen], "type_order": g_type[chosen], "rank": rank,
        "interest_type": np.array(["genre", "entity", "community"], dtype=object)[g_type[chosen]],
        "interest_id": topics["interest_id"].to_numpy(dtype=object)[g_topic[chosen]], "interest_name": name,
        "weight": weight[chosen],
        "explanation": name + "  " + _two_decimals(weight[chosen]) + " ← " + parts[0] + both + parts[1],
    })


def _item_edges(scorer, users: Sequence[UserHistory], history: tuple[np.ndarray, np.ndarray, np.ndarray],
                recommended: tuple[pd.DataFrame, np.ndarray], titles: Mapping[str, str],
                settings: InterestSettings) -> pd.DataFrame:
    """Item edges: the top recommendations, each explained by the user's known history items
    closest to it in the GCN's embedding (similarities batched over chunks of pairs)."""
    (owner, item_codes, item_uniques), (recs, rec_uniques) = history, recommended
    recs = recs[(recs["rank"].to_numpy() < settings.top_items) & (recs["share"].to_numpy() >= settings.min_weight)]
    rec_owner, rec_item = recs["owner"].to_numpy(), rec_uniques[recs["code"].to_numpy()]
    index = pd.Index(_objects(list(scorer.item_ids)))
    model_index = index.get_indexer(item_uniques)[item_codes] if len(item_codes) else np.zeros(0, dtype=np.int64)
    known = model_index >= 0
    known_owner, known_code, known_index = owner[known], item_codes[known], model_index[known]
    rec_index = index.get_indexer(rec_item) if len(rec_item) else np.zeros(0, dtype=np.int64)
    # pairs (recommendation, known history item of the same user)
    n_known = np.bincount(known_owner, minlength=len(users))
    known_start = np.r_[0, np.cumsum(n_known)[:-1]]
    per_rec = n_known[rec_owner]
    pair_rec = np.repeat(np.arange(len(recs)), per_rec)
    pair_known = np.repeat(known_start[rec_owner], per_rec) + _positions(pair_rec)
    embeddings = scorer.item_embeddings()
    embeddings = embeddings.detach() if isinstance(embeddings, torch.Tensor) else torch.as_tensor(np.asarray(embeddings))
    similarity = np.empty(pair_rec.size, dtype=np.float64)
    with torch.no_grad():
        for start in range(0, pair_rec.size, CHUNK_PAIRS):
            stop = start + CHUNK_PAIRS
            left = embeddings[torch.from_numpy(rec_index[pair_rec[start:stop]])]
            right = embeddings[torch.from_numpy(known_index[pair_known[start:stop]])]
            similarity[start:stop] = (left * right).sum(dim=1).double().numpy()
    closest = _top_two_titles(pair_rec, known_code[pair_known], similarity,
                              _objects([titles.get(i, i) for i in item_uniques]), len(recs))
    because = np.where(per_rec > 0, " ← close to " + closest + " in the GCN's embedding",
                       " ← popular with the model (no folded-in history)").astype(object)
    name = _objects([titles.get(i, i) for i in rec_item])
    share = recs["share"].to_numpy()
    return pd.DataFrame({
        "owner": rec_owner, "type_order": 3, "rank": recs["rank"].to_numpy() + 1,
        "interest_type": "item", "interest_id": rec_item, "interest_name": name, "weight": share,
        "explanation": name + "  " + _two_decimals(share) + because,
    })
