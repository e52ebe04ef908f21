"""The article's GPT: a decoder-only Transformer, in one file.

Tokens become vectors (token embedding + learned position embedding), pass through
`num_blocks` Decoder blocks (pre-LayerNorm attention and feed-forward, each added back to its
input), and a final LayerNorm and the LM head turn them into next-token logits.

Compared with the article's one-module-per-head attention, every head's queries, keys and
values come from one fused projection, and PyTorch's `scaled_dot_product_attention` does the
masked softmax(QK^T / sqrt(d)) V of all heads at once: the same maths, several times faster.

Beside the article's block, GPTConfig offers, one option each, the parts of the block that the
records for training small GPTs fast use (modded-nanogpt's speedrun, nanochat): rotary position
encoding (RoPE) instead of the position table, RMSNorm without gains, QK-norm, ReLU^2, no
biases, output projections that start at zero, and a soft cap on the logits. The defaults are
the article's block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MAX_VOCAB_SIZE = 1 << 20  # far above any tiktoken encoding (o200k: 200,019); catches a damaged config

# The feed-forward's nonlinearity. `gelu` is the exact (erf) GELU the article uses; `gelu_tanh`
# is the tanh approximation GPT-2 was trained with, needed to reproduce GPT-2's weights.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu2": lambda x: F.relu(x).square(),  # ReLU squared (So et al. 2021, "Primer"), the speedrun records'
}

# The blocks' normalisation and the final one. `layernorm` is the article's: centre each vector,
# scale it to unit variance, then apply a learned gain and bias per feature. `rmsnorm` only divides
# by the root mean square, with nothing to learn (the speedrun records', nanochat's).
NORMS = {
    "layernorm": nn.LayerNorm,
    "rmsnorm": lambda width: nn.RMSNorm(width, elementwise_affine=False),
}

# How the model knows where each token is: `learned`, the article's table of one vector per
# position, added to the token embeddings; or `rope`, rotary embeddings (Su et al. 2021), which
# turn each head's queries and keys by angles that grow with the position (see `rotate`).
POSITION_ENCODINGS = ("learned", "rope")
ROPE_BASE = 10_000  # per position, the first pair of dimensions turns 1 radian, the last nearly 1 / ROPE_BASE


@dataclass(frozen=True)
class GPTConfig:
    """Everything needed to rebuild the model; saved beside the weights as config.json.

    `vocab_size` is the tokenizer's; the embedding and LM head have `padded_vocab_size` rows,
    rounded up to a multiple of `vocab_multiple` because matrix products of such sizes run
    faster. The model never predicts a padding id.
    """

    vocab_size: int
    num_heads: int = 8
    embed_dim: int = 256
    attention_dim: int = 256  # width of the queries, keys and values, all heads together
    num_blocks: int = 8
    context_length: int = 256
    dropout_rate: float = 0.1
    vocab_multiple: int = 64
    tie_embeddings: bool = False  # the LM head reuses the token embedding matrix (GPT-2, nanoGPT)
    activation: str = "gelu"  # the feed-forward's nonlinearity: one of ACTIVATIONS
    qkv_bias: bool = False  # biases on the query, key and value projection (GPT-2 has them)
    # The modern block's parts (see the module's docstring); the defaults are the article's block.
    position_encoding: str = "learned"  # one of POSITION_ENCODINGS
    norm: str = "layernorm"  # the blocks' and the final normalisation: one of NORMS
    qk_norm: bool = False  # each head's queries and keys RMS-normalised before attention
    bias: bool = True  # biases on attention's output projection and the feed-forward's linears
    zero_init_projections: bool = False  # attention.out and feed_forward.down start at zero
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap); None: no cap

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"{f.name} = {value!r}: must be a whole number > 0")
        if not 0 <= self.dropout_rate < 1:
            raise ValueError(f"dropout_rate = {self.dropout_rate!r}: must be in [0, 1)")
        for name in ("tie_embeddings", "qkv_bias", "qk_norm", "bias", "zero_init_projections"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be true or false")
        for name, choices in (("activation", ACTIVATIONS), ("norm", NORMS), ("position_encoding", POSITION_ENCODINGS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be one of {', '.join(choices)}")
        cap = self.logit_softcap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf):
            raise ValueError(f"logit_softcap = {cap!r}: must be a number > 0, or None for no cap")
        if self.vocab_size > MAX_VOCAB_SIZE:
            raise ValueError(f"vocab_size = {self.vocab_size}: must be at most {MAX_VOCAB_SIZE:,}")
        if self.attention_dim % self.num_heads:
            raise ValueError(f"num_heads = {self.num_heads}: must divide attention_dim = {self.attention_dim}")
        if self.position_encoding == "rope" and self.head_dim % 2:
            raise ValueError(f"position_encoding = 'rope': needs an even head size, not attention_dim / num_heads = "
                             f"{self.head_dim} (RoPE turns pairs of dimensions)")

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple  # round up

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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

    With `keep_weights` set (`scratchgpt explore` sets it), the same maths is written out step by
    step, softmax(QK^T / sqrt(d)) then weights @ V, so the attention weights the output is made
    of can be kept in `weights`, (batch, heads, new, seen); the fused kernel never exposes them.
    """

    def __init__(self, dropout_rate: float):
        super().__init__()
        self.dropout_rate = dropout_rate
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # queries: (batch, heads, new, head_dim); keys, values: (batch, heads, seen, head_dim)
        new, seen = queries.size(2), keys.size(2)
        assert new in (1, seen), "queries are either the whole sequence or one new token"
        dropout_p = self.dropout_rate if self.training else 0.0
        causal = new == seen and new > 1
        if self.keep_weights:
            scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.size(-1))  # (batch, heads, new, seen)
            if causal:
                future = torch.ones(new, seen, dtype=torch.bool, device=scores.device).triu(1)
                scores = scores.masked_fill(future, -math.inf)
            self.weights = F.dropout(torch.softmax(scores.float(), dim=-1).to(values.dtype), dropout_p)
            return self.weights @ values
        return F.scaled_dot_product_attention(  # (batch, heads, new, head_dim)
            queries, keys, values, dropout_p=dropout_p, is_causal=causal
        )


