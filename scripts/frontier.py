"""The frontier: what each training budget buys, drawn from the shape sweep's own experiments.

    python bench/recipe_step_time.py --json metrics/sweep/step_times.json   # seconds a step, per recipe
    python scripts/frontier.py collect [--rev COMMIT ...]   # dvc exp show --json -> metrics/sweep/runs.json
    python scripts/frontier.py draw           # metrics/sweep/runs.json -> docs/plots/frontier.png
    python scripts/frontier.py table          # the same rows as docs/recipe.md's markdown table

    # the modern block against the article's, on the CPU its runs were made on:
    python bench/recipe_step_time.py --only "4x192, 32k, b8" --rounds 7 --json metrics/sweep/step_times_block.json
    python scripts/frontier.py blocks --step-times metrics/sweep/step_times_block.json --runs metrics/sweep/runs_block.json
    python scripts/frontier.py draw --runs metrics/sweep/runs_block.json --out docs/plots/frontier_block.png

`collect` reads every experiment of the sweep (names starting with `short-`, `default-` or
`hour-`, one per budget) from `dvc exp show --json`: its model shape, vocabulary, batch, peak
learning rate and steps from the params it ran with, its best IMDb validation bits per byte and
tokens from its metrics. Its minutes are its steps times its recipe's measured seconds a step
(the bench's file, which names the CPU): the time the training steps take alone on that CPU,
evaluations excluded. Both files are committed, so `draw` needs no experiments and a clone can
redraw the picture. The same rows give the same bytes.

`blocks` makes the same rows from the block comparison's record, metrics/sweep/modern_block.json
(one shape and vocabulary; each run's block, optimizer, steps and best bits per byte, copied from
its experiments, which were not kept), with step times measured on the CPU those runs were made on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import vl_convert
import yaml

from scratchgpt.model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "metrics" / "sweep"
BUDGETS = ("short", "default", "hour")  # experiment-name prefixes, shortest budget first
ARTICLE_SHAPE = "8 x 256"
WIDTH, HEIGHT, SCALE = 400, 300, 2


STEP_TIME_KEYS = ("num_blocks", "embed_dim", "attention_dim", "num_heads", "context_length", "batch_size",
                  "vocab_size", "optimizer")  # what a step's time depends on
# ... and the block's `model` keys, at the article's values (GPTConfig's defaults) where a step
# time or an experiment predates them.
BLOCK_KEYS = {field.name: field.default for field in dataclasses.fields(GPTConfig) if field.name in (
    "activation", "qkv_bias", "position_encoding", "norm", "qk_norm", "bias", "zero_init_projections", "logit_softcap")}
# The modern block's parts (the soft cap apart), each with the name a label gives it.
MODERN_PARTS = {("position_encoding", "rope"): "RoPE", ("norm", "rmsnorm"): "RMSNorm", ("qk_norm", True): "QK-norm",
                ("activation", "relu2"): "ReLU^2", ("bias", False): "no biases", ("zero_init_projections", True): "zero-init"}


def recipe_key(recipe: dict[str, Any]) -> tuple:
    return (*(recipe[key] for key in STEP_TIME_KEYS), *(recipe.get(key, value) for key, value in BLOCK_KEYS.items()))


def block_label(model: dict[str, Any]) -> str:
    """The block's part of a label: nothing for the article's, "modern block" for every modern part,
    and which parts are left out or added otherwise."""
    present = [name for (key, value), name in MODERN_PARTS.items() if model.get(key, BLOCK_KEYS[key]) == value]
    # A part left out: "without RoPE", but "with biases" rather than "without no biases".
    missing = [f"with {name.removeprefix('no ')}" if name.startswith("no ") else f"without {name}"
               for name in MODERN_PARTS.values() if name not in present]
    cap = model.get("logit_softcap")
    if len(present) * 2 > len(MODERN_PARTS):
        label = ", modern block" + (f" {', '.join(missing)}" if missing else "")
    else:
        label = "".join(f", {name}" for name in present)
    return label + (f", soft cap {cap:g}" if cap else "")


def recipe_label(model: dict[str, Any], train: dict[str, Any], vocab_size: int) -> str:
    """A recipe's name in the picture: its shape and vocabulary, batch or context where they are
    not the sweep's usual 8 x 256, the block where it is not the article's, and Muon."""
    return (f"{model['num_blocks']} x {model['embed_dim']}, {round(vocab_size / 1024)}k vocab"
            + (f", batch {train['batch_size']}" if train["batch_size"] != 8 else "")
            + (f", context {model['context_length']}" if model["context_length"] != 256 else "")
            + block_label(model) + (", Muon" if train.get("optimizer") == "muon" else ""))


def default_recipe(params_file: Path = ROOT / "params.yaml") -> str:
    params = yaml.safe_load(params_file.read_text())
    return recipe_label(params["model"], params["train"], params["tokenize"]["vocab_size"] or 50257)


def sweep_experiments(shown: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, data) of every finished sweep experiment in `dvc exp show --json` output."""
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            revision = experiment["revs"][0]
            name, data = revision.get("name") or "", revision.get("data") or {}
            metrics = data.get("metrics", {}).get("metrics/train/metrics.json", {}).get("data", {})
            if name.split("-")[0] in BUDGETS and "best_val_bpb" in metrics and not revision.get("error"):
                yield name, data  # a finished run: one still running has only its live metrics


