"""The article's full recipe on one GPU, in one device call that must end in under 10 minutes.

On the device, from the repository root, with .gpu/ carried (made by scripts/gpu_carry.sh):

    python3 scripts/gpu_recipe.py --out "$OUT"

On a CPU, the same flow on a tiny config (to test this script): add `--tiny`, and `--wheels`
pointing at wheels for the local Python. Steps, each under its own time limit so that the whole
ends by --deadline, and each timed into timings.json:

1. install the carried wheels into /tmp/site: dvclive and what it imports, which the GPU image
   lacks;
2. copy the code to a scratch folder and write its params.yaml (the stages read it from their
   working directory, so the checkout is never touched): the article's recipe, the local data
   in .gpu/, device cuda;
3. download, clean, tokenize; bench/gpu_throughput.py, eager at batch 32 to 256, then eager
   and compiled at 32 and 256 (a second batch size makes torch.compile compile again);
4. calibrate: start the pretrain stage, time its first two saved states (it saves one at every
   evaluation) to learn the seconds per `eval_freq` steps, evaluation and save included, and
   the start-up cost, then stop it;
5. pretrain with train.max_steps set so that it ends within --budget seconds (300 epochs
   cannot, and the cosine schedule needs the length up front); finetune, evaluate, sample;
6. write bench.md, timings.json and metrics.tar.gz (the run's metrics/, params.yaml and
   those two) to --out; scripts/gpu_results.py unpacks it into metrics/gpu/.

A step that runs out of time gets SIGINT, on which training saves its state and stops, then
SIGKILL 20 s later. A pretraining stopped so leaves no model, so the stages after it are
skipped, and its saved state's history (every step's losses) goes into the tarball instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CARRIED = ROOT / ".gpu"
RUN = Path("/tmp/scratchgpt-gpu")  # the scratch copy the stages run in
SITE = Path("/tmp/site")

# The article's `settings` and `settings_ft` (README, "The default recipe, and why"), on CUDA.
RECIPE = {
    "data": {"imdb": {"source": ".gpu/imdb"}},
    "datasets": {"coldplay": {"source": ".gpu/lyrics/coldplay.txt", "revision": None, "max_docs": None,
                              "val_fraction": 0.5, "split_seed": 0}},
    "tokenize": {"vocab_size": None},  # GPT-2's tokenizer
    "model": {"num_blocks": 8, "embed_dim": 256, "attention_dim": 256, "num_heads": 8, "dropout_rate": 0.1},
    "train": {
        "batch_size": 32, "learning_rate": 3.0e-4, "max_lr": 3.0e-4, "min_lr": 3.0e-5, "beta2": 0.999,
        "warmup_steps": 1500, "eval_freq": 200, "eval_batches": 8, "num_epochs": 300, "patience": 50,
        "gradient_clip": 1.0, "weight_decay": 0.1, "max_steps": None, "device": "cuda", "precision": "auto",
    },
    "finetune": {
        "learning_rate": 1.0e-5, "max_lr": None, "min_lr": 1.0e-6, "weight_decay": 0.01, "num_epochs": 5,
        "batch_size": 4, "warmup_steps": 100, "device": "cuda", "precision": "auto", "compile": False,
    },
    "evaluate": {"device": "cuda"},
    "sample": {"device": "cuda"},
}
# A config small enough for a CPU to run every step in a minute or two.
TINY = {
    "data": {"imdb": {"max_docs": 300}},
    "model": {"num_heads": 2, "embed_dim": 64, "attention_dim": 64, "num_blocks": 2, "context_length": 64},
    "train": {"batch_size": 8, "warmup_steps": 10, "eval_freq": 10, "eval_batches": 2, "device": "cpu"},
    "finetune": {"max_steps": 20, "warmup_steps": 5, "eval_freq": 10, "device": "cpu"},
    "evaluate": {"device": "cpu", "max_tokens": 4096},
    "sample": {"device": "cpu", "max_new_tokens": 16},
}
# Seconds kept for finetune, evaluate, sample and packing when sizing pretraining.
RESERVE_S = 75


def merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


class Run:
    """The steps so far: their wall times go to timings.json, rewritten after each one, so a
    call cut short still returns what was done."""

    def __init__(self, out: Path, deadline_s: float, env: dict[str, str]):
        self.out, self.env = out, env
        self.end = time.monotonic() + deadline_s
        self.timings: dict[str, object] = {}

    def left(self) -> float:
        return self.end - time.monotonic()

    def note(self, key: str, value: object) -> None:
        self.timings[key] = value
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=2) + "\n", encoding="utf-8")

    def step(self, name: str, command: list[str], limit_s: float, copy_to: Path | None = None) -> bool:
        """Run `command` in the scratch copy within `limit_s` (and the deadline); its output
        goes to our stdout and, with `copy_to`, to that file too. True when it succeeded."""
        limit_s = min(limit_s, self.left())
        print(f"\n=== {name} (limit {limit_s:.0f} s): {' '.join(command)}", flush=True)
        start = time.monotonic()
        process = subprocess.Popen(command, cwd=RUN, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        timer = threading.Timer(max(limit_s, 1), stop, [process])
        timer.start()
        with open(copy_to, "a", encoding="utf-8") if copy_to else open(os.devnull, "w") as copy:
            for line in process.stdout:
                print(line, end="", flush=True)
                copy.write(line)
        process.wait()
        timer.cancel()
        seconds = round(time.monotonic() - start, 1)
        status = "ok" if process.returncode == 0 else "timed out" if seconds >= limit_s else f"exit {process.returncode}"
        self.note(name, {"seconds": seconds, "status": status})
        print(f"=== {name}: {status} after {seconds} s", flush=True)
        return process.returncode == 0


def stop(process: subprocess.Popen) -> None:
    """SIGINT first: training then saves its state and stops cleanly; then SIGKILL to whatever
    is left of its process group (torch.compile's workers, say)."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGINT)
        process.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def install_wheels(wheels: Path) -> None:
    SITE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, sorted(wheels.glob("*.whl")))],
                   check=True)


