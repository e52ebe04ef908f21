"""pretrain: train the article's GPT from scratch on IMDb tokens (params `model` and `train`)."""

import dataclasses
from pathlib import Path

import torch

from scratchgpt import distributed, params, training_state, stage
from scratchgpt.saved_model import Tokenizer, save_model
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.tokens import TokenShards, Windows
from scratchgpt.train import train


def main(tokens: Path, model_out: Path, metrics_out: Path) -> None:
    settings = params.load("pretrain")
    distributed.relaunch(settings.train.processes)
    train_split = TokenShards(tokens / "imdb", "train")
    val_split = TokenShards(tokens / "imdb", "val")
    vocab_size = train_split.meta["vocab_size"]
    config = GPTConfig(vocab_size=vocab_size, **dataclasses.asdict(settings.model))
    torch.manual_seed(settings.train.seed)  # the initial weights
    model = GPT(config)
    state = training_state.state_folder("pretrain")
    result = train(
        model,
        Windows(train_split, config.context_length),
        Windows(val_split, config.context_length),
        settings.train,
        "train",
        state,
        metrics_out,
    )
    if distributed.is_main():
        print(f"best validation loss {result.best_val_loss:.4f} at step {result.best_step} of {result.steps}")
        save_model(model, Tokenizer(train_split.encoding, vocab_size), model_out)
        training_state.clear(state)


if __name__ == "__main__":
    stage.run(main)
