"""The training loop: schedule, early stopping, best weights, and saving them exactly."""

from __future__ import annotations

import json
import math
import re
import pickle

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from scratchgpt import train as training
from scratchgpt.encodings import get_encoding
from scratchgpt.saved_model import load_model, save_model
from scratchgpt.errors import ScratchGPTError
from scratchgpt.evaluation import Score
from scratchgpt.model import GPT
from scratchgpt.params import ParamsError, TrainParams, parse_section
from scratchgpt.tokens import TokenShards, Windows

TINY = dict(num_heads=2, vocab_size=64, embed_dim=16, attention_dim=16, num_blocks=1, context_length=8, dropout_rate=0.0)


def settings(**changes) -> TrainParams:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    raw.update(dict(batch_size=2, warmup_steps=2, eval_freq=2, eval_batches=1, max_steps=10,
                    num_threads=1, device="cpu", precision="fp32"))
    raw.update(changes)
    return parse_section(TrainParams, raw, "train")


def windows(tmp_path, split: str, length: int = 400, seed: int = 0) -> Windows:
    folder = tmp_path / "tokens"
    folder.mkdir(exist_ok=True)
    ids = np.random.default_rng(seed).integers(0, 64, length).astype(np.uint16)
    np.save(folder / f"{split}-000.npy", ids)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {
        "encoding": "test", "vocab_size": 64, "eot_token": 63, "dtype": "uint16", "splits": {}}
    meta["splits"][split] = {"documents": 1, "tokens": length, "shards": [f"{split}-000.npy"]}
    meta_path.write_text(json.dumps(meta))
    return Windows(TokenShards(folder, split), TINY["context_length"])


def test_learning_rate_schedule():
    s = settings(learning_rate=1.0e-4, max_lr=1.0e-3, min_lr=1.0e-5, warmup_steps=9, max_steps=None)
    warmup = [training.learning_rate_at(step, 100, s) for step in range(9)]
    assert warmup[0] == pytest.approx(1.0e-4)  # a tenth of the way up from 0
    assert warmup == sorted(warmup) and warmup[-1] == pytest.approx(9.0e-4)  # a straight line up
    assert training.learning_rate_at(9, 100, s) == pytest.approx(1.0e-3)  # warmup end: the peak
    assert training.learning_rate_at(99, 100, s) == pytest.approx(1.0e-5)  # last step: the floor
    middle = training.learning_rate_at(round(9 + 90 / 2), 100, s)
    assert 1.0e-5 < middle < 1.0e-3


def test_the_articles_warmup_rises_from_zero():
    """The article sets learning_rate = max_lr and says warmup goes "from 0 to maximum"."""
    article = settings(learning_rate=3.0e-4, max_lr=3.0e-4, warmup_steps=1500, max_steps=None, num_epochs=300)
    assert training.learning_rate_at(0, 10_000, article) < 1.0e-6
    assert training.learning_rate_at(750, 10_000, article) == pytest.approx(1.5e-4, rel=1e-3)  # halfway
    assert training.learning_rate_at(1500, 10_000, article) == pytest.approx(3.0e-4)


def test_a_null_max_lr_peaks_at_learning_rate():
    s = settings(learning_rate=2.0e-4, max_lr=None, min_lr=0.0, warmup_steps=3)
    assert training.learning_rate_at(3, 10, s) == pytest.approx(2.0e-4)
    assert training.make_optimizer(GPT(**TINY), s).param_groups[0]["lr"] == pytest.approx(2.0e-4)


def test_weight_decay_only_on_matrices():
    optimizer = training.make_optimizer(GPT(**TINY), settings(weight_decay=0.1))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])


def scripted_validation(monkeypatch, losses: list[float]) -> list[dict]:
    """Make validation return `losses` in turn; return the weights seen at each evaluation."""
    snapshots = []

    def fake(model, *args):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return Score(nats=losses[len(snapshots) - 1], tokens=1, bytes=0)

    monkeypatch.setattr(training, "score", fake)
    return snapshots


