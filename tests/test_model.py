"""The article's GPT: its constructor, causal masking, its starting loss, and learning; and each
part of the modern block beside it, alone and all together."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from conftest import MODERN_BLOCK, ROOT
from scratchgpt.model import (
    GPT, GPTConfig, _ChunkedCrossEntropy, chunked_cross_entropy, rotary_angles, rotate, soft_cap,
)

TINY = dict(num_heads=2, vocab_size=97, embed_dim=32, attention_dim=32, num_blocks=2, context_length=16, dropout_rate=0.0)
# Each part of the modern block alone, then all of them: {} is the article's block.
BLOCKS = [{}, *({key: value} for key, value in MODERN_BLOCK.items()), MODERN_BLOCK]
BLOCK_IDS = ["article", *MODERN_BLOCK, "modern"]


def random_weights(model: GPT, std: float = 0.5) -> GPT:
    """`model` with every weight drawn anew: with zero-initialised projections every block adds
    nothing, and a test of what the blocks compute would pass whatever they computed."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


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


@pytest.mark.parametrize("block", [{}, MODERN_BLOCK], ids=["article", "modern"])
def test_tiny_model_overfits_one_batch(block):
    torch.manual_seed(0)
    model = GPT(**TINY, **block)
    tokens = torch.randint(0, 97, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.1


@pytest.mark.parametrize("block", BLOCKS, ids=BLOCK_IDS)
def test_kv_cache_gives_the_same_logits_as_the_full_pass(block):
    torch.manual_seed(0)
    model = random_weights(GPT(**TINY, **block)).eval()
    tokens = torch.randint(0, 97, (2, 16))
    full = model(tokens)
    caches = model.new_caches()
    prefix = model(tokens[:, :5], caches)
    steps = [model(tokens[:, i : i + 1], caches) for i in range(5, 16)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, rtol=1e-4, atol=1e-4)  # logits of +-10


@pytest.mark.parametrize("block", [{}, MODERN_BLOCK], ids=["article", "modern"])
@pytest.mark.parametrize("tied", [False, True])
def test_chunked_loss_equals_the_cross_entropy_of_the_full_logits(monkeypatch, tied, block):
    monkeypatch.setattr("scratchgpt.model.LOSS_SLICE", 128)  # 400 positions: several slices, one partial
    torch.manual_seed(0)
    model = GPT(**{**TINY, "context_length": 200}, tie_embeddings=tied, **block)
    if block:
        random_weights(model)  # logits large enough for the cap to bend them, and every block at work
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"logit_softcap": 0.0}, r"^logit_softcap = 0.0: must be a number > 0, or None for no cap$"),
        ({"logit_softcap": -15.0}, r"^logit_softcap = -15.0: must be"),
        ({"logit_softcap": True}, r"^logit_softcap = True: must be"),
        ({"logit_softcap": math.inf}, r"^logit_softcap = inf: must be"),
        ({"norm": "batchnorm"}, r"^norm = 'batchnorm': must be one of layernorm, rmsnorm$"),
        ({"position_encoding": "alibi"}, r"^position_encoding = 'alibi': must be one of learned, rope$"),
        ({"activation": "relu"}, r"^activation = 'relu': must be one of gelu, gelu_tanh, relu2$"),
        ({"qk_norm": 1}, r"^qk_norm = 1: must be true or false$"),
        ({"bias": "no"}, r"^bias = 'no': must be true or false$"),
        ({"zero_init_projections": None}, r"^zero_init_projections = None: must be true or false$"),
        ({"position_encoding": "rope", "num_heads": 1, "attention_dim": 33, "embed_dim": 33},
         r"^position_encoding = 'rope': needs an even head size, not attention_dim / num_heads = 33"),
    ],
)
def test_a_bad_block_option_is_one_line_naming_it(change, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY, **change})


