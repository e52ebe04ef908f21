"""Shared fixtures: the real data in ../shared/data, offline settings, and tiny pipelines.

Tests never reach the network: tiktoken reads its BPE files from the shared cache and the
Hugging Face hub is switched to offline mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCRATCHGPT_SHARED_DATA", ROOT.parent / "shared" / "data"))
HAVE_SHARED_DATA = (SHARED_DATA / "imdb" / "train.parquet").exists()
if HAVE_SHARED_DATA:  # the real data and tokenizer files, offline (the build machines have no network)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# dvc runs each stage's `python` from PATH: make it this interpreter, even without an activated venv.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
    os.environ.setdefault(variable, "scratchgpt tests")
for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
    os.environ.setdefault(variable, "tests@scratchgpt.invalid")
DVC = [sys.executable, "-m", "dvc"]

# A pipeline small enough to run end to end in seconds, on a slice of the real data: the local
# copy in ../shared/data where there is one, else the Hugging Face datasets in params.yaml.
TINY_OVERRIDES = {
    "data": {
        "imdb": {"max_docs": 40, **({"source": str(SHARED_DATA / "imdb")} if HAVE_SHARED_DATA else {})},
    },
    "datasets": {
        artist: {"max_docs": 30, "val_fraction": 0.25,
                 **({"source": str(SHARED_DATA / "lyrics" / f"{artist}.txt")} if HAVE_SHARED_DATA else {})}
        for artist in ("coldplay", "nirvana")
    },
    "clean": {"val_fraction": 0.25},
    "tokenize": {"shard_tokens": 4096, "vocab_size": None},  # GPT-2's; test_pipeline trains one too
    "model": {"num_heads": 2, "embed_dim": 32, "attention_dim": 32, "num_blocks": 2,
              "context_length": 32, "dropout_rate": 0.1, "vocab_multiple": 64},
    "train": {"batch_size": 4, "warmup_steps": 2, "eval_freq": 3, "eval_batches": 2, "max_steps": 6,
              "num_threads": 1},
    "finetune": {"batch_size": 2, "warmup_steps": 1, "eval_freq": 2, "eval_batches": 2, "max_steps": 4,
                 "num_threads": 1},
    "evaluate": {"max_tokens": 512, "batch_size": 4, "num_threads": 1},
    "sample": {"max_new_tokens": 6},
}

# Every part of the modern block on, the soft cap too (params.yaml's defaults are these, less the
# cap); GPTConfig's defaults, and the values docs/recipe.md's line sets, are the article's block.
MODERN_BLOCK = {"position_encoding": "rope", "norm": "rmsnorm", "qk_norm": True, "activation": "relu2", "bias": False,
                "zero_init_projections": True, "logit_softcap": 15.0}
ARTICLE_BLOCK = {"position_encoding": "learned", "norm": "layernorm", "qk_norm": False, "activation": "gelu", "bias": True,
                 "zero_init_projections": False, "logit_softcap": None}


def requires_shared_data() -> None:
    if not HAVE_SHARED_DATA:
        pytest.skip(f"the shared data folder {SHARED_DATA} is not here")


def requires_data() -> None:
    """The real data: the shared local copy, or the hub when this machine may reach it."""
    if not HAVE_SHARED_DATA and os.environ.get("HF_HUB_OFFLINE") == "1":
        pytest.skip(f"no shared data folder at {SHARED_DATA} and the hub is offline")


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied key by key, nested mappings merged."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def tiny_params(**overrides: dict) -> dict:
    """The project's params.yaml shrunk to TINY_OVERRIDES, then `overrides` on top."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge(merge(params, TINY_OVERRIDES), overrides)


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh git + DVC repository holding a copy of the project with tiny params."""
    return make_project(tmp_path / "repo")


def make_project(repo: Path) -> Path:
    """Create `repo`: a git + DVC repository holding a copy of the project with tiny params."""
    requires_data()
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "src", ".gitignore"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    run(["git", "init", "-q"], repo)
    run([*DVC, "init", "-q"], repo)
    run([*DVC, "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny project"], repo)
    return repo


@pytest.fixture(scope="session")
def explore_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny GPT-2-vocabulary models with different random weights, saved as model folders
    named like the pipeline's (`scratchgpt explore` shows a folder's name)."""
    import torch

    from scratchgpt.model import GPT, GPTConfig
    from scratchgpt.encodings import get_encoding
    from scratchgpt.saved_model import save_model

    requires_shared_data()  # the gpt2 encoding, offline
    root = tmp_path_factory.mktemp("explore")
    folders = {}
    for seed, name in enumerate(("finetuned", "pretrained")):
        torch.manual_seed(seed)
        config = GPTConfig(vocab_size=50257, num_heads=2, embed_dim=32, attention_dim=32, num_blocks=2,
                           context_length=64, dropout_rate=0.0)
        save_model(GPT(config), get_encoding("gpt2"), root / name)
        folders[name] = root / name
    return folders


