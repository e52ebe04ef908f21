"""`scratchgpt explore`'s latency: seconds from a prompt to the last of 64 new tokens, each with
its probability, ten candidates and every head's attention, serialised to JSON as the server
sends them; at the article's size (GPT-2's 50,257 ids, 8 blocks, 256 wide, 8 heads, context 256;
random weights), on the CPU. Target: under 2 s on 2 cores.
Run: python bench/explore_latency.py [--new-tokens 64] [--rounds 5] [--threads 2]

On a 2-core machine busy with other work, use --threads 1: two threads then wait on each other
(OpenMP spins while the other core is taken) and a 1 s continuation took over a minute."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

from measure import GPT2_VOCAB, SEED_SHAPE, markdown_table
from scratchgpt.explore.trace import trace_continuation
from scratchgpt.generate import Sampling, stream
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.encodings import get_encoding

PROMPT = "The movie starts with a long shot of the city at night, and"


def cpu_name() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def seconds(call, rounds: int) -> float:
    """The median of `rounds` timed calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=GPT2_VOCAB, dropout_rate=0.0, **SEED_SHAPE)).eval()
    encoding = get_encoding("gpt2")
    sampling = Sampling(temperature=0.8, top_k=50, top_p=0.95)  # scratchgpt generate's defaults
    prompts = {"short prompt": encoding.encode(PROMPT),
               "full context": encoding.encode(" word" * (SEED_SHAPE["context_length"] - args.new_tokens))}
    sizes = {}

    def explore(prompt: list[int]) -> None:  # what the server does for one request
        events = trace_continuation(model, encoding, prompt, args.new_tokens, sampling, torch.Generator().manual_seed(0))
        sizes[len(prompt)] = sum(len(json.dumps(tokens)) for tokens in events)

    def generate(prompt: list[int]) -> None:  # scratchgpt generate, for scale
        list(stream(model, torch.tensor([prompt]), args.new_tokens, SEED_SHAPE["context_length"],
                    sampling=sampling, generator=torch.Generator().manual_seed(0)))

    rows = []
    for name, prompt in prompts.items():
        explored, generated = seconds(lambda: explore(prompt), args.rounds), seconds(lambda: generate(prompt), args.rounds)
        rows.append([f"{name} ({len(prompt)} + {args.new_tokens} tokens)", f"{explored:.2f}",
                     f"{sizes[len(prompt)] / 1e6:.1f}", f"{generated:.2f}", "yes" if explored < 2 else "**no**"])
    print(f"explore latency, {args.new_tokens} new tokens with probabilities, candidates and attention, "
          f"the article's model (random weights), fp32, {cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.rounds}")
    print()
    markdown_table(["prompt", "explore s", "JSON MB", "generate s (tokens only)", "under 2 s"], rows)


if __name__ == "__main__":
    main()