def article_initial_weights(config: GPTConfig) -> dict[str, torch.Tensor]:
    """The initial weights of the article's block, drawn as the model drew them before it had any
    other. PyTorch draws each module's own initial weights as it is built, in the order the model
    builds them; the model then draws every Linear and Embedding weight again, N(0, 0.02), with
    biases 0 and LayerNorm gains 1, and last each block's two residual projections, N(0, 0.02 /
    sqrt(2 x blocks)). Written out here, apart from model.py, to pin that order."""
    width, attention = config.embed_dim, config.attention_dim
    modules = {"token_embedding": nn.Embedding(config.padded_vocab_size, width),
               "position_embedding": nn.Embedding(config.context_length, width)}
    for block in range(config.num_blocks):
        modules[f"blocks.{block}.attention_norm"] = nn.LayerNorm(width)
        modules[f"blocks.{block}.attention.qkv"] = nn.Linear(width, 3 * attention, bias=False)  # qkv_bias is off
        modules[f"blocks.{block}.attention.out"] = nn.Linear(attention, width)
        modules[f"blocks.{block}.feed_forward_norm"] = nn.LayerNorm(width)
        modules[f"blocks.{block}.feed_forward.up"] = nn.Linear(width, 4 * width)
        modules[f"blocks.{block}.feed_forward.down"] = nn.Linear(4 * width, width)
    modules["final_norm"] = nn.LayerNorm(width)
    modules["lm_head"] = nn.Linear(width, config.padded_vocab_size, bias=False)
    for module in modules.values():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for block in range(config.num_blocks):
        for name in ("attention.out", "feed_forward.down"):
            nn.init.normal_(modules[f"blocks.{block}.{name}"].weight, 0.0, 0.02 / math.sqrt(2 * config.num_blocks))
    return {f"{name}.{key}": tensor for name, module in modules.items() for key, tensor in module.state_dict().items()}


def test_the_articles_block_starts_from_the_same_weights_as_before_the_modern_block():
    """The modern block's options must not change what the article's block draws: the same weights
    from the same seed, and the same random numbers left for what follows (dropout, sampling)."""
    from conftest import ARTICLE_BLOCK

    assert ARTICLE_BLOCK == {f.name: f.default for f in dataclasses.fields(GPTConfig) if f.name in ARTICLE_BLOCK}
    model = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    config = GPTConfig(vocab_size=1000, **model | ARTICLE_BLOCK)
    torch.manual_seed(1337)
    expected, expected_next = article_initial_weights(config), torch.rand(4)
    torch.manual_seed(1337)
    weights, drawn_next = GPT(config).state_dict(), torch.rand(4)
    assert list(weights) == list(expected)  # the same tensors, in the same order
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    assert torch.equal(drawn_next, expected_next)


def test_rope_has_no_position_table_and_sees_only_how_far_apart_tokens_are():
    torch.manual_seed(0)
    model = random_weights(GPT(**TINY, position_encoding="rope")).eval()
    assert model.position_embedding is None
    assert not any("position" in name or "rotary" in name for name in model.state_dict())  # nothing new is saved
    tokens = torch.randint(0, 97, (2, 8))
    at_the_start = model(tokens)
    head_dim = TINY["attention_dim"] // TINY["num_heads"]
    model.rotary = rotary_angles(100 + TINY["context_length"], head_dim)[:, 100:]  # the same text, 100 positions on
    torch.testing.assert_close(model(tokens), at_the_start, rtol=1e-4, atol=1e-4)
    swapped = tokens[:, [1, 0, *range(2, 8)]]  # but the order of the tokens still counts
    assert not torch.allclose(model(swapped)[:, -1], at_the_start[:, -1], atol=1e-3)


def test_rotation_keeps_lengths_and_makes_scores_depend_on_the_distance_alone():
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 1, 1, 16, generator=generator)  # (batch, heads, length, head_dim) each
    angles = rotary_angles(64, 16)

    def score(query_position: int, key_position: int) -> torch.Tensor:
        turned_query = rotate(query, angles[:, query_position : query_position + 1])
        turned_key = rotate(key, angles[:, key_position : key_position + 1])
        torch.testing.assert_close(turned_query.norm(), query.norm())
        return (turned_query * turned_key).sum()

    torch.testing.assert_close(score(5, 2), score(45, 42))
    torch.testing.assert_close(score(0, 0), (query * key).sum())  # position 0 turns nothing
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rmsnorm_has_nothing_to_learn():
    model, article = GPT(**TINY, norm="rmsnorm"), GPT(**TINY)
    norms = [model.final_norm, *(norm for b in model.blocks for norm in (b.attention_norm, b.feed_forward_norm))]
    assert all(isinstance(norm, nn.RMSNorm) and not list(norm.parameters()) for norm in norms)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(article) - count(model) == len(norms) * 2 * TINY["embed_dim"]  # LayerNorm's gains and biases
    x = torch.randn(3, 5, TINY["embed_dim"]) * 7 + 2
    torch.testing.assert_close(model.final_norm(x).square().mean(-1), torch.ones(3, 5), rtol=1e-4, atol=1e-4)