def prepare_copy() -> None:
    """The code, and a link to the carried data; no .git or .dvc, so DVCLive finds no repository
    to write experiments into."""
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    for name in ("src", "stages", "bench"):
        shutil.copytree(ROOT / name, RUN / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", RUN / "dvc.yaml")
    (RUN / ".gpu").symlink_to(CARRIED)


def write_params(params: dict) -> None:
    (RUN / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def bench_rows(path: Path) -> dict[tuple[str, int], float]:
    """tokens/s by (mode, batch) from the bench's markdown table(s)."""
    rows = {}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for mode, batch, tokens in re.findall(r"^\| (eager|torch\.compile) \| (\d+) \| [\d.]+ \| ([\d,]+) \|", text, re.M):
        rows[(mode, int(batch))] = float(tokens.replace(",", ""))
    return rows


def calibrate(run: Run, params: dict, limit_s: float) -> tuple[float, float] | None:
    """(seconds per eval_freq steps, start-up seconds) of the pretrain stage as configured, from
    the times its first two states were saved; None if it saved fewer in `limit_s`."""
    every = params["train"]["eval_freq"]
    calibration = merge(copy.deepcopy(params), {"train": {"max_steps": 3 * every, "warmup_steps": every // 2}})
    write_params(calibration)
    command = [sys.executable, "-m", "stages.pretrain", "data/tokens", "calibration/model", "calibration/metrics"]
    print(f"\n=== calibrate: {' '.join(command)}, {3 * every} steps", flush=True)
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=RUN, env=run.env, start_new_session=True)
    saved: dict[int, float] = {}
    while process.poll() is None and len(saved) < 2 and time.monotonic() - start < min(limit_s, run.left()):
        for state in RUN.glob(".ckpt/pretrain-*/state.json"):
            try:
                steps = json.loads(state.read_text(encoding="utf-8"))["progress"]["steps"]
            except (OSError, ValueError, KeyError):  # replaced while read: look again
                continue
            saved.setdefault(steps, time.monotonic() - start)
        time.sleep(0.1)
    stop(process)
    if len(saved) < 2:
        run.note("calibrate", {"status": f"saw {len(saved)} of 2 saved states"})
        return None
    first, second = sorted(saved.values())[:2]
    period, startup = second - first, max(0.0, 2 * first - second)
    run.note("calibrate", {"seconds": round(time.monotonic() - start, 1), "seconds_per_eval_freq_steps": round(period, 2),
                           "startup_seconds": round(startup, 1)})
    return period, startup


def pack(out: Path) -> None:
    """metrics.tar.gz: the run's metrics/, params.yaml, bench.md and timings.json, at the top
    level as metrics/gpu/ will hold them; the saved training states' histories if a stage was
    stopped before writing its metrics."""
    with tarfile.open(out / "metrics.tar.gz", "w:gz") as tar:
        for path in (RUN / "metrics", RUN / "params.yaml", out / "bench.md", out / "timings.json"):
            if path.exists():
                for item in sorted(path.iterdir()) if path.is_dir() else [path]:
                    tar.add(item, arcname=item.name)
        for state in sorted(RUN.glob(".ckpt/*/state.json")):
            tar.add(state, arcname=f"stopped/{state.parent.name.rsplit('-', 1)[0]}-state.json")
    print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for what comes back ($OUT)")
    parser.add_argument("--budget", type=float, default=300, help="wall seconds for pretraining, start-up included")
    parser.add_argument("--deadline", type=float, default=500, help="wall seconds for everything after the wheels")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="train.compile; auto: on when the bench's compiled step at batch 32 is --compile-speedup times faster")
    parser.add_argument("--compile-speedup", type=float, default=1.5,
                        help="compiling costs about a minute in calibration and again (cached) in the run")
    parser.add_argument("--bench", action=argparse.BooleanOptionalAction, default=True,
                        help="time bench/gpu_throughput.py first (--no-bench: with --compile on/off, straight to the recipe)")
    parser.add_argument("--wheels", type=Path, default=CARRIED / "whl")
    parser.add_argument("--tiny", action="store_true", help="a tiny config on the CPU, to test this script")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    install_wheels(args.wheels)
    env = os.environ | {
        "PYTHONPATH": f"{SITE}{os.pathsep}{RUN / 'src'}", "PYTHONUNBUFFERED": "1", "TIKTOKEN_CACHE_DIR": str(CARRIED / "tiktoken_cache"),
        "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
    }
    run = Run(args.out, args.deadline, env)
    run.note("install_wheels", {"seconds": round(time.monotonic() - started, 1), "status": "ok"})
    prepare_copy()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = merge(merge(params, RECIPE), TINY if args.tiny else {})
    write_params(params)
    try:
        # Training needs DVCLive; the data stages and the bench do not, so they run regardless.
        imports = run.step("check_imports", [sys.executable, "-c", "import dvclive, scratchgpt.live_metrics, torch; "
                                             "print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"], 60)
        data = True
        for stage, paths in (("download", ["data/raw"]), ("clean", ["data/raw", "data/clean"]),
                             ("tokenize", ["data/clean", "data/tokens"])):
            data = data and run.step(stage, [sys.executable, "-m", f"stages.{stage}", *paths], 90)

        bench = args.out / "bench.md"
        if args.bench:
            bench.unlink(missing_ok=True)
            run.step("bench_eager", [sys.executable, "bench/gpu_throughput.py", "--no-compile"], 60, bench)
            run.step("bench_compiled", [sys.executable, "bench/gpu_throughput.py", "--batch-sizes", "32", "256"], 150, bench)
        rows = bench_rows(bench) if bench.exists() else {}
        speedup = rows.get(("torch.compile", 32), 0) / rows.get(("eager", 32), float("inf"))
        compiled = args.compile == "on" or (args.compile == "auto" and speedup >= args.compile_speedup)
        params["train"]["compile"] = compiled
        run.note("compile", {"speedup_at_batch_32": round(speedup, 2), "train.compile": compiled})
        if not (imports and data):
            return

        measured = calibrate(run, params, 150)
        if measured is None:
            return
        period, startup = measured
        pretrain_s = min(args.budget, run.left() - RESERVE_S)
        every = params["train"]["eval_freq"]
        # 10 s for the end (the best weights saved, the state removed), and 10% for what grows
        # as the run goes (each evaluation rewrites longer curves and a longer saved history).
        params["train"]["max_steps"] = every * max(1, int(0.9 * (pretrain_s - startup - 10) / period))
        write_params(params)
        run.note("plan", {"pretrain_seconds": round(pretrain_s), "train.max_steps": params["train"]["max_steps"]})
        if params["train"]["max_steps"] <= params["train"]["warmup_steps"]:
            print("=== no time left for the recipe's warmup: pretraining skipped", flush=True)
            return
        ok = run.step("pretrain", [sys.executable, "-m", "stages.pretrain", "data/tokens", "models/pretrained", "metrics/train"],
                      pretrain_s + 45)
        ok = ok and run.step("evaluate", [sys.executable, "-m", "stages.evaluate", "models/pretrained", "data/tokens",
                                          "metrics/evaluate.json"], 60)
        ok = ok and run.step("prepare", [sys.executable, "-m", "stages.prepare", "coldplay", "data/tokens",
                                         "data/finetune/coldplay"], 60)
        ok = ok and run.step("finetune", [sys.executable, "-m", "stages.finetune", "coldplay", "models/pretrained",
                                          "data/finetune/coldplay", "models/finetuned/coldplay", "metrics/finetune/coldplay"], 90)
        ok = ok and run.step("evaluate_finetuned", [sys.executable, "-m", "stages.evaluate_finetuned", "models/pretrained",
                                                    "models/finetuned/coldplay", "data/tokens", "data/finetune/coldplay",
                                                    "metrics/evaluate/coldplay.json"], 60)
        if ok:
            run.step("sample", [sys.executable, "-m", "stages.sample", "coldplay", "models/pretrained",
                                "models/finetuned/coldplay", "metrics/samples/coldplay.md"], 45)
    finally:
        run.note("total_seconds", round(time.monotonic() - started, 1))
        pack(args.out)


if __name__ == "__main__":
    main()
