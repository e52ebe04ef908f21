"""What the model did at each position of a text: the probability it gave the token that came,
the ten candidates it weighed, and what every attention head of every block looked at.

Everything here is plain data (dicts, lists, rounded floats), ready to be sent
as JSON. A token's dict:

    {"id": 464, "text": " movie", "probability": 0.0123, "rank": 7,
     "candidates": [{"id": 318, "text": " is", "probability": 0.081}, ...],   # the ten likeliest
     "attention": [[[10000], ...], ...]}   # [block][head] -> weights over positions 0..this one,
                                           # in ten-thousandths (ATTENTION_SCALE)

`probability` and `rank` (1 = the model's favourite) are those of the model's own distribution
(temperature 1, before the repetition penalty, top-k, top-p or min-p): what the model believed,
not what the sampler allowed.
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
# Attention weights are sent as whole numbers of ten-thousandths: as fine as 4 decimals (finer than
# any shade the page draws), and for a full context's 2 million weights half the JSON of rounded
# floats, written in a third of the time. Probabilities keep 4 significant digits (an untrained
# model's are all near 2e-5).
ATTENTION_SCALE = 10_000
SIGNIFICANT_DIGITS = 4


def _probability(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


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


def describe(encoding: tiktoken.Encoding, token_ids: list[int], probabilities: torch.Tensor) -> list[dict]:
    """The dicts of `token_ids` (see the module's docstring), without attention; row i of
    `probabilities` (tokens, vocab) is the distribution that predicted token i."""
    ids = torch.tensor(token_ids, dtype=torch.long, device=probabilities.device)[:, None]
    chosen = probabilities.gather(1, ids)  # (tokens, 1)
    ranks = (probabilities > chosen).sum(1) + 1  # all positions at once: a long prompt stays fast
    top = torch.topk(probabilities, TOP_CANDIDATES)
    return [
        {
            "id": token_id,
            "text": token_text(encoding, token_id),
            "probability": _probability(p),
            "rank": rank,
            "candidates": [
                {"id": c, "text": token_text(encoding, c), "probability": _probability(q)}
                for c, q in zip(candidate_ids, candidate_probabilities)
            ],
        }
        for token_id, p, rank, candidate_ids, candidate_probabilities in zip(
            token_ids, chosen[:, 0].tolist(), ranks.tolist(), top.indices.tolist(), top.values.tolist()
        )
    ]


def _unpredicted(encoding: tiktoken.Encoding, token_id: int) -> dict:
    """The first token: nothing came before it to predict it."""
    return {"id": token_id, "text": token_text(encoding, token_id), "probability": None, "rank": None, "candidates": []}


def _with_attention(tokens: list[dict], attentions: list[SelfAttention]) -> list[dict]:
    """`tokens`, the positions of the blocks' latest forward pass, with what each looked at."""
    for token, rows in zip(tokens, _attention_rows(attentions), strict=True):
        token["attention"] = rows
    return tokens


def _attention_rows(attentions: list[SelfAttention]) -> list[list[list[list[float]]]]:
    """[position][block][head] -> the weights that position gave positions 0..itself, from the
    blocks' latest forward pass (batch 1); weights above the diagonal are 0 and are left out."""
    weights = torch.stack([attention.weights[0] for attention in attentions])  # (blocks, heads, new, seen)
    scaled = (weights.float() * ATTENTION_SCALE).round().long()
    new, seen = weights.shape[-2:]
    first = seen - new  # the position of the first new row
    return [scaled[:, :, row, : first + row + 1].tolist() for row in range(new)]


def _distributions(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)


def _describe_pass(encoding: tiktoken.Encoding, token_ids: list[int], logits: torch.Tensor) -> list[dict]:
    """The tokens of one forward pass over `token_ids`: position i - 1's `logits` predicted token i."""
    return [_unpredicted(encoding, token_ids[0]), *describe(encoding, token_ids[1:], _distributions(logits[:-1]))]


@torch.no_grad()
def score(model: GPT, encoding: tiktoken.Encoding, token_ids: list[int]) -> list[dict]:
    """Every token of `token_ids` (at most the model's context) described under `model`,
    without attention: how likely another model finds the same text."""
    model.eval()
    logits = model(torch.tensor([token_ids], device=model.output_weight.device))[0]
    return _describe_pass(encoding, token_ids, logits)


@torch.no_grad()
def trace_continuation(
    model: GPT,
    encoding: tiktoken.Encoding,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: Sampling,
    generator: torch.Generator,
    stop_at: int | None = None,
) -> Iterator[list[dict]]:
    """Continue `prompt_ids` as `scratchgpt generate` does (same `next_token`, same KV cache, the
    same end at `stop_at`, which is not yielded), yielding first the prompt's tokens, then each new
    token as a one-item list, all described with their attention. Prompt and continuation must
    fit in the model's context: the heat map covers one window, so the window never slides."""
    model.eval()
    if len(prompt_ids) + max_new_tokens > model.config.context_length:
        raise ValueError(f"{len(prompt_ids)} + {max_new_tokens} tokens exceed the context {model.config.context_length}")
    caches = model.new_caches()
    seen = torch.tensor([prompt_ids], device=model.output_weight.device)  # (1, tokens so far)
    with keeping_attention(model) as attentions:
        logits = model(seen, caches)
        yield _with_attention(_describe_pass(encoding, prompt_ids, logits[0]), attentions)
        for _ in range(max_new_tokens):
            chosen = next_token(logits[:, -1], sampling, generator, seen=seen)  # (1, 1)
            if stop_at is not None and int(chosen) == stop_at:
                return
            seen = torch.cat([seen, chosen], dim=1)
            probabilities = _distributions(logits[0, -1:])
            # Feeding the new token in computes what it looks at (and the next distribution).
            logits = model(chosen, caches)
            yield _with_attention(describe(encoding, [int(chosen)], probabilities), attentions)