def run_row(name: str, data: dict[str, Any], step_seconds: dict[tuple, float]) -> dict[str, Any]:
    params = data["params"]["params.yaml"]["data"]
    metrics = data["metrics"]["metrics/train/metrics.json"]["data"]
    vocab = params["tokenize"]["vocab_size"] or 50257  # null = GPT-2's encoding
    return frontier_row(name, params["model"], params["train"], vocab, metrics, step_seconds)


def frontier_row(name: str, model: dict[str, Any], train: dict[str, Any], vocab: int, metrics: dict[str, Any],
                 step_seconds: dict[tuple, float]) -> dict[str, Any]:
    """One run's row: its recipe, its best validation bits per byte, and its steps turned into minutes
    with its recipe's measured seconds a step. The peak learning rate is Muon's for a Muon run (the
    rate its sweep varies), AdamW's otherwise."""
    key = recipe_key(model | train | {"vocab_size": vocab})
    if key not in step_seconds:
        raise SystemExit(f"{name}: no measured step time for {dict(zip([*STEP_TIME_KEYS, *BLOCK_KEYS], key))}; "
                         "add the recipe to bench/recipe_step_time.py and measure again")
    peak = train["muon_lr"] if train.get("optimizer") == "muon" else train["max_lr"] or train["learning_rate"]
    return {
        "name": name,
        "budget": name.split("-")[0],
        "shape": f"{model['num_blocks']} x {model['embed_dim']}",
        "recipe": recipe_label(model, train, vocab),
        "block": block_label(model).removeprefix(", "),  # "" for the article's
        "num_heads": model["num_heads"],
        "vocab_size": vocab,
        "batch_size": train["batch_size"],
        "context_length": model["context_length"],
        "peak_lr": peak,
        "steps": metrics["steps"],
        "tokens": metrics["tokens_seen"],
        "minutes": round(metrics["steps"] * step_seconds[key] / 60, 2),
        "best_val_bpb": round(metrics["best_val_bpb"], 4),
    }


def collect(step_times: Path, out: Path, revisions: list[str]) -> list[dict[str, Any]]:
    """The sweep's rows from the experiments of `revisions` (the commits they were run from)."""
    measured = json.loads(step_times.read_text())
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(f"--rev={rev}" for rev in revisions)]
    shown = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    step_seconds = measured_seconds(measured)
    rows = [run_row(name, data, step_seconds) for name, data in sweep_experiments(json.loads(shown))]
    if not rows:
        raise SystemExit("no finished sweep experiments (names starting with short-, default- or hour-) in dvc exp show")
    return write_rows(out, measured["cpu"], rows)


def collect_blocks(step_times: Path, block_runs: Path, out: Path) -> list[dict[str, Any]]:
    """The block comparison's rows from its record (one shape and vocabulary, each run's block,
    optimizer, steps and best bits per byte), its minutes from step times measured on the CPU it ran on."""
    measured, record = json.loads(step_times.read_text()), json.loads(block_runs.read_text())
    step_seconds, rows = measured_seconds(measured), []
    for run in record["runs"]:
        model = record["shape"] | run["model"]
        train = record["train"] | {"optimizer": run["optimizer"]} | run.get("train", {})
        tokens = run["steps"] * train["batch_size"] * model["context_length"]
        metrics = {"steps": run["steps"], "tokens_seen": tokens, "best_val_bpb": run["best_val_bpb"]}
        rows.append(frontier_row(run["name"], model, train, record["vocab_size"], metrics, step_seconds))
    return write_rows(out, measured["cpu"], rows)


def measured_seconds(step_times: dict[str, Any]) -> dict[tuple, float]:
    return {recipe_key(recipe): recipe["seconds"] for recipe in step_times["recipes"]}


