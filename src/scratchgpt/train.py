"""The training loop that serves both pretraining and fine-tuning.

AdamW, or Muon with AdamW (`optimizers`), a learning rate that rises linearly from 0 to its peak
over `warmup_steps` and then follows a cosine down to `min_lr` at the last step, gradient
clipping, a validation loss and bits per byte every `eval_freq` steps on the same fixed windows, early stopping
after `patience` evaluations without a new best, and the best weights kept. An epoch is one
pass over every training window in a seeded shuffled order.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from scratchgpt import distributed, training_state
from scratchgpt.devices import Runtime, prepare
from scratchgpt.errors import Interrupted, ScratchGPTError, warn
from scratchgpt.evaluation import Score, score
from scratchgpt.live_metrics import RunLog
from scratchgpt.model import GPT
from scratchgpt.optimizers import make_optimizer
from scratchgpt.params import TrainParams, bad_value
from scratchgpt.progress import progress
from scratchgpt.tokens import Windows


def learning_rate_at(step: int, total_steps: int, settings: TrainParams) -> float:
    """The learning rate of optimizer step `step` (0-based) in a run of `total_steps`: a linear
    rise from 0 to the peak over `warmup_steps`, then a cosine down to `min_lr` at the last step."""
    peak = settings.peak_lr
    if step < settings.warmup_steps:
        return peak * (step + 1) / (settings.warmup_steps + 1)
    decay_steps = max(1, total_steps - 1 - settings.warmup_steps)
    done = min(1.0, (step - settings.warmup_steps) / decay_steps)
    return settings.min_lr + 0.5 * (peak - settings.min_lr) * (1 + math.cos(math.pi * done))


@dataclass
class TrainResult:
    """Where a run stands: per-step history, and where its best validation loss was.

    Saved with the resumable state, so a resumed run carries on with exactly these values.
    """

    history: list[dict[str, float | int]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_val_bpb: float = math.inf  # bits per byte at the best loss's step (no byte counts: inf)
    best_step: int = 0
    steps: int = 0
    tokens_seen: int = 0
    evaluations_since_best: int = 0
    stopped_early: bool = False

    def record_evaluation(self, validation: Score, patience: int) -> bool:
        """Note a validation score at the current step; return whether its loss is a new best."""
        improved = validation.loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step, self.evaluations_since_best = validation.loss, self.steps, 0
            self.best_val_bpb = validation.bits_per_byte if validation.bytes else math.inf
        else:
            self.evaluations_since_best += 1
        self.stopped_early = self.evaluations_since_best >= patience
        return improved

    def summary(self) -> dict[str, float | int | bool]:
        return {
            "best_val_loss": self.best_val_loss,
            "best_val_bpb": self.best_val_bpb,
            "best_step": self.best_step,
            "final_train_loss": self.history[-1]["train_loss"],
            "steps": self.steps,
            "tokens_seen": self.tokens_seen,
            "stopped_early": self.stopped_early,
        }


def plan_steps(windows: Windows, settings: TrainParams, section: str) -> tuple[int, int]:
    """Steps per epoch and in the whole run; refuse a run that cannot warm up or take a step."""
    steps_per_epoch = windows.count // settings.batch_size
    if steps_per_epoch == 0:
        raise bad_value(
            f"{section}.batch_size",
            settings.batch_size,
            f"larger than the {windows.count} training windows of {windows.length + 1} tokens",
        )
    if settings.batch_size % distributed.world_size():
        raise bad_value(
            f"{section}.batch_size", settings.batch_size,
            f"must split evenly over {section}.processes = {distributed.world_size()}",
        )
    total = settings.num_epochs * steps_per_epoch
    length = f"{settings.num_epochs} epoch(s) of {steps_per_epoch} steps"
    if settings.max_steps is not None and settings.max_steps < total:
        total, length = settings.max_steps, f"{section}.max_steps"
    if settings.warmup_steps >= total:
        raise bad_value(
            f"{section}.warmup_steps", settings.warmup_steps, f"must be shorter than the run ({total} steps: {length})"
        )
    return steps_per_epoch, total


def batches(
    windows: Windows, settings: TrainParams, first_step: int, total_steps: int, runtime: Runtime
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, inputs, targets) for each step from `first_step`: this process's share of the
    step's windows, in the epoch's seeded order, so a resumed run sees what an uninterrupted
    one would."""
    steps_per_epoch = windows.count // settings.batch_size
    rank, processes = distributed.rank(), distributed.world_size()
    order = windows.shuffled(settings.seed, first_step // steps_per_epoch)
    for step in range(first_step, total_steps):
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0 and step != first_step:
            order = windows.shuffled(settings.seed, epoch)
        batch = order[position * settings.batch_size : (position + 1) * settings.batch_size]
        inputs, targets = windows.batch(batch[rank::processes])
        yield step, runtime.to_device(inputs), runtime.to_device(targets)


class LossReadout:
    """Training losses kept on the device and read back in one transfer when they are needed.

    Reading a GPU tensor's value (`loss.item()`) makes the CPU wait for the GPU to finish, so
    doing it every step leaves the GPU idle while the next step is prepared. Losses are read
    at evaluations, on Ctrl-C and at the end: with every process's loss averaged in one
    all-reduce under DDP.
    """

    def __init__(self, section: str, vocab_size: int):
        self.section = section
        self.pending: list[tuple[dict[str, float | int], torch.Tensor]] = []
        # A fresh model's loss is about ln(vocab); a loss far above it means the run diverges.
        self.diverging_above = 2 * math.log(vocab_size)
        self.warned = False

    def add(self, row: dict[str, float | int], loss: torch.Tensor) -> None:
        self.pending.append((row, loss.detach()))

    def read(self, device: torch.device) -> list[dict[str, float | int]]:
        """The pending rows with their `train_loss` filled in; refuse a non-finite loss."""
        if not self.pending:
            return []
        losses = torch.stack([loss for _, loss in self.pending]).double()
        values = distributed.mean_all(losses, device)
        rows = [row | {"train_loss": value} for (row, _), value in zip(self.pending, values)]
        self.pending = []
        for row in rows:
            if not math.isfinite(row["train_loss"]):
                raise ScratchGPTError(
                    f"{self.section}: the loss became {row['train_loss']} at step {row['step']}; "
                    f"lower {self.section}.max_lr"
                )
            if row["train_loss"] > self.diverging_above and not self.warned:
                self.warned = True
                warn(
                    f"{self.section}: the training loss is {row['train_loss']:.1f} at step {row['step']}, above "
                    f"{self.diverging_above:.1f} (twice an untrained model's): the run is diverging; "
                    f"lower {self.section}.max_lr"
                )
        return rows


def reads_losses_every_step(runtime: Runtime) -> bool:
    """On a CPU, reading a loss costs nothing, and the progress bar shows every step's; on a
    GPU, losses are read only at evaluations (see LossReadout)."""
    return runtime.device.type != "cuda"


class _StopOnInterrupt:
    """Ctrl-C or SIGTERM lets the current step finish, so the saved state is whole, then stops
    the run; `requested` is the signal's number."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    requested: int | None = None

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = {signum: signal.signal(signum, self._request) for signum in self.SIGNALS}
        return self

    def _request(self, signum: int, _frame: object) -> None:
        self.requested = signum

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def stop(self, step: int, state_dir: Path | None) -> Interrupted:
        """The error that ends a run stopped at `step`, saying where its state was saved."""
        saved = f", state saved in {state_dir}; `dvc repro` resumes" if state_dir else ""
        return Interrupted(self.requested, f"stopped by {signal.Signals(self.requested).name} at step {step}{saved}")


def optimizer_step(
    forward: torch.nn.Module, model: GPT, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
    targets: torch.Tensor, lr: float, settings: TrainParams, runtime: Runtime,
) -> torch.Tensor:
    """One step on one batch: forward, backward, clip the gradient norm, update; returns the loss."""
    scale = lr / settings.peak_lr  # every parameter group follows the schedule from its own peak
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * scale
    with runtime.autocast():
        loss = forward(inputs, targets=targets)
    loss.backward()  # under DDP, also averages the gradients over processes
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def validation_score(
    forward: torch.nn.Module, windows: Windows, indices: list[int], batch_size: int, runtime: Runtime,
    byte_lengths: np.ndarray | None,
) -> Score:
    """Loss (and bits per byte) over the fixed validation windows, every process's share added up."""
    mine = score(forward, windows, indices, batch_size, runtime, byte_lengths)
    nats, tokens, size = distributed.sum_all([mine.nats, mine.tokens, mine.bytes], runtime.device)
    return Score(nats, int(tokens), int(size))


def restore(
    state_dir: Path | None, model: GPT, optimizer: torch.optim.Optimizer, section: str
) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """Where the run stands and its best weights: from the saved state, or a fresh start."""
    restored = training_state.load_state(state_dir, model, optimizer) if state_dir else None
    if not restored:
        return TrainResult(), copy.deepcopy(model.state_dict())
    best_weights, progress_so_far = restored
    result = TrainResult(**progress_so_far)
    if distributed.is_main():
        print(f"{section}: resuming at step {result.steps} from {state_dir}", flush=True)
    return result, best_weights


def train(
    model: GPT,
    train_windows: Windows,
    val_windows: Windows,
    settings: TrainParams,
    section: str,
    state_dir: Path | None = None,
    metrics_dir: Path | None = None,
    byte_lengths: np.ndarray | None = None,
) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation step.

    With `state_dir`, the state is saved there at every evaluation and on Ctrl-C, and a run
    that finds a saved state resumes from it and ends exactly as an uninterrupted run would.
    With `metrics_dir`, the curves are logged there with DVCLive as the run goes. With
    `byte_lengths` (`evaluation.token_byte_lengths`), validation is also scored in bits per byte.
    """
    runtime = prepare(settings.device, settings.precision, settings.num_threads, section)
    _, total_steps = plan_steps(train_windows, settings, section)
    main_process = distributed.is_main()
    torch.manual_seed(settings.seed)  # dropout
    model.to(runtime.device).train()
    optimizer = make_optimizer(model, settings)
    replicated = DistributedDataParallel(model) if distributed.world_size() > 1 else model
    # Training and validation batches have the same shape, so one compiled graph serves both.
    forward = torch.compile(replicated) if settings.compile else replicated
    # The same validation windows at every evaluation, this process's share of them.
    val_indices = val_windows.evenly_spaced(settings.eval_batches * settings.batch_size)[distributed.rank() :: distributed.world_size()]
    tokens_per_step = settings.batch_size * train_windows.length
    result, best_weights = restore(state_dir, model, optimizer, section)
    losses = LossReadout(section, model.config.vocab_size)
    bar = progress(total=total_steps, initial=result.steps, desc=section, unit="step", disable=None if main_process else True)
    started, first_step = time.perf_counter(), result.steps
    with _StopOnInterrupt() as interrupt, RunLog(metrics_dir if main_process else None, result.history) as run_log:
        for step, inputs, targets in batches(train_windows, settings, result.steps, total_steps, runtime):
            lr = learning_rate_at(step, total_steps, settings)
            loss = optimizer_step(forward, model, optimizer, inputs, targets, lr, settings, runtime)
            result.steps, result.tokens_seen = step + 1, result.tokens_seen + tokens_per_step
            losses.add({"step": result.steps, "learning_rate": lr, "tokens_seen": result.tokens_seen}, loss)
            evaluate = result.steps % settings.eval_freq == 0 or result.steps == total_steps
            if evaluate or interrupt.requested or reads_losses_every_step(runtime):
                rows = losses.read(runtime.device)
                if evaluate:
                    validation = validation_score(forward, val_windows, val_indices, settings.batch_size, runtime, byte_lengths)
                    rows[-1] |= {"val_loss": validation.loss} | ({"val_bpb": validation.bits_per_byte} if validation.bytes else {})
                    if result.record_evaluation(validation, settings.patience):
                        best_weights = copy.deepcopy(model.state_dict())
                result.history += rows
                for row in rows:
                    run_log.log(row)
                if state_dir and main_process and (evaluate or interrupt.requested):
                    training_state.save_state(state_dir, model, optimizer, best_weights, dataclasses.asdict(result))
                speed = (result.steps - first_step) * tokens_per_step / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", best_val=f"{result.best_val_loss:.3f}", tok_s=f"{speed:,.0f}")
            bar.update()
            if interrupt.requested:
                raise interrupt.stop(result.steps, state_dir)
            if result.stopped_early:
                break
        run_log.finish(result.summary())
    bar.close()
    model.load_state_dict(best_weights)
    distributed.stop()
    return result
