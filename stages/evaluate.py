"""evaluate: loss, perplexity and bits per byte of both models on IMDb test and lyrics validation."""

import math
from pathlib import Path

from scratchgpt import params, stage
from scratchgpt.saved_model import load_model
from scratchgpt.devices import prepare
from scratchgpt.errors import warn
from scratchgpt.evaluation import score, token_byte_lengths
from scratchgpt.outputs import atomic_file, write_json
from scratchgpt.tokens import TokenShards, Windows

SPLITS = {"imdb_test": ("imdb", "test"), "lyrics_val": ("lyrics", "val")}


def main(pretrained: Path, finetuned: Path, tokens: Path, out: Path) -> None:
    settings = params.load("evaluate").evaluate
    runtime = prepare(settings.device, settings.precision, settings.num_threads, "evaluate")
    results = {}
    for name, folder in (("pretrained", pretrained), ("finetuned", finetuned)):
        model, encoding = load_model(folder, runtime.device)
        byte_lengths = token_byte_lengths(encoding)
        results[name] = {}
        for label, (corpus, split) in SPLITS.items():
            shards = TokenShards(tokens / corpus, split)
            shards.require_encoding(encoding.name, folder)
            windows = Windows(shards, model.config.context_length)
            indices = windows.evenly_spaced(max(1, settings.max_tokens // windows.length))
            result = score(model, windows, indices, settings.batch_size, runtime, byte_lengths)
            results[name][label] = result.to_dict()
            if not math.isfinite(result.perplexity):
                warn(f"{name} on {label}: loss {result.loss:.4g} is too large for a perplexity; "
                     f"did training diverge? (see {folder})")
            print(f"{name} on {label}: loss {result.loss:.4f}, perplexity {result.perplexity:.1f}, "
                  f"{result.bits_per_byte:.4f} bits per byte over {result.tokens:,} tokens")
    with atomic_file(out) as tmp:
        write_json(tmp, results)


if __name__ == "__main__":
    stage.run(main)
