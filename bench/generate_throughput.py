"""Generation speed: tokens/s for 256 new tokens with the KV cache against the article's generate
(which re-runs the whole context for every token), the article's model size, greedy, interleaved.
Run: python bench/generate_throughput.py [--new-tokens 256] [--rounds 3]"""

from __future__ import annotations

import argparse
import platform

import torch

from scratchgpt.generate import generate
from scratchgpt.model import GPT
from measure import interleaved, print_table
from seed_baseline import SeedGPT, seed_generate

SHAPE = dict(num_heads=8, vocab_size=50304, embed_dim=256, attention_dim=256, num_blocks=8, context_length=256, dropout_rate=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    prompt = torch.randint(0, 50257, (1, 4))
    seed_model, model = SeedGPT(**SHAPE).eval(), GPT(**SHAPE).eval()
    context = SHAPE["context_length"]
    variants = {
        "article generate (whole context per token)": lambda: seed_generate(seed_model, prompt, args.new_tokens, context),
        "scratchgpt generate (KV cache)": lambda: generate(model, prompt, max_new_tokens=args.new_tokens, context_length=context),
    }
    times = interleaved(variants, args.rounds, warmup=1)
    print_table(
        f"generation, prompt 4 tokens + {args.new_tokens} new, batch 1, greedy, fp32, "
        f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        times, args.new_tokens, "tokens", "s", "seed",
    )


if __name__ == "__main__":
    main()
