"""The article's GPT: its constructor, causal masking, its starting loss, and learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchgpt.model import GPT, GPTConfig, _ChunkedCrossEntropy

TINY = dict(num_heads=2, vocab_size=97, embed_dim=32, attention_dim=32, num_blocks=2, context_length=16, dropout_rate=0.0)


def test_article_constructor_returns_logits():
    model = GPT(num_heads=8, vocab_size=5000, embed_dim=256, attention_dim=256, num_blocks=8,
                context_length=256, dropout_rate=0.1)
    logits = model(torch.randint(0, 5000, (2, 10)))
    assert logits.shape == (2, 10, 5000)


def test_changing_a_future_token_never_changes_earlier_logits():
    torch.manual_seed(0)
    model = GPT(**TINY).eval()
    tokens = torch.randint(0, 97, (1, 16))
    changed = tokens.clone()
    changed[0, 9] = (tokens[0, 9] + 1) % 97
    before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_loss_at_initialisation_is_near_uniform():
    torch.manual_seed(0)
    model = GPT(**{**TINY, "vocab_size": 5000}).eval()
    tokens = torch.randint(0, 5000, (4, 16))
    loss = F.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
    assert abs(loss.item() - math.log(5000)) < 0.1


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(**TINY)
    tokens = torch.randint(0, 97, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.1


def test_kv_cache_gives_the_same_logits_as_the_full_pass():
    torch.manual_seed(0)
    model = GPT(**TINY).eval()
    tokens = torch.randint(0, 97, (2, 16))
    full = model(tokens)
    caches = model.new_caches()
    prefix = model(tokens[:, :5], caches)
    steps = [model(tokens[:, i : i + 1], caches) for i in range(5, 16)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full)


@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_equals_the_cross_entropy_of_the_full_logits(monkeypatch, tied):
    monkeypatch.setattr("scratchgpt.model.LOSS_SLICE", 128)  # 400 positions: several slices, one partial
    torch.manual_seed(0)
    model = GPT(**{**TINY, "context_length": 200}, tie_embeddings=tied)
    tokens = torch.randint(0, 97, (2, 201))
    full = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    full.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    sliced = model(tokens[:, :-1], targets=tokens[:, 1:])
    sliced.backward()
    torch.testing.assert_close(sliced, full)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], msg=name)


def test_tied_embeddings_share_one_matrix():
    model = GPT(**TINY, tie_embeddings=True)
    assert model.lm_head is None and model.output_weight is model.token_embedding.weight
    untied = GPT(**TINY)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(model) == model.config.padded_vocab_size * model.config.embed_dim
    tokens = torch.randint(0, 97, (2, 16))
    model(tokens, targets=tokens).backward()  # the loss's gradient and the embedding's meet in one tensor
    assert model.token_embedding.weight.grad is not None


def test_the_config_owns_the_padded_vocabulary_and_the_model_never_predicts_padding():
    config = GPTConfig(**{**TINY, "vocab_size": 97})
    assert config.padded_vocab_size == 128
    model = GPT(config).eval()
    assert model.token_embedding.weight.shape[0] == 128
    logits = model(torch.randint(0, 97, (1, 5)))
    assert logits.shape[-1] == 97  # padding ids are not offered to sampling at all


def test_a_damaged_config_is_refused_before_any_allocation():
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(**{**TINY, "vocab_size": 10**12})
    with pytest.raises(ValueError, match="num_heads = 3: must divide attention_dim = 32"):
        GPTConfig(**{**TINY, "num_heads": 3})
    with pytest.raises(ValueError, match="tie_embeddings"):
        GPTConfig(**TINY, tie_embeddings="yes")


def test_the_chunked_loss_computes_no_gradients_under_no_grad(monkeypatch):
    """Evaluation runs under torch.no_grad(): it must not pay for the gradients of the loss."""
    flags = []
    forward = _ChunkedCrossEntropy.forward
    monkeypatch.setattr(_ChunkedCrossEntropy, "forward", staticmethod(
        lambda ctx, *args: flags.append(args[-1]) or forward(ctx, *args)))
    model = GPT(**TINY)
    tokens = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        model(tokens, targets=tokens)
    model(tokens, targets=tokens)
    assert flags == [False, True]
