"""The one vocabulary: table, column, status, pipeline and model names, spelled once.

Every layer imports these (``from uig_common import names as C``) instead of writing the strings,
so a name means the same thing from the landing file to the Delta table to the model.
"""

# --- tables ------------------------------------------------------------------------------
BRONZE_EVENTS_RAW = "bronze.events_raw"
SILVER_EVENTS = "silver.events"
SILVER_QUARANTINE = "silver.quarantine"
SILVER_DUPLICATES = "silver.duplicates"
SILVER_ITEMS = "silver.items"
SILVER_USERS = "silver.users"
GOLD_ITEM_TOPICS = "gold.item_topics"
GOLD_USER_ITEM_AFFINITY = "gold.user_item_affinity"
GOLD_USER_TOPIC_AFFINITY = "gold.user_topic_affinity"
GOLD_ITEM_EMBEDDINGS = "gold.item_embeddings"
GOLD_INTEREST_EDGES = "gold.interest_edges"
GOLD_INTEREST_COMMUNITIES = "gold.interest_communities"
GOLD_INTEREST_HISTORY = "gold.interest_history"
OPS_BATCHES = "ops.batches"
OPS_WATERMARKS = "ops.watermarks"
OPS_LANDING_FILES = "ops.landing_files"

ALL_TABLES = (
    BRONZE_EVENTS_RAW,
    SILVER_EVENTS,
    SILVER_QUARANTINE,
    SILVER_DUPLICATES,
    SILVER_ITEMS,
    SILVER_USERS,
    GOLD_ITEM_TOPICS,
    GOLD_USER_ITEM_AFFINITY,
    GOLD_USER_TOPIC_AFFINITY,
    OPS_BATCHES,
    OPS_WATERMARKS,
    OPS_LANDING_FILES,
    GOLD_ITEM_EMBEDDINGS,
    GOLD_INTEREST_EDGES,
    GOLD_INTEREST_COMMUNITIES,
    GOLD_INTEREST_HISTORY,
)

# --- lineage (bronze / quarantine keys) ---------------------------------------------------
BATCH_ID = "batch_id"
BATCH_SEQ = "batch_seq"
SOURCE_FILE = "source_file"
LINE_NO = "line_no"
RAW_BYTES = "raw_bytes"  # bronze: the line as received (a bounded prefix when over max_line_bytes)
BYTE_LENGTH = "byte_length"  # the line's true length in bytes
LINE_SHA256 = "line_sha256"  # bronze: hash of the whole line, kept when only a prefix is stored
PREVIEW = "preview"  # quarantine: bounded, redacted text of the line (no raw user id)
UTF8_VALID = "utf8_valid"
INGESTED_AT = "ingested_at"
REASON = "reason"
DETAIL = "detail"

# --- events -------------------------------------------------------------------------------
EVENT_ID = "event_id"
USER_ID = "user_id"  # raw id: only ever seen in landing and bronze
USER_KEY = "user_key"  # keyed hash of user_id
EVENT_TYPE = "event_type"
ITEM_ID = "item_id"
QUERY = "query"
RATING = "rating"
TS = "ts"
EVENT_DATE = "event_date"
SOURCE = "source"
IS_LATE = "is_late"
DUPLICATE_OF_BATCH = "duplicate_of_batch"
KEPT_CONTENT_HASH = "kept_content_hash"  # duplicates: content hash of the event that was kept
CONFLICT = "conflict"  # duplicates: same event_id, different content
SEGMENTS = "segments"  # ops.batches: byte ranges of landing files the batch ingests
START_BYTE = "start_byte"
END_BYTE = "end_byte"
FIRST_LINE_NO = "first_line_no"
LAST_LINE_NO = "last_line_no"
COMPRESSION = "compression"
SHA256 = "sha256"
INGESTED_BYTES = "ingested_bytes"
PENDING_BYTES = "pending_bytes"
SCANNED_AT = "scanned_at"

EVENT_TYPES = ("view", "click", "search", "rate", "like", "purchase")
ITEM_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t != "search")  # events that name an item

# --- items / users -----------------------------------------------------------------------
TITLE = "title"
GENRES = "genres"
YEAR = "year"
ENTITIES = "entities"  # array<struct<relation, entity_id>>
RELATION = "relation"
ENTITY_ID = "entity_id"
CONTENT_HASH = "content_hash"
AGE = "age"
GENDER = "gender"
OCCUPATION = "occupation"
REGION = "region"
UPDATED_AT = "updated_at"

