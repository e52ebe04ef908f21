"""How well a model predicts held-out text: bits per byte, loss and perplexity.

Loss is the mean cross-entropy (nats per token) and perplexity its exponential; both depend on
the tokenizer: a tokenizer whose tokens hold more text has a higher loss per token for the same
model quality. Bits per byte is the one yardstick across tokenizers (nanochat's `evaluate_bpb`
too): the summed cross-entropy of the scored tokens, in bits, over the UTF-8 bytes of the text
those tokens stand for. End-of-text stands for a document break and counts as one byte, so a
tokenizer of single bytes scores exactly its loss / ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch

from scratchgpt.devices import Runtime, prepare
from scratchgpt.errors import warn
from scratchgpt.params import EvaluateParams
from scratchgpt.saved_model import load_model
from scratchgpt.tokens import TokenShards, Windows


def bits_per_byte(nats: float, size: int) -> float:
    """The cross-entropy `nats` summed over tokens that stand for `size` bytes of text, in bits per byte."""
    return nats / math.log(2) / size


def token_byte_lengths(encoding: tiktoken.Encoding) -> np.ndarray:
    """Bytes of text each token id stands for; end-of-text counts as one (a document break)."""
    lengths = np.array(
        [len(encoding.decode_single_token_bytes(i)) for i in range(encoding.n_vocab)], dtype=np.int64
    )
    lengths[encoding.eot_token] = 1
    return lengths


@dataclass(frozen=True)
class Score:
    nats: float  # summed cross-entropy of every scored token
    tokens: int
    bytes: int  # UTF-8 bytes of the scored tokens (0 when not counted)

    @property
    def loss(self) -> float:
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(loss); infinite past what a float holds (a loss above ~709, a diverged model)."""
        try:
            return math.exp(self.loss)
        except OverflowError:
            return math.inf

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.nats, self.bytes)

    def to_dict(self) -> dict[str, float | int]:
        return {"bits_per_byte": self.bits_per_byte, "loss": self.loss, "perplexity": self.perplexity,
                "tokens": self.tokens, "bytes": self.bytes}


@torch.no_grad()
def score(
    model: torch.nn.Module,
    windows: Windows,
    indices: list[int],
    batch_size: int,
    runtime: Runtime,
    byte_lengths: np.ndarray | None = None,
) -> Score:
    """Next-token cross-entropy over the windows `indices`, with dropout off."""
    was_training = model.training
    model.eval()
    nats = torch.zeros((), dtype=torch.float64, device=runtime.device)  # summed on the device: one read at the end
    tokens, size = 0, 0
    for start in range(0, len(indices), batch_size):
        inputs, targets = windows.batch(indices[start : start + batch_size])
        with runtime.autocast():
            loss = model(runtime.to_device(inputs), targets=runtime.to_device(targets))
        nats += loss.double() * targets.numel()
        tokens += targets.numel()
        if byte_lengths is not None:
            size += int(byte_lengths[targets.numpy()].sum())
    model.train(was_training)
    return Score(nats.item(), tokens, size)


def evaluate_models(
    models: dict[str, Path], splits: dict[str, dict[str, TokenShards]], settings: EvaluateParams
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Each model folder of `models` scored on its splits (`splits[model][label]`), over up to
    `settings.max_tokens` tokens of each in evenly spaced windows (every window of a smaller
    split): `{model: {label: Score.to_dict()}}`, each line also printed."""
    runtime = prepare(settings.device, settings.precision, settings.num_threads, "evaluate")
    results: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, folder in models.items():
        model, encoding = load_model(folder, runtime.device)
        byte_lengths = token_byte_lengths(encoding)
        results[name] = {}
        for label, shards in splits[name].items():
            shards.require_encoding(encoding.name, folder)
            windows = Windows(shards, model.config.context_length)
            indices = windows.evenly_spaced(max(1, settings.max_tokens // windows.length))
            result = score(model, windows, indices, settings.batch_size, runtime, byte_lengths)
            results[name][label] = result.to_dict()
            if not math.isfinite(result.perplexity):
                warn(f"{name} on {label}: loss {result.loss:.4g} is too large for a perplexity; "
                     f"did training diverge? (see {folder})")
            print(f"{name} on {label}: {result.bits_per_byte:.4f} bits per byte, loss {result.loss:.4f}, "
                  f"perplexity {result.perplexity:.1f}, over {result.tokens:,} tokens ({result.bytes:,} bytes)")
    return results
