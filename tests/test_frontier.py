"""The frontier picture: drawn from the sweep's rows, which come from `dvc exp show --json`."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys

import pytest
from conftest import ROOT
from scratchgpt.model import GPTConfig

sys.path.insert(0, str(ROOT / "scripts"))
import frontier  # noqa: E402

SHAPE = dict(num_blocks=6, embed_dim=192, attention_dim=192, num_heads=6, context_length=256)


def experiment(name: str, steps: int, bpb: float, peak_lr: float = 2.0e-3) -> dict:
    """One experiment as `dvc exp show --json` lists it."""
    params = {"tokenize": {"vocab_size": 32768},
              "model": SHAPE,
              "train": {"batch_size": 8, "optimizer": "adamw", "learning_rate": peak_lr, "max_lr": None}}
    metrics = {"steps": steps, "tokens_seen": steps * 8 * 256, "best_val_bpb": bpb}
    data = {"params": {"params.yaml": {"data": params}}, "metrics": {"metrics/train/metrics.json": {"data": metrics}}}
    return {"revs": [{"name": name, "data": data, "error": None}]}


def test_collect_keeps_sweep_experiments_and_turns_steps_into_minutes():
    shown = [{"experiments": [experiment("short-6x192", 432, 1.9512), experiment("default-6x192", 1300, 1.80),
                              experiment("my-idea", 10, 3.0)]}]  # not a sweep experiment: left out
    step_seconds = {frontier.recipe_key(SHAPE | {"batch_size": 8, "vocab_size": 32768, "optimizer": "adamw"}): 0.5}
    rows = [frontier.run_row(name, data, step_seconds) for name, data in frontier.sweep_experiments(shown)]
    assert [row["name"] for row in rows] == ["short-6x192", "default-6x192"]
    assert rows[0]["minutes"] == 3.6 and rows[0]["tokens"] == 432 * 2048 and rows[0]["budget"] == "short"
    assert rows[0]["recipe"] == "6 x 192, 32k vocab"


def test_a_block_option_is_its_own_recipe_and_old_step_times_are_the_articles_block():
    recipe = SHAPE | {"batch_size": 8, "vocab_size": 32768, "optimizer": "adamw"}
    old, modern = frontier.recipe_key(recipe), frontier.recipe_key(recipe | {"position_encoding": "rope"})
    assert old != modern  # the modern block's step time never stands in for the article's
    assert old == frontier.recipe_key(recipe | {"norm": "layernorm", "logit_softcap": None})  # defaults spelled out
    defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
    assert frontier.BLOCK_KEYS == {key: defaults[key] for key in frontier.BLOCK_KEYS}


def test_collect_refuses_a_recipe_whose_step_time_was_not_measured():
    (name, data), = frontier.sweep_experiments([{"experiments": [experiment("short-6x192", 432, 1.95)]}])
    with pytest.raises(SystemExit, match="short-6x192: no measured step time"):
        frontier.run_row(name, data, {})


def test_draws_the_same_picture_twice_from_the_rows(tmp_path):
    runs = [{"name": f"{budget}-{shape}-{lr}", "budget": budget, "shape": shape, "recipe": f"{shape}, 32k vocab",
             "minutes": minutes, "tokens": minutes * 4000, "best_val_bpb": bpb, "peak_lr": lr}
            for budget, minutes, shape, bpb, lr in [
                ("short", 3, "8 x 256", 1.99, 1e-3), ("default", 9, "8 x 256", 1.85, 1e-3),
                ("short", 3, "6 x 192", 1.95, 2e-3), ("short", 3, "6 x 192", 1.97, 3e-3),
                ("default", 9, "6 x 192", 1.80, 2e-3)]]
    (tmp_path / "runs.json").write_text(json.dumps({"cpu": "a test CPU", "runs": runs}))
    for out in ("a.png", "b.png"):
        subprocess.run([sys.executable, str(ROOT / "scripts/frontier.py"), "draw", "--runs", str(tmp_path / "runs.json"),
                        "--out", str(tmp_path / out)], check=True, capture_output=True)
    image = (tmp_path / "a.png").read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", image[16:24])
    assert width > 1500 and height > 600  # two 400 x 300 panels at 2 pixels per point
    assert image == (tmp_path / "b.png").read_bytes()
    # Each recipe's line goes through its best learning rate at each budget.
    points = frontier.best_per_budget(runs)
    assert sorted((p["recipe"], p["budget"], p["peak_lr"]) for p in points) == [
        ("6 x 192, 32k vocab", "default", 2e-3), ("6 x 192, 32k vocab", "short", 2e-3),
        ("8 x 256, 32k vocab", "default", 1e-3), ("8 x 256, 32k vocab", "short", 1e-3)]


def test_the_docs_show_the_committed_frontier():
    assert "(plots/frontier.png)" in (ROOT / "docs/recipe.md").read_text()
    assert (ROOT / "docs/plots/frontier.png").exists()
    rows = json.loads((ROOT / "metrics/sweep/runs.json").read_text())["runs"]
    assert {row["budget"] for row in rows} >= {"short", "default"}


def test_the_block_record_becomes_rows_with_the_articles_block_dashed(tmp_path):
    record = {"shape": SHAPE, "vocab_size": 32768, "train": {"batch_size": 8, "learning_rate": 2.0e-3, "max_lr": None, "muon_lr": 0.02},
              "runs": [{"name": "short-base", "model": {}, "optimizer": "adamw", "steps": 500, "best_val_bpb": 1.9},
                       {"name": "short-modern-muon", "model": {"position_encoding": "rope", "norm": "rmsnorm"},
                        "optimizer": "muon", "train": {"muon_lr": 0.04}, "steps": 400, "best_val_bpb": 1.8}]}
    recipe = SHAPE | {"batch_size": 8, "vocab_size": 32768}
    step_times = {"cpu": "a test CPU", "recipes": [recipe | {"optimizer": "adamw", "seconds": 0.6},
                                                   recipe | {"optimizer": "muon", "position_encoding": "rope",
                                                             "norm": "rmsnorm", "seconds": 0.75}]}
    (tmp_path / "record.json").write_text(json.dumps(record))
    (tmp_path / "steps.json").write_text(json.dumps(step_times))
    rows = frontier.collect_blocks(tmp_path / "steps.json", tmp_path / "record.json", tmp_path / "rows.json")
    base, muon = rows
    assert (base["minutes"], muon["minutes"]) == (5.0, 5.0) and muon["tokens"] == 400 * 2048
    assert (base["block"], muon["block"]) == ("", "RoPE, RMSNorm") and muon["recipe"] == "6 x 192, 32k vocab, RoPE, RMSNorm, Muon"
    assert muon["peak_lr"] == 0.04  # a Muon run's rate is Muon's
    spec = frontier.frontier_spec(json.loads((tmp_path / "rows.json").read_text()))
    assert {point["name"]: point["article"] for point in spec["data"]["values"]} == {"short-base": True, "short-modern-muon": False}
    assert "the article's block dashed" in spec["title"]["subtitle"][1]
    del step_times["recipes"][1]
    (tmp_path / "steps.json").write_text(json.dumps(step_times))
    with pytest.raises(SystemExit, match="short-modern-muon: no measured step time"):
        frontier.collect_blocks(tmp_path / "steps.json", tmp_path / "record.json", tmp_path / "rows.json")


def test_the_committed_block_rows_are_the_records_with_the_committed_step_times(tmp_path):
    sweep = ROOT / "metrics/sweep"
    rows = frontier.collect_blocks(sweep / "step_times_block.json", sweep / "modern_block.json", tmp_path / "rows.json")
    assert (tmp_path / "rows.json").read_text() == (sweep / "runs_block.json").read_text()
    assert {row["budget"] for row in rows} == {"short", "default", "hour"}
    assert "(docs/plots/frontier_block.png)" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs/plots/frontier_block.png").exists()


def test_a_label_names_what_a_modern_block_leaves_out():
    modern = dict(frontier.MODERN_PARTS.keys())  # each part at its modern value
    assert frontier.block_label(modern) == ", modern block"
    assert frontier.block_label(modern | {"position_encoding": "learned", "bias": True}) == ", modern block without RoPE, with biases"
    assert frontier.block_label(modern | {"logit_softcap": 15.0}) == ", modern block, soft cap 15"
    assert frontier.block_label({"activation": "relu2"}) == ", ReLU^2"
