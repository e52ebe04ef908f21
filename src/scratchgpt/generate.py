"""Text from a model, one token at a time, and the seed's helpers to go between text and ids.

Each new token is drawn from the model's next-token distribution, reshaped by temperature
(0 = always the most likely token), top-k (only the k likeliest) and top-p (only the smallest
set whose probability reaches p). A KV cache keeps the keys and values of tokens already seen,
so each step runs the model on one new position; once the context is full, the window slides
and is run again whole, exactly as the seed's generate does, so outputs match it token for token.
"""

from __future__ import annotations

from collections.abc import Iterator

import tiktoken
import torch

from scratchgpt.model import GPT


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding, device: torch.device | str = "cpu") -> torch.Tensor:
    """The seed's helper: `text` as a (1, length) batch of token ids."""
    return torch.tensor([tokenizer.encode(text, allowed_special={"<|endoftext|>"})], device=device)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding) -> str:
    """The seed's helper: a (1, length) batch of token ids back to text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of `logits` (batch, vocab): shape (batch, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probabilities = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the likelier ones before it already reach top_p (the first always stays).
        drop = probabilities.cumsum(dim=-1) - probabilities >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


@torch.no_grad()
def stream(
    model: GPT,
    context: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each new token id (batch, 1) as soon as it is chosen.

    `vocab_size` limits choices to the tokenizer's ids when the model's vocabulary is padded.
    """
    model.eval()
    context_length = min(context_length, model.config.context_length)
    tokens = context
    caches = None
    for _ in range(max_new_tokens):
        if caches is None or caches[0].length >= context_length:
            caches = model.new_caches()
            logits = model(tokens[:, -context_length:], caches)
        else:
            logits = model(tokens[:, -1:], caches)
        chosen = next_token(logits[:, -1, :vocab_size], temperature, top_k, top_p, generator)
        tokens = torch.cat([tokens, chosen], dim=1)
        yield chosen


def generate(
    model: GPT,
    context: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """The seed's `generate(model=..., context=..., max_new_tokens=..., context_length=...)`:
    the context followed by the new token ids."""
    new = list(stream(model, context, max_new_tokens, context_length, temperature, top_k, top_p, generator, vocab_size))
    return torch.cat([context, *new], dim=1)
