"""Shards hold exactly the documents, end-of-text between them, and are read back lazily."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scratchgpt.errors import ScratchGPTError
from scratchgpt.encodings import get_encoding
from scratchgpt.tokens import TokenShards, Windows, read_meta, tokenize_split, token_dtype, write_meta

DOCS = ["The movie starts slow.", "Then it gets interesting!\nReally.", "x", "Lights go out " * 40]


@pytest.fixture(scope="module")
def gpt2():
    return get_encoding("gpt2")


@pytest.fixture
def corpus(tmp_path, gpt2):
    folder = tmp_path / "corpus"
    splits = {"train": tokenize_split(gpt2, DOCS, folder, "train", shard_tokens=16)}
    write_meta(folder, gpt2, splits)
    return folder


def test_shards_decode_back_to_the_documents(corpus, gpt2):
    meta = read_meta(corpus)
    assert meta["dtype"] == "uint16" and meta["encoding"] == "gpt2" and meta["vocab_size"] == 50257
    info = meta["splits"]["train"]
    assert info["documents"] == len(DOCS) and len(info["shards"]) > 2  # small shards: several files
    tokens = TokenShards(corpus, "train")
    ids = tokens.read(0, len(tokens)).tolist()
    assert ids.count(gpt2.eot_token) == len(DOCS) and ids[-1] == gpt2.eot_token
    assert gpt2.decode(ids).split("<|endoftext|>")[:-1] == DOCS


def test_reads_cross_shard_boundaries(corpus):
    tokens = TokenShards(corpus, "train")
    everything = tokens.read(0, len(tokens))
    for start, length in [(0, 1), (10, 12), (15, 2), (16, 16), (len(tokens) - 5, 5)]:
        assert tokens.read(start, length).tolist() == everything[start : start + length].tolist()


def test_uint32_only_when_the_vocabulary_needs_it():
    assert token_dtype(50257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(100277) == np.uint32


def test_truncated_shard_is_refused(corpus):
    shard = corpus / read_meta(corpus)["splits"]["train"]["shards"][0]
    shard.write_bytes(shard.read_bytes()[:-6])
    with pytest.raises(ScratchGPTError, match="truncated or damaged shard"):
        TokenShards(corpus, "train")


def test_token_count_must_match_meta(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    meta["splits"]["train"]["tokens"] += 1
    (corpus / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ScratchGPTError, match="meta.json says"):
        TokenShards(corpus, "train")


def test_unknown_encoding_is_refused():
    with pytest.raises(ScratchGPTError, match="tiktoken encoding 'gpt9' is unknown"):
        get_encoding("gpt9")


@pytest.mark.parametrize("seed", [0, 1337, 2**40, 2**63 - 1])
def test_any_allowed_seed_shuffles(tmp_path, seed):
    from scratchgpt.params import MAX_SEED

    assert seed <= MAX_SEED
    encoding = get_encoding("gpt2")
    splits = {"train": tokenize_split(encoding, ["some words here"] * 20, tmp_path, "train", 1000)}
    write_meta(tmp_path, encoding, splits)
    windows = Windows(TokenShards(tmp_path, "train"), 4)
    assert sorted(windows.shuffled(seed, 3).tolist()) == list(range(windows.count))
