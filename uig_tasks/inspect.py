"""``uig user`` and ``uig recommend``: one user's interest graph and recommendations, with reasons.

A user is named by the raw id the logs carry (mapped through the same keyed hash as ingestion)
or by the ``user_key`` itself.
"""

from __future__ import annotations

from typing import Any

from uig_tasks.config import UigConfig
from uig_common.errors import InputError, NotFoundError


class UnknownUserError(NotFoundError):
    """No event of this user has been ingested."""


def _resolve_user(spark, config: UigConfig, user: str) -> tuple[str, Any]:
    """(user_key, last event time) of a raw user id or a user_key; UnknownUserError if neither is known."""
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs import io
    from spark_jobs.transforms.lines import pseudonymise_user_id

    events = io.read_table(spark, config.lake, C.SILVER_EVENTS)
    for key in (pseudonymise_user_id(config.resolved_user_salt(), user), user):
        last = events.where(F.col(C.USER_KEY) == key).agg(F.max(C.TS)).collect()[0][0]
        if last is not None:
            return key, last
    raise UnknownUserError(f"no events for user {user!r} under {config.delta_dir} (give the raw user id or its user_key)")


def user_report(config: UigConfig, user: str) -> dict[str, Any]:
    """The user's interest edges grouped by type, with their change since the previous refresh."""
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs import io

    spark = io.get_spark(config.spark, "uig-user")
    key, last = _resolve_user(spark, config, user)
    rows = [r.asDict() for r in io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES).where(F.col(C.USER_KEY) == key).collect()]
    interests: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r[C.INTEREST_TYPE], r[C.RANK] is None, r[C.RANK] or 0, r[C.INTEREST_ID])):
        interests.setdefault(row[C.INTEREST_TYPE], []).append({
            "id": row[C.INTEREST_ID], "name": row[C.INTEREST_NAME], "weight": row[C.WEIGHT], "rank": row[C.RANK],
            "previous_weight": row[C.PREVIOUS_WEIGHT], "change": edge_change(row), "explanation": row[C.EXPLANATION],
        })
    stamps = {r[C.AS_OF] for r in rows}
    return {
        "user": user, "user_key": key, "last_activity": last.isoformat(),
        "refreshed_as_of": max(stamps).isoformat() if stamps else None,
        "model_versions": sorted({r[C.MODEL_VERSION] for r in rows}),
        "policy_versions": sorted({r[C.POLICY_VERSION] for r in rows}),
        "update_action": _latest(rows, C.UPDATE_ACTION),
        "update_reason": _latest(rows, C.UPDATE_REASON),
        "interests": interests,
    }


def _latest(rows: list[dict[str, Any]], column: str) -> str | None:
    """``column`` of the user's most recently refreshed active edge (what the last refresh did)."""
    from uig_common import names as C

    active = [r for r in rows if r[C.EDGE_STATUS] == C.EDGE_ACTIVE and r.get(column)]
    return max(active, key=lambda r: r[C.AS_OF])[column] if active else None


def edge_change(row: dict[str, Any]) -> str:
    """new / ↑ / ↓ / = / dropped, against the weight before the user's last refresh."""
    from uig_common import names as C

    if row[C.EDGE_STATUS] == C.EDGE_DROPPED:
        return "dropped"
    before = row[C.PREVIOUS_WEIGHT]
    if before is None:
        return "new"
    if abs(row[C.WEIGHT] - before) < 1e-9:
        return "="
    return "↑" if row[C.WEIGHT] > before else "↓"


