"""The training loop that serves both pretraining and fine-tuning.

AdamW (weight decay on matrices only), a learning rate that moves linearly from
`learning_rate` to `max_lr` over `warmup_steps` and then follows a cosine down to `min_lr` at
the last step, gradient clipping, a validation loss every `eval_freq` steps on the same fixed
windows, early stopping after `patience` evaluations without a new best, and the best weights
kept. An epoch is one pass over every training window in a seeded shuffled order.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from scratchgpt import distributed, resume
from scratchgpt.devices import autocast, configure_cpu, pick_device, use_bf16
from scratchgpt.errors import ScratchGPTError
from scratchgpt.evaluation import score
from scratchgpt.live_metrics import RunLog
from scratchgpt.model import GPT
from scratchgpt.params import TrainParams, bad_value
from scratchgpt.progress import progress
from scratchgpt.tokens import Windows


def learning_rate_at(step: int, total_steps: int, settings: TrainParams) -> float:
    """The learning rate of optimizer step `step` (0-based) in a run of `total_steps`."""
    if step < settings.warmup_steps:
        return settings.learning_rate + (settings.max_lr - settings.learning_rate) * step / settings.warmup_steps
    decay_steps = max(1, total_steps - 1 - settings.warmup_steps)
    done = min(1.0, (step - settings.warmup_steps) / decay_steps)
    return settings.min_lr + 0.5 * (settings.max_lr - settings.min_lr) * (1 + math.cos(math.pi * done))


def make_optimizer(model: torch.nn.Module, settings: TrainParams) -> torch.optim.AdamW:
    """AdamW that decays weight matrices and embeddings, never biases or LayerNorm gains."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, foreach=True)


@dataclass
class TrainResult:
    """Where a run stands: per-step history, and where its best validation loss was.

    Saved with the resumable state, so a resumed run carries on with exactly these values.
    """

    history: list[dict[str, float | int]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_step: int = 0
    steps: int = 0
    tokens_seen: int = 0
    evaluations_since_best: int = 0
    stopped_early: bool = False

    def summary(self) -> dict[str, float | int | bool]:
        """The run in a few numbers: the stage's `metrics.json`."""
        return {
            "best_val_loss": self.best_val_loss,
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


class _StopOnInterrupt:
    """Ctrl-C lets the current step finish, so the saved state is whole, then stops the run."""

    requested = False

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, *_: object) -> None:
        self.requested = True

    def __exit__(self, *_: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


def train(
    model: GPT,
    train_windows: Windows,
    val_windows: Windows,
    settings: TrainParams,
    section: str,
    state_dir: Path | None = None,
    live_dir: Path | None = None,
) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation step.

    With `state_dir`, the state is saved there at every evaluation and on Ctrl-C, and a run
    that finds a saved state resumes from it and ends exactly as an uninterrupted run would.
    With `live_dir`, rank 0 logs the curves there as DVCLive files at every step.
    """
    configure_cpu(settings.num_threads)
    device = distributed.start(pick_device(settings.device, f"{section}.device"))
    bf16 = use_bf16(settings.precision, device, f"{section}.precision")
    steps_per_epoch, total_steps = plan_steps(train_windows, settings, section)
    rank, processes = distributed.rank(), distributed.world_size()
    torch.manual_seed(settings.seed)  # dropout
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    replicated = DistributedDataParallel(model) if processes > 1 else model
    forward = torch.compile(replicated) if settings.compile else replicated
    val_indices = val_windows.evenly_spaced(settings.eval_batches * settings.batch_size)
    tokens_per_step = settings.batch_size * train_windows.length

    result = TrainResult()
    best_weights = copy.deepcopy(model.state_dict())
    restored = resume.load_state(state_dir, model, optimizer) if state_dir else None
    if restored:
        best_weights, progress_so_far = restored
        result = TrainResult(**progress_so_far)
        if rank == 0:
            print(f"{section}: resuming at step {result.steps} from {state_dir}", flush=True)
    bar = progress(total=total_steps, initial=result.steps, desc=section, unit="step", disable=None if rank == 0 else True)
    started, first_step = time.perf_counter(), result.steps
    with _StopOnInterrupt() as interrupt, RunLog(live_dir if rank == 0 else None, result.history) as run_log:
        for step in range(result.steps, total_steps):
            epoch, position = divmod(step, steps_per_epoch)
            if position == 0 or step == first_step:
                order = train_windows.shuffled(settings.seed, epoch)
            batch = order[position * settings.batch_size : (position + 1) * settings.batch_size]
            inputs, targets = train_windows.batch(batch[rank::processes])  # this process's share
            lr = learning_rate_at(step, total_steps, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, bf16):
                loss = forward(inputs.to(device), targets=targets.to(device))
            if not torch.isfinite(loss):
                raise ScratchGPTError(
                    f"{section}: the loss became {loss.item()} at step {step + 1}; "
                    f"lower {section}.max_lr or {section}.learning_rate"
                )
            loss.backward()  # under DDP, also averages the gradients over processes
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            result.steps = step + 1
            result.tokens_seen += tokens_per_step
            row: dict[str, float | int] = {
                "step": result.steps,
                "train_loss": distributed.mean(loss.item(), device),
                "learning_rate": lr,
                "tokens_seen": result.tokens_seen,
            }
            evaluate = result.steps % settings.eval_freq == 0 or result.steps == total_steps
            if evaluate:
                mine = score(forward, val_windows, val_indices[rank::processes], settings.batch_size, device, bf16)
                nats, tokens = distributed.sum_all([mine.nats, mine.tokens], device)
                row["val_loss"] = nats / tokens
                if row["val_loss"] < result.best_val_loss:
                    result.best_val_loss, result.best_step = row["val_loss"], result.steps
                    best_weights = copy.deepcopy(model.state_dict())
                    result.evaluations_since_best = 0
                else:
                    result.evaluations_since_best += 1
                result.stopped_early = result.evaluations_since_best >= settings.patience
            result.history.append(row)
            run_log.log(row)
            if state_dir and rank == 0 and (evaluate or interrupt.requested):
                resume.save_state(state_dir, model, optimizer, best_weights, dataclasses.asdict(result))
            bar.update()
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                loss=f"{row['train_loss']:.3f}",
                best_val=f"{result.best_val_loss:.3f}",
                tok_s=f"{(result.steps - first_step) * tokens_per_step / elapsed:,.0f}",
            )
            if interrupt.requested:
                saved = f": state saved in {state_dir}; `dvc repro` resumes" if state_dir else ""
                bar.write(f"interrupted at step {result.steps}{saved}")
                raise KeyboardInterrupt
            if result.stopped_early:
                break
        run_log.finish(result.summary())
    bar.close()
    model.load_state_dict(best_weights)
    distributed.stop()
    return result
