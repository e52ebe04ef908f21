"""Scores: bits per byte as defined, and numbers (not crashes) for a diverged model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tiktoken

from scratchgpt.encodings import get_encoding
from scratchgpt.evaluation import Score, bits_per_byte, token_byte_lengths


@pytest.mark.parametrize("loss, perplexity", [(2.0, math.exp(2.0)), (709.0, math.exp(709.0)), (2604.0, math.inf), (1e300, math.inf)])
def test_perplexity_of_an_enormous_loss_is_inf(loss, perplexity):
    score = Score(nats=loss * 10, tokens=10, bytes=40)
    assert score.perplexity == pytest.approx(perplexity)
    assert score.to_dict()["perplexity"] == pytest.approx(perplexity)


def single_byte_encoding() -> tiktoken.Encoding:
    """A tokenizer whose tokens are the 256 single bytes, and end-of-text."""
    return tiktoken.Encoding("bytes", pat_str=r".+", mergeable_ranks={bytes([i]): i for i in range(256)},
                             special_tokens={"<|endoftext|>": 256})


def test_a_tokenizer_of_single_bytes_scores_its_loss_over_ln2():
    """The definition of bits per byte: with one byte a token, bits per byte is loss / ln 2."""
    lengths = token_byte_lengths(single_byte_encoding())
    assert (lengths == 1).all()
    targets = np.array([72, 105, 256, 33])  # "Hi", a document break, "!"
    score = Score(nats=9.7, tokens=len(targets), bytes=int(lengths[targets].sum()))
    assert score.bits_per_byte == pytest.approx(score.loss / math.log(2))


def test_bits_per_byte_divides_by_the_bytes_the_tokens_stand_for():
    """With GPT-2's tokens, the bytes are those of the text the targets decode to; end-of-text is one."""
    from conftest import requires_shared_data

    requires_shared_data()  # GPT-2's files, offline
    encoding = get_encoding("gpt2")
    text = "The movie starts slow, but then it gets interesting.\nThe acting is okay."
    ids = np.array(encoding.encode_ordinary(text) + [encoding.eot_token])
    assert token_byte_lengths(encoding)[ids].sum() == len(text.encode()) + 1
    assert bits_per_byte(len(ids) * 2.0, len(text.encode()) + 1) == pytest.approx(
        len(ids) * 2.0 / math.log(2) / (len(text.encode()) + 1))
