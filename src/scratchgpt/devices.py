"""Where the maths runs and in which precision: the `device`, `precision` and thread params."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass

import torch

from scratchgpt import distributed
from scratchgpt.params import bad_value


@dataclass(frozen=True)
class Runtime:
    """The device this process computes on, and whether it runs matrix products in bf16."""

    device: torch.device
    bf16: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """Matrix products in bf16, reductions such as the loss in fp32; a no-op when bf16 is off."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the device; to a GPU through pinned memory, so the copy overlaps the GPU's work."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)


def prepare(device: str, precision: str, num_threads: int | None, section: str) -> Runtime:
    """Set up a stage's maths from its `device`, `precision` and `num_threads` params.

    Under torchrun, each process takes its own GPU. On a GPU, fp32 matrix products use
    TensorFloat-32 (10-bit mantissa inputs, fp32 sums), as they do in most GPU training.
    """
    configure_cpu(num_threads)
    picked = distributed.start(pick_device(device, f"{section}.device"))
    if picked.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return Runtime(picked, use_bf16(precision, picked, f"{section}.precision"))


def pick_device(requested: str, key: str) -> torch.device:
    """`auto` means cuda, then mps, then cpu; asking for an absent device is an error that names
    `key`, a params.yaml key or a command-line flag (see `params.bad_value`)."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return torch.device(next(name for name, present in available.items() if present))
    if not available[requested]:
        raise bad_value(key, requested, "no such device on this machine")
    return torch.device(requested)


def supports_bf16(device: torch.device) -> bool:
    """bf16 pays off on GPUs that have it and on CPUs with AMX or AVX-512 bf16 units."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") and _cpu_has_bf16()
    return False


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(precision: str, device: torch.device, key: str) -> bool:
    """Whether to run under bf16 autocast: `auto` picks it where the hardware supports it."""
    if precision == "bf16" and not supports_bf16(device):
        raise bad_value(key, precision, f"{device.type} here has no bf16 support")
    return precision == "bf16" or (precision == "auto" and supports_bf16(device))


def configure_cpu(num_threads: int | None) -> None:
    """A fixed thread count (all cores by default: the same count gives the same bytes), MKL in
    its reproducible mode, and freed memory kept for reuse.

    MKL, PyTorch's CPU library for fp32 matrix products, may round the last bits of a product
    differently from one run to the next on the same machine and thread count, unless its
    Conditional Numerical Reproducibility mode is on (MKL_CBWR; Intel's "Reproducibility
    Conditions"). CI saw it once: two evaluations of the same models, different metrics. `AUTO`
    keeps the code path MKL picks for this CPU, so results and speed stay as they were on the
    CPUs we measured (bench/train_throughput.py); MKL reads the setting at its first call, which
    no stage makes before this function. A user's own MKL_CBWR is kept.

    A training step allocates and frees buffers of tens to hundreds of megabytes (a slice of
    the loss's logits is 400 MB). glibc hands every block over 32 MB back to the kernel when it
    is freed, so the next step page-faults it all in again. Keeping freed memory in the heap for
    reuse avoids that; memory stays at its peak instead. What it buys on each CPU kind is
    measured by bench/train_throughput.py (its "freed memory returned" row; README, Performance).
    """
    os.environ.setdefault("MKL_CBWR", "AUTO")
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows): nothing to tune
        return
    mallopt(_M_MMAP_MAX, 0)  # serve big blocks from the heap, which is reused...
    mallopt(_M_TRIM_THRESHOLD, -1)  # ...and never shrunk


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
