"""evaluate: bits per byte, loss and perplexity of the pretrained model on IMDb's test split."""

from pathlib import Path

from scratchgpt import params, stage
from scratchgpt.evaluation import evaluate_models
from scratchgpt.outputs import atomic_file, write_json
from scratchgpt.tokens import TokenShards


def main(pretrained: Path, tokens: Path, out: Path) -> None:
    settings = params.load("evaluate").evaluate
    results = evaluate_models({"pretrained": pretrained}, {"pretrained": {"imdb_test": TokenShards(tokens / "imdb", "test")}}, settings)
    with atomic_file(out) as tmp:
        write_json(tmp, results)


if __name__ == "__main__":
    stage.run(main)