def rotary_angles(context_length: int, head_dim: int) -> torch.Tensor:
    """The cos and sin of the angles RoPE turns queries and keys by, for every position of the
    context: (2, context_length, head_dim / 2). Pair i of position p turns by
    p * ROPE_BASE^(-2i / head_dim) radians: the first pairs fast, the last ones slowly, so that
    both near and far distances are told apart."""
    frequencies = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (head_dim / 2,)
    angles = torch.arange(context_length, dtype=torch.float32)[:, None] * frequencies  # (context_length, head_dim / 2)
    return torch.stack([angles.cos(), angles.sin()])


def rotate(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """`x` (batch, heads, length, head_dim) with each pair of dimensions (i, i + head_dim / 2)
    turned by its position's angle; `rotation` is `rotary_angles` at those positions.

    The dot product of a query turned for position p and a key turned for position q depends
    on p - q alone: attention sees how far apart two tokens are, not where they are.
    """
    cos, sin = rotation  # each (length, head_dim / 2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1).type_as(x)


class MultiHeadAttention(nn.Module):
    """Several attention heads in parallel, each on its own slice of the attention width."""

    def __init__(
        self, num_heads: int, embed_dim: int, attention_dim: int, dropout_rate: float, qkv_bias: bool = False,
        bias: bool = True, qk_norm: bool = False,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * attention_dim, bias=qkv_bias)  # all heads' Q, K, V at once
        self.qk_norm = qk_norm
        self.attention = SelfAttention(dropout_rate)
        self.out = nn.Linear(attention_dim, embed_dim, bias=bias)  # concatenated heads back to the residual width
        self.dropout = nn.Dropout(dropout_rate)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, rotation: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, _ = x.shape  # x: (batch, length, embed_dim)
        # (batch, length, 3 * attention_dim) -> three of (batch, heads, length, head_dim)
        queries, keys, values = (
            self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if self.qk_norm:  # unit RMS: the attention scores stay bounded however large the weights grow
            queries, keys = F.rms_norm(queries, (self.head_dim,)), F.rms_norm(keys, (self.head_dim,))
        if rotation is not None:  # RoPE: the positions enter here, and new keys are cached turned
            queries, keys = rotate(queries, rotation), rotate(keys, rotation)
        if cache is not None:
            keys, values = cache.append(keys, values)
        heads = self.attention(queries, keys, values)
        # (batch, heads, length, head_dim) -> (batch, length, attention_dim) -> (batch, length, embed_dim)
        return self.dropout(self.out(heads.transpose(1, 2).reshape(batch, length, -1)))


class FeedForward(nn.Module):
    """Per-position MLP: up-projection to 4x the width, GELU (or `activation`), down-projection."""

    def __init__(self, embed_dim: int, dropout_rate: float, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.up = nn.Linear(embed_dim, 4 * embed_dim, bias=bias)
        self.activation = ACTIVATIONS[activation]
        self.down = nn.Linear(4 * embed_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.activation(self.up(x))))


class Decoder(nn.Module):
    """One Transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(
        self, num_heads: int, embed_dim: int, attention_dim: int, dropout_rate: float,
        activation: str = "gelu", qkv_bias: bool = False, bias: bool = True, norm: str = "layernorm",
        qk_norm: bool = False,
    ):
        super().__init__()
        self.attention_norm = NORMS[norm](embed_dim)
        self.attention = MultiHeadAttention(num_heads, embed_dim, attention_dim, dropout_rate, qkv_bias, bias, qk_norm)
        self.feed_forward_norm = NORMS[norm](embed_dim)
        self.feed_forward = FeedForward(embed_dim, dropout_rate, activation, bias)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, rotation: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cache, rotation)
        return x + self.feed_forward(self.feed_forward_norm(x))


class GPT(nn.Module):
    """`GPT(config)`, or the article's `GPT(num_heads=8, vocab_size=..., embed_dim=256, ...)`.

    `model(token_ids)` gives next-token logits; `model(token_ids, targets=...)` the mean loss.
    """

    def __init__(self, config: GPTConfig | None = None, **settings: Any):
        super().__init__()
        self.config = config = config or GPTConfig(**settings)
        rope = config.position_encoding == "rope"
        self.token_embedding = nn.Embedding(config.padded_vocab_size, config.embed_dim)
        # With RoPE there is no table of positions: attention turns queries and keys instead, by
        # angles computed once (a buffer, not saved with the weights: persistent=False).
        self.position_embedding = None if rope else nn.Embedding(config.context_length, config.embed_dim)
        self.register_buffer(
            "rotary", rotary_angles(config.context_length, config.head_dim) if rope else None, persistent=False
        )
        self.dropout = nn.Dropout(config.dropout_rate)
        self.blocks = nn.ModuleList(
            Decoder(
                config.num_heads, config.embed_dim, config.attention_dim, config.dropout_rate,
                config.activation, config.qkv_bias, config.bias, config.norm, config.qk_norm,
            )
            for _ in range(config.num_blocks)
        )
        self.final_norm = NORMS[config.norm](config.embed_dim)
        # Tied: scoring a token reuses the vector that embeds it, so there is no second matrix.
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.embed_dim, config.padded_vocab_size, bias=False)
        self.apply(self._init_weights)
        # Each block adds two projections to the residual stream. GPT-2 shrinks them, to keep the
        # stream's variance from growing with depth; zero makes every block start as the identity,
        # adding nothing until it learns to (the speedrun records').
        for name, parameter in self.named_parameters():
            if name.endswith(("attention.out.weight", "feed_forward.down.weight")):
                if config.zero_init_projections:
                    nn.init.zeros_(parameter)
                else:
                    nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.num_blocks))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small weights give near-uniform predictions at the start: loss ~ ln(vocab_size).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def output_weight(self) -> torch.Tensor:
        """The LM head's matrix, (padded_vocab_size, embed_dim)."""
        return self.token_embedding.weight if self.lm_head is None else self.lm_head.weight

    def new_caches(self) -> list[KVCache]:
        """Empty KV caches, one per block, for generating with `forward(..., caches)`."""
        return [KVCache(self.config.context_length) for _ in self.blocks]

    def forward(
        self, token_ids: torch.Tensor, caches: list[KVCache] | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (batch, length, vocab_size) for token ids (batch, length); or, given the
        targets (batch, length), the mean cross-entropy of predicting them.

        With `caches`, `token_ids` continue the sequence the caches hold. The loss is computed
        here rather than by the caller so that DistributedDataParallel, which wraps `forward`,
        sees the whole step.
        """
        start = caches[0].length if caches else 0
        length = token_ids.size(1)
        if start + length > self.config.context_length:
            raise ValueError(f"{start + length} tokens exceed the context length {self.config.context_length}")
        x = self.token_embedding(token_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(start, start + length, device=token_ids.device))
        rotation = None if self.rotary is None else self.rotary[:, start : start + length]  # (2, length, head_dim / 2)
        x = self.dropout(x)
        for index, block in enumerate(self.blocks):
            x = block(x, caches[index] if caches else None, rotation)
        x = self.final_norm(x)  # (batch, length, embed_dim)
        cap = self.config.logit_softcap
        if targets is None:
            return soft_cap(F.linear(x, self.output_weight)[..., : self.config.vocab_size], cap)
        if x.device.type == "cpu":
            return chunked_cross_entropy(
                x.flatten(0, 1), self.output_weight, targets.flatten(), self.config.vocab_size, cap
            )
        logits = F.linear(x, self.output_weight)[..., : self.config.vocab_size].float()
        return F.cross_entropy(soft_cap(logits, cap).flatten(0, 1), targets.flatten())


def soft_cap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """`cap * tanh(logits / cap)`: nearly the logits where they are small, never beyond +-cap, so
    no logit can grow without bound to make a prediction certain (Gemma 2, the speedrun records).
    `cap` None: the logits as they are."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


# Positions per slice of `chunked_cross_entropy`: 2,048 x 50,304 fp32 logits = 412 MB. Larger
# slices make faster matrix products; bench/train_throughput.py measured 512 to 2,048.
LOSS_SLICE = 2048


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int, softcap: float | None = None
) -> torch.Tensor:
    """Mean cross-entropy of the logits `soft_cap(hidden @ weight.T, softcap)`, without ever
    holding all of them.

    A batch's logits are huge (32 x 256 positions x 50,304 ids = 1.6 GB in fp32), and a CPU
    spends more time moving them through memory than multiplying. This computes the loss a
    slice of positions at a time and, in the same pass, the slice's gradients, so each slice's
    logits are used and dropped while still in cache: no logits are stored for the backward
    pass, and none are recomputed. On a GPU, where memory bandwidth is plentiful, the plain
    F.cross_entropy on full logits is faster (`GPT.forward` picks).
    """
    # Inside an autograd Function, grad mode is always off and needs_input_grad ignores
    # torch.no_grad(): whether gradients are wanted is decided here, where it is known.
    with_grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, vocab_size, softcap, with_grads) / len(targets)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `soft_cap(hidden @ weight.T, softcap)`, with its gradients computed
    in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
        softcap: float | None, compute_grads: bool,
    ) -> torch.Tensor:
        # Under bf16 autocast the products run in bf16 (as nn.Linear's would); sums stay fp32.
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else weight.dtype
        with torch.autocast("cpu", enabled=False):
            exact = torch.promote_types(torch.float32, weight.dtype)  # the dtype of logits and sums
            weight_c = weight.to(dtype)
            total = torch.zeros((), dtype=exact)
            grad_hidden = torch.empty_like(hidden) if compute_grads else None
            grad_weight = torch.zeros(weight.shape, dtype=exact) if compute_grads else None
            for start in range(0, len(targets), LOSS_SLICE):
                rows = slice(start, start + LOSS_SLICE)
                hidden_c, target = hidden[rows].to(dtype), targets[rows]
                logits = (hidden_c @ weight_c.T).to(exact)  # (slice, padded_vocab_size)
                if softcap is not None:  # z = c tanh(l / c), in place
                    logits.div_(softcap).tanh_()
                    slope = 1 - logits.square() if compute_grads else None  # dz/dl = 1 - tanh(l / c)^2
                    logits.mul_(softcap)
                logits[:, vocab_size:] = -math.inf  # padding ids get probability 0 (after the cap: not -c)
                log_normalizer = torch.logsumexp(logits, dim=1)  # (slice,)
                total += (log_normalizer - logits.gather(1, target[:, None]).squeeze(1)).sum()
                if compute_grads:
                    # d(loss)/d(logits) = softmax(logits) - one_hot(target), built in place
                    grad_logits = logits.sub_(log_normalizer[:, None]).exp_()
                    grad_logits[torch.arange(len(target)), target] -= 1
                    if softcap is not None:  # the chain rule through the cap
                        grad_logits *= slope
                    grad_logits = grad_logits.to(dtype)
                    grad_hidden[rows] = grad_logits @ weight_c
                    grad_weight += grad_logits.T @ hidden_c
        if compute_grads:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total, grad_weight * grad_total, None, None, None, None
