"""The tokenizer trained on the corpus: the same bytes every run, text back exactly, no pickle."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import ROOT, SHARED_DATA, requires_shared_data
from scratchgpt.encodings import END_OF_TEXT, load_encoding, save_encoding, train_bpe
from scratchgpt.text import clean_documents


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    """Cleaned real text: 2,000 IMDb reviews and the Coldplay songs (read here, never committed)."""
    requires_shared_data()
    reviews = pd.read_parquet(SHARED_DATA / "imdb" / "train.parquet")["text"].iloc[::12].tolist()
    songs = (SHARED_DATA / "lyrics" / "coldplay.txt").read_text(encoding="utf-8").split("\n\n\n")
    return {"imdb": clean_documents(reviews), "lyrics": clean_documents(songs)}


@pytest.fixture(scope="module")
def trained(corpus):
    return train_bpe(corpus["imdb"] + corpus["lyrics"], 2000)


def test_training_gives_the_same_tokenizer_every_run(corpus, trained, tmp_path):
    again = train_bpe(corpus["imdb"] + corpus["lyrics"], 2000)
    save_encoding(trained, tmp_path / "first")
    save_encoding(again, tmp_path / "second")
    for name in ("tokenizer.tiktoken", "tokenizer.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
    assert trained.n_vocab == 2000 and trained.eot_token == 1999 and trained.special_tokens_set == {END_OF_TEXT}


@pytest.mark.parametrize("corpus_name", ["imdb", "lyrics"])
def test_text_comes_back_exactly_with_its_line_breaks(corpus, trained, corpus_name):
    texts = corpus[corpus_name]
    assert any("\n" in text for text in texts)
    for text in texts:
        assert trained.decode(trained.encode_ordinary(text)) == text


def test_a_saved_tokenizer_loads_as_the_same_encoding(corpus, trained, tmp_path):
    save_encoding(trained, tmp_path)
    loaded = load_encoding(trained.name, tmp_path)
    text = corpus["lyrics"][0]
    assert loaded.encode(text) == trained.encode(text) and loaded.n_vocab == trained.n_vocab
    ranks = (tmp_path / "tokenizer.tiktoken").read_text(encoding="ascii").splitlines()
    assert len(ranks) == trained.n_vocab - 1 and all(re.fullmatch(r"[A-Za-z0-9+/=]+ \d+", line) for line in ranks)


def test_nothing_is_ever_read_through_pickle():
    """Weights are safetensors, tokenizers text, shards .npy without pickled objects."""
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src").rglob("*.py"))
    code += "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "stages").rglob("*.py"))
    for unsafe in ("import pickle", "torch.load(", "allow_pickle=True", "pd.read_pickle"):
        assert unsafe not in code, unsafe
