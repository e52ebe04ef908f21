"""params.yaml as typed, validated sections.

A stage calls `load("pretrain")` and gets exactly the sections that its `params:` list in
dvc.yaml declares, so a stage cannot read a knob that DVC does not know it depends on. Every
value is checked before any work starts; a bad one stops the stage with one line that names
the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scratchgpt.errors import ScratchGPTError

PARAMS_FILE = "params.yaml"
PIPELINE_FILE = "dvc.yaml"


class ParamsError(ScratchGPTError):
    """A missing, unknown or out-of-range value in params.yaml."""


def bad_value(key: str, value: object, allowed: str) -> ParamsError:
    """The one-line error for `key` holding `value` where `allowed` describes what fits.

    `key` is a params.yaml key (`train.seed`) or a command-line flag (`--seed`); only the
    first kind is said to come from params.yaml.
    """
    where = "" if key.startswith("-") else f"{PARAMS_FILE}: "
    return ParamsError(f"{where}{key} = {value!r}: {allowed}")


def _rule(test: typing.Callable[[Any], bool], allowed: str) -> Any:
    return field(metadata={"test": test, "allowed": allowed})


def positive() -> Any:
    return _rule(lambda v: v > 0, "must be > 0")


def non_negative() -> Any:
    return _rule(lambda v: v >= 0, "must be >= 0")


def fraction(*, closed_high: bool) -> Any:
    if closed_high:
        return _rule(lambda v: 0 < v <= 1, "must be in (0, 1]")
    return _rule(lambda v: 0 < v < 1, "must be in (0, 1)")


def non_empty() -> Any:
    return _rule(lambda v: len(v) > 0, "must not be empty")


MAX_SEED = 2**63 - 1  # torch's generators take 64 bits; the rest is headroom for seed + offset


def seed_range() -> Any:
    return _rule(lambda v: 0 <= v <= MAX_SEED, f"must be from 0 to {MAX_SEED} (2**63 - 1)")


# Past the model's context every new token re-runs the whole window (see `generate`): on a 2-core
# Xeon, 25 tokens/s for the default model against 219 with the KV cache. 4,096 tokens, some
# 3,000 words or 16 windows of the default model, take minutes on a CPU; 100,000 would take hours.
MAX_NEW_TOKENS = 4096


def new_tokens_range() -> Any:
    return _rule(lambda v: 0 < v <= MAX_NEW_TOKENS, f"must be from 1 to {MAX_NEW_TOKENS:,}: past the model's "
                 "context each token re-runs the whole window")


Device = Literal["auto", "cpu", "cuda", "mps"]
Activation = Literal["gelu", "gelu_tanh", "relu2"]  # model.ACTIVATIONS
Norm = Literal["layernorm", "rmsnorm"]  # model.NORMS
PositionEncoding = Literal["learned", "rope"]  # model.POSITION_ENCODINGS
Optimizer = Literal["adamw", "muon"]
Precision = Literal["auto", "fp32", "bf16"]
Quantize = Literal["none", "int8"]


@dataclass(frozen=True)
class SourceParams:
    source: str = non_empty()  # a Hugging Face dataset id or a local path
    revision: str | None  # hub revision; ignored for local paths
    max_docs: int | None = positive()  # cap per split for quick runs; None keeps all


@dataclass(frozen=True)
class DataParams:
    imdb: SourceParams


MAX_SPLIT_SEED = 2**48 - 1  # the seed goes into a 16-byte hash salt beside the word "validation"


@dataclass(frozen=True)
class DatasetParams(SourceParams):
    """One fine-tuning dataset: where its text comes from, and how much of it is held out."""

    val_fraction: float = fraction(closed_high=False)  # share of documents held out, by a hash of the text
    split_seed: int = _rule(lambda v: 0 <= v <= MAX_SPLIT_SEED, f"must be from 0 to {MAX_SPLIT_SEED} (2**48 - 1)")


@dataclass(frozen=True)
class CleanParams:
    val_fraction: float = fraction(closed_high=False)


@dataclass(frozen=True)
class TokenizeParams:
    encoding: str = non_empty()  # tiktoken's, used when vocab_size is None
    # A BPE of this many ids trained on the corpus: the 256 bytes, one merge or more, end-of-text.
    vocab_size: int | None = _rule(lambda v: 258 <= v <= 2**16, "must be from 258 to 65536 (ids stored as uint16)")
    shard_tokens: int = positive()


@dataclass(frozen=True)
class ModelParams:
    num_heads: int = positive()
    embed_dim: int = positive()
    attention_dim: int = positive()
    num_blocks: int = positive()
    context_length: int = positive()
    dropout_rate: float = _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")
    vocab_multiple: int = positive()
    tie_embeddings: bool
    activation: Activation
    qkv_bias: bool
    position_encoding: PositionEncoding
    norm: Norm
    qk_norm: bool
    bias: bool
    zero_init_projections: bool
    logit_softcap: float | None = positive()

    def check(self, section: str) -> None:
        if self.attention_dim % self.num_heads:
            raise bad_value(
                f"{section}.num_heads",
                self.num_heads,
                f"must divide {section}.attention_dim = {self.attention_dim}",
            )
        head_dim = self.attention_dim // self.num_heads
        if self.position_encoding == "rope" and head_dim % 2:
            raise bad_value(
                f"{section}.position_encoding",
                self.position_encoding,
                f"needs an even head size, not {section}.attention_dim / num_heads = {head_dim} "
                "(RoPE turns pairs of dimensions)",
            )


@dataclass(frozen=True)
class TrainParams:
    # GPT-2-format weights to start from (gpt2_weights.load_gpt2): a Hub id, best `id@<commit>`, or
    # a local folder; None starts from random weights (pretrain) or the pretrained model (finetune).
    init_from: str | None = non_empty()
    learning_rate: float = positive()
    weight_decay: float = non_negative()
    num_epochs: int = positive()
    batch_size: int = positive()
    warmup_steps: int = non_negative()
    max_lr: float | None = positive()
    min_lr: float = non_negative()
    beta1: float = _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")
    beta2: float = _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")
    optimizer: Optimizer  # muon: Muon on the blocks' weight matrices, AdamW on the rest
    muon_lr: float = positive()  # Muon's peak learning rate (the schedule scales it like AdamW's)
    muon_weight_decay: float = non_negative()
    eval_freq: int = positive()
    eval_batches: int = positive()
    gradient_clip: float = positive()
    patience: int = positive()
    max_steps: int | None = positive()
    seed: int = seed_range()
    device: Device
    precision: Precision
    compile: bool
    num_threads: int | None = positive()
    processes: int = positive()

    @property
    def peak_lr(self) -> float:
        """The rate warmup rises to: max_lr, or learning_rate where max_lr is null."""
        return self.learning_rate if self.max_lr is None else self.max_lr

    def check(self, section: str) -> None:
        if self.min_lr > self.peak_lr:
            peak = "max_lr" if self.max_lr is not None else "learning_rate"
            raise bad_value(f"{section}.min_lr", self.min_lr, f"must be <= {section}.{peak} = {self.peak_lr}")
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise bad_value(
                f"{section}.warmup_steps",
                self.warmup_steps,
                f"must be shorter than the run ({section}.max_steps = {self.max_steps})",
            )
        # Checked here, before torchrun starts the processes that would each fail on it.
        if self.batch_size % self.processes:
            raise bad_value(
                f"{section}.batch_size",
                self.batch_size,
                f"must split evenly over {section}.processes = {self.processes}",
            )


@dataclass(frozen=True)
class EvaluateParams:
    max_tokens: int = positive()
    batch_size: int = positive()
    device: Device
    precision: Precision
    num_threads: int | None = positive()


@dataclass(frozen=True)
class SampleParams:
    prompts: list[str] = non_empty()
    max_new_tokens: int = new_tokens_range()
    stop_at_end_of_text: bool  # end where the model ends the text (the tokenizer's end-of-text id)
    temperature: float = non_negative()
    top_k: int | None = positive()
    top_p: float = fraction(closed_high=True)
    repetition_penalty: float = positive()  # 1.0 = off; above 1 discourages tokens already in the text
    min_p: float = _rule(lambda v: 0 <= v <= 1, "must be in [0, 1]")  # 0 = off
    seed: int = seed_range()
    device: Device
    quantize: Quantize  # int8: the models' weights in 8 bits (CPU only; see quantize.py)


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "datasets": DatasetParams,  # named items, one per fine-tuning dataset (see ITEM_SECTIONS)
    "clean": CleanParams,
    "tokenize": TokenizeParams,
    "model": ModelParams,
    "train": TrainParams,
    "finetune": TrainParams,
    "evaluate": EvaluateParams,
    "sample": SampleParams,
}
# Sections that map names to items, each item the params of one `foreach` stage of dvc.yaml
# (`finetune@coldplay`), which declares only its own item: `datasets.${key}`.
ITEM_SECTIONS = ("datasets",)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader, but `3e-4` is a float as in YAML 1.2 (and in DVC's own parser)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing or malformed file is a one-line error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ScratchGPTError(f"{path}: file not found (run from the project root)") from e
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ScratchGPTError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from e


def _convert(kind: Any, value: object, key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return parse_section(kind, value, key)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise bad_value(key, value, f"must be one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise bad_value(key, value, "must be a list")
        return [_convert(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if kind is bool:
        if not isinstance(value, bool):
            raise bad_value(key, value, "must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_value(key, value, "must be a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad_value(key, value, "must be a number")
        if not math.isfinite(value):  # YAML's .inf and .nan: no knob means anything with them
            raise bad_value(key, value, "must be a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad_value(key, value, "must be a string")
        return value
    raise TypeError(f"unsupported params type {kind!r} for {key}")


def _field_value(cls: type, name: str, raw: object, key: str) -> Any:
    """`raw` converted to the type of `cls`'s field `name` and checked by its rule."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    value = _convert(typing.get_type_hints(cls)[name], raw, key)
    test = f.metadata.get("test")
    if test and value is not None and not test(value):
        raise bad_value(key, raw, f.metadata["allowed"])
    return value


