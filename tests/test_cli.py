"""The `scratchgpt` command: flags checked like their params.yaml keys, every error one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scratchgpt.encodings import get_encoding
from scratchgpt.saved_model import save_model
from scratchgpt.model import GPT

CLI = [sys.executable, "-c", "from scratchgpt.cli import main; main()"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    from conftest import requires_shared_data

    requires_shared_data()  # the gpt2 encoding, offline
    folder = tmp_path_factory.mktemp("cli") / "model"
    save_model(GPT(num_heads=2, vocab_size=50257, embed_dim=16, attention_dim=16, num_blocks=1,
                   context_length=32, dropout_rate=0.0), get_encoding("gpt2"), folder)
    return folder


def generate(model_folder, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "generate", "hello", "--model", str(model_folder), *flags],
                          capture_output=True, text=True)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-p", "1.5"], "--top-p = 1.5: must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature = -1: must be >= 0"),
        (["--temperature", ".inf"], "--temperature = inf: must be a finite number"),
        (["--temperature", "nan"], "--temperature = 'nan': must be a number"),
        (["--max-new-tokens", "0"], "--max-new-tokens = 0: must be from 1 to 4,096"),
        (["--max-new-tokens", "100000"], "--max-new-tokens = 100000: must be from 1 to 4,096: past the model's context"),
        (["--max-new-tokens", "many"], "--max-new-tokens = 'many': must be a whole number"),
        (["--top-k", "2.5"], "--top-k = 2.5: must be a whole number"),
        (["--seed", str(2**64)], f"--seed = {2**64}: must be from 0 to"),
        (["--device", "tpu"], "--device = 'tpu': must be one of auto, cpu, cuda, mps"),
        (["--repetition-penalty", "0"], "--repetition-penalty = 0: must be > 0"),
        (["--repetition-penalty", "much"], "--repetition-penalty = 'much': must be a number"),
        (["--min-p", "1.5"], "--min-p = 1.5: must be in [0, 1]"),
        (["--min-p", "-0.1"], "--min-p = -0.1: must be in [0, 1]"),
        (["--quantize", "int4"], "--quantize = 'int4': must be one of none, int8"),
        (["--stop-at-end-of-text", "maybe"], "--stop-at-end-of-text = 'maybe': must be true or false"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flags_are_one_line(model_folder, flags, message):
    result = generate(model_folder, *flags)
    lines = result.stderr.strip().splitlines()
    assert result.returncode in (1, 2) and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "params.yaml" not in lines[0] and "_positive_int" not in lines[0]


def test_help_says_what_a_long_generation_costs():
    result = subprocess.run([*CLI, "generate", "--help"], capture_output=True, text=True)
    words = " ".join(result.stdout.split())  # argparse wraps the help text
    assert "1 to 4,096" in words and "past it, every token re-runs the whole window" in words


def test_absent_device_names_the_flag_not_params(model_folder):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has cuda")
    result = generate(model_folder, "--device", "cuda")
    assert result.stderr.strip() == "error: --device = 'cuda': no such device on this machine"


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_model_that_is_not_a_folder(model_folder, kind):
    path = model_folder / "model.safetensors" if kind == "file" else model_folder / "nowhere"
    result = generate(path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "a model folder holds config.json" in result.stderr


def test_output_piped_into_head_ends_quietly(model_folder):
    cmd = " ".join([*(f"'{part}'" for part in CLI), "generate", "hello", "--model", f"'{model_folder}'",
                    "--max-new-tokens", "32", "--seed", "1", "| head -c 1"])
    # Several runs: the reader may leave before or after the writer is done.
    for _ in range(3):
        result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
        assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["generate", "explore"])
def test_closed_output_is_one_line(model_folder, command):
    # `>&-` closes stdout (fd 1) itself, which DEVNULL or a closed pipe would not.
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *CLI, command, *(["hello"] if command == "generate" else []),
                             "--model", str(model_folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == "error: standard output is closed; scratchgpt writes there: redirect it to a file or to /dev/null instead\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_output_that_fails_to_write_is_one_line(model_folder):
    result = subprocess.run(["sh", "-c", 'exec "$@" >/dev/full', "sh", *CLI, "generate", "hello", "--model", str(model_folder)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr == "error: No space left on device\n"


def test_seeded_generation_repeats(model_folder):
    first, second = (generate(model_folder, "--max-new-tokens", "5", "--seed", "7") for _ in range(2))
    assert first.returncode == 0 and first.stdout == second.stdout and first.stdout.startswith("hello")


def test_help_says_what_quantize_does():
    result = subprocess.run([*CLI, "generate", "--help"], capture_output=True, text=True)
    words = " ".join(result.stdout.split())
    assert "--quantize" in words and "in 8 bits, for faster text on a CPU" in words
    assert "--repetition-penalty" in words and "--min-p" in words


def test_generation_ends_at_end_of_text_unless_told_to_go_on(tmp_path):
    import torch

    from conftest import ending_the_text, requires_shared_data

    requires_shared_data()  # the gpt2 encoding, offline
    gpt2 = get_encoding("gpt2")
    torch.manual_seed(0)
    model = GPT(num_heads=2, vocab_size=50257, embed_dim=16, attention_dim=16, num_blocks=1, context_length=32,
                dropout_rate=0.0).eval()
    model, before_the_end = ending_the_text(model, gpt2.encode("hello"), gpt2.eot_token)
    save_model(model, gpt2, tmp_path / "ending")
    ended = generate(tmp_path / "ending", "--temperature", "0", "--max-new-tokens", "20")
    assert ended.returncode == 0 and ended.stdout == "hello" + gpt2.decode(before_the_end) + "\n", ended.stderr
    went_on = generate(tmp_path / "ending", "--temperature", "0", "--max-new-tokens", "20", "--stop-at-end-of-text", "false")
    assert went_on.stdout.startswith(ended.stdout[:-1] + "<|endoftext|>") and len(went_on.stdout) > len(ended.stdout) + 14
    words = " ".join(subprocess.run([*CLI, "generate", "--help"], capture_output=True, text=True).stdout.split())
    assert "--stop-at-end-of-text STOP_AT_END_OF_TEXT true: stop where the model ends the text, at <|endoftext|>" in words


def test_quantized_generation_writes_text_and_repeats_with_its_seed(model_folder):
    flags = ["--max-new-tokens", "8", "--seed", "3", "--quantize", "int8", "--repetition-penalty", "1.3",
             "--min-p", "0.05"]
    first, second = (generate(model_folder, *flags) for _ in range(2))
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("hello") and len(first.stdout) > len("hello\n")


def test_sampling_grid_prints_a_row_per_setting(model_folder):
    from conftest import ROOT

    result = subprocess.run([sys.executable, "scripts/sampling_grid.py", "--model", str(model_folder), "--temperature", "0.8",
                             "--repetition-penalty", "1.0", "1.3", "--min-p", "0.1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # Rows end at "\n" only: a random model's text may hold a vertical tab, which splitlines() would split at.
    rows = [line for line in result.stdout.split("\n") if line.startswith("| 0.8")]
    assert [row.split(" | ")[0] for row in rows] == ["| 0.8, 1.0, 0.1", "| 0.8, 1.3, 0.1"]
    assert all(row.count(" | ") == 3 for row in rows)  # the setting and params.yaml's three prompts
