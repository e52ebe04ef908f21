"""The `scratchgpt` command: talk to a trained model.

    scratchgpt generate --model models/finetuned/coldplay "lights go out"
    scratchgpt explore --model models/finetuned/coldplay --compare models/pretrained
    scratchgpt export --model models/finetuned/coldplay exported/

The pipeline itself runs through DVC (`dvc repro`); this command is for using its models.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from typing import NoReturn

import torch

from scratchgpt.saved_model import load_model
from scratchgpt.devices import pick_device
from scratchgpt.errors import ScratchGPTError, exit_on_error
from scratchgpt.explore.server import serve
from scratchgpt.export import export
from scratchgpt.generate import Sampling, stop_id, stream, text_to_token_ids
from scratchgpt.params import MAX_NEW_TOKENS, SampleParams, parse_flag
from scratchgpt.quantize import quantize
from scratchgpt.stage import remove_stale_states

DEFAULT_MODEL = "models/finetuned/coldplay"  # what `dvc repro` fine-tunes on the first dataset of params.yaml

# Flags that mirror a `sample` key of params.yaml: read and checked by the same rules.
SAMPLE_FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "stop_at_end_of_text": "--stop-at-end-of-text",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "repetition_penalty": "--repetition-penalty",
    "min_p": "--min-p",
    "seed": "--seed",
    "device": "--device",
    "quantize": "--quantize",
}
QUANTIZE_HELP = (
    "none, or int8: every linear layer's weights, the LM head's included, in 8 bits, for faster text on a CPU "
    "(only there): 2.3x to 2.9x the tokens/s of fp32 for the default model on a 2-core AMD EPYC Zen 5. The "
    "text differs slightly; the model folder stays full precision (docs/performance.md) (default: %(default)s)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scratchgpt",
        description="Use the GPT models that the DVC pipeline trains (run the pipeline with `dvc repro`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = commands.add_parser(
        "generate",
        help="continue a prompt, printing tokens as they are produced",
        description="Continue PROMPT with a trained model, printing the text as it is produced. "
        "The flags take what the same keys of params.yaml's `sample` section take.",
    )
    gen.add_argument("prompt", metavar="PROMPT", help="text to continue")
    gen.add_argument("--model", default=DEFAULT_MODEL, help="model folder (default: %(default)s)")
    gen.add_argument(
        "--max-new-tokens", default="100",
        help=f"tokens to add, 1 to {MAX_NEW_TOKENS:,} (default: %(default)s). Up to the model's context "
        "(256 tokens by default) each costs one position, thanks to the KV cache; past it, every token re-runs "
        "the whole window, as the article's generate does for every token: 25 tokens/s against 219 with the "
        "cache, for the default model on a 2-core Intel Xeon with AMX",
    )
    gen.add_argument("--stop-at-end-of-text", default="true", help="true: stop where the model ends the text, at "
                     "<|endoftext|> (training put it between documents), as Hugging Face's generate does; false: go on "
                     "past it, printing it, into another review or song (default: %(default)s)")
    gen.add_argument("--temperature", default="0.8", help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top-k", default="50", help="keep the k likeliest tokens; null = all (default: %(default)s)")
    gen.add_argument("--top-p", default="0.95", help="keep the likeliest tokens up to this probability (default: %(default)s)")
    gen.add_argument("--repetition-penalty", default="1.0", help="above 1, every token already in the text (prompt "
                     "included) is less likely: its logit divided by this if positive, multiplied if negative; "
                     "1 = off (default: %(default)s)")
    gen.add_argument("--min-p", default="0.0", help="keep only tokens at least this fraction as likely as the "
                     "likeliest; 0 = off (default: %(default)s)")
    gen.add_argument("--seed", default=None, help="fix the random draws for a repeatable output")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    gen.add_argument("--quantize", default="none", help=QUANTIZE_HELP)
    explore = commands.add_parser(
        "explore",
        help="a local page that shows what a model predicts and where it attends",
        description="Serve a page on this machine: type a prompt and watch the model continue it, each token "
        "coloured by its probability, with the candidates it weighed and its attention heads' weights.",
    )
    explore.add_argument("--model", default=DEFAULT_MODEL, help="model folder (default: %(default)s)")
    explore.add_argument("--compare", default=None, help="a second model folder: the same text's probabilities under both")
    explore.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    explore.add_argument("--port", default=8765, type=int, help="0 picks a free one (default: %(default)s)")
    explore.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    explore.add_argument("--quantize", default="none", help=QUANTIZE_HELP)
    exporter = commands.add_parser(
        "export",
        help="write a model as a folder that Hugging Face transformers reads",
        description="Write the model to the new folder OUT in GPT-2's layout (the article's block) or Qwen3's "
        "(the modern block; Llama's without QK-norm), which transformers' AutoModelForCausalLM.from_pretrained(OUT) "
        "and AutoTokenizer.from_pretrained(OUT) read, and which `hf upload` puts on the Hugging Face Hub "
        "(docs/models.md).",
    )
    exporter.add_argument("out", metavar="OUT", help="the folder to write; it must not exist")
    exporter.add_argument("--model", default=DEFAULT_MODEL, help="model folder (default: %(default)s)")
    return parser


def sample_settings(args: argparse.Namespace) -> dict[str, object]:
    """The sampling flags as values, each checked like its params.yaml key; an unset seed is None."""
    return {
        name: None if getattr(args, name) is None else parse_flag(SampleParams, name, getattr(args, name), flag)
        for name, flag in SAMPLE_FLAGS.items()
    }


def generate_command(args: argparse.Namespace) -> None:
    settings = sample_settings(args)
    device = pick_device(settings["device"], "--device")
    model, encoding = load_model(args.model, device)
    model = quantize(model, settings["quantize"], "--quantize")
    context = text_to_token_ids(args.prompt, encoding, device)
    if not 0 < context.size(1) <= model.config.context_length:
        raise ScratchGPTError(
            f"PROMPT is {context.size(1)} tokens; it needs 1 to {model.config.context_length} (the model's context)"
        )
    generator = torch.Generator(device)
    if settings["seed"] is None:
        generator.seed()
    else:
        generator.manual_seed(settings["seed"])
    # A token can end inside a multi-byte character: decode bytes incrementally.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(args.prompt)
    sampling = Sampling.of(settings)
    tokens = stream(model, context, max_new_tokens=settings["max_new_tokens"],
                    context_length=model.config.context_length, sampling=sampling, generator=generator,
                    stop_at=stop_id(encoding, settings["stop_at_end_of_text"]))
    for token in tokens:
        sys.stdout.write(decoder.decode(encoding.decode_single_token_bytes(int(token))))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")


def explore_command(args: argparse.Namespace) -> None:
    device = pick_device(parse_flag(SampleParams, "device", args.device, "--device"), "--device")
    quantization = parse_flag(SampleParams, "quantize", args.quantize, "--quantize")
    serve(args.model, args.compare, args.host, args.port, device, quantization)


def export_command(args: argparse.Namespace) -> None:
    export(args.model, args.out)
    print(f"wrote {args.out}: AutoModelForCausalLM.from_pretrained({args.out!r}) and "
          f"AutoTokenizer.from_pretrained({args.out!r}) read it")


COMMANDS = {"generate": generate_command, "explore": explore_command, "export": export_command}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with exit_on_error():
        if sys.stdout is None:  # started with stdout closed (`>&-`): Python then has no sys.stdout
            raise ScratchGPTError("standard output is closed; scratchgpt writes there: "
                                  "redirect it to a file or to /dev/null instead")
        # DVC may have restored a killed training run's stage from its run-cache, running none of
        # the stages that would remove its state: the next command does, on stderr (stdout is the text).
        remove_stale_states(lambda line: print(line, file=sys.stderr, flush=True), superseded=False)
        try:
            COMMANDS[args.command](args)
        except BrokenPipeError:
            # The reader stopped reading (`| head`): stop quietly, as other command-line tools
            # do; stdout goes to devnull so that Python's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
