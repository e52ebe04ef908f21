"""pretrain: train the seed's GPT from scratch on IMDb tokens (params `model` and `train`)."""

from pathlib import Path

import torch

from scratchgpt import distributed, params, resume, stage
from scratchgpt.checkpoint import Tokenizer, save_model
from scratchgpt.model import GPT
from scratchgpt.tokens import TokenShards, Windows
from scratchgpt.train import train


def main(tokens: Path, model_out: Path, metrics_out: Path) -> None:
    settings = params.load("pretrain")
    distributed.relaunch(settings.train.processes)
    shape = settings.model
    train_split = TokenShards(tokens / "imdb", "train")
    val_split = TokenShards(tokens / "imdb", "val")
    vocab_size = train_split.meta["vocab_size"]
    padded_vocab = -(-vocab_size // shape.vocab_multiple) * shape.vocab_multiple  # round up
    torch.manual_seed(settings.train.seed)  # the initial weights
    model = GPT(
        num_heads=shape.num_heads,
        vocab_size=padded_vocab,
        embed_dim=shape.embed_dim,
        attention_dim=shape.attention_dim,
        num_blocks=shape.num_blocks,
        context_length=shape.context_length,
        dropout_rate=shape.dropout_rate,
    )
    state = resume.state_folder("pretrain")
    result = train(
        model,
        Windows(train_split, shape.context_length),
        Windows(val_split, shape.context_length),
        settings.train,
        "train",
        state,
        metrics_out,
    )
    if distributed.is_main():
        print(f"best validation loss {result.best_val_loss:.4f} at step {result.best_step} of {result.steps}")
        save_model(model, Tokenizer(train_split.encoding, vocab_size), model_out)
        resume.clear(state)


if __name__ == "__main__":
    stage.run(main)
