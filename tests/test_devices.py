"""A stage's CPU set-up: MKL in its reproducible mode, unless the user chose another."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# MKL reads MKL_CBWR once, at its first call: each case needs a fresh process. It prints the
# mode MKL runs in (mkl_cbwr_get(MKL_CBWR_BRANCH), exported by libtorch_cpu as mkl_serv_cbwr_get)
# after an fp32 matrix product.
PROBE = """
import ctypes, os, torch
from scratchgpt.devices import prepare
prepare("cpu", "fp32", 1, "evaluate")
a = torch.randn(64, 64)
a @ a
mkl = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
print(mkl.mkl_serv_cbwr_get(1))
"""
MKL_CBWR_BRANCH_OFF, MKL_CBWR_AUTO, MKL_CBWR_COMPATIBLE = 1, 2, 3  # mkl_cbwr.h


def mkl_mode(**env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | env
    result = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, MKL_CBWR_AUTO), ({"MKL_CBWR": "COMPATIBLE"}, MKL_CBWR_COMPATIBLE), ({"MKL_CBWR": ""}, MKL_CBWR_BRANCH_OFF)],
    ids=["default: reproducible", "the user's branch kept", "the user's off kept"],
)
def test_stages_run_mkl_in_its_reproducible_mode(env, expected):
    assert mkl_mode(**env) == expected
