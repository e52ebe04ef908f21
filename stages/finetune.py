"""finetune: continue from the pretrained weights on one fine-tuning dataset (params `finetune`)."""

from pathlib import Path

from scratchgpt import distributed, params, training_state, stage
from scratchgpt.evaluation import token_byte_lengths
from scratchgpt.gpt2_weights import load_gpt2, require_gpt2_tokens
from scratchgpt.saved_model import load_model, save_model
from scratchgpt.tokens import TokenShards, Windows
from scratchgpt.train import train


def main(dataset: str, pretrained: Path, tokens: Path, model_out: Path, metrics_out: Path) -> None:
    settings = params.load("finetune").finetune
    distributed.relaunch(settings.processes)
    train_split = TokenShards(tokens, "train")
    if settings.init_from is None:
        model, encoding = load_model(pretrained)
        train_split.require_encoding(encoding.name, pretrained)
    else:  # GPT-2's weights instead of the pretrained model's
        require_gpt2_tokens(train_split, "finetune.init_from")
        model, encoding = load_gpt2(settings.init_from, "finetune.init_from")
    context = model.config.context_length
    state = training_state.state_folder(f"finetune@{dataset}")
    result = train(
        model,
        Windows(train_split, context),
        Windows(TokenShards(tokens, "val"), context),
        settings,
        "finetune",
        state,
        metrics_out,
        token_byte_lengths(encoding),
    )
    if distributed.is_main():
        print(f"{dataset}: best validation loss {result.best_val_loss:.4f} at step {result.best_step} of {result.steps}")
        save_model(model, encoding, model_out)
        training_state.clear(state)
    distributed.end_process()


if __name__ == "__main__":
    stage.run(main)
