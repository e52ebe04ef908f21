"""pretrain: train the article's GPT from scratch on IMDb tokens (params `model` and `train`)."""

import dataclasses
from pathlib import Path

import torch

from scratchgpt import distributed, params, training_state, stage
from scratchgpt.evaluation import token_byte_lengths
from scratchgpt.gpt2_weights import load_gpt2, require_gpt2_tokens
from scratchgpt.saved_model import save_model
from scratchgpt.model import GPT, GPTConfig
from scratchgpt.tokens import TokenShards, Windows
from scratchgpt.train import train


def main(tokens: Path, model_out: Path, metrics_out: Path) -> None:
    settings = params.load("pretrain")
    distributed.relaunch(settings.train.processes)
    train_split = TokenShards(tokens / "imdb", "train")
    val_split = TokenShards(tokens / "imdb", "val")
    encoding = train_split.load_encoding()
    torch.manual_seed(settings.train.seed)  # the initial weights
    if settings.train.init_from is None:
        model = GPT(GPTConfig(vocab_size=encoding.n_vocab, **dataclasses.asdict(settings.model)))
    else:  # GPT-2's weights, which read GPT-2's tokens
        require_gpt2_tokens(train_split, "train.init_from")
        model, encoding = load_gpt2(settings.train.init_from, "train.init_from", settings.model)
    config = model.config
    state = training_state.state_folder("pretrain")
    result = train(
        model,
        Windows(train_split, config.context_length),
        Windows(val_split, config.context_length),
        settings.train,
        "train",
        state,
        metrics_out,
        token_byte_lengths(encoding),
    )
    if distributed.is_main():
        print(f"best validation loss {result.best_val_loss:.4f} at step {result.best_step} of {result.steps}")
        save_model(model, encoding, model_out)
        training_state.clear(state)
    distributed.end_process()


if __name__ == "__main__":
    stage.run(main)
