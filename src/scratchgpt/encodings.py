"""Tokenizers: a tiktoken encoding by name (GPT-2's), or a byte-level BPE trained on the corpus.

A trained BPE is saved without pickle, in the form tiktoken itself loads: `tokenizer.tiktoken`
holds the mergeable ranks (one `base64(token) rank` line per token, the format of tiktoken's
`load_tiktoken_bpe`) and `tokenizer.json` the encoding's name, split pattern and special
tokens. The tokenize stage writes the pair into `data/tokens/`, and every model folder carries
a copy, so a model never needs more than its own folder to read and write text.

Training uses rustbpe, the trainer of Karpathy's nanochat: it counts pairs in parallel in Rust
and exports tiktoken's mergeable ranks directly, so tiktoken does all the encoding. On the
cleaned IMDb and lyrics training text (88 MB) it trains 32,768 ids in about 10 s on 2 cores,
the same bytes every run; Hugging Face `tokenizers` took 32 s and needs its byte-to-unicode
alphabet translated back (README, "Tokenizer").

For a model exported to Hugging Face's format, `hugging_face_tokenizer` translates any of these
encodings the other way, into a `tokenizer.json` that gives the same ids.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import rustbpe
import tiktoken

from scratchgpt.errors import ScratchGPTError, reason
from scratchgpt.outputs import write_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

RANKS_FILE = "tokenizer.tiktoken"
SPEC_FILE = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"


def get_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's built-in encoding `name`, with a one-line error if it is unknown or cannot load."""
    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        raise ScratchGPTError(
            f"tiktoken encoding {name!r} is unknown (known: {', '.join(tiktoken.list_encoding_names())})"
        ) from e
    except Exception as e:  # its first use downloads the BPE files
        raise ScratchGPTError(
            f"tiktoken encoding {name!r} could not be loaded ({reason(e)}); without "
            "network access set TIKTOKEN_CACHE_DIR to a folder holding its files"
        ) from e


def is_trained(encoding: tiktoken.Encoding) -> bool:
    """Whether `encoding` was trained here (and must travel with the model) or is tiktoken's own."""
    return encoding.name not in tiktoken.list_encoding_names()


def train_bpe(texts: Iterable[str], vocab_size: int) -> tiktoken.Encoding:
    """A byte-level BPE of `vocab_size` ids in all, trained on `texts`: the 256 bytes, the merges
    most frequent in the text, and end-of-text as the last id.

    Text is first split with GPT-4's pattern (words, numbers of up to three digits,
    punctuation, spaces), so no token crosses a word boundary.
    """
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - 1)  # the last id is end-of-text
    ranks = dict(trainer.get_mergeable_ranks())
    pattern = trainer.get_pattern()
    return tiktoken.Encoding(
        name=_name(pattern, ranks), pat_str=pattern, mergeable_ranks=ranks, special_tokens={END_OF_TEXT: len(ranks)}
    )


def _ranks_text(ranks: dict[bytes, int]) -> bytes:
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in sorted(ranks.items(), key=lambda x: x[1]))


def _name(pattern: str, ranks: dict[bytes, int]) -> str:
    """`bpe<ids>-<hash of pattern and ranks>`: tokens of two different trainings never mix, and a
    damaged ranks file no longer matches its name."""
    digest = hashlib.sha256(pattern.encode() + _ranks_text(ranks)).hexdigest()[:12]
    return f"bpe{len(ranks) + 1}-{digest}"


def save_encoding(encoding: tiktoken.Encoding, folder: Path) -> None:
    """Write a trained encoding's two files into `folder` (inside the caller's atomic write)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RANKS_FILE).write_bytes(_ranks_text(encoding._mergeable_ranks))
    write_json(folder / SPEC_FILE, {"name": encoding.name, "pattern": encoding._pat_str,
                                    "special_tokens": encoding._special_tokens})


def load_encoding(name: str, folder: str | Path) -> tiktoken.Encoding:
    """The encoding `name`: trained, from the files in `folder`; else tiktoken's built-in."""
    folder = Path(folder)
    if not (folder / SPEC_FILE).exists():
        if name.startswith("bpe"):
            raise ScratchGPTError(f"{folder / SPEC_FILE}: not found; the trained tokenizer {name!r} travels in this file")
        return get_encoding(name)
    try:
        spec = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
        ranks = {}
        for line in (folder / RANKS_FILE).read_bytes().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        pattern, special_tokens = spec["pattern"], spec["special_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: bad JSON, base64 or rank
        raise ScratchGPTError(f"{folder}: not a readable trained tokenizer ({reason(e)})") from e
    if spec["name"] != name:
        raise ScratchGPTError(f"{folder / SPEC_FILE}: holds tokenizer {spec['name']!r}, expected {name!r}")
    if _name(pattern, ranks) != name:
        raise ScratchGPTError(f"{folder / RANKS_FILE}: damaged (its ranks no longer match the tokenizer {name!r})")
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens)


def hugging_face_tokenizer(encoding: tiktoken.Encoding, context_length: int) -> PreTrainedTokenizerFast:
    """`encoding` as a Hugging Face fast tokenizer that gives the same ids for every text (its
    `save_pretrained` writes `tokenizer.json` and `tokenizer_config.json`).

    transformers' own `TikTokenConverter` does the translation, the one it uses for tiktoken-format
    models such as Llama 3: it rebuilds the merge list from tiktoken's ranks, splits text with the
    encoding's own pattern (the trained BPE's GPT-4-style one, or GPT-2's) and maps bytes to
    `tokenizers`' byte-level alphabet. That beat writing tokenizer.json by hand, which would have to
    follow a format the library owns, and GPT-2's vocab.json and merges.txt, which hold GPT-2's
    pattern only. The converter reads ranks from a file; here it is handed the encoding's ranks.

    `<|endoftext|>` is a special token, written in text as itself, as `text_to_token_ids` reads it;
    it is also the beginning- and end-of-text token, as in GPT-2.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class RanksConverter(TikTokenConverter):
        def load_tiktoken_bpe(self, _file: str) -> dict[bytes, int]:
            return encoding._mergeable_ranks

    converted = RanksConverter(pattern=encoding._pat_str, extra_special_tokens=list(encoding._special_tokens)).converted()
    for token, id in encoding._special_tokens.items():  # the converter numbers them on from the ranks
        if converted.token_to_id(token) != id:
            raise ScratchGPTError(f"tokenizer {encoding.name!r}: {token} is id {id}, which a tokenizer.json cannot "
                                  "give it (special tokens must follow the ranks without gaps)")
    return PreTrainedTokenizerFast(
        tokenizer_object=converted, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, model_max_length=context_length
    )
