"""Scores of a diverged model are numbers, not crashes."""

from __future__ import annotations

import math

import pytest

from scratchgpt.evaluation import Score


@pytest.mark.parametrize("loss, perplexity", [(2.0, math.exp(2.0)), (709.0, math.exp(709.0)), (2604.0, math.inf), (1e300, math.inf)])
def test_perplexity_of_an_enormous_loss_is_inf(loss, perplexity):
    score = Score(nats=loss * 10, tokens=10, bytes=40)
    assert score.perplexity == pytest.approx(perplexity)
    assert score.to_dict()["perplexity"] == pytest.approx(perplexity)
