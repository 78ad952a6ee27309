"""Kernel tests: the device they run on (LLM4SBR_TEST_DEVICE, see kernel_device.py).

A setting that cannot run (``cuda`` without a GPU, or with TRITON_INTERPRET=1) stops the run
before collection with a usage error (exit status 4): a GPU run must never pass by skipping.
"""

from __future__ import annotations

import pytest
import torch
from kernel_device import DEVICE, ENV, setting_problem


def pytest_configure(config: pytest.Config) -> None:
    problem = setting_problem()
    if problem is not None:
        raise pytest.UsageError(problem)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kernel tests on {DEVICE} ({ENV})"


@pytest.fixture
def device() -> torch.device:
    """The device kernel tests create their tensors on."""
    return DEVICE
