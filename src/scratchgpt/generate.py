"""Text from a model, one token at a time, and the article's helpers to go between text and ids.

Each new token is drawn from the model's next-token distribution, reshaped by a repetition
penalty (tokens already in the text made less likely), temperature (0 = always the most likely
token), top-k (only the k likeliest), top-p (only the smallest set whose probability reaches p)
and min-p (only tokens at least min_p times as likely as the likeliest), in that order, as
Hugging Face's `generate` applies them. A KV cache keeps the keys and values of tokens already seen,
so each step runs the model on one new position; once the context is full, the window slides
and is run again whole, exactly as the article's generate does, so outputs match it token for token.

Text ends where the model chooses `stop_at`, the tokenizer's end-of-text for every command and
stage (`stop_id`), as Hugging Face's `generate` stops at its end-of-sequence id: training put that
id between documents, so what follows it is another review or song. Without `stop_at` (the
article's way) generation goes on past it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import tiktoken
import torch

from scratchgpt.model import GPT


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding, device: torch.device | str = "cpu") -> torch.Tensor:
    """The article's helper: `text` as a (1, length) batch of token ids."""
    return torch.tensor([tokenizer.encode(text, allowed_special={"<|endoftext|>"})], device=device)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding) -> str:
    """The article's helper: a (1, length) batch of token ids back to text."""
    return tokenizer.decode(token_ids.squeeze(0).tolist())


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen: `temperature` 0 always takes the most likely token (the
    default, as in the article); otherwise a draw among the `top_k` likeliest tokens (None: all)
    that make up the smallest set whose probability reaches `top_p`, keeping only those at least
    `min_p` times as likely as the likeliest (0: all). A `repetition_penalty` above 1 makes every
    token already in the text (prompt included) less likely, greedy or not (1: off)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Sampling:
        """The sampling rules among `settings` (the `sample` params, or the flags of the same
        names), whatever else they hold."""
        return cls(**{field.name: settings[field.name] for field in dataclasses.fields(cls)})


def stop_id(encoding: tiktoken.Encoding, stop_at_end_of_text: bool) -> int | None:
    """The id a continuation ends at: `encoding`'s end-of-text, or None to go on past it (the
    `sample.stop_at_end_of_text` key, and the flag and field of the same name)."""
    return encoding.eot_token if stop_at_end_of_text else None


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """`logits` (batch, vocab) with each token of `seen` (batch, tokens) made less likely, the
    rule of Hugging Face's `repetition_penalty` (CTRL, Keskar et al. 2019): a positive logit is
    divided by `penalty`, a negative one multiplied by it, so both move down for a penalty > 1. A
    token counts once however often it was seen."""
    scores = logits.gather(-1, seen)
    return logits.scatter(-1, seen, torch.where(scores > 0, scores / penalty, scores * penalty))


def next_token(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """Pick one token id per row of `logits` (batch, vocab): shape (batch, 1). `seen` (batch,
    tokens) are the ids so far, prompt included, that `sampling.repetition_penalty` applies to
    (needed only with a penalty)."""
    if sampling.repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("a repetition_penalty needs the tokens seen so far (seen=...)")
        logits = penalize_repetition(logits, seen, sampling.repetition_penalty)
    if sampling.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth_best = torch.topk(logits, sampling.top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probabilities = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the likelier ones before it already reach top_p (the first always stays).
        drop = probabilities.cumsum(dim=-1) - probabilities >= sampling.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    if sampling.min_p > 0:
        # p >= min_p * p_max  <=>  logit >= max_logit + ln(min_p): the same test without a softmax.
        floor = logits.max(dim=-1, keepdim=True).values + math.log(sampling.min_p)
        logits = logits.masked_fill(logits < floor, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


@torch.no_grad()
def stream(
    model: GPT,
    context: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    *,
    sampling: Sampling = Sampling(),
    generator: torch.Generator | None = None,
    stop_at: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each new token id (batch, 1) as soon as it is chosen; `generator` makes the draws
    repeatable. The model's logits cover only the tokenizer's ids (see `GPT.forward`), so a
    padding id is never chosen. Choosing `stop_at` (None: no id) ends the text: it is not yielded,
    and nothing more is generated; it needs a batch of one text."""
    if stop_at is not None and context.size(0) != 1:
        raise ValueError(f"stop_at ends one text; the context holds {context.size(0)}")
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
        chosen = next_token(logits[:, -1, :], sampling, generator, seen=tokens)
        if stop_at is not None and int(chosen) == stop_at:
            return
        tokens = torch.cat([tokens, chosen], dim=1)
        yield chosen


def generate(
    model: GPT,
    context: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    *,
    sampling: Sampling = Sampling(),
    generator: torch.Generator | None = None,
    stop_at: int | None = None,
) -> torch.Tensor:
    """The article's `generate(model=..., context=..., max_new_tokens=..., context_length=...)`:
    the context followed by the new token ids (greedy unless `sampling` says otherwise), up to
    `stop_at` (not included) where given."""
    new = list(stream(model, context, max_new_tokens, context_length, sampling=sampling, generator=generator,
                      stop_at=stop_at))
    return torch.cat([context, *new], dim=1)