def recommend(config: UigConfig, user: str, k: int = 10) -> dict[str, Any]:
    """Top-``k`` items for the user, each with its reason.

    Read from the user's ``item`` edges in ``gold.interest_edges`` when the last refresh stored at
    least ``k`` of them (what downstream recommenders read); otherwise computed the same way, live,
    with the ``@champion`` GCN by fold-in of the user's current affinities (a user not refreshed
    yet, e.g. a brand-new one, or a ``k`` above what a refresh keeps).
    """
    from pyspark.sql import functions as F

    from models.interests import InterestSettings, UserHistory, interest_edges, with_communities
    from uig_common import names as C
    from spark_jobs import io
    from spark_jobs.refresh_job import read_interest_inputs
    from uig_tasks import scorer_model

    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    spark = io.get_spark(config.spark, "uig-recommend")
    key, _ = _resolve_user(spark, config, user)
    stored = (
        io.read_table(spark, config.lake, C.GOLD_INTEREST_EDGES)
        .where((F.col(C.USER_KEY) == key) & (F.col(C.INTEREST_TYPE) == "item") & (F.col(C.EDGE_STATUS) == C.EDGE_ACTIVE))
        .orderBy(C.RANK).collect()
    )
    history = (
        io.read_table(spark, config.lake, C.GOLD_USER_ITEM_AFFINITY).where(F.col(C.USER_KEY) == key)
        .select(C.ITEM_ID, C.WEIGHT).orderBy(F.desc(C.WEIGHT), C.ITEM_ID).collect()
    )
    items = tuple(r[C.ITEM_ID] for r in history)
    if len(stored) >= k:
        recs = [{"item_id": r[C.INTEREST_ID], "title": r[C.INTEREST_NAME], "weight": r[C.WEIGHT],
                 "reason": r[C.EXPLANATION].split("← ", 1)[-1]} for r in stored[:k]]
        return {"user": user, "user_key": key, "model_version": int(stored[0][C.MODEL_VERSION]),
                "source": f"interest graph, refreshed as of {stored[0][C.AS_OF].isoformat()}",
                "history_items": len(items), "items": recs}

    scorer, version = scorer_model.load_scorer(config, C.CHAMPION_ALIAS)
    topics, titles = read_interest_inputs(spark, config.lake)
    if items:
        person = UserHistory(key, items, tuple(float(r[C.WEIGHT]) for r in history))
        edges = interest_edges(scorer, [person], with_communities(topics, scorer.communities), titles,
                               InterestSettings(candidates=k, top_items=k, min_weight=0.0))
        rows = edges[edges.interest_type == "item"].sort_values("rank")
        recs = [{"item_id": r.interest_id, "title": r.interest_name, "weight": r.weight,
                 "reason": r.explanation.split("← ", 1)[-1]} for r in rows.itertuples()]
    else:  # events but no item interactions yet (e.g. only searches): the non-personalised ranking
        recs = [{"item_id": i, "title": titles.get(i, i), "weight": None,
                 "reason": "popular with the model (no item history yet)"} for i, _ in scorer.recommend([[]], k)[0]]
    return {"user": user, "user_key": key, "model_version": version, "source": "live fold-in with @champion",
            "history_items": len(items), "items": recs}


def interest_history(config: UigConfig, user_key: str) -> list[dict[str, Any]]:
    """Every recorded (interest, as_of, weight) of one user, oldest first."""
    from pyspark.sql import functions as F

    from uig_common import names as C
    from spark_jobs import io

    spark = io.get_spark(config.spark, "uig-user")
    rows = io.read_table(spark, config.lake, C.GOLD_INTEREST_HISTORY).where(F.col(C.USER_KEY) == user_key).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: (r[C.AS_OF], r[C.INTEREST_TYPE], r[C.INTEREST_ID]))


def draw_user(report: dict[str, Any], history: list[dict[str, Any]], path: str, top: int = 6) -> str:
    """PNG: the user's ego interest graph (left) and the weight of their top interests per refresh (right),
    each interest labelled by its display name (wrapped, at most three lines)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    colours = {"genre": "#4c78a8", "entity": "#72b7b2", "community": "#f58518", "item": "#54a24b"}
    fig, (ego, drift) = plt.subplots(1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [1.1, 1]})
    graph = nx.Graph()
    graph.add_node("user")
    shown = []
    for kind, edges in report["interests"].items():
        for edge in [e for e in edges if e["change"] != "dropped"][:top]:
            label = "\n".join(textwrap.wrap(edge["name"], 26, max_lines=3, placeholder=" …"))
            graph.add_edge("user", f"{kind}:{edge['id']}", weight=edge["weight"])
            shown.append((f"{kind}:{edge['id']}", kind, label, edge["weight"]))
    pos = nx.spring_layout(graph, seed=0, weight="weight")
    nx.draw_networkx_nodes(graph, pos, nodelist=["user"], node_color="#333333", node_size=900, ax=ego)
    for node, kind, label, weight in shown:
        nx.draw_networkx_nodes(graph, pos, nodelist=[node], node_color=colours.get(kind, "#999999"),
                               node_size=250 + 2500 * weight, ax=ego)
        nx.draw_networkx_edges(graph, pos, edgelist=[("user", node)], width=0.5 + 8 * weight, alpha=0.5, ax=ego)
        ego.annotate(label, pos[node], fontsize=8, ha="center", va="bottom", xytext=(0, 8), textcoords="offset points")
    for kind, colour in colours.items():
        ego.scatter([], [], c=colour, label=kind)
    ego.legend(loc="lower left", fontsize=8)
    ego.set_title(f"user {report['user']}: interests (size = weight)")
    ego.axis("off")

    current = sorted(((e["weight"], kind, e["id"], e["name"]) for kind, edges in report["interests"].items()
                      for e in edges if kind != "item"), reverse=True)[:top]
    for _, kind, interest, name in current:
        points = [(r["as_of"], r["weight"]) for r in history if r["interest_type"] == kind and r["interest_id"] == interest]
        if points:
            xs, ys = zip(*points)
            drift.plot(xs, ys, marker="o", color=colours.get(kind), label=textwrap.shorten(name, 60, placeholder=" …"),
                       alpha=0.85)
    drift.set_title("interest drift: weight at each refresh")
    drift.set_ylabel("weight")
    drift.legend(fontsize=7, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
