"""int8 weights: every linear layer and the LM head in 8 bits, logits close to fp32's, refused
where the kernel cannot run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import MODERN_BLOCK
from scratchgpt.errors import ScratchGPTError
from scratchgpt.generate import generate
from scratchgpt.model import GPT
from scratchgpt.quantize import MANY_ROWS, Int8Weight, quantize

SMALL = dict(num_heads=2, vocab_size=500, embed_dim=32, attention_dim=32, num_blocks=2, context_length=32,
             dropout_rate=0.0)


def small_model(**changes: object) -> GPT:
    torch.manual_seed(0)
    return GPT(**{**SMALL, **changes}).eval()


def test_every_linear_weight_and_the_lm_head_become_int8():
    model = quantize(small_model(), "int8", "--quantize")
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 2 * 4 + 1  # qkv, out, up, down per block, and the LM head
    assert all(isinstance(linear.weight, Int8Weight) for linear in linears)
    assert isinstance(model.output_weight, Int8Weight) and model.output_weight.values.dtype == torch.int8


def test_quantized_logits_are_close_to_fp32s_and_greedy_text_mostly_agrees():
    full, tokens = small_model(), torch.randint(0, SMALL["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = full(tokens)
        quantized = quantize(small_model(), "int8", "--quantize")(tokens)
    assert quantized.dtype == reference.dtype and quantized.shape == reference.shape
    error = (quantized - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.03  # 8-bit weights and bf16 products: close, not equal
    agree = (quantized.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree > 0.9


@pytest.mark.parametrize("rows", [1, MANY_ROWS - 1, MANY_ROWS, 4 * MANY_ROWS])
def test_one_row_or_many_both_paths_compute_the_same_product(rows):
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 32, generator=generator), torch.randn(96, generator=generator)
    x = torch.randn(1, rows, 32, generator=generator)
    exact = torch.nn.functional.linear(x, weight, bias)
    for bf16_units in (False, True):  # the int8 kernel, or the weights expanded to bf16 for many rows
        quantized = torch.nn.functional.linear(x, Int8Weight(weight, bf16_units), bias)
        assert quantized.dtype == torch.float32 and quantized.shape == exact.shape
        assert (quantized - exact).abs().max() < 0.02 * exact.abs().max()


def test_the_modern_block_without_biases_quantizes_the_same_linears_and_generates_past_its_context():
    fresh = quantize(small_model(**MODERN_BLOCK), "int8", "--quantize")  # its zero projections too
    linears = [module for module in fresh.modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 2 * 4 + 1 and all(isinstance(linear.weight, Int8Weight) for linear in linears)
    assert all(linear.bias is None for linear in linears)
    tokens = torch.randint(0, SMALL["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert fresh(tokens).isfinite().all()
    full = small_model(**MODERN_BLOCK)
    with torch.no_grad():  # weights as after some training: every block at work
        for parameter in full.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    quantized = quantize(copy.deepcopy(full), "int8", "--quantize")
    with torch.no_grad():
        reference, logits = full(tokens), quantized(tokens)
    assert 0 < (logits - reference).abs().max() < 0.03 * reference.abs().max()
    assert generate(quantized, torch.tensor([[1, 2]]), 40, 32).shape == (1, 42)  # the window slides past 32


def test_none_leaves_the_model_as_it_is():
    model = small_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert quantize(model, "none", "--quantize") is model
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_width_the_kernel_cannot_read_stays_in_full_precision():
    # The kernel reads 16 inputs at a time (and crashes on other widths): 24 wide stays fp32.
    model = quantize(small_model(embed_dim=24, attention_dim=24), "int8", "--quantize")
    assert isinstance(model.blocks[0].attention.qkv.weight, nn.Parameter)
    assert isinstance(model.blocks[0].feed_forward.down.weight, Int8Weight)  # 4 x 24 = 96 inputs
    assert generate(model, torch.tensor([[1, 2]]), 5, 32).shape == (1, 7)


def test_a_head_tied_to_the_embedding_stays_in_full_precision():
    model = quantize(small_model(tie_embeddings=True), "int8", "--quantize")
    assert isinstance(model.output_weight, nn.Parameter) and isinstance(model.blocks[0].feed_forward.up.weight, Int8Weight)
    assert generate(model, torch.tensor([[1, 2]]), 5, 32).shape == (1, 7)


def test_an_int8_weight_refuses_anything_but_linear():
    weight = Int8Weight(torch.randn(8, 16), bf16_units=False)
    with pytest.raises(TypeError, match="supports only linear, not matmul"):
        torch.matmul(torch.randn(2, 16), weight)


def test_a_model_off_the_cpu_is_refused_naming_the_key():
    model = small_model().to("meta")
    with pytest.raises(ScratchGPTError, match=r"^params.yaml: sample.quantize = 'int8': runs on the CPU only; the "
                                              r"model is on meta \(choose the cpu device\)$"):
        quantize(model, "int8", "sample.quantize")