def parse_flag(cls: type, name: str, text: str, flag: str) -> Any:
    """A command-line flag's `text`, read as YAML and checked by the rules of the params field
    `cls.name`, so a flag accepts exactly what its params.yaml key does; errors name `flag`."""
    try:
        raw = yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError:
        raw = text  # not a YAML scalar: the type check says what was expected
    return _field_value(cls, name, raw, flag)


def parse_section(cls: type, raw: object, section: str) -> Any:
    """Build the dataclass `cls` from the mapping `raw` found at `section` in params.yaml."""
    if not isinstance(raw, dict):
        raise bad_value(section, raw, "must be a mapping of keys")
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {section}.{close[0]}?" if close else f"; known: {', '.join(names)}"
            raise ParamsError(f"{PARAMS_FILE}: {section}.{key}: unknown key{hint}")
    values = {}
    for f in fields:
        key = f"{section}.{f.name}"
        if f.name not in raw:
            raise ParamsError(f"{PARAMS_FILE}: {key}: missing")
        values[f.name] = _field_value(cls, f.name, raw[f.name], key)
    parsed = cls(**values)
    if hasattr(parsed, "check"):
        parsed.check(section)
    return parsed


def declared_sections(stage: str, pipeline_file: str | Path = PIPELINE_FILE) -> list[str]:
    """The params that `stage` lists in dvc.yaml: whole sections, or `datasets.${key}`, the one
    item of an item section that a `foreach` stage reads."""
    stages = (read_yaml(pipeline_file) or {}).get("stages", {})
    if stage not in stages:
        raise ScratchGPTError(f"{pipeline_file}: no stage named {stage!r}")
    declared = stages[stage].get("do", stages[stage])  # a foreach stage declares in its `do`
    entries = declared.get("params", [])
    for entry in entries:
        if entry not in SECTIONS and not (entry.split(".")[0] in ITEM_SECTIONS and entry.endswith(".${key}")):
            raise ScratchGPTError(
                f"{pipeline_file}: stage {stage!r} declares params {entry!r}; "
                f"declare whole sections ({', '.join(SECTIONS)}) or one item (datasets.${{key}})"
            )
    return entries