def write_rows(out: Path, cpu: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows.sort(key=lambda row: (BUDGETS.index(row["budget"]), row["recipe"], row["peak_lr"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu, "runs": rows}, indent=1) + "\n")
    return rows


def best_per_budget(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each recipe's best learning rate at each budget: the points its line goes through."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["recipe"], row["budget"])
        if key not in best or row["best_val_bpb"] < best[key]["best_val_bpb"]:
            best[key] = row
    return list(best.values())


def frontier_spec(sweep: dict[str, Any]) -> dict[str, Any]:
    """Two panels, bits per byte against minutes and against tokens: one line per recipe, the
    article's dashed in what the rows compare (its shape, or its block where all share one shape)."""
    points = best_per_budget(sweep["runs"])
    default = default_recipe()
    labels = {"default": "the default", "hour": "the hour recipe"}  # the default recipe's points, by budget
    compared = "shape" if len({point["shape"] for point in points}) > 1 else "block"
    for point in points:
        point["article"] = point["shape"] == ARTICLE_SHAPE if compared == "shape" else not point.get("block")
        point["label"] = labels.get(point["budget"], "") if point["recipe"] == default else ""
    colour = {"field": "recipe", "type": "nominal", "title": None}
    y = {"field": "best_val_bpb", "type": "quantitative", "title": "IMDb validation bits per byte (lower is better)",
         "scale": {"zero": False}}

    def panel(field: str, title: str) -> dict[str, Any]:
        x = {"field": field, "type": "quantitative", "title": title, "scale": {"type": "log"}}
        return {
            "width": WIDTH, "height": HEIGHT,
            "layer": [
                {"mark": {"type": "line", "point": {"size": 60}},
                 "encoding": {"x": x, "y": y, "color": colour, "order": {"field": field},
                              "strokeDash": {"field": "article", "type": "nominal", "legend": None,
                                             "scale": {"domain": [False, True], "range": [[1, 0], [6, 3]]}}}},
                {"mark": {"type": "text", "align": "left", "dx": 8, "dy": -8, "fontWeight": "bold"},
                 "encoding": {"x": x, "y": y, "text": {"field": "label"}}},
            ],
        }

    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": {"text": "What each training budget buys", "subtitle": [f"training steps alone on {sweep['cpu']}",
                  f"each recipe at its best peak learning rate; the article's {compared} dashed"
                  + ("" if any(point.get("block") for point in points) else "; all the article's block")]},
        "data": {"values": points},
        "hconcat": [panel("minutes", "training minutes (log scale)"), panel("tokens", "training tokens (log scale)")],
        "background": "white",
        "config": {"legend": {"labelLimit": 0, "orient": "bottom", "columns": 3}},
    }


def table(runs: Path) -> str:
    """The sweep's rows as markdown, best of each budget in bold."""
    rows = json.loads(runs.read_text())["runs"]
    best = {budget: min(r["best_val_bpb"] for r in rows if r["budget"] == budget) for budget in {r["budget"] for r in rows}}
    lines = ["| experiment | budget | shape (heads) | vocab | batch x context | peak lr | steps | tokens | minutes | best val bits/byte |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        bpb, lr = f"{r['best_val_bpb']:.4f}", f"{r['peak_lr']:.1e}".replace("e-0", "e-")
        lines.append(f"| `{r['name']}` | {r['budget']} | {r['shape']} ({r['num_heads']}) | {r['vocab_size']:,} | "
                     f"{r['batch_size']} x {r['context_length']} | {lr} | {r['steps']:,} | "
                     f"{r['tokens'] / 1e6:.2f}M | {r['minutes']:.1f} | "
                     + (f"**{bpb}**" if r["best_val_bpb"] == best[r["budget"]] else bpb) + " |")
    return "\n".join(lines)


def draw(runs: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(vl_convert.vegalite_to_png(frontier_spec(json.loads(runs.read_text())), scale=SCALE))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["collect", "blocks", "draw", "table"])
    parser.add_argument("--step-times", type=Path, default=SWEEP / "step_times.json", help="bench/recipe_step_time.py --json output")
    parser.add_argument("--runs", type=Path, default=SWEEP / "runs.json", help="the sweep's rows")
    parser.add_argument("--block-record", type=Path, default=SWEEP / "modern_block.json", help="the block comparison's runs (blocks)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "plots" / "frontier.png", help="the picture")
    parser.add_argument("--rev", action="append", default=[], metavar="COMMIT",
                        help="collect the experiments run from this commit (repeatable; default: HEAD)")
    args = parser.parse_args()
    if args.action == "collect":
        print(f"{len(collect(args.step_times, args.runs, args.rev or ['HEAD']))} runs -> {args.runs}")
    elif args.action == "blocks":
        print(f"{len(collect_blocks(args.step_times, args.block_record, args.runs))} runs -> {args.runs}")
    elif args.action == "table":
        print(table(args.runs))
    else:
        print(draw(args.runs, args.out))


if __name__ == "__main__":
    main()
