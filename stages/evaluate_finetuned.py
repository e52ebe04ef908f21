"""evaluate_finetuned: what fine-tuning on one dataset bought and what it cost.

Both models on every held-out token of the dataset (`val`: the yardstick of fine-tuning, its
size in bytes beside it), and the fine-tuned model on IMDb's test split (what it forgot; the
pretrained model's own figure is in metrics/evaluate.json).
"""

from pathlib import Path

from scratchgpt import params, stage
from scratchgpt.evaluation import evaluate_models
from scratchgpt.outputs import atomic_file, write_json
from scratchgpt.tokens import TokenShards


def main(pretrained: Path, finetuned: Path, pretraining_tokens: Path, tokens: Path, out: Path) -> None:
    settings = params.load("evaluate_finetuned").evaluate
    held_out = TokenShards(tokens, "val")
    splits = {
        "pretrained": {"val": held_out},
        "finetuned": {"val": held_out, "imdb_test": TokenShards(pretraining_tokens / "imdb", "test")},
    }
    with atomic_file(out) as tmp:
        write_json(tmp, evaluate_models({"pretrained": pretrained, "finetuned": finetuned}, splits, settings))


if __name__ == "__main__":
    stage.run(main)
