"""The attention weights `scratchgpt explore` shows are the ones the model computes its output
with: same module, same causal mask, same logits; and the trace of a continuation tells the
truth about the tokens, their probabilities and their attention."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import MODERN_BLOCK
from scratchgpt.explore.trace import ATTENTION_SCALE, TOP_CANDIDATES, keeping_attention, score, trace_continuation
from scratchgpt.generate import Sampling, stream
from scratchgpt.model import GPT, GPTConfig, SelfAttention
from scratchgpt.encodings import get_encoding

CONFIG = GPTConfig(vocab_size=50257, num_heads=2, embed_dim=32, attention_dim=32, num_blocks=2, context_length=64, dropout_rate=0.0)


@pytest.fixture(scope="module", params=[{}, MODERN_BLOCK], ids=["article", "modern"])
def model(request) -> GPT:
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(CONFIG, **request.param)).eval()
    if request.param:
        with torch.no_grad():  # its projections start at zero: weights as after some training, every block at work
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.mark.parametrize("new, seen", [(7, 7), (1, 7)])  # the whole sequence (causal), one cached step
def test_kept_weights_are_the_fused_kernels(new, seen):
    torch.manual_seed(1)
    queries, keys = torch.randn(1, 2, new, 8), torch.randn(1, 2, seen, 8)
    # With the identity as values, attention's output *is* its weight matrix: the fused kernel
    # shows the weights it used, to compare with the ones kept.
    identity = torch.eye(seen).expand(1, 2, seen, seen)
    attention = SelfAttention(dropout_rate=0.0)
    fused = attention(queries, keys, identity)
    attention.keep_weights = True
    kept_output = attention(queries, keys, identity)
    assert attention.weights.shape == (1, 2, new, seen)
    torch.testing.assert_close(attention.weights, fused)
    torch.testing.assert_close(kept_output, fused)
    torch.testing.assert_close(attention.weights.sum(-1), torch.ones(1, 2, new))
    if new == seen:
        past = torch.ones(seen, seen, dtype=torch.bool).tril()
        assert (attention.weights[..., ~past] == 0).all() and (attention.weights[..., past] > 0).all()  # causal


def test_the_model_with_kept_weights_computes_the_same_logits_from_them(model):
    token_ids = torch.randint(0, CONFIG.vocab_size, (1, 12))
    seen = []  # (values, output) of each block's attention, in the pass with kept weights
    with torch.no_grad():
        plain, plain_step = model(token_ids), _next_step(model, token_ids)
        with keeping_attention(model) as attentions:
            hooks = [attention.register_forward_hook(lambda module, args, output: seen.append((args[2], output)))
                     for attention in attentions]
            kept = model(token_ids)
            weights = [attention.weights for attention in attentions]
            for hook in hooks:
                hook.remove()
            kept_step = _next_step(model, token_ids)
    torch.testing.assert_close(kept, plain)
    torch.testing.assert_close(kept_step, plain_step)  # and through the KV cache
    assert len(seen) == CONFIG.num_blocks
    for block_weights, (values, output) in zip(weights, seen):
        assert block_weights.shape == (1, CONFIG.num_heads, 12, 12)
        torch.testing.assert_close(output, block_weights @ values)  # the output is made of these weights
        assert (block_weights.triu(1) == 0).all()  # the causal mask
        torch.testing.assert_close(block_weights.sum(-1), torch.ones(1, CONFIG.num_heads, 12))
    assert all(not attention.keep_weights and attention.weights is None for attention in attentions)  # off again


def _next_step(model: GPT, token_ids: torch.Tensor) -> torch.Tensor:
    """The logits of the last token, run as one cached step after the others."""
    caches = model.new_caches()
    model(token_ids[:, :-1], caches)
    return model(token_ids[:, -1:], caches)


@pytest.fixture(scope="module")
def encoding():
    from conftest import requires_shared_data

    requires_shared_data()
    return get_encoding("gpt2")


def test_a_trace_continues_as_generate_does_and_tells_the_truth_about_it(model, encoding):
    prompt = encoding.encode("The movie starts with")
    sampling = Sampling(temperature=0.8, top_k=50, top_p=0.95)
    steps = list(trace_continuation(model, encoding, prompt, 10, sampling, torch.Generator().manual_seed(3)))
    tokens = [token for step in steps for token in step]
    assert [len(step) for step in steps] == [len(prompt)] + [1] * 10
    generated = list(stream(model, torch.tensor([prompt]), 10, CONFIG.context_length, sampling=sampling,
                            generator=torch.Generator().manual_seed(3)))
    ids = [token["id"] for token in tokens]
    assert ids == prompt + [int(t) for t in generated]  # the same tokens as `scratchgpt generate`
    # One pass over the whole text gives the probabilities and attention the trace built step by step.
    with torch.no_grad(), keeping_attention(model) as attentions:
        probabilities = torch.softmax(model(torch.tensor([ids]))[0], dim=-1)
        weights = torch.stack([attention.weights[0] for attention in attentions])  # (blocks, heads, n, n)
    assert tokens[0]["probability"] is None and tokens[0]["candidates"] == []
    for position, token in enumerate(tokens[1:], start=1):
        expected = probabilities[position - 1]
        assert token["probability"] == pytest.approx(float(expected[token["id"]]), rel=1e-3)
        assert token["rank"] == int((expected > expected[token["id"]]).sum()) + 1
        candidates = token["candidates"]
        assert [c["id"] for c in candidates] == expected.topk(TOP_CANDIDATES).indices.tolist()
        assert [c["probability"] for c in candidates] == sorted((c["probability"] for c in candidates), reverse=True)
        assert all(c["text"] == encoding.decode([c["id"]]) for c in candidates)
    for position, token in enumerate(tokens):
        rows = torch.tensor(token["attention"]) / ATTENTION_SCALE  # (blocks, heads, position + 1)
        assert rows.shape == (CONFIG.num_blocks, CONFIG.num_heads, position + 1)
        torch.testing.assert_close(rows, weights[:, :, position, : position + 1], atol=1e-4, rtol=0)


def test_a_continuation_must_fit_in_one_context(model, encoding):
    with pytest.raises(ValueError, match="exceed the context 64"):
        next(trace_continuation(model, encoding, [1] * 60, 5, Sampling(), torch.Generator()))


def test_score_describes_the_same_text_under_another_model(model, encoding):
    ids = encoding.encode("lights go out")
    tokens = score(model, encoding, ids)
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.tensor([ids]))[0], dim=-1)
    assert [t["id"] for t in tokens] == ids and "attention" not in tokens[0]
    assert tokens[2]["probability"] == pytest.approx(float(probabilities[1, ids[2]]), rel=1e-3)