# --- gold ---------------------------------------------------------------------------------
TOPIC_ID = "topic_id"
TOPIC_TYPE = "topic_type"
TOPIC_NAME = "topic_name"  # display name: a genre, or "<relation> shared by <titles>" for a KG entity
WEIGHT = "weight"
N_EVENTS = "n_events"
N_ITEMS = "n_items"
RATING_MEAN = "rating_mean"
FIRST_TS = "first_ts"
LAST_TS = "last_ts"
AS_OF = "as_of"
ENCODER_VERSION = "encoder_version"
EMBEDDING = "embedding"  # array<float>, unit norm
ENCODED_AT = "encoded_at"
INTEREST_TYPE = "interest_type"  # genre | entity | item
INTEREST_ID = "interest_id"
INTEREST_NAME = "interest_name"
RANK = "rank"
EXPLANATION = "explanation"
EDGE_STATUS = "status"  # active | dropped (fell out at the last refresh of its user)
PREVIOUS_WEIGHT = "previous_weight"
MODEL_VERSION = "model_version"
POLICY_VERSION = "policy_version"
UPDATE_ACTION = "update_action"  # the update policy's action for the user at the edge's refresh
UPDATE_REASON = "update_reason"  # the state features that mattered most for that action
REFRESHED_AT = "refreshed_at"
COMMUNITY_ID = "community_id"
NAME = "name"
TOP_GENRES = "top_genres"
MEMBERS = "members"
SIZE = "size"

# --- ops ----------------------------------------------------------------------------------
PIPELINE = "pipeline"
STATUS = "status"
FILES = "files"
LOGICAL_TIME = "logical_time"
N_RAW = "n_raw"
N_CLEAN = "n_clean"
N_QUARANTINED = "n_quarantined"
N_DUPLICATES = "n_duplicates"
N_LATE = "n_late"
LAST_BATCH_SEQ = "last_batch_seq"
MAX_EVENT_TS = "max_event_ts"

# --- statuses -----------------------------------------------------------------------------
BATCH_STARTED = "started"  # ops.batches.status: registered, not yet accounted for
BATCH_COMMITTED = "committed"  # every line accounted for; the batch is final
BATCH_ACCOUNTING_FAILED = "accounting_failed"  # raw != clean + quarantined + duplicates
BATCH_ABANDONED = "abandoned"  # its landing bytes changed before bronze held them; they are re-planned
EDGE_ACTIVE = "active"  # gold.interest_edges.status: part of the user's graph
EDGE_DROPPED = "dropped"  # fell out at the user's last refresh (weight 0), deleted at the next

# --- pipelines (ops.watermarks.pipeline) ---------------------------------------------------
PIPELINE_INGEST = "ingest"
PIPELINE_AGGREGATE = "aggregate"
PIPELINE_REFRESH = "refresh"

# --- interest types (gold.interest_edges.interest_type) -------------------------------------
INTEREST_GENRE = "genre"
INTEREST_ENTITY = "entity"
INTEREST_COMMUNITY = "community"
INTEREST_ITEM = "item"
INTEREST_TYPES = (INTEREST_GENRE, INTEREST_ENTITY, INTEREST_COMMUNITY, INTEREST_ITEM)

# --- registered models and baselines --------------------------------------------------------
GCN_MODEL = "uig-gcn"  # MLflow registered model of the UIG GCN
POLICY_MODEL = "uig-update-policy"  # MLflow registered model of the learned update policy
#: The update rule refresh applies when no policy is registered: every dirty user rebuilt from
#: their whole history with the GCN's own fold-in (the policy's ``rebuild`` action).
DEFAULT_POLICY_VERSION = "fixed-shares-v1"
#: Baselines of the rolling protocol, by the names `uig evaluate --rolling --models` takes.
ROLLING_BASELINES = ("decayed-popularity", "recency-item-knn", "bpr-mf", "lightgcn", "sasrec")
#: Steps of the rolling protocol (`uig evaluate --rolling --step`), in seconds.
ROLLING_STEPS = {"1h": 3600.0, "6h": 6 * 3600.0, "1d": 86400.0, "7d": 7 * 86400.0}
CHAMPION_ALIAS = "champion"
BASELINE_MODELS = ("most-popular", "item-knn", "bpr-mf", "lightgcn")
EVALUATED_MODELS = (GCN_MODEL, *BASELINE_MODELS)
