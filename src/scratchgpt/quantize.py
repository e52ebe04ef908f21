"""Weights in 8 bits for faster generation on a CPU: `quantize(model, "int8")`.

At batch 1 each new token reads every weight once and does little arithmetic with it, so
decoding is bound by memory traffic: 8-bit weights move a quarter of fp32's bytes. The LM head
is the largest share of that traffic (32,768 x 192 weights, 25 MB in fp32, against 7 MB for all
4 blocks of the default model), so it is quantized too; a head tied to the token embedding
(`model.tie_embeddings`) is not a Linear and stays in full precision, for the lookups read it too.

Each nn.Linear's weight is replaced by an `Int8Weight`: one int8 per weight and one scale per
output row (symmetric, per channel: w ~ scale * round(w / scale)), the scheme of torchao's
`Int8WeightOnlyConfig`. Its products run in ATen's `_weight_int8pack_mm`, which reads the int8
weights as they are, in bf16 arithmetic. That kernel is what torch.compile turns torchao's int8
weight-only linear into on a CPU (Inductor's pattern for it); torchao in eager mode instead casts
the whole int8 matrix back to fp32 at every product, which moves more bytes than fp32 weights
would: 0.66x to 0.82x the tokens/s of fp32 (its dynamic int8 activation variant about 0.5x),
against 2.2x to 2.9x here (bench/quantize_throughput.py on a 2-core Zen 5; docs/performance.md). Calling the kernel
directly gives the compiled speed without compiling, which took 26 s on 2 cores and then
generated slower than this.
Products of many rows at once take another path where the CPU has bf16 units (see MANY_ROWS).

Models are saved in full precision and quantized when loaded: no second file format.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scratchgpt.devices import supports_bf16
from scratchgpt.model import GPT
from scratchgpt.params import Quantize, bad_value

# `_weight_int8pack_mm` reads the inputs 16 at a time and, in torch 2.13, crashes the process on
# other widths instead of raising: such a layer (only in toy models) stays in full precision.
INPUT_MULTIPLE = 16
# A product of many rows at once (a prompt, or the window run again past the context) is bound by
# arithmetic, not by reading the weights. There, on a CPU with bf16 units, expanding the int8
# weights to bf16 for oneDNN's product beats the int8 kernel (the LM head with 64 rows: 5.0 ms
# against 9.7; with 256: 13 against 39, fp32 62; 2-core AMD EPYC Zen 5). Without bf16 units the
# expansion is slower than fp32, so the kernel stays (256 rows capped at AVX2: 75 ms, fp32 61).
MANY_ROWS = 64


class Int8Weight:
    """An nn.Linear's weight as int8 values and a scale per output row, usable where the weight
    is: `F.linear(x, weight)` (and so the Linear itself, and the LM head's product in
    `GPT.forward`) runs in 8 bits. Any other use of it is an error, not a silent dequantization."""

    def __init__(self, weight: torch.Tensor, bf16_units: bool):
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.values = (weight / scale[:, None]).round().to(torch.int8).contiguous()  # (out, in)
        self.scale = scale.to(torch.bfloat16)  # the kernel takes the scale in the activations' dtype
        self.shape = weight.shape
        self.bf16_units = bf16_units  # whether many rows are faster through bf16 (see MANY_ROWS)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> torch.Tensor:
        if func is not F.linear:
            raise TypeError(f"an int8-quantized weight supports only linear, not {getattr(func, '__name__', func)}")
        return _int8_linear(*args, **(kwargs or {}))


def _int8_linear(input: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(input, weight, bias) for an int8 weight; the result in `input`'s dtype."""
    rows = input.reshape(-1, input.size(-1)).to(torch.bfloat16).contiguous()
    if weight.bf16_units and rows.size(0) >= MANY_ROWS:
        output = F.linear(rows, weight.values.to(torch.bfloat16)) * weight.scale
    else:
        output = torch.ops.aten._weight_int8pack_mm(rows, weight.values, weight.scale)
    output = output.to(input.dtype).view(*input.shape[:-1], weight.shape[0])
    return output if bias is None else output + bias


def quantize(model: GPT, mode: Quantize, key: str) -> GPT:
    """`model` with its nn.Linear weights (the LM head's included) in int8 for `mode` "int8",
    in place; unchanged for "none". `key` is the params key or flag that chose `mode`, named in
    the error for a model that is not on the CPU (the kernel is the CPU's)."""
    if mode == "none":
        return model
    if model.output_weight.device.type != "cpu":
        raise bad_value(key, mode, f"runs on the CPU only; the model is on {model.output_weight.device.type} "
                        "(choose the cpu device)")
    bf16_units = supports_bf16(torch.device("cpu"))
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.in_features % INPUT_MULTIPLE == 0:
            weight = Int8Weight(module.weight, bf16_units)
            del module.weight  # a registered parameter can only be replaced by another parameter
            module.weight = weight
    return model
