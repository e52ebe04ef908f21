"""The seed's GPT: a decoder-only Transformer, in one file.

Tokens become vectors (token embedding + learned position embedding), pass through
`num_blocks` Decoder blocks (pre-LayerNorm attention and feed-forward, each added back to its
input), and a final LayerNorm and the LM head turn them into next-token logits.

Compared with the seed's one-module-per-head attention, every head's queries, keys and values
come from one fused projection, and PyTorch's `scaled_dot_product_attention` does the masked
softmax(QK^T / sqrt(d)) V of all heads at once: the same maths, several times faster.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LOSS_SLICE = 128  # positions per slice of the loss: 128 x 50,304 fp32 logits = 26 MB


@dataclass(frozen=True)
class GPTConfig:
    """Everything needed to rebuild the model: saved beside the weights as config.json."""

    num_heads: int
    vocab_size: int
    embed_dim: int
    attention_dim: int
    num_blocks: int
    context_length: int
    dropout_rate: float

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class KVCache:
    """The keys and values of one Decoder block's attention for the tokens generated so far.

    Generating token t+1 needs attention over tokens 0..t; caching their keys and values means
    each new token costs one position of work instead of re-running the whole context.
    """

    def __init__(self, context_length: int):
        self.context_length = context_length
        self.keys = self.values = torch.empty(0)
        self.length = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions; return keys and values of every position so far."""
        if not self.length:  # room for a whole context, in the dtype attention runs in
            batch, heads, _, head_dim = keys.shape
            shape = (batch, heads, self.context_length, head_dim)
            self.keys = keys.new_empty(shape)
            self.values = values.new_empty(shape)
        end = self.length + keys.size(2)
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class SelfAttention(nn.Module):
    """Scaled dot-product attention with causal masking, for all heads at once.

    Position i attends only to positions <= i, so the model never sees the tokens it must
    predict. When decoding one new token against a cache, every cached position is in its
    past, so no mask is needed.
    """

    def __init__(self, dropout_rate: float):
        super().__init__()
        self.dropout_rate = dropout_rate

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        new, seen = queries.size(2), keys.size(2)
        assert new in (1, seen), "queries are either the whole sequence or one new token"
        return F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            dropout_p=self.dropout_rate if self.training else 0.0,
            is_causal=new == seen and new > 1,
        )


class MultiHeadAttention(nn.Module):
    """Several attention heads in parallel, each on its own slice of the attention width."""

    def __init__(self, num_heads: int, embed_dim: int, attention_dim: int, dropout_rate: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * attention_dim, bias=False)  # all heads' Q, K, V at once
        self.attention = SelfAttention(dropout_rate)
        self.out = nn.Linear(attention_dim, embed_dim)  # concatenated heads back to the residual width
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        # (batch, length, 3 * attention_dim) -> three of (batch, heads, length, head_dim)
        queries, keys, values = (
            self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if cache is not None:
            keys, values = cache.append(keys, values)
        heads = self.attention(queries, keys, values)
        return self.dropout(self.out(heads.transpose(1, 2).reshape(batch, length, -1)))


class FeedForward(nn.Module):
    """Per-position MLP: up-projection to 4x the width, GELU, down-projection."""

    def __init__(self, embed_dim: int, dropout_rate: float):
        super().__init__()
        self.up = nn.Linear(embed_dim, 4 * embed_dim)
        self.down = nn.Linear(4 * embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Decoder(nn.Module):
    """One Transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, num_heads: int, embed_dim: int, attention_dim: int, dropout_rate: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(embed_dim)
        self.attention = MultiHeadAttention(num_heads, embed_dim, attention_dim, dropout_rate)
        self.feed_forward_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim, dropout_rate)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cache)
        return x + self.feed_forward(self.feed_forward_norm(x))


class GPT(nn.Module):
    """The seed's model: `GPT(num_heads=8, vocab_size=..., embed_dim=256, ...)(token_ids) -> logits`."""

    def __init__(
        self,
        num_heads: int,
        vocab_size: int,
        embed_dim: int,
        attention_dim: int,
        num_blocks: int,
        context_length: int,
        dropout_rate: float,
    ):
        super().__init__()
        self.config = GPTConfig(
            num_heads, vocab_size, embed_dim, attention_dim, num_blocks, context_length, dropout_rate
        )
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(context_length, embed_dim)
        self.dropout = nn.Dropout(dropout_rate)
        self.blocks = nn.ModuleList(
            Decoder(num_heads, embed_dim, attention_dim, dropout_rate) for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2's scaling: each block adds two projections to the residual stream, so shrink them
        # to keep its variance from growing with depth.
        for name, parameter in self.named_parameters():
            if name.endswith(("attention.out.weight", "feed_forward.down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * num_blocks))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small weights give near-uniform predictions at the start: loss ~ ln(vocab_size).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @classmethod
    def from_config(cls, config: GPTConfig) -> GPT:
        return cls(**config.to_dict())

    def new_caches(self) -> list[KVCache]:
        """Empty KV caches, one per block, for generating with `forward(..., caches)`."""
        return [KVCache(self.config.context_length) for _ in self.blocks]

    def forward(
        self, token_ids: torch.Tensor, caches: list[KVCache] | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (batch, length, vocab_size) for token ids (batch, length); or, given the
        targets (batch, length), the mean cross-entropy of predicting them.

        With `caches`, `token_ids` continue the sequence the caches hold.
        """
        start = caches[0].length if caches else 0
        length = token_ids.size(1)
        if start + length > self.config.context_length:
            raise ValueError(
                f"{start + length} tokens exceed the context length {self.config.context_length}"
            )
        positions = torch.arange(start, start + length, device=token_ids.device)
        x = self.dropout(self.token_embedding(token_ids) + self.position_embedding(positions))
        for index, block in enumerate(self.blocks):
            x = block(x, caches[index] if caches else None)
        x = self.final_norm(x)
        if targets is None:
            return self.lm_head(x)
        return self.next_token_loss(x.flatten(0, 1), targets.flatten())

    def next_token_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the LM head's predictions, a slice of positions at a time.

        A whole batch of logits is huge (32 x 256 positions x 50,304 ids = 1.6 GB in fp32), and
        the memory allocator hands buffers that big back to the system, so every step would
        page-fault gigabytes in again. Slices of LOSS_SLICE positions stay small enough to be
        reused, and each slice's logits are recomputed in the backward pass instead of stored.
        """
        nats = sum(
            checkpoint(self._summed_loss, hidden[start : start + LOSS_SLICE], targets[start : start + LOSS_SLICE],
                       use_reentrant=False)
            for start in range(0, len(targets), LOSS_SLICE)
        )
        return nats / len(targets)

    def _summed_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.lm_head(hidden).float(), targets, reduction="sum")
