"""What the model did at each position of a text: the probability it gave the token that came,
the ten candidates it weighed, and what every attention head of every block looked at.

Everything here is plain data (dicts, lists, rounded floats), ready to be sent
as JSON. A token's dict:

    {"id": 464, "text": " movie", "probability": 0.0123, "rank": 7,
     "candidates": [{"id": 318, "text": " is", "probability": 0.081}, ...],   # the ten likeliest
     "attention": [[[1.0], ...], ...]}   # [block][head] -> weights over positions 0..this one

`probability` and `rank` (1 = the model's favourite) are those of the model's own distribution
(temperature 1, before top-k or top-p): what the model believed, not what the sampler allowed.
The first token has no prediction, so its probability and rank are None and its candidates empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tiktoken
import torch

from scratchgpt.generate import Sampling, next_token
from scratchgpt.model import GPT, SelfAttention

TOP_CANDIDATES = 10
# Sent rounded, which halves the JSON: attention weights to 4 decimals (finer than any shade the
# page draws), probabilities to 4 significant digits (an untrained model's are all near 2e-5).
DECIMALS = 4
SIGNIFICANT_DIGITS = 4


def _rounded(values: torch.Tensor) -> list:
    # float64 first, so that 0.1234 is printed as 0.1234 and not as float32's 0.12340000271797180
    return values.double().round(decimals=DECIMALS).tolist()


def _probability(value: torch.Tensor) -> float:
    return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")


def token_text(encoding: tiktoken.Encoding, token_id: int) -> str:
    """One token's text; a token that ends inside a multi-byte character shows U+FFFD for it."""
    return encoding.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")


@contextlib.contextmanager
def keeping_attention(model: GPT) -> Iterator[list[SelfAttention]]:
    """Inside, every block's `SelfAttention` keeps the weights of its latest forward pass."""
    attentions = [block.attention.attention for block in model.blocks]
    for attention in attentions:
        attention.keep_weights = True
    try:
        yield attentions
    finally:
        for attention in attentions:
            attention.keep_weights, attention.weights = False, None


def describe(
    encoding: tiktoken.Encoding, token_id: int, probabilities: torch.Tensor | None, attention: list | None = None
) -> dict:
    """A token's dict (see the module's docstring), given the distribution that predicted it."""
    token = {"id": token_id, "text": token_text(encoding, token_id), "probability": None, "rank": None, "candidates": []}
    if probabilities is not None:
        top = torch.topk(probabilities, TOP_CANDIDATES)
        token["probability"] = _probability(probabilities[token_id])
        token["rank"] = int((probabilities > probabilities[token_id]).sum()) + 1
        token["candidates"] = [
            {"id": int(i), "text": token_text(encoding, int(i)), "probability": _probability(p)}
            for i, p in zip(top.indices, top.values)
        ]
    if attention is not None:
        token["attention"] = attention
    return token


def _attention_rows(attentions: list[SelfAttention]) -> list[list[list[list[float]]]]:
    """[position][block][head] -> the weights that position gave positions 0..itself, from the
    blocks' latest forward pass (batch 1); weights above the diagonal are 0 and are left out."""
    weights = torch.stack([attention.weights[0] for attention in attentions])  # (blocks, heads, new, seen)
    new, seen = weights.shape[-2:]
    first = seen - new  # the position of the first new row
    return [_rounded(weights[:, :, row, : first + row + 1]) for row in range(new)]


def _distributions(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)


def _describe_pass(encoding: tiktoken.Encoding, token_ids: list[int], logits: torch.Tensor, rows: list) -> list[dict]:
    """The tokens of one forward pass over `token_ids`: position i - 1's `logits` predicted token i."""
    predicted_by = [None, *_distributions(logits[:-1])]
    return [describe(encoding, t, p, row) for t, p, row in zip(token_ids, predicted_by, rows)]


@torch.no_grad()
def score(model: GPT, encoding: tiktoken.Encoding, token_ids: list[int]) -> list[dict]:
    """Every token of `token_ids` (at most the model's context) described under `model`,
    without attention: how likely another model finds the same text."""
    model.eval()
    logits = model(torch.tensor([token_ids], device=model.output_weight.device))[0]
    return _describe_pass(encoding, token_ids, logits, [None] * len(token_ids))


@torch.no_grad()
def trace_continuation(
    model: GPT,
    encoding: tiktoken.Encoding,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: Sampling,
    generator: torch.Generator,
) -> Iterator[list[dict]]:
    """Continue `prompt_ids` as `scratchgpt generate` does (same `next_token`, same KV cache),
    yielding first the prompt's tokens, then each new token as a one-item list, all described
    with their attention. Prompt and continuation must fit in the model's context: the heat map
    covers one window, so the window never slides."""
    model.eval()
    if len(prompt_ids) + max_new_tokens > model.config.context_length:
        raise ValueError(f"{len(prompt_ids)} + {max_new_tokens} tokens exceed the context {model.config.context_length}")
    caches = model.new_caches()
    with keeping_attention(model) as attentions:
        logits = model(torch.tensor([prompt_ids], device=model.output_weight.device), caches)
        yield _describe_pass(encoding, prompt_ids, logits[0], _attention_rows(attentions))
        for _ in range(max_new_tokens):
            chosen = next_token(logits[:, -1], sampling, generator)  # (1, 1)
            probabilities = _distributions(logits[0, -1])
            # Feeding the new token in computes what it looks at (and the next distribution).
            logits = model(chosen, caches)
            yield [describe(encoding, int(chosen), probabilities, _attention_rows(attentions)[0])]