def _item(raw: dict, section: str, item: str | None, params_file: str | Path) -> Any:
    """The parsed item `item` of the item section `section`; with no `item`, all of them by name."""
    items = raw[section]
    if not isinstance(items, dict):
        raise bad_value(section, items, "must be a mapping of names to items")
    if item is None:
        return {name: parse_section(SECTIONS[section], value, f"{section}.{name}") for name, value in items.items()}
    if item not in items:
        known = ", ".join(map(str, items)) or "none"
        raise ParamsError(f"{params_file}: {section}.{item}: missing (known: {known})")
    return parse_section(SECTIONS[section], items[item], f"{section}.{item}")


def load_sections(names: list[str], params_file: str | Path = PARAMS_FILE, item: str | None = None) -> types.SimpleNamespace:
    """Parse and validate the named params of params.yaml: sections, or the item `item` of an
    item section (named `datasets.${key}`; the namespace calls it `datasets`; with no `item`,
    `datasets` maps every name to its item)."""
    raw = read_yaml(params_file) or {}
    if not isinstance(raw, dict):
        raise ScratchGPTError(f"{params_file}: must be a mapping of sections")
    for name in raw:
        if name not in SECTIONS:
            close = difflib.get_close_matches(str(name), list(SECTIONS), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(SECTIONS)}"
            raise ParamsError(f"{params_file}: {name}: unknown section{hint}")
    sections = [name.split(".")[0] for name in names]
    missing = [name for name in sections if name not in raw]
    if missing:
        raise ParamsError(f"{params_file}: {missing[0]}: missing section")
    return types.SimpleNamespace(**{
        section: _item(raw, section, item, params_file) if section in ITEM_SECTIONS
        else parse_section(SECTIONS[section], raw[section], section)
        for section in sections
    })


def load(stage: str, item: str | None = None) -> types.SimpleNamespace:
    """The validated params that dvc.yaml declares for `stage`, and no others; for a `foreach`
    stage, `item` is its key (`coldplay` in `finetune@coldplay`)."""
    return load_sections(declared_sections(stage), item=item)