def ending_the_text(model, prompt_ids: list[int], end_of_text: int, after: int = 2) -> tuple:
    """A copy of `model` that, greedy from `prompt_ids`, ends the text after some new tokens, at
    least `after`; and those tokens. Its LM head's rows for `end_of_text` and for a token `model`
    chose swap: the first chosen after `after` that is new to the text, so what comes before it,
    which neither row won, stays the same."""
    import copy

    import torch

    from scratchgpt.generate import generate

    context = torch.tensor([prompt_ids])
    chosen = generate(model, context, 3 * after + 8, model.config.context_length)[0, len(prompt_ids):].tolist()
    ends = next(i for i, token in enumerate(chosen) if i >= after and token not in prompt_ids + chosen[:i])
    assert end_of_text not in chosen[:ends + 1], "the model itself ends the text: pick another prompt"
    ending = copy.deepcopy(model)
    with torch.no_grad():
        weight = ending.output_weight
        weight[[chosen[ends], end_of_text]] = weight[[end_of_text, chosen[ends]]]
    return ending, chosen[:ends]


# Real text, a tokenizer trained on it and random weights: what the exports are tested on.

@pytest.fixture(scope="session")
def texts() -> dict[str, list[str]]:
    """Real text as the project meets it: raw IMDb reviews (unicode, `<br />`), cleaned ones
    (newlines), Coldplay songs (read here, never committed), and a few awkward strings."""
    import pandas as pd

    from scratchgpt.encodings import END_OF_TEXT
    from scratchgpt.text import clean_documents

    requires_shared_data()
    raw = pd.read_parquet(SHARED_DATA / "imdb" / "train.parquet")["text"].iloc[::250].tolist()
    songs = (SHARED_DATA / "lyrics" / "coldplay.txt").read_text(encoding="utf-8").split("\n\n\n")
    awkward = ["naïve café – “quoted” 日本語 🎬\n\n\n  tabs\t\tand  spaces  ", "it's IT'S they'll 12345678",
               f"one review{END_OF_TEXT}the next", "\r\n  \n", " leading space", "trailing space "]
    assert any(not text.isascii() for text in raw) and any("\n" in song for song in songs)
    return {"raw": raw, "clean": clean_documents(raw), "lyrics": songs, "awkward": awkward}


@pytest.fixture(scope="session")
def trained(texts):
    """A BPE of 600 ids trained on `texts`, as the tokenize stage trains one."""
    from scratchgpt.encodings import train_bpe

    return train_bpe(texts["clean"] + texts["lyrics"], 600)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight and bias far from its initial value (zero-initialised projections included),
    so a tensor mapped wrongly (or a zero bias where there should be one) changes the logits by
    far more than the tolerance."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            is_norm_scale = ("ln_" in name or "norm" in name) and name.endswith("weight")
            parameter.copy_(1 + 0.3 * noise if is_norm_scale else 0.3 * noise)
    return model.eval()


def token_batch(encoding, texts: list[str], length: int) -> torch.Tensor:
    """The first `length` ids of each text that has that many, as one batch."""
    import torch

    from scratchgpt.encodings import END_OF_TEXT

    ids = [encoding.encode(text, allowed_special={END_OF_TEXT}) for text in texts]
    return torch.tensor([row[:length] for row in ids if len(row) >= length][:4])


def logit_gap(model, hf, encoding, texts: dict[str, list[str]]) -> float:
    """The largest difference between the logits of our `model` and of transformers' `hf` on 64
    tokens of a few IMDb reviews and songs, where ours are far from uniform (std above 1)."""
    import torch

    gaps = []
    for name in ("raw", "lyrics"):
        ids = token_batch(encoding, texts[name], 64)
        with torch.no_grad():
            ours, theirs = model(ids), hf(ids).logits
        assert ours.shape == theirs.shape == (len(ids), 64, encoding.n_vocab) and ours.std() > 1
        gaps.append((ours - theirs).abs().max().item())
    return max(gaps)
