"""The optimizers: which tensor Muon updates, one state dict for both, and a resume that ends
where an uninterrupted run would."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import MODERN_BLOCK
from scratchgpt import train as training
from scratchgpt.model import GPT
from scratchgpt.optimizers import MuonWithAdamW, make_optimizer, muon_parameters
from test_train import TINY, settings, windows


def names_of(model: GPT, tensors: list[torch.Tensor]) -> set[str]:
    return {name for name, p in model.named_parameters() if any(p is t for t in tensors)}


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(**TINY)
    optimizer = make_optimizer(model, settings(optimizer="muon", muon_lr=0.02, muon_weight_decay=0.01, weight_decay=0.1))
    assert isinstance(optimizer, MuonWithAdamW)
    muon_group, decayed, plain = optimizer.param_groups
    assert names_of(model, muon_group["params"]) == {
        f"blocks.0.{name}.weight" for name in ("attention.qkv", "attention.out", "feed_forward.up", "feed_forward.down")
    }
    assert muon_group["lr"] == muon_group["peak_lr"] == 0.02 and muon_group["weight_decay"] == 0.01
    assert names_of(model, decayed["params"]) == {"token_embedding.weight", "position_embedding.weight", "lm_head.weight"}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 1 for p in plain["params"])  # biases and LayerNorm gains
    every = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(every) == len(list(model.parameters())) == len({id(p) for p in every})  # each tensor once


def test_with_the_modern_block_muon_takes_the_same_matrices_and_adamw_has_no_vectors_left():
    model = GPT(**TINY, **MODERN_BLOCK)  # no biases, no norm gains, no position table
    muon_group, decayed, plain = make_optimizer(model, settings(optimizer="muon")).param_groups
    assert names_of(model, muon_group["params"]) == {
        f"blocks.0.{name}.weight" for name in ("attention.qkv", "attention.out", "feed_forward.up", "feed_forward.down")
    }
    assert names_of(model, decayed["params"]) == {"token_embedding.weight", "lm_head.weight"}
    assert plain["params"] == []  # an empty group, kept so that every run's optimizer has the same layout
    decayed, plain = make_optimizer(model, settings(optimizer="adamw")).param_groups
    assert len(decayed["params"]) == len(list(model.parameters())) and plain["params"] == []


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_modern_block_trains(tmp_path, optimizer):
    torch.manual_seed(0)
    model = GPT(**TINY, **MODERN_BLOCK)
    result = training.train(model, windows(tmp_path, "train"), windows(tmp_path, "val", seed=1),
                            settings(optimizer=optimizer, max_steps=6), "train")
    losses = [row["train_loss"] for row in result.history if "train_loss" in row]
    assert len(losses) == 6 and all(0 < loss < 2 * math.log(64) for loss in losses)
    assert model.blocks[0].attention.out.weight.any()  # the zero-initialised projections moved


def test_adamw_alone_updates_every_tensor():
    model = GPT(**TINY)
    optimizer = make_optimizer(model, settings(optimizer="adamw"))
    assert isinstance(optimizer, torch.optim.AdamW) and muon_parameters(model)  # there were matrices for Muon
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_the_schedule_scales_each_group_from_its_own_peak(tmp_path, monkeypatch):
    seen = []
    step = training.optimizer_step

    def spy(forward, model, optimizer, *args, **kwargs):
        loss = step(forward, model, optimizer, *args, **kwargs)
        seen.append([group["lr"] for group in optimizer.param_groups])
        return loss

    monkeypatch.setattr(training, "optimizer_step", spy)
    training.train(GPT(**TINY), windows(tmp_path, "train"), windows(tmp_path, "val", seed=1),
                   settings(optimizer="muon", muon_lr=0.02, max_lr=1.0e-3, min_lr=1.0e-4, max_steps=6), "train")
    for muon_lr, *adamw_lrs in seen:
        assert muon_lr == pytest.approx(20 * adamw_lrs[0]) and adamw_lrs == [adamw_lrs[0]] * 2
    assert seen[-1][1] == pytest.approx(1.0e-4)  # the cosine ends at min_lr


@pytest.mark.parametrize("optimizer, block", [("adamw", {}), ("muon", {}), ("muon", MODERN_BLOCK)],
                         ids=["adamw", "muon", "muon-modern"])
def test_a_run_stopped_after_a_saved_state_resumes_to_the_same_weights(tmp_path, monkeypatch, optimizer, block):
    step = training.optimizer_step

    def run(state_dir, crash_after: int | None = None) -> tuple[training.TrainResult, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = GPT(**TINY, **block)
        calls = []

        def crashing(*args, **kwargs):
            calls.append(1)
            if crash_after is not None and len(calls) > crash_after:
                raise RuntimeError("killed")
            return step(*args, **kwargs)

        monkeypatch.setattr(training, "optimizer_step", crashing)
        result = training.train(model, windows(tmp_path, "train"), windows(tmp_path, "val", seed=1),
                                settings(optimizer=optimizer, eval_freq=3, max_steps=10), "train", state_dir)
        return result, model.state_dict()

    straight, weights = run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "stopped", crash_after=7)  # states saved at steps 3 and 6
    resumed, resumed_weights = run(tmp_path / "stopped")
    assert resumed.history == straight.history
    for name, tensor in weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name


def test_the_combined_state_dict_round_trips():
    torch.manual_seed(0)
    model = GPT(**TINY)
    optimizer = make_optimizer(model, settings(optimizer="muon"))
    inputs = torch.randint(0, 64, (2, 8))
    model(inputs, targets=inputs).backward()
    optimizer.step()
    saved = optimizer.state_dict()
    assert sorted(saved["state"]) == list(range(len(list(model.parameters()))))
    other = make_optimizer(model, settings(optimizer="muon"))
    other.load_state_dict(saved)
    for mine, theirs in zip(optimizer.optimizers, other.optimizers):
        for p in mine.state:
            for key, value in mine.state[p].items():
                assert torch.equal(value, theirs.state[p][key])
