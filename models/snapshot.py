"""The training snapshot: what one training run reads, taken from the tables once.

A folder readable without this code:

* ``interactions.parquet`` — ``user_key``, ``item_id``, ``ts`` (epoch seconds), the tables' names;
* ``item_topics.parquet`` — ``item_id``, ``topic_id``, ``topic_type``;
* ``item_text.npy`` — ``[n_items, d]`` text vectors, row ``i`` = ``manifest.item_ids[i]``;
* ``manifest.json`` — item ids, the Delta versions read, encoder version, titles, the graph's summary;
* ``train_graph.pt`` — the train window's interest graph cut at the validation start
  (:meth:`models.graph.InterestGraph.save`): the one input of training, scoring and the
  interest communities.

Names: the snapshot keeps the tables' column names; :func:`protocol_frame` is the one mapping
to the evaluation protocol's ``(user, item, ts)`` (:data:`models.interactions.COLUMNS`).

Only pandas and numpy are imported at module level (the CLI imports this at start-up); the
protocol and the graph (torch) are imported where they are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from uig_common import names as C
from uig_common.errors import InputError

if TYPE_CHECKING:
    from models.graph import InterestGraph
    from models.interactions import EncodedSplit, Split

__all__ = ["PROTOCOL_NAMES", "SPLIT_FRACTIONS", "SnapshotError", "TrainingSnapshot", "make_snapshot", "protocol_frame"]

SNAPSHOT_FORMAT = 2
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
GRAPH_FILE = "train_graph.pt"
MIN_INTERACTIONS = 10

#: The one mapping from the tables' columns to the evaluation protocol's (models.interactions.COLUMNS).
PROTOCOL_NAMES = {C.USER_KEY: "user", C.ITEM_ID: "item", C.TS: "ts"}


class SnapshotError(InputError):
    """The tables cannot make a training snapshot (missing tables, too little data), or a folder is not one."""


def protocol_frame(interactions: pd.DataFrame) -> pd.DataFrame:
    """``(user_key, item_id, ts)`` rows as the protocol's ``(user, item, ts)`` frame."""
    return interactions.rename(columns=PROTOCOL_NAMES)[list(PROTOCOL_NAMES.values())]


@dataclass(frozen=True)
class TrainingSnapshot:
    """What one training run reads: interactions, the item index with its text vectors and topics."""

    interactions: pd.DataFrame  # user_key, item_id, ts (epoch seconds)
    item_ids: tuple[str, ...]
    item_text: np.ndarray  # [n_items, d] float32, row i = item_ids[i]
    item_topics: pd.DataFrame  # item_id, topic_id, topic_type
    input_versions: dict[str, int]
    encoder_version: str
    built_at: str
    meta: dict[str, Any] = field(default_factory=dict)

    # --- the protocol ---------------------------------------------------------------------
    def split(self) -> tuple[Split, EncodedSplit]:
        """The project's global temporal split, indexed over every user and the whole catalog."""
        from models.interactions import temporal_split

        split = temporal_split(protocol_frame(self.interactions), SPLIT_FRACTIONS)
        return split, split.encode(items=self.item_ids)

    def train_graph(self, half_life_days: float) -> InterestGraph:
        """The interest graph of the train window at the validation start
        (:func:`models.graph.train_window_graph`; edges weigh their affinity at the cut)."""
        from models.graph import train_window_graph

        _, data = self.split()
        return train_window_graph(data.train, self.item_topics, self.item_text, half_life_days, data.valid_start)

    # --- persistence ----------------------------------------------------------------------
    def save(self, folder: Path, graph: InterestGraph) -> Path:
        """Write the snapshot and its train graph into ``folder`` (created)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        self.item_topics.to_parquet(folder / "item_topics.parquet", index=False)
        np.save(folder / "item_text.npy", self.item_text)
        graph.save(folder / GRAPH_FILE)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "item_ids": list(self.item_ids),
            "input_versions": self.input_versions,
            "encoder_version": self.encoder_version,
            "built_at": self.built_at,
            "meta": {**self.meta, "train_graph": graph.summary()},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> TrainingSnapshot:
        folder = Path(folder)
        if not (folder / "manifest.json").exists():
            raise SnapshotError(f"{folder} is not a training snapshot (no manifest.json); run `uig train` or the build_graph task")
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotError(f"{folder} was written by an older uig (snapshot format {manifest.get('format', 1)}, "
                                f"this one reads {SNAPSHOT_FORMAT}); run `uig train` to build a new snapshot")
        return cls(
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            item_ids=tuple(manifest["item_ids"]),
            item_text=np.load(folder / "item_text.npy"),
            item_topics=pd.read_parquet(folder / "item_topics.parquet"),
            input_versions={k: int(v) for k, v in manifest["input_versions"].items()},
            encoder_version=manifest["encoder_version"],
            built_at=manifest["built_at"],
            meta=manifest.get("meta", {}),
        )

    @staticmethod
    def load_graph(folder: Path | str) -> InterestGraph:
        """The train window's interest graph stored with the snapshot in ``folder``."""
        from models.graph import InterestGraph

        path = Path(folder) / GRAPH_FILE
        if not path.exists():
            raise SnapshotError(f"{folder} has no {GRAPH_FILE}; run `uig train` or the build_graph task")
        return InterestGraph.load(path)


def make_snapshot(
    events: pd.DataFrame,
    titles: dict[str, str],
    item_topics: pd.DataFrame,
    vectors: tuple[list[str], np.ndarray],
    input_versions: dict[str, int],
    encoder_version: str,
    built_at: datetime,
    where: str = "the data root",
) -> TrainingSnapshot:
    """A snapshot from what was read: item interactions (user_key, item_id, ts), the catalog's
    titles, item topics and the text vectors ``(item_ids, [n, d])`` of ``encoder_version``.

    Raises :class:`SnapshotError`, saying which step to run, when there is too little data, a
    catalog item has no vector, an interacted item is not in the catalog or there are no topics.
    ``where`` names the tables' location in those messages.
    """
    if len(events) < MIN_INTERACTIONS:
        raise SnapshotError(
            f"{C.SILVER_EVENTS} has {len(events)} item interactions under {where}; "
            "land and ingest data first (`uig data prepare && uig ingest`)"
        )
    catalog = sorted(titles)
    vector_ids, matrix = vectors
    row_of = {item: i for i, item in enumerate(vector_ids)}
    missing = [item for item in catalog if item not in row_of]
    if missing:
        raise SnapshotError(
            f"{len(missing)} catalog items have no {encoder_version} vector (e.g. {missing[:3]}); run `uig encode` first"
        )
    unknown = sorted(set(events[C.ITEM_ID]) - set(catalog))
    if unknown:
        raise SnapshotError(f"{len(unknown)} interacted items are not in {C.SILVER_ITEMS} (e.g. {unknown[:3]})")
    if item_topics.empty:
        raise SnapshotError(f"{C.GOLD_ITEM_TOPICS} is empty under {where}; run `uig aggregate` first")
    return TrainingSnapshot(
        interactions=events[[C.USER_KEY, C.ITEM_ID, C.TS]]
        .sort_values([C.TS, C.USER_KEY, C.ITEM_ID], kind="stable")
        .reset_index(drop=True),
        item_ids=tuple(catalog),
        item_text=matrix[[row_of[item] for item in catalog]].astype(np.float32),
        item_topics=item_topics.sort_values([C.ITEM_ID, C.TOPIC_ID], kind="stable").reset_index(drop=True),
        input_versions=dict(input_versions),
        encoder_version=encoder_version,
        built_at=built_at.isoformat(),
        meta={"titles": dict(titles)},
    )