def test_qk_norm_makes_attention_blind_to_the_size_of_queries_and_keys():
    for qk_norm in (False, True):
        torch.manual_seed(0)
        model = GPT(**TINY, qk_norm=qk_norm).eval()
        tokens = torch.randint(0, 97, (2, 16))
        before = model(tokens)
        with torch.no_grad():
            for block in model.blocks:  # the rows of qkv that make queries and keys, 10 times larger
                block.attention.qkv.weight[: 2 * TINY["attention_dim"]] *= 10
        if qk_norm:
            torch.testing.assert_close(model(tokens), before)
        else:
            assert not torch.allclose(model(tokens), before, atol=1e-4)


def test_relu2_is_relu_squared():
    feed_forward = GPT(**TINY, activation="relu2").blocks[0].feed_forward
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(feed_forward.activation(x), F.relu(x) ** 2)


def test_without_biases_no_linear_has_one_and_with_rmsnorm_no_tensor_is_a_vector():
    model = GPT(**TINY, bias=False)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))
    assert {name for name, p in model.named_parameters() if p.dim() == 1} == {
        name for name, _ in model.named_parameters() if "norm" in name}  # LayerNorm's gains and biases remain
    assert all(p.dim() == 2 for p in GPT(**TINY, bias=False, norm="rmsnorm").parameters())


def test_zero_initialised_projections_make_every_block_start_as_the_identity():
    torch.manual_seed(0)
    model = GPT(**TINY, zero_init_projections=True)
    for block in model.blocks:
        assert not block.attention.out.weight.any() and not block.feed_forward.down.weight.any()
        assert block.attention.qkv.weight.any() and block.feed_forward.up.weight.any()
        x = torch.randn(2, 5, TINY["embed_dim"])
        torch.testing.assert_close(block(x), x)
    model(torch.randint(0, 97, (2, 16)), targets=torch.randint(0, 97, (2, 16))).backward()
    assert all(block.attention.out.weight.grad.any() for block in model.blocks)  # and they learn from there


def test_the_soft_cap_bounds_the_logits_and_bends_them_smoothly():
    torch.manual_seed(0)
    plain = random_weights(GPT(**TINY)).eval()
    capped = GPT(**TINY, logit_softcap=2.0).eval()
    capped.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, 97, (2, 16))
    logits, capped_logits = plain(tokens), capped(tokens)
    assert logits.abs().max() > 2.0 and capped_logits.abs().max() < 2.0
    torch.testing.assert_close(capped_logits, 2.0 * torch.tanh(logits / 2.0))


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_the_chunked_loss_and_its_gradients_equal_autograds_on_softcapped_logits(monkeypatch, softcap):
    monkeypatch.setattr("scratchgpt.model.LOSS_SLICE", 128)  # several slices, one partial
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(400, 32, generator=generator, requires_grad=True)
    weight = torch.randn(128, 32, generator=generator, requires_grad=True)  # 97 ids padded to 128 rows
    targets = torch.randint(0, 97, (400,), generator=generator)
    raw = (hidden @ weight.T)[:, :97]  # logits of about +-6: a cap of 3 bends them hard
    expected = F.cross_entropy(soft_cap(raw, softcap), targets)
    if softcap is not None:
        assert not torch.allclose(expected, F.cross_entropy(raw, targets))  # the cap changes the loss
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    loss = chunked_cross_entropy(hidden, weight, targets, 97, softcap)
    grads = torch.autograd.grad(loss, (hidden, weight))
    torch.testing.assert_close(loss, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)
    assert not grads[1][97:].any()  # the padding rows: no gradient, and no NaN from -inf through the cap


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
