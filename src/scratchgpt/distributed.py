"""Several processes training one model: DistributedDataParallel under torchrun.

A training stage with `processes: N > 1` starts itself again under torchrun with N processes
(one per GPU, or CPU processes talking through gloo). Every process builds the same model; each
takes its share of every global batch; DDP averages the gradients, so every step equals one
step on the whole batch, up to float rounding. Only rank 0 writes outputs.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """Whether this process writes the outputs: rank 0, or the only process."""
    return rank() == 0


def relaunch(processes: int) -> None:
    """Under plain python with `processes` > 1, re-run this stage under torchrun and exit with
    its status; otherwise (one process, or already under torchrun) return and go on."""
    if processes == 1 or "RANK" in os.environ:
        return
    from torch.distributed.run import main as torchrun

    module = sys.modules["__main__"].__spec__.name  # stages are run as `python -m stages.<name>`
    try:
        torchrun(["--standalone", f"--nproc_per_node={processes}", "-m", module, *sys.argv[1:]])
    except Exception:  # a process failed and has printed its own error
        sys.exit(1)
    sys.exit(0)


def start(device: torch.device) -> torch.device:
    """Join the process group when there are several processes; return this process's device."""
    if world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    """Leave the process group once every process has finished its collectives, so that none
    closes its connections while another is still talking through them."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def end_process() -> None:
    """End a process of several (under torchrun) once its stage's work is done, without the
    interpreter's teardown; with one process, return. DDP keeps the gloo group referenced past
    `destroy_process_group` (its worker threads live on), and tearing them down at exit can
    abort a process that has finished ("terminate called without an active exception", seen
    once in CI), which torchrun reports as a failed stage after the outputs were written."""
    if world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def mean_all(values: torch.Tensor, device: torch.device) -> list[float]:
    """Element-wise averages of `values` (a tensor on `device`) over all processes."""
    if world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world_size()
    return values.tolist()


def sum_all(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of `values` over all processes (the values themselves with one)."""
    if world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
