"""Spark schemas of every Delta table: the table contracts of the README, in code."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from uig_common import names as C


def _s(*fields: tuple[str, object]) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in fields])  # type: ignore[arg-type]


BRONZE_EVENTS_RAW = _s(
    (C.BATCH_ID, StringType()),
    (C.SOURCE_FILE, StringType()),
    (C.LINE_NO, LongType()),
    (C.RAW_BYTES, BinaryType()),
    (C.BYTE_LENGTH, LongType()),
    (C.LINE_SHA256, StringType()),  # set only when RAW_BYTES holds a prefix of an oversized line
    (C.UTF8_VALID, BooleanType()),
    (C.INGESTED_AT, TimestampType()),
)

# What the line validator emits for every bronze row: lineage, parsed fields, or a reason.
PARSED_EVENTS = _s(
    (C.BATCH_ID, StringType()),
    (C.SOURCE_FILE, StringType()),
    (C.LINE_NO, LongType()),
    (C.EVENT_ID, StringType()),
    (C.USER_KEY, StringType()),
    (C.EVENT_TYPE, StringType()),
    (C.ITEM_ID, StringType()),
    (C.QUERY, StringType()),
    (C.RATING, DoubleType()),
    (C.TS, TimestampType()),
    (C.SOURCE, StringType()),
    (C.CONTENT_HASH, StringType()),  # valid rows: what the event means (duplicates compare it)
    (C.REASON, StringType()),
    (C.DETAIL, StringType()),
    (C.PREVIEW, StringType()),  # rejected rows: redacted, bounded text of the line
    (C.BYTE_LENGTH, LongType()),
)

SILVER_EVENTS = _s(
    (C.EVENT_ID, StringType()),
    (C.USER_KEY, StringType()),
    (C.EVENT_TYPE, StringType()),
    (C.ITEM_ID, StringType()),
    (C.QUERY, StringType()),
    (C.RATING, DoubleType()),
    (C.TS, TimestampType()),
    (C.EVENT_DATE, DateType()),
    (C.SOURCE, StringType()),
    (C.IS_LATE, BooleanType()),
    (C.BATCH_ID, StringType()),
    (C.BATCH_SEQ, LongType()),
    (C.SOURCE_FILE, StringType()),
    (C.LINE_NO, LongType()),
    (C.INGESTED_AT, TimestampType()),
    (C.CONTENT_HASH, StringType()),
)

# The raw line stays in bronze (one join away by batch, file and line); quarantine keeps a
# redacted preview, so raw user ids never leave landing and bronze.
SILVER_QUARANTINE = _s(
    (C.BATCH_ID, StringType()),
    (C.SOURCE_FILE, StringType()),
    (C.LINE_NO, LongType()),
    (C.REASON, StringType()),
    (C.DETAIL, StringType()),
    (C.PREVIEW, StringType()),
    (C.BYTE_LENGTH, LongType()),
    (C.INGESTED_AT, TimestampType()),
)

SILVER_DUPLICATES = _s(
    (C.BATCH_ID, StringType()),
    (C.SOURCE_FILE, StringType()),
    (C.LINE_NO, LongType()),
    (C.EVENT_ID, StringType()),
    (C.DUPLICATE_OF_BATCH, StringType()),
    (C.INGESTED_AT, TimestampType()),
    (C.CONTENT_HASH, StringType()),
    (C.KEPT_CONTENT_HASH, StringType()),
    (C.CONFLICT, BooleanType()),  # same event_id, different content: the id was reused
)

ENTITY = StructType([StructField(C.RELATION, StringType()), StructField(C.ENTITY_ID, StringType())])

SILVER_ITEMS = _s(
    (C.ITEM_ID, StringType()),
    (C.TITLE, StringType()),
    (C.GENRES, ArrayType(StringType())),
    (C.YEAR, IntegerType()),
    (C.ENTITIES, ArrayType(ENTITY)),
    (C.CONTENT_HASH, StringType()),
    (C.UPDATED_AT, TimestampType()),
)

SILVER_USERS = _s(
    (C.USER_KEY, StringType()),
    (C.AGE, IntegerType()),
    (C.GENDER, StringType()),
    (C.OCCUPATION, StringType()),
    (C.REGION, StringType()),
    (C.CONTENT_HASH, StringType()),
    (C.UPDATED_AT, TimestampType()),
)

GOLD_ITEM_TOPICS = _s(
    (C.ITEM_ID, StringType()),
    (C.TOPIC_ID, StringType()),
    (C.TOPIC_TYPE, StringType()),
    (C.WEIGHT, DoubleType()),
    (C.TOPIC_NAME, StringType()),  # what a person reads: never a Freebase id
)

GOLD_USER_ITEM_AFFINITY = _s(
    (C.USER_KEY, StringType()),
    (C.ITEM_ID, StringType()),
    (C.WEIGHT, DoubleType()),
    (C.N_EVENTS, LongType()),
    *[(f"n_{t}", LongType()) for t in C.EVENT_TYPES if t != "search"],
    (C.RATING_MEAN, DoubleType()),
    (C.FIRST_TS, TimestampType()),
    (C.LAST_TS, TimestampType()),
    (C.AS_OF, TimestampType()),
)

GOLD_USER_TOPIC_AFFINITY = _s(
    (C.USER_KEY, StringType()),
    (C.TOPIC_ID, StringType()),
    (C.TOPIC_TYPE, StringType()),
    (C.WEIGHT, DoubleType()),
    (C.N_ITEMS, LongType()),
    (C.LAST_TS, TimestampType()),
    (C.AS_OF, TimestampType()),
)

GOLD_ITEM_EMBEDDINGS = _s(
    (C.ITEM_ID, StringType()),
    (C.ENCODER_VERSION, StringType()),
    (C.CONTENT_HASH, StringType()),  # silver.items' hash of the content the vector was made from
    (C.EMBEDDING, ArrayType(FloatType())),
    (C.ENCODED_AT, TimestampType()),
)

GOLD_INTEREST_EDGES = _s(
    (C.USER_KEY, StringType()),
    (C.INTEREST_TYPE, StringType()),
    (C.INTEREST_ID, StringType()),
    (C.INTEREST_NAME, StringType()),
    (C.WEIGHT, DoubleType()),
    (C.RANK, IntegerType()),
    (C.EXPLANATION, StringType()),
    (C.EDGE_STATUS, StringType()),
    (C.PREVIOUS_WEIGHT, DoubleType()),  # weight before the last refresh of this user; null for a new edge
    (C.MODEL_VERSION, StringType()),
    (C.POLICY_VERSION, StringType()),
    (C.UPDATE_ACTION, StringType()),
    (C.UPDATE_REASON, StringType()),
    (C.AS_OF, TimestampType()),
    (C.REFRESHED_AT, TimestampType()),  # the refresh's logical time (never the wall clock): reruns give equal rows
)

GOLD_INTEREST_COMMUNITIES = _s(
    (C.COMMUNITY_ID, StringType()),
    (C.NAME, StringType()),
    (C.TOP_GENRES, ArrayType(StringType())),
    (C.MEMBERS, ArrayType(StringType())),  # item ids, most taken first
    (C.SIZE, IntegerType()),
    (C.MODEL_VERSION, StringType()),
)

# One row per (edge, refresh of its user): the weights over time behind `uig user --png`'s drift plot.
GOLD_INTEREST_HISTORY = _s(
    (C.USER_KEY, StringType()),
    (C.INTEREST_TYPE, StringType()),
    (C.INTEREST_ID, StringType()),
    (C.INTEREST_NAME, StringType()),
    (C.WEIGHT, DoubleType()),
    (C.MODEL_VERSION, StringType()),
    (C.AS_OF, TimestampType()),
)

SEGMENT = StructType([
    StructField(C.SOURCE_FILE, StringType()),
    StructField(C.START_BYTE, LongType()),
    StructField(C.END_BYTE, LongType()),
    StructField(C.FIRST_LINE_NO, LongType()),
    StructField(C.LAST_LINE_NO, LongType()),
    StructField(C.COMPRESSION, StringType()),
    StructField(C.SHA256, StringType()),
])

# The latest landing scan: every entry under landing/events with what became of it.
OPS_LANDING_FILES = _s(
    (C.SOURCE_FILE, StringType()),
    (C.STATUS, StringType()),
    (C.REASON, StringType()),
    (C.DETAIL, StringType()),
    (C.SIZE, LongType()),
    (C.INGESTED_BYTES, LongType()),
    (C.PENDING_BYTES, LongType()),
    (C.SCANNED_AT, TimestampType()),
)

OPS_BATCHES = _s(
    (C.BATCH_ID, StringType()),
    (C.BATCH_SEQ, LongType()),
    (C.LOGICAL_TIME, TimestampType()),
    (C.FILES, ArrayType(StringType())),
    (C.SEGMENTS, ArrayType(SEGMENT)),
    (C.STATUS, StringType()),
    (C.MAX_EVENT_TS + "_before", TimestampType()),
    (C.N_RAW, LongType()),
    (C.N_CLEAN, LongType()),
    (C.N_QUARANTINED, LongType()),
    (C.N_DUPLICATES, LongType()),
    (C.N_LATE, LongType()),
    (C.MAX_EVENT_TS, TimestampType()),
)

OPS_WATERMARKS = _s(
    (C.PIPELINE, StringType()),
    (C.LAST_BATCH_SEQ, LongType()),
    (C.MAX_EVENT_TS, TimestampType()),
    (C.AS_OF, TimestampType()),
    (C.UPDATED_AT, TimestampType()),
    (C.MODEL_VERSION, StringType()),  # refresh: the model its last completed run used
)

TABLE_SCHEMAS: dict[str, StructType] = {
    C.BRONZE_EVENTS_RAW: BRONZE_EVENTS_RAW,
    C.SILVER_EVENTS: SILVER_EVENTS,
    C.SILVER_QUARANTINE: SILVER_QUARANTINE,
    C.SILVER_DUPLICATES: SILVER_DUPLICATES,
    C.SILVER_ITEMS: SILVER_ITEMS,
    C.SILVER_USERS: SILVER_USERS,
    C.GOLD_ITEM_TOPICS: GOLD_ITEM_TOPICS,
    C.GOLD_USER_ITEM_AFFINITY: GOLD_USER_ITEM_AFFINITY,
    C.GOLD_USER_TOPIC_AFFINITY: GOLD_USER_TOPIC_AFFINITY,
    C.OPS_BATCHES: OPS_BATCHES,
    C.OPS_WATERMARKS: OPS_WATERMARKS,
    C.OPS_LANDING_FILES: OPS_LANDING_FILES,
    C.GOLD_ITEM_EMBEDDINGS: GOLD_ITEM_EMBEDDINGS,
    C.GOLD_INTEREST_EDGES: GOLD_INTEREST_EDGES,
    C.GOLD_INTEREST_COMMUNITIES: GOLD_INTEREST_COMMUNITIES,
    C.GOLD_INTEREST_HISTORY: GOLD_INTEREST_HISTORY,
}

TABLE_PARTITIONS: dict[str, list[str]] = {C.SILVER_EVENTS: [C.EVENT_DATE]}

#: Delta table properties set when a table is created. The gold affinity tables take deletion
#: vectors: an incremental aggregate replaces the rows of a few percent of the users, spread over
#: every file, and with deletion vectors it marks those rows deleted instead of copying every
#: file's other rows (at 5M events, 42M of 43.5M user-topic rows each run); an incremental refresh
#: replaces the dirty users' interest edges the same way. A full rewrite leaves
#: files without any. Marked rows stay in their files: erasing a user from these tables must purge
#: them (``REORG TABLE ... APPLY (PURGE)``) before VACUUM.
#: Every refresh commits to the edge and history tables, and Delta writes a table's checkpoint
#: inside every tenth commit by default (1.3-2 s of such a refresh here): for these two a refresher
#: writes it itself, between refreshes when kept warm (``refresh_job.checkpoint_refreshed_tables``);
#: Delta's own interval stays as a backstop.
TABLE_PROPERTIES: dict[str, dict[str, str]] = {
    C.GOLD_USER_ITEM_AFFINITY: {"delta.enableDeletionVectors": "true"},
    C.GOLD_USER_TOPIC_AFFINITY: {"delta.enableDeletionVectors": "true"},
    C.GOLD_INTEREST_EDGES: {"delta.enableDeletionVectors": "true", "delta.checkpointInterval": "100"},
    C.GOLD_INTEREST_HISTORY: {"delta.checkpointInterval": "100"},
}

#: The columns a large table's queries filter on: a batch's rows (bronze, silver), a quarantined
#: line's bronze row by file and line, the events after a batch, a user's rows (the gold tables,
#: written in ranges of user keys), a refresh's rows by its time. Delta keeps its per-file
#: statistics (min, max, null count) of these only (a table property, below), not of its default
#: first 32 columns, whose min and max each write pays for and no query filters on (nor could they
#: skip a file: hash keys and event ids span every file of a table not sorted by them). 600,000
#: SYNTHETIC events, a full ingest and aggregate: 44.8 against 48.1 s. Tables made before this keep
#: the default.
STATS_COLUMNS: dict[str, tuple[str, ...]] = {
    C.BRONZE_EVENTS_RAW: (C.BATCH_ID, C.SOURCE_FILE, C.LINE_NO),
    C.SILVER_EVENTS: (C.BATCH_ID, C.BATCH_SEQ, C.TS),
    C.GOLD_USER_ITEM_AFFINITY: (C.USER_KEY,),
    C.GOLD_USER_TOPIC_AFFINITY: (C.USER_KEY,),
    C.GOLD_INTEREST_EDGES: (C.USER_KEY, C.AS_OF),
    C.GOLD_INTEREST_HISTORY: (C.USER_KEY, C.AS_OF),
}
for _table, _columns in STATS_COLUMNS.items():
    TABLE_PROPERTIES.setdefault(_table, {})["delta.dataSkippingStatsColumns"] = ",".join(_columns)
del _table, _columns
