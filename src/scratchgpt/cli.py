"""The `scratchgpt` command: talk to a trained model.

    scratchgpt generate --model models/finetuned "lights go out"

The pipeline itself runs through DVC (`dvc repro`); this command is for using its models.
"""

from __future__ import annotations

import argparse
import codecs
import sys

import torch

from scratchgpt.checkpoint import load_model
from scratchgpt.devices import pick_device
from scratchgpt.errors import ScratchGPTError, exit_on_error
from scratchgpt.generate import stream, text_to_token_ids
from scratchgpt.tokens import get_encoding


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _top_p(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchgpt",
        description="Use the GPT models that the DVC pipeline trains (run the pipeline with `dvc repro`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = commands.add_parser(
        "generate",
        help="continue a prompt, printing tokens as they are produced",
        description="Continue PROMPT with a trained model, printing the text as it is produced.",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="text to continue")
    gen.add_argument("--model", default="models/finetuned", help="model folder (default: %(default)s)")
    gen.add_argument("--max-new-tokens", type=_positive_int, default=100, help="tokens to add (default: %(default)s)")
    gen.add_argument("--temperature", type=_temperature, default=0.8, help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top-k", type=_positive_int, default=50, help="keep the k likeliest tokens (default: %(default)s)")
    gen.add_argument("--top-p", type=_top_p, default=0.95, help="keep the likeliest tokens up to this probability (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=None, help="fix the random draws for a repeatable output")
    gen.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="(default: %(default)s)")
    return parser


def generate_command(args: argparse.Namespace) -> None:
    device = pick_device(args.device, "--device")
    model, tokenizer = load_model(args.model, device)
    encoding = get_encoding(tokenizer.encoding)
    context = text_to_token_ids(args.prompt, encoding, device)
    if not 0 < context.size(1) <= model.config.context_length:
        raise ScratchGPTError(
            f"PROMPT is {context.size(1)} tokens; it needs 1 to {model.config.context_length} (the model's context)"
        )
    generator = torch.Generator(device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    # A token can end inside a multi-byte character: decode bytes incrementally.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(args.prompt)
    for token in stream(model, context, args.max_new_tokens, model.config.context_length,
                        args.temperature, args.top_k, args.top_p, generator, tokenizer.vocab_size):
        sys.stdout.write(decoder.decode(encoding.decode_single_token_bytes(int(token))))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_error():
        generate_command(args)