def test_early_stopping_keeps_the_best_weights(tmp_path, monkeypatch):
    snapshots = scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    torch.manual_seed(0)
    model = GPT(**TINY)
    result = training.train(model, windows(tmp_path, "train"), windows(tmp_path, "val", seed=1),
                            settings(patience=2, max_steps=12), "train")
    assert result.stopped_early and result.steps == 8  # evaluations at 2, 4 (best), 6, 8: two without a best
    assert result.best_step == 4 and result.best_val_loss == 2.0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[1][name])
    assert [row["step"] for row in result.history if "val_loss" in row] == [2, 4, 6, 8]


def test_training_lowers_the_loss_and_logs_every_step(tmp_path):
    torch.manual_seed(0)
    result = training.train(GPT(**TINY), windows(tmp_path, "train", length=50), windows(tmp_path, "val", seed=1),
                            settings(max_lr=1.0e-2, learning_rate=1.0e-2, max_steps=None, num_epochs=40, patience=1000), "train")
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == result.steps == 40 * (6 // 2)  # 49 tokens: 6 windows of 8, 3 steps an epoch
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    assert result.tokens_seen == result.steps * 2 * 8


def test_losses_read_at_evaluations_only_give_the_same_run(tmp_path, monkeypatch):
    """The GPU path reads losses back only at evaluations; the history and weights are the same."""
    def run() -> tuple[training.TrainResult, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = GPT(**TINY)
        result = training.train(model, windows(tmp_path, "train"), windows(tmp_path, "val", seed=1),
                                settings(eval_freq=3, max_steps=10), "train")
        return result, model.state_dict()

    every_step, weights = run()
    monkeypatch.setattr(training, "reads_losses_every_step", lambda runtime: False)
    deferred, deferred_weights = run()
    assert deferred.history == every_step.history and len(deferred.history) == 10
    for name, tensor in weights.items():
        assert torch.equal(tensor, deferred_weights[name])


def test_an_exploding_loss_warns_once(capsys):
    readout = training.LossReadout("finetune", vocab_size=64)  # an untrained model's loss: ln 64 = 4.2
    for step, loss in enumerate([4.0, 9.0, 2604.0], start=1):
        readout.add({"step": step}, torch.tensor(loss))
    rows = readout.read(torch.device("cpu"))
    assert [row["train_loss"] for row in rows] == [4.0, 9.0, 2604.0]
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert re.match(r"warning: finetune: the training loss is 9.0 at step 2, above 8.3 .*lower finetune.max_lr", warning)


def test_warmup_longer_than_the_run_is_refused(tmp_path):
    with pytest.raises(ParamsError, match=r"train.warmup_steps = 30: must be shorter than the run \(9 steps: 1 epoch\(s\) of 9 steps\)"):
        training.train(GPT(**TINY), windows(tmp_path, "train"), windows(tmp_path, "val"),
                       settings(warmup_steps=30, max_steps=None, num_epochs=1, batch_size=5), "train")


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    model = GPT(**TINY)
    with torch.no_grad():
        model.lm_head.weight.fill_(math.inf)
    with pytest.raises(ScratchGPTError, match="the loss became nan at step 1; lower train.max_lr"):
        training.train(model, windows(tmp_path, "train"), windows(tmp_path, "val"), settings(), "train")


@pytest.mark.parametrize("tied", [False, True])
def test_save_and_load_round_trip_exactly(tmp_path, tied):
    torch.manual_seed(0)
    model = GPT(**{**TINY, "vocab_size": 50257}, tie_embeddings=tied)
    save_model(model, get_encoding("gpt2"), tmp_path / "model")
    loaded, encoding = load_model(tmp_path / "model")
    assert encoding.name == "gpt2" and loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_missing_or_corrupted_weights_are_refused(tmp_path):
    folder = tmp_path / "model"
    save_model(GPT(**{**TINY, "vocab_size": 50257}), get_encoding("gpt2"), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ScratchGPTError, match="model.safetensors: corrupted"):
        load_model(folder)
    weights.unlink()
    with pytest.raises(ScratchGPTError, match="model.safetensors: not found"):
        load_model(folder)


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('pickle ran')",))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "model"
    save_model(GPT(**{**TINY, "vocab_size": 50257}), get_encoding("gpt2"), folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": _Exploit()}))
    with pytest.raises(ScratchGPTError, match="model.safetensors: corrupted or not a safetensors file"):
        load_model(folder)
    assert not (tmp_path / "PWNED").exists()

