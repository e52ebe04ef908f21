"""The article's way, kept as the benchmarks' baseline: one module per head, an explicit
causal mask, fp32, and a generate that re-runs the whole context for every new token."""

from __future__ import annotations

import torch
from torch import nn


class SeedSelfAttention(nn.Module):
    def __init__(self, embed_dim: int, head_dim: int, context_length: int, dropout_rate: float):
        super().__init__()
        self.query = nn.Linear(embed_dim, head_dim, bias=False)
        self.key = nn.Linear(embed_dim, head_dim, bias=False)
        self.value = nn.Linear(embed_dim, head_dim, bias=False)
        self.dropout = nn.Dropout(dropout_rate)
        self.register_buffer("mask", torch.tril(torch.ones(context_length, context_length)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.size(1)
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = q @ k.transpose(-2, -1) / k.size(-1) ** 0.5
        scores = scores.masked_fill(self.mask[:length, :length] == 0, float("-inf"))
        return self.dropout(torch.softmax(scores, dim=-1)) @ v


class SeedMultiHeadAttention(nn.Module):
    def __init__(self, num_heads: int, embed_dim: int, attention_dim: int, context_length: int, dropout_rate: float):
        super().__init__()
        head_dim = attention_dim // num_heads
        self.heads = nn.ModuleList(
            SeedSelfAttention(embed_dim, head_dim, context_length, dropout_rate) for _ in range(num_heads)
        )
        self.proj = nn.Linear(attention_dim, embed_dim)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(torch.cat([head(x) for head in self.heads], dim=-1)))


class SeedDecoder(nn.Module):
    def __init__(self, num_heads: int, embed_dim: int, attention_dim: int, context_length: int, dropout_rate: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attention = SeedMultiHeadAttention(num_heads, embed_dim, attention_dim, context_length, dropout_rate)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim), nn.Dropout(dropout_rate)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))


class SeedGPT(nn.Module):
    def __init__(self, num_heads, vocab_size, embed_dim, attention_dim, num_blocks, context_length, dropout_rate):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Embedding(context_length, embed_dim)
        self.dropout = nn.Dropout(dropout_rate)
        self.blocks = nn.Sequential(
            *[SeedDecoder(num_heads, embed_dim, attention_dim, context_length, dropout_rate) for _ in range(num_blocks)]
        )
        self.final_norm = nn.LayerNorm(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(token_ids.size(1), device=token_ids.device)
        x = self.dropout(self.token_embedding(token_ids) + self.position_embedding(positions))
        return self.lm_head(self.final_norm(self.blocks(x)))


@torch.no_grad()
def seed_generate(model: nn.Module, context: torch.Tensor, max_new_tokens: int, context_length: int) -> torch.Tensor:
    """Greedy decoding that runs the model over the whole (cropped) context for each token."""
    model.eval()
    for _ in range(max_new_tokens):
        logits = model(context[:, -context_length:])
        context = torch.cat([context, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return context
